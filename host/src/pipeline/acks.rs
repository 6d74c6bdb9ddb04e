//! Acknowledgements: what each event in flight still waits for.
//!
//! An event is *finished* when the plugin is done with it (handled, or given up
//! and dead-lettered) and the broker acknowledged every record it produced (its
//! outputs, its schedule records, or its dead letter). Nothing waits for that:
//! the worker moves on as soon as the records are handed to the producer, and the
//! delivery reports count down here. The offsets stage reads the result.
//!
//! A failed delivery marks the event *failed* and raises its partition's flag:
//! the fetch stage then rewinds that partition to its first unfinished event.
//! An event of an older *generation* (its partition was rewound or revoked since
//! it was fetched) is stale: workers drop it, and its acknowledgements count for
//! nothing.

use crate::event::EventRecord;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

const PENDING: u8 = 0;
const FINISHED: u8 = 1;
const FAILED: u8 = 2;
const ABANDONED: u8 = 3;

/// What one partition's events share: its generation and its failure flag.
#[derive(Debug, Default)]
pub struct PartitionSignal {
    /// Bumped when the partition is rewound or revoked.
    generation: AtomicU64,
    /// An output of one of its events failed: rewind.
    failed: AtomicBool,
    /// Why, for the log.
    reason: Mutex<Option<String>>,
    /// Bytes of records held by the pipeline's exactly-once events, all
    /// partitions together (shared with the offset book, which counts them
    /// in flight: a plugin cannot make the host hold more than
    /// `max_in_flight_bytes` of outputs behind a retrying event).
    held: Arc<AtomicUsize>,
}

impl PartitionSignal {
    /// A partition's signal whose events' held records count in `held`.
    pub fn counting_held(held: Arc<AtomicUsize>) -> Self {
        PartitionSignal {
            held,
            ..PartitionSignal::default()
        }
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Make every event fetched so far stale.
    pub fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    /// Whether a delivery failed, and why; clears the flag.
    pub fn take_failure(&self) -> Option<String> {
        if !self.failed.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(
            self.reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
                .unwrap_or_else(|| "an output was not acknowledged".into()),
        )
    }

    fn fail(&self, reason: String) {
        let mut slot = self.reason.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(reason);
        }
        drop(slot);
        self.failed.store(true, Ordering::Release);
    }
}

/// A record an exactly-once event holds until its offset is sent with a
/// transaction: owned, so it can wait in the event's acknowledgement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldRecord {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    /// `None`: a tombstone.
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
}

