//! Offsets: which position of each partition may be committed.
//!
//! Events are registered in the order they are read and finish in any order
//! (keys are handled in parallel, one key may wait for a retry while others
//! finish). The committed position never passes an unfinished event, or a crash
//! would lose it: it advances over the finished prefix only. This book is owned
//! by the fetch stage's thread; the acknowledgements it reads are atomics.
//!
//! It also decides rewinds: when a delivery of one of a partition's events
//! failed, everything from the first unfinished event on is dropped (made stale)
//! and read again from there.

use super::acks::{EventAck, PartitionSignal};
use super::lanes::FnvBuild;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// A topic-partition.
pub type Tp = (Arc<str>, i32);

/// What the book knows of one assigned partition.
#[derive(Debug)]
struct Partition {
    signal: Arc<PartitionSignal>,
    /// Events read and not yet committed past, in read order.
    pending: VecDeque<Arc<EventAck>>,
    /// When an event was last read or the position last moved (reads are
    /// counted and turned into a time by [`OffsetBook::note_reads`]).
    progress: Instant,
    /// When the position last moved (or the partition was assigned).
    moved: Instant,
    reads: u64,
    reads_noted: u64,
}

impl Partition {
    /// Make every pending event stale and forget it (it is read again); how
    /// many there were. `events` and `bytes` are the book's totals.
    fn drop_pending(&mut self, events: &mut usize, bytes: &mut usize) -> usize {
        self.signal.bump();
        let again = self.pending.len();
        for a in self.pending.drain(..) {
            *events -= 1;
            *bytes -= a.bytes();
        }
        again
    }
}

/// A partition to read again from `from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewind {
    pub tp: Tp,
    pub from: i64,
    /// Events read after `from` that will be read and handed again.
    pub again: usize,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct OffsetBook {
    partitions: HashMap<Tp, Partition, FnvBuild>,
    events: usize,
    bytes: usize,
    /// Bytes of records exactly-once events hold (counted in flight).
    held: Arc<AtomicUsize>,
}

impl OffsetBook {
    /// Start tracking a newly assigned partition; its signal (fresh generation).
    pub fn assign(&mut self, tp: Tp) -> Arc<PartitionSignal> {
        let p = self.partitions.entry(tp).or_insert_with(|| Partition {
            signal: Arc::new(PartitionSignal::counting_held(self.held.clone())),
            pending: VecDeque::new(),
            progress: Instant::now(),
            moved: Instant::now(),
            reads: 0,
            reads_noted: 0,
        });
        p.signal.clone()
    }

    /// The signal of an assigned partition.
    pub fn signal(&self, tp: &Tp) -> Option<&Arc<PartitionSignal>> {
        self.partitions.get(tp).map(|p| &p.signal)
    }

    /// An event of `tp` was read and handed on.
    pub fn track(&mut self, tp: &Tp, ack: Arc<EventAck>) -> bool {
        let Some(p) = self.partitions.get_mut(tp) else {
            return false;
        };
        self.events += 1;
        self.bytes += ack.bytes();
        p.reads += 1;
        p.pending.push_back(ack);
        true
    }

    /// Move every partition's position over its finished prefix; `store(tp,
    /// last)` is called with the last finished offset of each that moved.
    pub fn advance(&mut self, store: impl FnMut(&Tp, i64)) {
        self.advance_with(|_, _| {}, store);
    }

    /// [`OffsetBook::advance`], and `each(tp, event)` for every event passed
    /// over, in offset order (exactly-once sends their held records).
    pub fn advance_with(
        &mut self,
        mut each: impl FnMut(&Tp, &EventAck),
        mut store: impl FnMut(&Tp, i64),
    ) {
        for (tp, p) in &mut self.partitions {
            let mut last = None;
            while p.pending.front().is_some_and(|a| a.is_finished()) {
                let a = p.pending.pop_front().expect("front checked");
                self.events -= 1;
                self.bytes -= a.bytes();
                last = Some(a.offset());
                each(tp, &a);
            }
            if let Some(last) = last {
                p.progress = Instant::now();
                p.moved = p.progress;
                store(tp, last);
            }
        }
    }

    /// The partitions whose deliveries failed, rewound: their pending events are
    /// made stale and forgotten, to be read again from the first unfinished one.
    /// Call after [`OffsetBook::advance`], so what finished before is kept.
    pub fn take_rewinds(&mut self) -> Vec<Rewind> {
        let mut rewinds = Vec::new();
        for (tp, p) in &mut self.partitions {
            let Some(reason) = p.signal.take_failure() else {
                continue;
            };
            let Some(front) = p.pending.front() else {
                continue; // everything finished meanwhile: nothing to read again
            };
            let from = front.offset();
            let again = p.drop_pending(&mut self.events, &mut self.bytes);
            rewinds.push(Rewind {
                tp: tp.clone(),
                from,
                again,
                reason,
            });
        }
        rewinds
    }

