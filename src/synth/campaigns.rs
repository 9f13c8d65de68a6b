//! Labelled synthetic traffic for measuring rules: ordinary calls, harmless look-alikes and
//! fraud campaigns, every event labelled with the truth (`dissuade generate --labels`), so
//! that `dissuade backtest --labels` gives each rule's precision and recall.
//!
//! The truth is the generator's, not the rules': look-alikes carry the signals rules look
//! for without being fraud (relatives calling from abroad, a bank calling from its real
//! number, a call centre working through a list, a blacklisted number since given to
//! someone else, a forwarded landline), and some fraud carries none (a quiet first contact
//! from an ordinary number). Fraud comes in the shapes the centre sees: impersonated police
//! and banks, spoofed official numbers, numbers already known or blacklisted, rings working
//! through lists of elderly people from one number, several numbers working on one person,
//! investment and romance scams.

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::{population, OutEvent, Victim};
use crate::grid::cell_table::CellTable;

/// What the generator makes, and from which numbers.
#[derive(Debug, Clone)]
pub struct CampaignConfig {
    pub seed: u64,
    pub victims: usize,
    /// Share of events that are fraud (campaign calls).
    pub fraud_share: f64,
    /// Numbers fraud rings are known to use (the `known_fraud_numbers` list); a share of
    /// fraud calls comes from them.
    pub known_fraud_numbers: Vec<String>,
    /// Official numbers (police, banks) that real institutions call from and fraud spoofs.
    pub official_numbers: Vec<String>,
}

impl Default for CampaignConfig {
    fn default() -> Self {
        CampaignConfig {
            seed: 2026,
            victims: 200_000,
            fraud_share: 0.05,
            known_fraud_numbers: Vec::new(),
            official_numbers: vec!["110".into(), "95588".into()],
        }
    }
}

/// The truth about one event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Label {
    pub event_id: String,
    pub fraud: bool,
    /// The kind of traffic: `ordinary`, a look-alike (`relative_abroad`, ...) or a campaign.
    pub kind: &'static str,
}

/// Calls that belong together: one number working through people, or several numbers
/// working on one person. Emitted a call at a time among the other traffic.
struct Ring {
    fraud: bool,
    kind: &'static str,
    /// The next callers (one number for a list, several for one person).
    callers: Vec<String>,
    /// The person several numbers work on, if that is the shape.
    target: Option<usize>,
    left: u32,
}

/// Labelled events. Deterministic for a seed and the times given.
pub struct Campaigns {
    rng: SmallRng,
    cfg: CampaignConfig,
    victims: Vec<Victim>,
    elderly: Vec<usize>,
    rings: VecDeque<Ring>,
    seq: u64,
    run_id: String,
}

const FLAGS_NONE: &[&str] = &[];

impl Campaigns {
    pub fn new(cells: &CellTable, cfg: CampaignConfig, run_id: &str) -> Campaigns {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let victims = population(cells, cfg.victims, cfg.seed, &mut rng);
        let elderly = victims
            .iter()
            .enumerate()
            .filter(|(_, v)| v.age.is_some_and(|a| a >= 60))
            .map(|(i, _)| i)
            .collect();
        Campaigns {
            rng,
            cfg,
            victims,
            elderly,
            rings: VecDeque::new(),
            seq: 0,
            run_id: run_id.to_owned(),
        }
    }

    /// Appends the next event's JSON to `out`; returns its label and the callee's number
    /// (the record key).
    pub fn next_event(&mut self, occurred_at_ms: i64, out: &mut Vec<u8>) -> (Label, &str) {
        self.seq += 1;
        let event_id = format!("{}-{}", self.run_id, self.seq);
        let call = if self.rng.random::<f64>() < self.cfg.fraud_share {
            self.fraud_call()
        } else {
            self.harmless_call()
        };
        let v = &self.victims[call.victim];
        let event = OutEvent {
            event_id: &event_id,
            occurred_at: occurred_at_ms,
            caller_number: &call.caller,
            callee_number: &v.number,
            callee_location: v.location,
            cell_id: v.cell_id.as_deref(),
            call_duration_s: call.duration_s,
            caller_flags: call.flags,
            callee_age: v.age,
            callee_prior_victim: v.prior_victim.then_some(true),
            sms_with_link: call.sms,
            fraud_type_hint: call.hint,
        };
        serde_json::to_writer(&mut *out, &event).expect("synthetic event serializes");
        (
            Label {
                event_id,
                fraud: call.fraud,
                kind: call.kind,
            },
            &v.number,
        )
    }

