//! Memory and lookup time of a number list: writes N distinct mobile numbers (default
//! 10,000,000) to a file, loads it as a `[[list]]` of a rule set, and prints the resident
//! memory the list takes, per entry, the load time, and the time of one lookup through the
//! rules (`caller_number in_list`), for numbers on the list and numbers not on it.
//!
//! `cargo run --release --example list_memory [N]` (Linux: reads /proc/self/status).

use std::borrow::Cow;
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use dissuade::event::{CallerFlags, Event};
use dissuade::rules::RuleSet;

mod common;
use common::rss_mib;

/// The `i`-th test number: a mainland mobile, 139 followed by 8 digits.
fn number(i: u64) -> String {
    format!("139{:08}", i)
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(10_000_000, |s| s.parse().expect("N is a number"));
    assert!(
        n <= 100_000_000,
        "at most 10^8 numbers of the form 139xxxxxxxx"
    );
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("numbers.txt");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&file).expect("create"));
        // Every other number, so that the odd ones are certainly not on the list.
        for i in 0..n {
            writeln!(w, "{}", number(2 * i)).expect("write");
        }
    }
    let rules = format!(
        "[levels]\nlow = 20\nmedium = 40\nhigh = 60\ncritical = 90\n\n\
         [[list]]\nid = \"big\"\ndescription = \"d\"\nfile = {:?}\n\n\
         [[rule]]\nid = \"listed\"\ndescription = \"d\"\nreason = \"x\"\nscore = 60\n\
         when = \"caller_number in_list big\"\n",
        file.display().to_string()
    );
    let before = rss_mib();
    let start = Instant::now();
    let set = RuleSet::from_toml_str(&rules, "list_memory").expect("the list loads");
    let load_s = start.elapsed().as_secs_f64();
    let after = rss_mib();
    assert_eq!(set.lists()[0].len() as u64, n);

    // Callers prepared before timing; one score per lookup.
    let lookups = 2_000_000u64;
    let callers: Vec<String> = (0..lookups)
        .map(|i| number((i * 7_919) % (2 * n)))
        .collect();
    let mut event = Event {
        event_id: Cow::Borrowed("e"),
        occurred_at_ms: 0,
        caller_number: Cow::Borrowed(""),
        callee_number: Cow::Borrowed("13812345678"),
        callee_location: None,
        cell_id: None,
        call_duration_s: 60.0,
        caller_flags: CallerFlags::default(),
        callee_age: None,
        callee_prior_victim: None,
        sms_with_link: None,
        fraud_type_hint: None,
    };
    let mut hits = 0u64;
    let start = Instant::now();
    for c in &callers {
        event.caller_number = Cow::Borrowed(c);
        hits += u64::from(black_box(set.score(black_box(&event))).total == 60);
    }
    let per_lookup = start.elapsed().as_secs_f64() * 1e9 / lookups as f64;
    // Scoring without the list, to separate the lookup from the rest of `score`.
    let plain = RuleSet::from_toml_str(
        "[levels]\nlow = 20\nmedium = 40\nhigh = 60\ncritical = 90\n\n\
         [[rule]]\nid = \"r\"\ndescription = \"d\"\nreason = \"x\"\nscore = 60\n\
         when = \"call_duration_s > 1000\"\n",
        "plain",
    )
    .expect("compiles");
    let start = Instant::now();
    for c in &callers {
        event.caller_number = Cow::Borrowed(c);
        black_box(plain.score(black_box(&event)));
    }
    let per_plain = start.elapsed().as_secs_f64() * 1e9 / lookups as f64;
    println!(
        "{n} entries loaded in {load_s:.1} s: RSS {before:.0} MiB before, {after:.0} MiB after, \
         {:.1} bytes per entry; score with the list {per_lookup:.0} ns, without {per_plain:.0} ns \
         ({hits} of {lookups} callers listed)",
        (after - before) * 1024.0 * 1024.0 / n as f64,
    );
}
