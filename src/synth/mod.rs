//! Synthetic suspicious-call events over a grid map, for the demo, load tests and benchmarks.
//!
//! The mix follows what the centre sees: most flagged calls are harmless, a minority carry
//! real fraud signals, and fraudsters call the same victim again (which exercises
//! suppression and upgrades). Victims live near base stations, so most fall inside a grid
//! cell, some in the gaps between cells and a few outside the map. A share of records can be
//! made deliberately bad to exercise the dead-letter path.

pub mod campaigns;

use std::collections::VecDeque;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::event::Location;
use crate::grid::cell_table::CellTable;

#[derive(Debug, Clone)]
pub struct SynthConfig {
    pub seed: u64,
    /// Distinct people who receive calls.
    pub victims: usize,
    /// Share of events with real fraud signals.
    pub risky_share: f64,
    /// Share of risky events that call back a recent risky victim.
    pub repeat_share: f64,
    /// Share of records made invalid on purpose.
    pub bad_share: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            seed: 2026,
            victims: 200_000,
            risky_share: 0.12,
            repeat_share: 0.3,
            bad_share: 0.0,
        }
    }
}

struct Victim {
    number: String,
    location: Option<Location>,
    cell_id: Option<String>,
    age: Option<u8>,
    prior_victim: bool,
}

#[derive(Serialize)]
struct OutEvent<'a> {
    event_id: &'a str,
    occurred_at: i64,
    caller_number: &'a str,
    callee_number: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    callee_location: Option<Location>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cell_id: Option<&'a str>,
    call_duration_s: u32,
    caller_flags: &'a [&'static str],
    #[serde(skip_serializing_if = "Option::is_none")]
    callee_age: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    callee_prior_victim: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sms_with_link: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fraud_type_hint: Option<&'static str>,
}

/// A stream of synthetic events. Deterministic for a seed, apart from the timestamps given.
pub struct Synth {
    rng: SmallRng,
    cfg: SynthConfig,
    victims: Vec<Victim>,
    recent_risky: VecDeque<usize>,
    run_id: String,
    seq: u64,
    caller: String,
    event_id: String,
}

const MOBILE_PREFIXES: [&str; 8] = ["135", "138", "139", "150", "158", "186", "188", "199"];

impl Synth {
    /// Builds the victim population around the base stations of `cells`.
    pub fn new(cells: &CellTable, cfg: SynthConfig) -> Synth {
        let mut rng = SmallRng::seed_from_u64(cfg.seed);
        let victims = population(cells, cfg.victims, cfg.seed, &mut rng);
        Synth {
            run_id: format!("{:08x}", cfg.seed as u32 ^ rand::random::<u32>()),
            rng,
            cfg,
            victims,
            recent_risky: VecDeque::with_capacity(4096),
            seq: 0,
            caller: String::with_capacity(20),
            event_id: String::with_capacity(32),
        }
    }

    /// Fixes the event id prefix (ids are `<run_id>-<seq>`), for reproducible output.
    pub fn with_run_id(mut self, run_id: &str) -> Synth {
        self.run_id = run_id.to_owned();
        self
    }

    /// Appends the next event's JSON to `out` and returns the index of its callee (see
    /// [`Synth::callee_number`]), which is the record key the centre should use.
    pub fn next_event(&mut self, occurred_at_ms: i64, out: &mut Vec<u8>) -> usize {
        use std::fmt::Write;
        self.seq += 1;
        self.event_id.clear();
        let _ = write!(self.event_id, "{}-{}", self.run_id, self.seq);
        let risky = self.rng.random::<f64>() < self.cfg.risky_share;
        let victim_idx = if risky
            && !self.recent_risky.is_empty()
            && self.rng.random::<f64>() < self.cfg.repeat_share
        {
            self.recent_risky[self.rng.random_range(0..self.recent_risky.len())]
        } else {
            self.rng.random_range(0..self.victims.len())
        };
        if risky {
            if self.recent_risky.len() == 4096 {
                self.recent_risky.pop_front();
            }
            self.recent_risky.push_back(victim_idx);
        }
        let bad = self.cfg.bad_share > 0.0 && self.rng.random::<f64>() < self.cfg.bad_share;
        let (flags, duration, sms, hint) = if risky {
            self.risky_profile()
        } else {
            (&[][..], self.rng.random_range(5..400), None, None)
        };
        self.caller.clear();
        let _ = if flags.contains(&"overseas") {
            write!(
                self.caller,
                "+63{:09}",
                self.rng.random_range(0..1_000_000_000u64)
            )
        } else if flags.contains(&"voip") {
            write!(
                self.caller,
                "170{:08}",
                self.rng.random_range(0..100_000_000u64)
            )
        } else {
            write!(
                self.caller,
                "022{:08}",
                self.rng.random_range(0..100_000_000u64)
            )
        };
        let v = &self.victims[victim_idx];
        let event = OutEvent {
            event_id: &self.event_id,
            occurred_at: occurred_at_ms,
            caller_number: &self.caller,
            callee_number: &v.number,
            callee_location: v.location,
            cell_id: v.cell_id.as_deref(),
            call_duration_s: duration,
            caller_flags: flags,
            callee_age: v.age,
            callee_prior_victim: v.prior_victim.then_some(true),
            sms_with_link: sms,
            fraud_type_hint: hint,
        };
        if bad {
            write_bad(&mut self.rng, &event, out);
        } else {
            serde_json::to_writer(&mut *out, &event).expect("synthetic event serializes");
        }
        victim_idx
    }

    pub fn callee_number(&self, victim_idx: usize) -> &str {
        &self.victims[victim_idx].number
    }

