//! Which offsets may be committed: the lowest contiguous finished offset per partition.
//!
//! Events of one partition may finish out of order (parallel workers, one key
//! retrying while another finishes). The committed position must never pass an
//! unfinished event, or a crash would lose it. This type is the one place that
//! rule lives: offsets are registered in the order they are read, finished in any
//! order, and the position advances only over a finished prefix.

use std::collections::{BTreeMap, HashMap};

/// A topic-partition.
pub type Tp = (String, i32);

#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<Tp, Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// offset -> finished?
    pending: BTreeMap<i64, bool>,
}

impl OffsetTracker {
    /// An event at `offset` was read and handed to a worker.
    pub fn start(&mut self, tp: &Tp, offset: i64) {
        self.partitions
            .entry(tp.clone())
            .or_default()
            .pending
            .insert(offset, false);
    }

    /// The event at `offset` is finished (handled, dead-lettered, its outputs
    /// acknowledged). Returns the offset of the last event of the now-finished
    /// prefix, if the prefix grew: everything up to it may be committed.
    pub fn finish(&mut self, tp: &Tp, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(tp)?;
        match p.pending.get_mut(&offset) {
            Some(done) => *done = true,
            None => return None, // forgotten (partition revoked) meanwhile
        }
        let mut last = None;
        while let Some(entry) = p.pending.first_entry() {
            if !*entry.get() {
                break;
            }
            last = Some(*entry.key());
            entry.remove();
        }
        last
    }

    /// Events read but not finished, in all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.pending.len()).sum()
    }

    /// Events read but not finished in these partitions.
    pub fn in_flight_in(&self, tps: &[Tp]) -> usize {
        tps.iter()
            .filter_map(|tp| self.partitions.get(tp))
            .map(|p| p.pending.len())
            .sum()
    }

    /// Drop what is known of these partitions (they were revoked).
    pub fn forget(&mut self, tps: &[Tp]) {
        for tp in tps {
            self.partitions.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".to_string(), p)
    }

    #[test]
    fn in_order_completion_advances_each_time() {
        let mut t = OffsetTracker::default();
        for o in 0..3 {
            t.start(&tp(0), o);
        }
        assert_eq!(t.finish(&tp(0), 0), Some(0));
        assert_eq!(t.finish(&tp(0), 1), Some(1));
        assert_eq!(t.finish(&tp(0), 2), Some(2));
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn never_passes_an_unfinished_offset() {
        let mut t = OffsetTracker::default();
        for o in [10, 11, 12, 13] {
            t.start(&tp(0), o);
        }
        assert_eq!(t.finish(&tp(0), 12), None);
        assert_eq!(t.finish(&tp(0), 11), None);
        assert_eq!(t.in_flight(), 4);
        assert_eq!(t.finish(&tp(0), 10), Some(12));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finish(&tp(0), 13), Some(13));
    }

    #[test]
    fn gaps_between_offsets_do_not_block() {
        // Compacted topics and transaction markers leave gaps: only read offsets count.
        let mut t = OffsetTracker::default();
        t.start(&tp(0), 5);
        t.start(&tp(0), 9);
        assert_eq!(t.finish(&tp(0), 9), None);
        assert_eq!(t.finish(&tp(0), 5), Some(9));
    }

    #[test]
    fn partitions_are_independent_and_can_be_forgotten() {
        let mut t = OffsetTracker::default();
        t.start(&tp(0), 0);
        t.start(&tp(1), 0);
        t.start(&tp(1), 1);
        assert_eq!(t.finish(&tp(1), 0), Some(0));
        assert_eq!(t.in_flight_in(&[tp(1)]), 1);
        t.forget(&[tp(1)]);
        assert_eq!(t.finish(&tp(1), 1), None);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.finish(&tp(0), 0), Some(0));
    }

    #[test]
    fn random_completion_orders_commit_exactly_the_finished_prefix() {
        // A small deterministic shuffle (LCG) over many orders.
        let mut seed: u64 = 42;
        for _ in 0..200 {
            let mut t = OffsetTracker::default();
            let n = 20;
            for o in 0..n {
                t.start(&tp(0), o);
            }
            let mut order: Vec<i64> = (0..n).collect();
            for i in (1..order.len()).rev() {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                order.swap(i, (seed >> 33) as usize % (i + 1));
            }
            let mut finished = std::collections::BTreeSet::new();
            let mut committed = -1;
            for o in order {
                finished.insert(o);
                if let Some(c) = t.finish(&tp(0), o) {
                    assert!(c > committed);
                    committed = c;
                }
                let prefix = (0..n)
                    .take_while(|x| finished.contains(x))
                    .last()
                    .unwrap_or(-1);
                assert_eq!(committed, prefix);
            }
            assert_eq!(committed, n - 1);
        }
    }
}