    fn any_victim(&mut self) -> usize {
        self.rng.random_range(0..self.victims.len())
    }

    fn elderly_victim(&mut self) -> usize {
        if self.elderly.is_empty() {
            return self.any_victim();
        }
        self.elderly[self.rng.random_range(0..self.elderly.len())]
    }

    fn number(&mut self, prefix: &str, digits: u32) -> String {
        let n = self.rng.random_range(0..10u64.pow(digits));
        format!("{prefix}{n:0width$}", width = digits as usize)
    }

    fn mobile(&mut self) -> String {
        let prefix =
            ["135", "138", "139", "150", "158", "186", "188", "199"][self.rng.random_range(0..8)];
        self.number(prefix, 8)
    }

    fn pick(&mut self, from: &[String], or: impl FnOnce(&mut Self) -> String) -> String {
        if from.is_empty() {
            or(self)
        } else {
            from[self.rng.random_range(0..from.len())].clone()
        }
    }

    /// A call of a running ring, if one is due: rings call about once in 40 events each.
    fn ring_call(&mut self, fraud: bool) -> Option<Call> {
        let i = self
            .rings
            .iter()
            .position(|r| r.fraud == fraud && self.rng.random::<f64>() < 0.3)?;
        let ring = &mut self.rings[i];
        ring.left -= 1;
        let caller = ring.callers[self.rng.random_range(0..ring.callers.len())].clone();
        let (kind, target) = (ring.kind, ring.target);
        if ring.left == 0 {
            self.rings.remove(i);
        }
        Some(match (kind, target) {
            ("ring_one_person", Some(victim)) => Call {
                fraud: true,
                kind,
                victim,
                caller,
                flags: [&["overseas"][..], &["voip"], &["voip", "new_sim"]]
                    [self.rng.random_range(0..3)],
                duration_s: self.rng.random_range(60..900),
                sms: None,
                hint: None,
            },
            _ => Call {
                fraud,
                kind,
                victim: self.elderly_victim(),
                caller,
                flags: FLAGS_NONE,
                // A call centre keeps it short; a ring keeps them talking.
                duration_s: if fraud {
                    self.rng.random_range(90..600)
                } else {
                    self.rng.random_range(15..90)
                },
                sms: None,
                hint: None,
            },
        })
    }

    fn harmless_call(&mut self) -> Call {
        if let Some(c) = self.ring_call(false) {
            return c;
        }
        let victim = self.any_victim();
        let r = self.rng.random_range(0..1000u32);
        let (kind, caller, flags, duration_s, sms, hint) = match r {
            // Relatives and friends abroad: long calls, any age.
            0..=29 => {
                let caller = self.number("+852", 8);
                unmarked(
                    "relative_abroad",
                    caller,
                    &["overseas"],
                    self.rng.random_range(60..2400),
                )
            }
            // The bank or the police calling from their real numbers.
            30..=39 => {
                let official = self.cfg.official_numbers.clone();
                let caller = self.pick(&official, |s| s.number("955", 2));
                unmarked(
                    "official_call",
                    caller,
                    FLAGS_NONE,
                    self.rng.random_range(30..300),
                )
            }
            // App and business calls over VoIP, some from new SIMs.
            40..=69 => {
                let caller = self.number("170", 8);
                unmarked(
                    "voip_business",
                    caller,
                    &["voip"],
                    self.rng.random_range(10..240),
                )
            }
            70..=79 => {
                let caller = self.mobile();
                unmarked(
                    "new_sim",
                    caller,
                    &["new_sim"],
                    self.rng.random_range(10..300),
                )
            }
            // A real part-time job offer, texted with a link.
            80..=84 => {
                let caller = self.mobile();
                (
                    "job_offer",
                    caller,
                    FLAGS_NONE,
                    self.rng.random_range(60..600),
                    Some(true),
                    Some("part_time_job"),
                )
            }
            // A call centre starts working through a list of (mostly elderly) customers.
            85..=86 => {
                let caller = self.number("022", 8);
                self.rings.push_back(Ring {
                    fraud: false,
                    kind: "call_centre",
                    callers: vec![caller],
                    target: None,
                    left: self.rng.random_range(10..40),
                });
                let caller = self.rings.back().expect("just pushed").callers[0].clone();
                unmarked(
                    "call_centre",
                    caller,
                    FLAGS_NONE,
                    self.rng.random_range(15..90),
                )
            }
            // A number the carrier blacklisted, since given to someone else.
            87 => {
                let caller = self.mobile();
                unmarked(
                    "recycled_number",
                    caller,
                    &["blacklisted"],
                    self.rng.random_range(10..600),
                )
            }
            // People who forward their landline to their mobile.
            88..=107 => {
                let caller = self.mobile();
                unmarked(
                    "forwarded_call",
                    caller,
                    &["forwarded"],
                    self.rng.random_range(10..600),
                )
            }
            _ => {
                let caller = if self.rng.random::<bool>() {
                    self.mobile()
                } else {
                    self.number("022", 8)
                };
                unmarked(
                    "ordinary",
                    caller,
                    FLAGS_NONE,
                    self.rng.random_range(5..600),
                )
            }
        };
        Call {
            fraud: false,
            kind,
            victim,
            caller,
            flags,
            duration_s,
            sms,
            hint,
        }
    }

