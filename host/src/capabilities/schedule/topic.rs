//! The topic-kept deletion schedule (`weir run`): the pending deletions of the
//! schedule-topic partitions this host owns, as `crate::schedule_topic` reads
//! them. A partition's deletions are carried out only once it has been read up
//! to its end as of its assignment (until then a later cancel may be unread).

use object_store::ObjectStore;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    apply_to, entries_of, sort, sweep_entries, Pending, ScheduleChange, ScheduleGrants,
    ScheduledDeletion, SweepReport,
};

/// One owned partition of the schedule topic.
#[derive(Default)]
struct Partition {
    /// The partition's end when it was assigned: until it is read that far, its
    /// schedule is incomplete (a later cancel may not be known yet), so nothing
    /// of it is carried out. `None` until the end is known.
    end: Option<i64>,
    /// The next offset to read.
    next: i64,
    pending: Pending,
}

impl Partition {
    fn ready(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

/// What the host knows of one owned partition of the schedule topic.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PartitionStatus {
    pub partition: i32,
    /// Read up to its end as of assignment: its deletions are carried out.
    pub ready: bool,
    pub pending: usize,
    pub next_offset: i64,
}

#[derive(Clone, Default)]
pub struct TopicSchedule {
    partitions: Arc<Mutex<BTreeMap<i32, Partition>>>,
    pub(super) grants: ScheduleGrants,
}

impl TopicSchedule {
    pub fn new() -> Self {
        Self::default()
    }

    fn partitions(&self) -> MutexGuard<'_, BTreeMap<i32, Partition>> {
        self.partitions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This host now owns `partition`: it will be read from its start.
    pub fn assign(&self, partition: i32) {
        self.partitions().insert(partition, Partition::default());
    }

    /// This host no longer owns `partition`: forget what it held.
    pub fn revoke(&self, partition: i32) {
        self.partitions().remove(&partition);
    }

