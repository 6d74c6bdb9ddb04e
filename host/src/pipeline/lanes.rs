//! Lanes: the order events are handled in.
//!
//! A lane is a (partition, key) pair: its events are handled one after the
//! other, in the order they were read (an event without a key keeps its
//! partition's order: all of them share one lane). Different lanes are
//! independent. A worker takes *batches* of ready events with at most one event
//! per lane, so every outcome in a batch is independent of the others.
//!
//! When an event is to be retried its lane is *blocked* until the retry is due:
//! its later events queue behind it, and every other lane keeps flowing.

use super::acks::Ticket;
use crate::event::EventRecord;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

/// FNV-1a: a few cycles per byte for the short keys hashed per event (lanes,
/// partitions), where SipHash's resistance to chosen keys buys nothing (a
/// collision only makes two lanes wait for each other).
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Hash maps keyed by lanes or partitions.
pub type FnvBuild = BuildHasherDefault<Fnv>;

/// The lane of an event: the same (partition, key) always gives the same value.
pub fn lane_of(event: &EventRecord) -> u64 {
    let mut h = Fnv::default();
    event.partition.hash(&mut h);
    event.key.hash(&mut h);
    h.finish()
}

/// The worker (of `workers`) that handles a lane: one lane, one worker.
pub fn worker_of(lane: u64, workers: usize) -> usize {
    if workers <= 1 {
        0
    } else {
        // The lane is a hash already; mix once more so the worker index does not
        // correlate with anything else derived from it.
        (lane.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % workers
    }
}

/// How big a batch may be.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    pub events: usize,
    pub bytes: usize,
}

#[derive(Debug)]
struct Blocked {
    /// When the front ticket may be tried again; `None` while it is being tried.
    due: Option<Instant>,
    queue: VecDeque<Ticket>,
}

/// One worker's events: ready ones and blocked lanes.
#[derive(Debug, Default)]
pub struct Lanes {
    ready: VecDeque<Ticket>,
    blocked: HashMap<u64, Blocked, FnvBuild>,
}

impl Lanes {
    /// A newly read event: ready, unless its lane is blocked.
    pub fn push(&mut self, ticket: Ticket) {
        match self.blocked.get_mut(&ticket.lane) {
            Some(b) => b.queue.push_back(ticket),
            None => self.ready.push_back(ticket),
        }
    }

    /// Ready events, at most one per lane, in read order. A lane's later events
    /// stay behind for a later batch (so do the events behind a full batch).
    pub fn next_batch(&mut self, limits: BatchLimits) -> Vec<Ticket> {
        let mut batch = Vec::with_capacity(limits.events.min(self.ready.len()));
        let mut bytes = 0;
        let mut lanes = HashSet::with_capacity_and_hasher(batch.capacity(), FnvBuild::default());
        // Events of a lane already in the batch, in order; they go back in front.
        // The scan is bounded, so a queue of one busy lane costs O(batch), not
        // O(queue), per batch.
        let mut skipped = Vec::new();
        let mut scanned = 0;
        while let Some(t) = self.ready.pop_front() {
            let size = t.event.payload.len();
            let full = batch.len() >= limits.events
                || (!batch.is_empty() && bytes + size > limits.bytes)
                || scanned >= limits.events * 4;
            if full {
                self.ready.push_front(t);
                break;
            }
            scanned += 1;
            if lanes.insert(t.lane) {
                bytes += size;
                batch.push(t);
            } else {
                skipped.push(t);
            }
        }
        for t in skipped.into_iter().rev() {
            self.ready.push_front(t);
        }
        batch
    }

