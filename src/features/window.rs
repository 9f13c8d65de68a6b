//! The recent calls of one key (a caller or a callee) and the running aggregates of the
//! features declared on that side.
//!
//! Calls are kept once, sorted by event time, for the longest window of the side; each
//! aggregate keeps the index of the first call inside its own window and is updated as calls
//! enter and leave it, so a new call costs a few additions, not a scan of the window.

use smallvec::SmallVec;

use super::Aggregate;

/// One call as a window remembers it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub ts: i64,
    /// Hash of the event id: a redelivered event is not counted twice.
    pub event: u64,
    /// Hash of the other party's canonical number (the callee of a caller, the caller of a
    /// callee), for distinct counts.
    pub other: u64,
    pub duration_ms: u32,
    /// Bit `i` set: the call matches the `where` of feature `i` (of the whole rule set).
    pub filters: u16,
}

/// What one feature of a side needs to know to maintain its aggregate.
#[derive(Debug, Clone, Copy)]
pub(super) struct SideFeature {
    /// Index of the feature in the rule set (its figure slot and its filter bit).
    pub index: u8,
    pub aggregate: Aggregate,
    pub window_ms: i64,
    pub filtered: bool,
}

impl SideFeature {
    fn counts(&self, call: &Call) -> bool {
        !self.filtered || call.filters & (1 << self.index) != 0
    }
}

/// The running aggregate of one feature over the calls `first..` of the key's window.
#[derive(Debug, Clone, Default)]
struct Running {
    first: usize,
    /// Calls in the window.
    all: u32,
    /// Calls in the window that match the feature's `where` (all of them when it has none).
    matched: u32,
    sum_ms: u64,
    /// Sorted (other party, calls) of the matching calls, for distinct counts. Most keys
    /// have one: inline.
    distinct: SmallVec<[(u64, u32); 1]>,
}

impl Running {
    fn add(&mut self, f: &SideFeature, call: &Call) {
        self.all += 1;
        if !f.counts(call) {
            return;
        }
        self.matched += 1;
        self.sum_ms += u64::from(call.duration_ms);
        if f.aggregate == Aggregate::Distinct {
            match self.distinct.binary_search_by_key(&call.other, |&(o, _)| o) {
                Ok(i) => self.distinct[i].1 += 1,
                Err(i) => self.distinct.insert(i, (call.other, 1)),
            }
        }
    }

    fn remove(&mut self, f: &SideFeature, call: &Call) {
        self.all -= 1;
        if !f.counts(call) {
            return;
        }
        self.matched -= 1;
        self.sum_ms -= u64::from(call.duration_ms);
        if f.aggregate == Aggregate::Distinct {
            if let Ok(i) = self.distinct.binary_search_by_key(&call.other, |&(o, _)| o) {
                self.distinct[i].1 -= 1;
                if self.distinct[i].1 == 0 {
                    self.distinct.remove(i);
                }
            }
        }
    }

    fn figure(&self, f: &SideFeature) -> f64 {
        match f.aggregate {
            Aggregate::Count => f64::from(self.matched),
            Aggregate::Distinct => self.distinct.len() as f64,
            Aggregate::SumDurationS => self.sum_ms as f64 / 1000.0,
            Aggregate::Share if self.all == 0 => f64::NAN,
            Aggregate::Share => f64::from(self.matched) / f64::from(self.all),
            Aggregate::SecondsSinceLastTask => f64::NAN,
        }
    }
}

/// What became of a call offered to a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admitted {
    Counted,
    /// Older than the key's latest call by more than the allowed lateness: not counted.
    Late,
    /// The same event is already in the window (a redelivery).
    Duplicate,
}

/// The calls of a key, oldest first: a vector consumed from the front and compacted when
/// half of it is spent, so that most keys (one call) need no allocation and a busy key
/// does not move its whole window for each call that leaves it.
#[derive(Debug, Clone, Default)]
struct Calls {
    buf: SmallVec<[Call; 1]>,
    head: usize,
}

impl Calls {
    fn live(&self) -> &[Call] {
        &self.buf[self.head..]
    }

    fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    fn get(&self, i: usize) -> Option<&Call> {
        self.buf.get(self.head + i)
    }