    fn fraud_call(&mut self) -> Call {
        if let Some(c) = self.ring_call(true) {
            return c;
        }
        let r = self.rng.random_range(0..100u32);
        let victim = if r < 50 {
            self.elderly_victim()
        } else {
            self.any_victim()
        };
        let (kind, caller, flags, duration_s, sms, hint) = match r {
            0..=19 => {
                let caller = self.number("+63", 9);
                (
                    "impersonate_police",
                    caller,
                    [&["spoofed_official", "overseas"][..], &["overseas"]]
                        [self.rng.random_range(0..2)],
                    self.rng.random_range(300..2400),
                    None,
                    // The hint is the centre's guess: not always there.
                    self.rng.random_bool(0.7).then_some("impersonate_police"),
                )
            }
            20..=34 => {
                let caller = self.mobile();
                (
                    "impersonate_bank",
                    caller,
                    [&["spoofed_bank"][..], &["new_sim"], &["forwarded"]]
                        [self.rng.random_range(0..3)],
                    self.rng.random_range(120..1200),
                    Some(self.rng.random_bool(0.6)),
                    self.rng.random_bool(0.6).then_some("impersonate_bank"),
                )
            }
            35..=44 => {
                let official = self.cfg.official_numbers.clone();
                let caller = self.pick(&official, |s| s.number("955", 2));
                unmarked(
                    "spoofed_official_number",
                    caller,
                    [&["overseas"][..], &["voip"]][self.rng.random_range(0..2)],
                    self.rng.random_range(120..1800),
                )
            }
            45..=54 => {
                let known = self.cfg.known_fraud_numbers.clone();
                let caller = self.pick(&known, |s| s.number("+855", 8));
                unmarked(
                    "known_number",
                    caller,
                    FLAGS_NONE,
                    self.rng.random_range(30..900),
                )
            }
            55..=64 => {
                let caller = self.number("170", 8);
                (
                    "investment_or_romance",
                    caller,
                    &["voip"][..],
                    self.rng.random_range(300..3600),
                    None,
                    Some(if self.rng.random::<bool>() {
                        "investment"
                    } else {
                        "romance"
                    }),
                )
            }
            // A ring starts working through elderly people from one ordinary number.
            65..=69 => {
                let caller = self.mobile();
                self.rings.push_back(Ring {
                    fraud: true,
                    kind: "ring_list",
                    callers: vec![caller.clone()],
                    target: None,
                    left: self.rng.random_range(8..30),
                });
                unmarked(
                    "ring_list",
                    caller,
                    FLAGS_NONE,
                    self.rng.random_range(90..600),
                )
            }
            // Several numbers start working on one person.
            70..=74 => {
                let callers = (0..self.rng.random_range(3..6))
                    .map(|_| self.number("+63", 9))
                    .collect::<Vec<_>>();
                let caller = callers[0].clone();
                self.rings.push_back(Ring {
                    fraud: true,
                    kind: "ring_one_person",
                    callers,
                    target: Some(victim),
                    left: self.rng.random_range(3..8),
                });
                unmarked(
                    "ring_one_person",
                    caller,
                    &["overseas"],
                    self.rng.random_range(60..900),
                )
            }
            // A number the carrier has already blacklisted for fraud.
            75..=81 => {
                let caller = self.number("+95", 9);
                unmarked(
                    "blacklisted_number",
                    caller,
                    &["blacklisted"],
                    self.rng.random_range(30..900),
                )
            }
            // A quiet first contact: nothing marks it.
            _ => {
                let caller = self.mobile();
                unmarked(
                    "quiet_first_contact",
                    caller,
                    FLAGS_NONE,
                    self.rng.random_range(20..300),
                )
            }
        };
        Call {
            fraud: true,
            kind,
            victim,
            caller,
            flags,
            duration_s,
            sms,
            hint,
        }
    }
}