    /// Retry `ticket` at `due`: its lane is blocked until then, and the lane's
    /// ready events move behind it.
    pub fn retry(&mut self, ticket: Ticket, due: Instant) {
        let lane = ticket.lane;
        match self.blocked.get_mut(&lane) {
            Some(b) => {
                b.due = Some(due);
                b.queue.push_front(ticket);
            }
            None => {
                let mut queue = VecDeque::from([ticket]);
                let mut others = VecDeque::with_capacity(self.ready.len());
                for t in self.ready.drain(..) {
                    if t.lane == lane {
                        queue.push_back(t);
                    } else {
                        others.push_back(t);
                    }
                }
                self.ready = others;
                self.blocked.insert(
                    lane,
                    Blocked {
                        due: Some(due),
                        queue,
                    },
                );
            }
        }
    }

    /// A blocked lane's event whose retry is due at `now`, if any. Its lane stays
    /// blocked until [`Lanes::release`] (or another [`Lanes::retry`]).
    pub fn take_due(&mut self, now: Instant) -> Option<Ticket> {
        let (lane, b) = self
            .blocked
            .iter_mut()
            .find(|(_, b)| b.due.is_some_and(|d| d <= now))?;
        let lane = *lane;
        b.due = None;
        match b.queue.pop_front() {
            Some(t) => Some(t),
            None => {
                self.blocked.remove(&lane);
                None
            }
        }
    }

    /// The lane's retried event is done: its waiting events are ready again.
    pub fn release(&mut self, lane: u64) {
        if let Some(b) = self.blocked.remove(&lane) {
            self.ready.extend(b.queue);
        }
    }

    /// `ticket`, dropped without being handled (stale: its partition was rewound
    /// or revoked since it was read), no longer holds its lane: if it was the
    /// lane's retried event, the events queued behind it are ready again.
    /// Otherwise (a lane blocked by another event's retry) nothing changes.
    pub fn dropped(&mut self, ticket: &Ticket) {
        if self
            .blocked
            .get(&ticket.lane)
            .is_some_and(|b| b.due.is_none())
        {
            self.release(ticket.lane);
        }
    }

    /// When the next blocked lane's retry is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.blocked.values().filter_map(|b| b.due).min()
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    pub fn is_empty(&self) -> bool {
        self.ready.is_empty() && self.blocked.is_empty()
    }