    #[allow(clippy::type_complexity)]
    fn risky_profile(
        &mut self,
    ) -> (
        &'static [&'static str],
        u32,
        Option<bool>,
        Option<&'static str>,
    ) {
        let r = &mut self.rng;
        match r.random_range(0..100u32) {
            0..=9 => (
                &["blacklisted"],
                r.random_range(30..900),
                None,
                Some("other"),
            ),
            10..=24 => (
                &["spoofed_official", "overseas"],
                r.random_range(300..2400),
                None,
                Some("impersonate_police"),
            ),
            25..=39 => (
                &["spoofed_bank"],
                r.random_range(120..1200),
                Some(true),
                Some("impersonate_bank"),
            ),
            40..=59 => (&["overseas"], r.random_range(20..300), None, None),
            60..=69 => (
                &["voip", "new_sim"],
                r.random_range(60..900),
                Some(r.random::<bool>()),
                Some("part_time_job"),
            ),
            70..=84 => (
                &["voip"],
                r.random_range(600..3600),
                None,
                Some(if r.random::<bool>() {
                    "investment"
                } else {
                    "romance"
                }),
            ),
            _ => (
                &["new_sim", "high_frequency"],
                r.random_range(60..600),
                Some(true),
                Some("impersonate_customer_service"),
            ),
        }
    }
}

/// `n` people living near the base stations of `cells`: most inside a grid cell, some only
/// placed by their serving cell, a few unplaced or out of town; ages and numbers drawn from
/// `rng`, numbers unique for a seed.
fn population(cells: &CellTable, n: usize, seed: u64, rng: &mut SmallRng) -> Vec<Victim> {
    let stations: Vec<(&str, (f64, f64))> = cells.iter().collect();
    (0..n.max(1))
        .map(|i| {
            let number = format!(
                "{}{:08}",
                MOBILE_PREFIXES[i % MOBILE_PREFIXES.len()],
                (i as u64 * 7_919 + seed) % 100_000_000
            );
            let (location, cell_id) = if stations.is_empty() {
                (None, None)
            } else {
                let (id, (lon, lat)) = stations[rng.random_range(0..stations.len())];
                let r: f64 = rng.random();
                if r < 0.08 {
                    // Only the serving cell is known.
                    (None, Some(id.to_owned()))
                } else if r < 0.09 {
                    // Neither: the network could not place the callee.
                    (None, None)
                } else if r < 0.095 {
                    // Out of town: well outside the map.
                    (
                        Some(Location {
                            lon: lon + 3.0,
                            lat: lat + 2.0,
                        }),
                        None,
                    )
                } else {
                    let mut jitter = || rng.random_range(-0.006..0.006);
                    (
                        Some(Location {
                            lon: ((lon + jitter()) * 1e6).round() / 1e6,
                            lat: ((lat + jitter()) * 1e6).round() / 1e6,
                        }),
                        None,
                    )
                }
            };
            let age = (rng.random::<f64>() < 0.8).then(|| rng.random_range(16..92u8));
            Victim {
                number,
                location,
                cell_id,
                age,
                prior_victim: rng.random::<f64>() < 0.02,
            }
        })
        .collect()
}

/// Writes a record that fails validation in one of the ways real feeds do.
fn write_bad(rng: &mut SmallRng, event: &OutEvent<'_>, out: &mut Vec<u8>) {
    let mut value = serde_json::to_value(event).expect("synthetic event serializes");
    let obj = value.as_object_mut().expect("an object");
    match rng.random_range(0..4u32) {
        0 => {
            out.extend_from_slice(b"{\"event_id\":\"");
            out.extend_from_slice(event.event_id.as_bytes());
            out.extend_from_slice(b"\",\"truncated");
            return;
        }
        1 => {
            obj.remove("callee_number");
        }
        2 => {
            obj.insert(
                "callee_location".into(),
                serde_json::json!({ "lon": 117.2, "lat": 95.0 }),
            );
        }
        _ => {
            obj.insert("call_duration_s".into(), serde_json::json!("long"));
        }
    }
    serde_json::to_writer(out, &value).expect("value serializes");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventError};

    fn table() -> CellTable {
        CellTable::from_rows(vec![
            ("460-00-1-1".to_string(), 117.2, 39.13),
            ("460-00-1-2".to_string(), 117.3, 39.10),
        ])
        .unwrap()
    }

    #[test]
    fn events_decode_and_are_reproducible_for_a_seed() {
        let cfg = SynthConfig {
            victims: 50,
            ..SynthConfig::default()
        };
        let mut a = Synth::new(&table(), cfg.clone()).with_run_id("t");
        let mut b = Synth::new(&table(), cfg).with_run_id("t");
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..500 {
            x.clear();
            y.clear();
            a.next_event(i, &mut x);
            b.next_event(i, &mut y);
            assert_eq!(x, y);
            let e = Event::decode(&x).unwrap();
            assert_eq!(e.event_id, format!("t-{}", i + 1));
        }
    }

    #[test]
    fn bad_share_produces_rejected_records() {
        let cfg = SynthConfig {
            victims: 10,
            bad_share: 1.0,
            ..SynthConfig::default()
        };
        let mut s = Synth::new(&table(), cfg);
        let mut buf = Vec::new();
        let mut kinds = std::collections::BTreeSet::new();
        for i in 0..200 {
            buf.clear();
            s.next_event(i, &mut buf);
            let err: EventError = Event::decode(&buf).unwrap_err();
            kinds.insert(err.kind());
        }
        assert_eq!(
            kinds.into_iter().collect::<Vec<_>>(),
            [
                "invalid_field",
                "malformed",
                "missing_field",
                "out_of_range"
            ]
        );
    }
}