/// What a kind of traffic draws for one call: kind, caller, flags, duration, text with a
/// link, fraud-type hint.
type Draw = (
    &'static str,
    String,
    &'static [&'static str],
    u32,
    Option<bool>,
    Option<&'static str>,
);

/// A call with neither a text nor a fraud-type hint.
fn unmarked(
    kind: &'static str,
    caller: String,
    flags: &'static [&'static str],
    duration_s: u32,
) -> Draw {
    (kind, caller, flags, duration_s, None, None)
}

struct Call {
    fraud: bool,
    kind: &'static str,
    victim: usize,
    caller: String,
    flags: &'static [&'static str],
    duration_s: u32,
    sms: Option<bool>,
    hint: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn table() -> CellTable {
        CellTable::from_rows(vec![("c1", 117.2, 39.13), ("c2", 117.3, 39.10)]).unwrap()
    }

    fn run(seed: u64, n: usize) -> Vec<(Vec<u8>, Label)> {
        let cfg = CampaignConfig {
            seed,
            victims: 5_000,
            known_fraud_numbers: vec!["+852 5123 9901".into()],
            ..CampaignConfig::default()
        };
        let mut g = Campaigns::new(&table(), cfg, "t");
        (0..n)
            .map(|i| {
                let mut out = Vec::new();
                let (label, _) = g.next_event(1_700_000_000_000 + i as i64 * 10, &mut out);
                (out, label)
            })
            .collect()
    }

    #[test]
    fn every_event_decodes_is_labelled_and_a_seed_repeats_itself() {
        let events = run(7, 20_000);
        let mut kinds = std::collections::BTreeMap::<&str, (usize, bool)>::new();
        for (n, (bytes, label)) in events.iter().enumerate() {
            let e = Event::decode(bytes).unwrap_or_else(|err| panic!("event {n}: {err}"));
            assert_eq!(e.event_id, label.event_id);
            let kind = kinds.entry(label.kind).or_insert((0, label.fraud));
            kind.0 += 1;
            assert_eq!(
                kind.1, label.fraud,
                "{} is fraud or not, always",
                label.kind
            );
        }
        let fraud = events.iter().filter(|(_, l)| l.fraud).count() as f64 / 20_000.0;
        assert!((0.035..0.075).contains(&fraud), "fraud share {fraud}");
        // Every kind of traffic appears, and a kind is always fraud or never.
        for kind in [
            "ordinary",
            "relative_abroad",
            "official_call",
            "call_centre",
            "impersonate_police",
            "spoofed_official_number",
            "known_number",
            "ring_list",
            "ring_one_person",
            "blacklisted_number",
            "recycled_number",
            "forwarded_call",
            "quiet_first_contact",
        ] {
            assert!(kinds.contains_key(kind), "{kind} missing: {kinds:?}");
        }
        assert_eq!(
            run(7, 500)
                .iter()
                .map(|(b, _)| b.clone())
                .collect::<Vec<_>>(),
            events[..500]
                .iter()
                .map(|(b, _)| b.clone())
                .collect::<Vec<_>>()
        );
    }
}