    fn insert(&mut self, at: usize, call: Call) {
        self.buf.insert(self.head + at, call);
    }

    fn drop_front(&mut self, n: usize) {
        self.head += n;
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        } else if self.head >= 16 && self.head * 2 >= self.buf.len() {
            self.buf.drain(..self.head);
            self.head = 0;
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(super) struct KeyWindow {
    calls: Calls,
    /// The latest event time seen for this key: the windows end here.
    pub latest: i64,
    /// The slot of the input partition whose clock this key expires by (see
    /// `Windows::expire_idle`).
    pub clock: u16,
    /// One per feature of the side; sides rarely have more than one feature.
    running: SmallVec<[Running; 1]>,
}

impl KeyWindow {
    pub fn new(features: usize, clock: u16) -> KeyWindow {
        KeyWindow {
            calls: Calls::default(),
            latest: i64::MIN,
            clock,
            running: (0..features).map(|_| Running::default()).collect(),
        }
    }

    /// Calls held (the longest window's).
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    /// Offers a call; returns what became of it and how many calls were dropped early
    /// because the key is at `max_calls`.
    pub fn offer(
        &mut self,
        features: &[SideFeature],
        call: Call,
        lateness_ms: i64,
        max_calls: usize,
    ) -> (Admitted, usize) {
        if self.latest != i64::MIN && call.ts < self.latest.saturating_sub(lateness_ms) {
            return (Admitted::Late, 0);
        }
        let at = self.calls.live().partition_point(|c| c.ts <= call.ts);
        if self.calls.live()[..at]
            .iter()
            .rev()
            .take_while(|c| c.ts == call.ts)
            .any(|c| c.event == call.event)
        {
            return (Admitted::Duplicate, 0);
        }
        self.latest = self.latest.max(call.ts);
        self.calls.insert(at, call);
        for (r, f) in self.running.iter_mut().zip(features) {
            // Calls before `first` are outside this feature's window, and so is a call that
            // lands among them or is already older than the window.
            if at >= r.first && call.ts > self.latest - f.window_ms {
                r.add(f, &call);
            } else {
                r.first += 1;
            }
        }
        self.expire(features);
        let mut dropped = 0;
        while self.calls.len() > max_calls {
            self.drop_oldest(features);
            dropped += 1;
        }
        (Admitted::Counted, dropped)
    }

    /// Moves the windows on to a call at `ts` that no feature counts, as offering it would
    /// without keeping it; false when it is too late to move anything.
    pub fn advance(&mut self, features: &[SideFeature], ts: i64, lateness_ms: i64) -> bool {
        if self.latest != i64::MIN && ts < self.latest.saturating_sub(lateness_ms) {
            return false;
        }
        if ts > self.latest {
            self.latest = ts;
            self.expire(features);
        }
        true
    }

    /// The figures of a key that holds no call.
    pub fn empty_figures(features: &[SideFeature], out: &mut [f64]) {
        for f in features {
            out[f.index as usize] = Running::default().figure(f);
        }
    }

    /// Each feature's figure over its window ending at the key's latest call.
    pub fn figures(&self, features: &[SideFeature], out: &mut [f64]) {
        for (r, f) in self.running.iter().zip(features) {
            out[f.index as usize] = r.figure(f);
        }
    }

    /// Moves every feature's window to end at `latest`, then forgets the calls no window
    /// holds any more.
    fn expire(&mut self, features: &[SideFeature]) {
        for (r, f) in self.running.iter_mut().zip(features) {
            let cutoff = self.latest - f.window_ms;
            while let Some(call) = self.calls.get(r.first) {
                if call.ts > cutoff {
                    break;
                }
                r.remove(f, call);
                r.first += 1;
            }
        }
        let unused = self.running.iter().map(|r| r.first).min().unwrap_or(0);
        self.calls.drop_front(unused);
        for r in &mut self.running {
            r.first -= unused;
        }
    }

    fn drop_oldest(&mut self, features: &[SideFeature]) {
        let Some(&call) = self.calls.get(0) else {
            return;
        };
        self.calls.drop_front(1);
        for (r, f) in self.running.iter_mut().zip(features) {
            if r.first == 0 {
                r.remove(f, &call);
            } else {
                r.first -= 1;
            }
        }
    }
}