impl HeldRecord {
    /// Bytes it holds (for the bound on what is held).
    pub fn size(&self) -> usize {
        self.topic.len()
            + self.key.as_ref().map_or(0, Vec::len)
            + self.payload.as_ref().map_or(0, Vec::len)
            + self
                .headers
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// The acknowledgement state of one event.
#[derive(Debug)]
pub struct EventAck {
    offset: i64,
    bytes: usize,
    /// 1 while the plugin has the event, plus one per record not yet acknowledged.
    remaining: AtomicU32,
    state: AtomicU8,
    partition: Arc<PartitionSignal>,
    /// The partition's generation when the event was fetched.
    generation: u64,
    /// Exactly-once: the records the event produced, held until its offset is
    /// next in its partition (then sent into the open transaction).
    held: Mutex<Vec<HeldRecord>>,
    /// Their bytes, counted in the partition's `held` until sent or dropped.
    held_bytes: AtomicUsize,
}

impl EventAck {
    pub fn new(offset: i64, bytes: usize, partition: Arc<PartitionSignal>) -> Arc<EventAck> {
        Arc::new(EventAck {
            offset,
            bytes,
            remaining: AtomicU32::new(1),
            state: AtomicU8::new(PENDING),
            generation: partition.generation(),
            partition,
            held: Mutex::new(Vec::new()),
            held_bytes: AtomicUsize::new(0),
        })
    }

    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// Payload, key and header bytes (for the in-flight bound).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `n` more records will be acknowledged for this event (call before sending them).
    pub fn expect(&self, n: u32) {
        self.remaining.fetch_add(n, Ordering::AcqRel);
    }

    /// Exactly-once: keep `records` with the event (call before [`EventAck::released`]).
    pub fn hold(&self, records: impl IntoIterator<Item = HeldRecord>) {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let before = held.len();
        held.extend(records);
        let bytes: usize = held[before..].iter().map(HeldRecord::size).sum();
        self.held_bytes.fetch_add(bytes, Ordering::AcqRel);
        self.partition.held.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The records held (once finished, by the transaction's sender).
    pub fn take_held(&self) -> Vec<HeldRecord> {
        let records =
            std::mem::take(&mut *self.held.lock().unwrap_or_else(PoisonError::into_inner));
        self.release_held();
        records
    }

    fn release_held(&self) {
        // At-least-once events never hold: no shared counter to touch.
        if self.held_bytes.load(Ordering::Acquire) == 0 {
            return;
        }
        let bytes = self.held_bytes.swap(0, Ordering::AcqRel);
        self.partition.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// The plugin is done with the event (its records, if any, were handed over).
    pub fn released(&self) {
        self.count_down();
    }

    /// The broker acknowledged one of the event's records.
    pub fn delivered(&self) {
        self.count_down();
    }

    /// One of the event's records could not be delivered: the event is failed
    /// and its partition is rewound to it (or to an earlier unfinished event).
    pub fn failed(&self, reason: String) {
        if self
            .state
            .compare_exchange(PENDING, FAILED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.partition.fail(reason);
        }
    }

    /// Given up without being finished (shutdown while it waited for a retry):
    /// its offset is not committed, so it is read again by the next owner.
    pub fn abandon(&self) {
        let _ =
            self.state
                .compare_exchange(PENDING, ABANDONED, Ordering::AcqRel, Ordering::Acquire);
    }

    fn count_down(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ =
                self.state
                    .compare_exchange(PENDING, FINISHED, Ordering::AcqRel, Ordering::Acquire);
        }
    }

    /// Its partition was rewound or revoked since it was fetched: nothing of it
    /// may be sent any more (the partition's next owner handles it again).
    pub fn is_stale(&self) -> bool {
        self.partition.generation() != self.generation
    }

    pub fn is_finished(&self) -> bool {
        self.state.load(Ordering::Acquire) == FINISHED
    }

    /// Finished, failed or abandoned: nothing more will happen to it.
    pub fn is_settled(&self) -> bool {
        self.state.load(Ordering::Acquire) != PENDING
    }
}

impl Drop for EventAck {
    /// A stale event's held records (its partition was rewound or revoked)
    /// are never sent: they stop counting when it goes.
    fn drop(&mut self) {
        self.release_held();
    }
}

/// An event in flight: the record, its acknowledgement, and where it stands.
#[derive(Debug)]
pub struct Ticket {
    pub event: EventRecord,
    pub ack: Arc<EventAck>,
    pub partition: Arc<PartitionSignal>,
    /// Attempts made so far.
    pub attempts: u32,
    /// Hash of (partition, key): events with equal lanes are handled in order.
    pub lane: u64,
    /// How many times this event's records failed to be delivered (its
    /// partition was rewound to it), and the last reason.
    pub delivery_failures: u32,
    pub delivery_error: Option<Arc<str>>,
}

impl Ticket {
    /// Its partition was rewound or revoked since: drop it.
    pub fn is_stale(&self) -> bool {
        self.ack.is_stale()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_once_released_and_every_record_delivered() {
        let p = Arc::new(PartitionSignal::default());
        let ack = EventAck::new(7, 10, p.clone());
        ack.expect(2);
        ack.released();
        assert!(!ack.is_finished());
        ack.delivered();
        assert!(!ack.is_finished());
        ack.delivered();
        assert!(ack.is_finished() && ack.is_settled());
        assert!(p.take_failure().is_none());
    }

    #[test]
    fn a_failed_delivery_fails_the_event_and_flags_the_partition_once() {
        let p = Arc::new(PartitionSignal::default());
        let ack = EventAck::new(1, 0, p.clone());
        ack.expect(2);
        ack.released();
        ack.failed("timed out".into());
        ack.delivered();
        ack.delivered();
        assert!(!ack.is_finished(), "a failed event never finishes");
        assert!(ack.is_settled());
        assert_eq!(p.take_failure().as_deref(), Some("timed out"));
        assert!(p.take_failure().is_none(), "the flag is cleared when taken");
    }

    #[test]
    fn generations_make_earlier_tickets_stale() {
        let p = Arc::new(PartitionSignal::default());
        let ticket = Ticket {
            event: EventRecord::for_test("t", 0, 0),
            ack: EventAck::new(0, 0, p.clone()),
            partition: p.clone(),
            attempts: 0,
            lane: 0,
            delivery_failures: 0,
            delivery_error: None,
        };
        assert!(!ticket.is_stale());
        p.bump();
        assert!(ticket.is_stale() && ticket.ack.is_stale());
    }
}