    /// Exactly-once, after an aborted transaction: every partition is read
    /// again from `committed(tp)` (the first offset the aborted transaction
    /// carried) or else its first pending event; what is pending is made stale.
    pub fn rewind_all(
        &mut self,
        committed: impl Fn(&Tp) -> Option<i64>,
        reason: &str,
    ) -> Vec<Rewind> {
        let mut rewinds = Vec::new();
        for (tp, p) in &mut self.partitions {
            let Some(from) = committed(tp).or_else(|| p.pending.front().map(|a| a.offset())) else {
                continue;
            };
            let again = p.drop_pending(&mut self.events, &mut self.bytes);
            rewinds.push(Rewind {
                tp: tp.clone(),
                from,
                again,
                reason: reason.to_string(),
            });
        }
        rewinds
    }

    /// An operator moves `tp`: its pending events are made stale and
    /// forgotten; how many did not finish.
    pub fn reset(&mut self, tp: &Tp) -> usize {
        let Some(p) = self.partitions.get_mut(tp) else {
            return 0;
        };
        let unfinished = p.pending.iter().filter(|a| !a.is_finished()).count();
        p.drop_pending(&mut self.events, &mut self.bytes);
        p.moved = Instant::now();
        p.progress = p.moved;
        unfinished
    }

    /// Stop tracking `tps` (revoked): their events in flight become stale.
    pub fn revoke(&mut self, tps: &[Tp]) {
        for tp in tps {
            if let Some(p) = self.partitions.remove(tp) {
                p.signal.bump();
                for a in &p.pending {
                    self.events -= 1;
                    self.bytes -= a.bytes();
                }
            }
        }
    }

    /// Events of `tps` (all partitions when `None`) that may still finish.
    pub fn unsettled(&self, tps: Option<&[Tp]>) -> usize {
        let count = |p: &Partition| p.pending.iter().filter(|a| !a.is_settled()).count();
        match tps {
            None => self.partitions.values().map(count).sum(),
            Some(tps) => tps
                .iter()
                .filter_map(|tp| self.partitions.get(tp))
                .map(count)
                .sum(),
        }
    }

    /// Events read and not committed past, and their bytes (with the bytes
    /// of the records exactly-once events hold).
    pub fn in_flight(&self) -> (usize, usize) {
        (self.events, self.bytes + self.held.load(Ordering::Acquire))
    }

    /// The assigned partitions.
    pub fn assigned(&self) -> impl Iterator<Item = &Tp> {
        self.partitions.keys()
    }

    /// Count the events read since the last call as progress now, for a
    /// partition whose position is not held back by an unfinished event: more
    /// reads behind a stuck event are not progress (under backpressure a
    /// partition still reads a little).
    pub fn note_reads(&mut self, stuck_after: std::time::Duration) {
        let now = Instant::now();
        for p in self.partitions.values_mut() {
            if p.reads != p.reads_noted {
                p.reads_noted = p.reads;
                let held = !p.pending.is_empty() && now.duration_since(p.moved) >= stuck_after;
                if !held {
                    p.progress = now;
                }
            }
        }
    }

    /// When `tp` last read an event or moved its position (reads as of the last
    /// [`OffsetBook::note_reads`]).
    pub fn last_progress(&self, tp: &Tp) -> Option<Instant> {
        self.partitions.get(tp).map(|p| p.progress)
    }

    /// The first unfinished offset of `tp` and its age, if any event is pending.
    pub fn oldest_pending(&self, tp: &Tp) -> Option<i64> {
        self.partitions
            .get(tp)
            .and_then(|p| p.pending.front())
            .map(|a| a.offset())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".into(), p)
    }

    fn book_with(
        p: i32,
        offsets: impl IntoIterator<Item = i64>,
    ) -> (OffsetBook, Vec<Arc<EventAck>>) {
        let mut book = OffsetBook::default();
        let signal = book.assign(tp(p));
        let acks: Vec<_> = offsets
            .into_iter()
            .map(|o| {
                let a = EventAck::new(o, 10, signal.clone());
                book.track(&tp(p), a.clone());
                a
            })
            .collect();
        (book, acks)
    }

    fn advance(book: &mut OffsetBook) -> Option<i64> {
        let mut stored = None;
        book.advance(|_, last| stored = Some(last));
        stored
    }

    #[test]
    fn never_passes_an_unfinished_offset() {
        let (mut book, acks) = book_with(0, [10, 11, 12, 13]);
        acks[2].released();
        acks[1].released();
        assert_eq!(advance(&mut book), None);
        assert_eq!(book.in_flight(), (4, 40));
        acks[0].released();
        assert_eq!(advance(&mut book), Some(12));
        assert_eq!(book.in_flight(), (1, 10));
        acks[3].released();
        assert_eq!(advance(&mut book), Some(13));
    }

