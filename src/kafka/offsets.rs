//! Which input offset may be committed.
//!
//! An offset is committed only when every task and dead letter produced for it, and for
//! every earlier offset of its partition, has been acknowledged by the broker. Records that
//! produce nothing are done as soon as they are processed.

use std::collections::VecDeque;

#[derive(Debug, Default)]
pub struct PartitionOffsets {
    /// Records with outputs not yet acknowledged, in offset order: (offset, outputs left).
    pending: VecDeque<(i64, u32)>,
    /// One past the highest offset processed.
    next: Option<i64>,
    /// Set when an output was finally refused: nothing at or after it may be committed.
    failed_at: Option<i64>,
}

impl PartitionOffsets {
    /// Records that `offset` was processed and produced `outputs` records still to be
    /// acknowledged.
    pub fn processed(&mut self, offset: i64, outputs: u32) {
        if outputs > 0 {
            self.pending.push_back((offset, outputs));
        }
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// Adds `outputs` more to a record still awaiting acknowledgements: a record held back
    /// (counted as one output until it is released) that produced outputs when released.
    pub fn add_outputs(&mut self, offset: i64, outputs: u32) {
        if let Ok(i) = self.pending.binary_search_by_key(&offset, |&(o, _)| o) {
            self.pending[i].1 += outputs;
        }
    }

    /// Records the broker's acknowledgement of one output of `offset`.
    pub fn acknowledged(&mut self, offset: i64) {
        if let Ok(i) = self.pending.binary_search_by_key(&offset, |&(o, _)| o) {
            let left = &mut self.pending[i].1;
            *left = left.saturating_sub(1);
        }
        while self.pending.front().is_some_and(|&(_, left)| left == 0) {
            self.pending.pop_front();
        }
    }

    /// Records that an output of `offset` could not be delivered.
    pub fn failed(&mut self, offset: i64) {
        self.failed_at = Some(self.failed_at.map_or(offset, |f| f.min(offset)));
    }

    /// The offset to commit: the next record a restarted consumer must read.
    pub fn committable(&self) -> Option<i64> {
        let done = match self.pending.front() {
            Some(&(offset, _)) => Some(offset),
            None => self.next,
        };
        match (done, self.failed_at) {
            (Some(d), Some(f)) => Some(d.min(f)),
            (d, _) => d,
        }
    }

    /// Outputs still awaiting acknowledgement.
    pub fn unacknowledged(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_processed_means_nothing_to_commit() {
        assert_eq!(PartitionOffsets::default().committable(), None);
    }

    #[test]
    fn records_without_outputs_are_committable_at_once() {
        let mut p = PartitionOffsets::default();
        p.processed(10, 0);
        p.processed(11, 0);
        assert_eq!(p.committable(), Some(12));
    }

    #[test]
    fn commit_waits_for_the_earliest_unacknowledged_output() {
        let mut p = PartitionOffsets::default();
        p.processed(0, 1);
        p.processed(1, 0);
        p.processed(2, 1);
        p.processed(3, 0);
        assert_eq!(p.committable(), Some(0));
        p.acknowledged(2);
        assert_eq!(p.committable(), Some(0), "offset 0 is still in flight");
        p.acknowledged(0);
        assert_eq!(p.committable(), Some(4));
        assert_eq!(p.unacknowledged(), 0);
    }

    #[test]
    fn a_record_with_two_outputs_needs_both_acknowledged() {
        let mut p = PartitionOffsets::default();
        p.processed(5, 2);
        p.acknowledged(5);
        assert_eq!(p.committable(), Some(5));
        p.acknowledged(5);
        assert_eq!(p.committable(), Some(6));
    }

    #[test]
    fn a_held_record_pins_the_commit_until_released_and_its_outputs_acknowledged() {
        let mut p = PartitionOffsets::default();
        p.processed(0, 1); // held
        p.processed(1, 0);
        assert_eq!(p.committable(), Some(0));
        p.add_outputs(0, 2);
        p.acknowledged(0); // released
        assert_eq!(p.committable(), Some(0));
        p.acknowledged(0);
        p.acknowledged(0);
        assert_eq!(p.committable(), Some(2));
    }

    #[test]
    fn a_failed_delivery_pins_the_commit_before_it() {
        let mut p = PartitionOffsets::default();
        p.processed(0, 1);
        p.processed(1, 1);
        p.processed(2, 0);
        p.acknowledged(0);
        p.failed(1);
        p.acknowledged(1);
        assert_eq!(p.committable(), Some(1));
    }
}