    /// Owned partitions whose end is not known yet.
    pub fn without_end(&self) -> Vec<i32> {
        self.partitions()
            .iter()
            .filter(|(_, p)| p.end.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// The watermarks of an owned partition as of its assignment.
    pub fn set_end(&self, partition: i32, low: i64, high: i64) {
        if let Some(p) = self.partitions().get_mut(&partition) {
            p.end = Some(high);
            p.next = p.next.max(low);
        }
    }

    /// Apply the record at `offset` of an owned partition (ignored otherwise).
    pub fn apply_at(&self, partition: i32, offset: i64, change: Option<&ScheduleChange>) {
        if let Some(p) = self.partitions().get_mut(&partition) {
            if let Some(change) = change {
                apply_to(&mut p.pending, change);
            }
            p.next = offset + 1;
        }
    }

    /// The consumer reached the end of an owned partition (librdkafka's
    /// partition EOF, which counts offsets that hold no record for the consumer:
    /// records the cleaner compacted away, transaction markers). Everything up to
    /// its end as of assignment has been read.
    pub fn reached_end(&self, partition: i32) {
        if let Some(p) = self.partitions().get_mut(&partition) {
            if let Some(end) = p.end {
                p.next = p.next.max(end);
            }
        }
    }

    /// What this host holds of the schedule topic, partition by partition.
    pub fn owned(&self) -> Vec<PartitionStatus> {
        self.partitions()
            .iter()
            .map(|(id, p)| PartitionStatus {
                partition: *id,
                ready: p.ready(),
                pending: p.pending.values().map(|k| k.len()).sum(),
                next_offset: p.next,
            })
            .collect()
    }

    /// Whether a deletion of `key` is scheduled for `plugin` in an owned partition.
    pub fn is_scheduled(&self, plugin: &str, key: &str) -> bool {
        self.partitions()
            .values()
            .any(|p| p.pending.get(plugin).is_some_and(|k| k.contains_key(key)))
    }

    /// Every pending deletion of the owned partitions, soonest first.
    pub fn list(&self) -> Vec<ScheduledDeletion> {
        self.entries_where(|_| true)
    }

    fn entries_where(&self, include: impl Fn(&Partition) -> bool) -> Vec<ScheduledDeletion> {
        let mut out: Vec<_> = self
            .partitions()
            .values()
            .filter(|p| include(p))
            .flat_map(|p| entries_of(&p.pending).collect::<Vec<_>>())
            .collect();
        sort(&mut out);
        out
    }

    /// Forget a carried-out deletion, unless it was rescheduled meanwhile.
    fn forget(&self, done: &ScheduledDeletion) {
        for p in self.partitions().values_mut() {
            if let Some(keys) = p.pending.get_mut(&done.plugin) {
                if keys.get(done.key.as_str()) == Some(&(done.due_ms, done.scheduled_at_ms)) {
                    keys.remove(done.key.as_str());
                }
            }
        }
    }

    /// Delete from `storage` every object of a partition read to its end whose
    /// deletion is due at `now_ms`, then `forget` it (write its tombstone) and
    /// drop it from memory. A failed deletion stays scheduled and is retried by
    /// the next sweep.
    pub async fn sweep<F, Fut, E>(
        &self,
        storage: &dyn ObjectStore,
        now_ms: i64,
        forget: F,
    ) -> SweepReport
    where
        F: FnMut(ScheduleChange) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let entries = self.entries_where(Partition::ready);
        sweep_entries(entries, &self.grants, storage, now_ms, forget, |done| {
            self.forget(done)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry;
    use super::*;
    use crate::capabilities::stores::local_store;
    use object_store::{path::Path as StorePath, ObjectStoreExt, PutPayload};

    fn no_tombstone(_: ScheduleChange) -> std::future::Ready<Result<(), String>> {
        std::future::ready(Ok(()))
    }

    #[test]
    fn an_owned_partition_holds_what_its_records_leave_pending() {
        let schedule = TopicSchedule::new();
        schedule.assign(0);
        let changes = [
            ScheduleChange::Schedule(entry("audio/a.mp3", 5)),
            ScheduleChange::Schedule(entry("audio/b/c.mp3", 7)),
            ScheduleChange::Schedule(entry("audio/a.mp3", 6)),
            ScheduleChange::Cancel {
                plugin: "p".into(),
                key: "audio/b/c.mp3".into(),
            },
        ];
        for (offset, c) in changes.iter().enumerate() {
            schedule.apply_at(0, offset as i64, Some(c));
        }
        // A partition this host does not own is ignored.
        schedule.apply_at(1, 0, Some(&changes[1]));
        assert_eq!(schedule.list(), vec![entry("audio/a.mp3", 6)]);
        assert!(schedule.is_scheduled("p", "audio/a.mp3"));
        assert!(!schedule.is_scheduled("p", "audio/b/c.mp3"));
    }

    #[tokio::test]
    async fn only_an_owned_partition_read_to_its_end_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        let schedule = TopicSchedule::new();
        schedule.grants.allow("p", Some(vec!["audio/".into()]));
        schedule.assign(2);
        schedule.apply_at(
            2,
            0,
            Some(&ScheduleChange::Schedule(entry("audio/a.mp3", 1))),
        );
        // Its end is not known yet: a later record might cancel it.
        let report = schedule.sweep(&*store, 10, no_tombstone).await;
        assert!(report.deleted.is_empty());
        schedule.set_end(2, 0, 2);
        let report = schedule.sweep(&*store, 10, no_tombstone).await;
        assert!(report.deleted.is_empty(), "offset 1 not read yet");
        schedule.apply_at(2, 1, None);
        assert!(schedule.owned()[0].ready);
        let report = schedule.sweep(&*store, 10, no_tombstone).await;
        assert_eq!(report.deleted, vec![entry("audio/a.mp3", 1)]);
        assert!(schedule.list().is_empty());
        // Revoked: forgotten; assigned again: read again from the start.
        schedule.apply_at(
            2,
            2,
            Some(&ScheduleChange::Schedule(entry("audio/b.mp3", 1))),
        );
        schedule.revoke(2);
        assert!(schedule.owned().is_empty());
        assert!(schedule.list().is_empty());
    }

    /// Issue 20: one record written to the schedule topic by anyone made the
    /// host delete `private/secret.txt` for a plugin granted only `audio/`.
    #[tokio::test]
    async fn the_sweeper_deletes_only_within_the_plugins_grants() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        for key in ["private/secret.txt", "audio/a.mp3", "other/x"] {
            store
                .put(&StorePath::from(key), PutPayload::from(vec![1u8]))
                .await
                .unwrap();
        }
        let schedule = TopicSchedule::new();
        schedule.assign(0);
        schedule.set_end(0, 0, 4);
        let forged = |plugin: &str, key: &str| {
            ScheduleChange::Schedule(ScheduledDeletion {
                plugin: plugin.into(),
                ..entry(key, 0)
            })
        };
        schedule.apply_at(0, 0, Some(&forged("p", "private/secret.txt")));
        schedule.apply_at(0, 1, Some(&forged("p", "audio/a.mp3")));
        schedule.apply_at(0, 2, Some(&forged("nostorage", "audio/a.mp3")));
        schedule.apply_at(0, 3, Some(&forged("absent", "other/x")));
        schedule.grants.allow("p", Some(vec!["audio/".into()]));
        schedule.grants.allow("nostorage", None);
        let forgotten = Mutex::new(Vec::new());
        let report = schedule
            .sweep(&*store, 10, |c| {
                forgotten.lock().unwrap().push(c);
                std::future::ready(Ok::<(), String>(()))
            })
            .await;
        assert_eq!(report.deleted, vec![entry("audio/a.mp3", 0)]);
        let refused: Vec<(&str, &str)> = report
            .refused
            .iter()
            .map(|(e, _)| (e.plugin.as_str(), e.key.as_str()))
            .collect();
        assert_eq!(
            refused,
            [("nostorage", "audio/a.mp3"), ("p", "private/secret.txt")]
        );
        assert!(report
            .refused
            .iter()
            .any(|(_, why)| why.contains("not granted storage")));
        assert_eq!(
            (report.held, report.pending),
            (1, 1),
            "a plugin never loaded here waits"
        );
        assert!(store
            .head(&StorePath::from("private/secret.txt"))
            .await
            .is_ok());
        assert!(store.head(&StorePath::from("other/x")).await.is_ok());
        assert_eq!(
            forgotten.lock().unwrap().len(),
            3,
            "refused entries are tombstoned too"
        );
    }
}