    #[test]
    fn gaps_between_offsets_do_not_block() {
        // Compacted topics and transaction markers leave gaps: only read offsets count.
        let (mut book, acks) = book_with(0, [5, 9]);
        acks[1].released();
        assert_eq!(advance(&mut book), None);
        acks[0].released();
        assert_eq!(advance(&mut book), Some(9));
    }

    #[test]
    fn an_event_waits_for_its_records() {
        let (mut book, acks) = book_with(0, [0]);
        acks[0].expect(1);
        acks[0].released();
        assert_eq!(advance(&mut book), None);
        acks[0].delivered();
        assert_eq!(advance(&mut book), Some(0));
    }

    #[test]
    fn a_failed_delivery_rewinds_to_the_first_unfinished_event() {
        let (mut book, acks) = book_with(0, [0, 1, 2, 3]);
        let signal = book.signal(&tp(0)).unwrap().clone();
        let generation = signal.generation();
        acks[0].released();
        acks[1].expect(1);
        acks[1].released();
        acks[2].released();
        acks[1].failed("broker down".into());
        assert_eq!(advance(&mut book), Some(0), "the finished prefix is kept");
        let rewinds = book.take_rewinds();
        assert_eq!(
            rewinds,
            vec![Rewind {
                tp: tp(0),
                from: 1,
                again: 3,
                reason: "broker down".into()
            }]
        );
        assert_ne!(
            signal.generation(),
            generation,
            "events in flight are stale"
        );
        assert_eq!(book.in_flight(), (0, 0));
        assert!(book.take_rewinds().is_empty());
    }

    #[test]
    fn exactly_once_sends_held_records_in_offset_order_and_rewinds_to_the_transaction() {
        let (mut book, acks) = book_with(0, [0, 1, 2, 3]);
        let signal = book.signal(&tp(0)).unwrap().clone();
        let held = |n: u8| crate::pipeline::acks::HeldRecord {
            topic: "out".into(),
            key: None,
            payload: Some(vec![n]),
            headers: Vec::new(),
        };
        // Finished out of order: 1 and 3 before 0; 2 still with the plugin.
        for i in [1usize, 3, 0] {
            acks[i].hold([held(i as u8)]);
            acks[i].released();
        }
        let mut sent = Vec::new();
        book.advance_with(
            |_, a| sent.extend(a.take_held().into_iter().map(|r| r.payload.unwrap()[0])),
            |_, _| {},
        );
        assert_eq!(sent, vec![0, 1], "only the prefix, in offset order");
        // 3's record ("out", 1 byte) is still held: it counts in flight.
        assert_eq!(book.in_flight(), (2, 24));
        // The transaction carrying 0 and 1 aborts: read again from 0.
        let g = signal.generation();
        let rewinds = book.rewind_all(|_| Some(0), "commit failed");
        assert_eq!(rewinds.len(), 1);
        assert_eq!((rewinds[0].from, rewinds[0].again), (0, 2));
        assert_ne!(signal.generation(), g, "events in flight are stale");
        assert_eq!(book.in_flight(), (0, 4), "held until the stale event goes");
        drop(acks);
        assert_eq!(book.in_flight(), (0, 0));
        // A partition the transaction did not carry goes back to its first pending event.
        let (mut other, _acks) = book_with(1, [7, 8]);
        let rewinds = other.rewind_all(|_| None, "commit failed");
        assert_eq!(rewinds[0].from, 7);
    }

    #[test]
    fn revoked_partitions_are_forgotten_and_their_events_stale() {
        let mut book = OffsetBook::default();
        let s0 = book.assign(tp(0));
        let s1 = book.assign(tp(1));
        let a0 = EventAck::new(0, 1, s0.clone());
        let a1 = EventAck::new(0, 1, s1.clone());
        book.track(&tp(0), a0.clone());
        book.track(&tp(1), a1.clone());
        assert_eq!(book.unsettled(Some(&[tp(1)])), 1);
        let g = s1.generation();
        book.revoke(&[tp(1)]);
        assert_ne!(s1.generation(), g);
        assert_eq!(book.in_flight(), (1, 1));
        a1.released();
        a0.released();
        let mut stored = Vec::new();
        book.advance(|tp, last| stored.push((tp.clone(), last)));
        assert_eq!(stored, vec![(tp(0), 0)]);
    }

    #[test]
    fn random_completion_orders_commit_exactly_the_finished_prefix() {
        // A small deterministic shuffle (LCG) over many orders.
        let mut seed: u64 = 42;
        for _ in 0..200 {
            let n = 20;
            let (mut book, acks) = book_with(0, 0..n);
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
                acks[o as usize].released();
                if let Some(c) = advance(&mut book) {
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