    /// The events of blocked lanes (shutdown: they are given up).
    pub fn drain_blocked(&mut self) -> Vec<Ticket> {
        self.blocked.drain().flat_map(|(_, b)| b.queue).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::acks::{EventAck, PartitionSignal};
    use std::sync::Arc;
    use std::time::Duration;

    fn ticket(offset: i64, key: &str) -> Ticket {
        let mut event = EventRecord::for_test("t", 0, offset);
        event.key = Some(key.as_bytes().to_vec());
        event.payload = vec![0; 10];
        let p = Arc::new(PartitionSignal::default());
        Ticket {
            lane: lane_of(&event),
            ack: EventAck::new(offset, 10, p.clone()),
            partition: p,
            attempts: 0,
            delivery_failures: 0,
            delivery_error: None,
            event,
        }
    }

    fn offsets(batch: &[Ticket]) -> Vec<i64> {
        batch.iter().map(|t| t.event.offset).collect()
    }

    const WIDE: BatchLimits = BatchLimits {
        events: 100,
        bytes: 1 << 20,
    };

    #[test]
    fn a_batch_has_one_event_per_lane_in_read_order() {
        let mut lanes = Lanes::default();
        for (o, k) in [(0, "a"), (1, "b"), (2, "a"), (3, "c"), (4, "b")] {
            lanes.push(ticket(o, k));
        }
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![0, 1, 3]);
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![2, 4]);
        assert!(lanes.next_batch(WIDE).is_empty());
    }

    #[test]
    fn batches_respect_their_limits() {
        let mut lanes = Lanes::default();
        for o in 0..5 {
            lanes.push(ticket(o, &format!("k{o}")));
        }
        let small = BatchLimits {
            events: 2,
            bytes: 1 << 20,
        };
        assert_eq!(offsets(&lanes.next_batch(small)), vec![0, 1]);
        let tiny = BatchLimits {
            events: 10,
            bytes: 15,
        };
        assert_eq!(
            offsets(&lanes.next_batch(tiny)),
            vec![2],
            "one event at least"
        );
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![3, 4]);
    }

    #[test]
    fn a_retry_blocks_its_lane_only_and_keeps_its_order() {
        let mut lanes = Lanes::default();
        for (o, k) in [(0, "a"), (1, "b"), (2, "a"), (3, "b")] {
            lanes.push(ticket(o, k));
        }
        let mut batch = lanes.next_batch(WIDE);
        assert_eq!(offsets(&batch), vec![0, 1]);
        let now = Instant::now();
        let failed = batch.remove(0);
        let lane_a = failed.lane;
        lanes.retry(failed, now + Duration::from_millis(50));
        lanes.push(ticket(4, "a"));
        lanes.push(ticket(5, "c"));
        // b and c flow; a waits.
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![3, 5]);
        assert!(lanes.take_due(now).is_none(), "not due yet");
        assert_eq!(lanes.next_due(), Some(now + Duration::from_millis(50)));
        let again = lanes.take_due(now + Duration::from_millis(60)).unwrap();
        assert_eq!(again.event.offset, 0);
        lanes.push(ticket(6, "a")); // still blocked while it is tried
        lanes.release(lane_a);
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![2]);
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![4]);
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![6]);
        assert!(lanes.is_empty());
    }

    /// Issue 11: a retried event whose partition was rewound meanwhile is stale
    /// when its retry is due. Dropping it must free its lane, or the events of
    /// that key read again after the rewind wait behind it forever (seen as a
    /// partition stuck for good after a producer failed fatally).
    #[test]
    fn a_stale_retry_dropped_when_due_frees_its_lane() {
        let mut lanes = Lanes::default();
        lanes.push(ticket(0, "a"));
        let mut batch = lanes.next_batch(WIDE);
        let now = Instant::now();
        lanes.retry(batch.remove(0), now);
        // The partition is rewound: the same event is read again, behind it.
        lanes.push(ticket(0, "a"));
        lanes.push(ticket(1, "b"));
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![1]);
        let stale = lanes.take_due(now).unwrap();
        lanes.dropped(&stale);
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![0]);
        assert!(lanes.is_empty());

        // A stale event that is not the lane's retried one changes nothing.
        lanes.push(ticket(2, "c"));
        let mut batch = lanes.next_batch(WIDE);
        lanes.retry(batch.remove(0), now + Duration::from_secs(60));
        lanes.push(ticket(3, "c"));
        let other = ticket(9, "c");
        lanes.dropped(&other);
        assert!(lanes.next_batch(WIDE).is_empty(), "c stays blocked");
    }

    #[test]
    fn shutdown_gives_up_blocked_lanes_and_keeps_the_others() {
        let mut lanes = Lanes::default();
        lanes.push(ticket(0, "a"));
        lanes.push(ticket(1, "b"));
        let mut batch = lanes.next_batch(WIDE);
        let b = batch.pop().unwrap();
        lanes.retry(batch.pop().unwrap(), Instant::now());
        lanes.push(b);
        lanes.push(ticket(2, "a"));
        assert_eq!(offsets(&lanes.drain_blocked()), vec![0, 2]);
        assert_eq!(offsets(&lanes.next_batch(WIDE)), vec![1]);
        assert!(lanes.is_empty());
    }

    #[test]
    fn lanes_are_stable_and_spread_over_workers() {
        let a = ticket(0, "user-42");
        let b = ticket(9, "user-42");
        assert_eq!(a.lane, b.lane);
        let spread: HashSet<usize> = (0..100)
            .map(|i| worker_of(ticket(0, &format!("k{i}")).lane, 4))
            .collect();
        assert_eq!(spread.len(), 4);
        assert_eq!(worker_of(a.lane, 1), 0);
    }
}
