//! Scheduled deletions: what plugins asked the host to delete later, and when.
//!
//! A plugin's `schedule-deletion` / `cancel-deletion` is a [`ScheduleChange`]
//! that belongs to its event, like a published message: it takes effect only if
//! the handler succeeds. Where it goes depends on how the host runs:
//!
//! - **topic** (`weir run`): the change is a record on the schedule topic, sent
//!   with the event's other outputs; the event's offset moves only once it is
//!   acknowledged. The hosts share the topic's partitions through a consumer
//!   group (see `schedule_topic`): the owner of a partition reads it from its
//!   start into this schedule, and once caught up carries out its deletions when
//!   due. A host that dies hands its partitions, and so its promises, to another.
//! - **store** (`weir invoke`, the runtime alone): the change is written to the
//!   object store under `_weir/scheduled-deletions/` once the event is handled,
//!   and read back from there.

use object_store::{path::Path as StorePath, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use super::stores::delete_quietly;

const SCHEDULE_DIR: &str = "_weir/scheduled-deletions";

const TOPIC_WRITES: &str =
    "a topic-kept schedule changes only through records on the schedule topic";

/// One pending deletion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScheduledDeletion {
    pub plugin: String,
    pub key: String,
    /// When it is due, milliseconds since the Unix epoch.
    pub due_ms: i64,
    pub scheduled_at_ms: i64,
}

/// A change to the schedule, made by a plugin's event or by the sweeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleChange {
    /// Delete the object when due (replacing any earlier due time).
    Schedule(ScheduledDeletion),
    /// Forget it (cancelled, or carried out).
    Cancel { plugin: String, key: String },
}

impl ScheduleChange {
    pub fn plugin(&self) -> &str {
        match self {
            ScheduleChange::Schedule(d) => &d.plugin,
            ScheduleChange::Cancel { plugin, .. } => plugin,
        }
    }

    pub fn key(&self) -> &str {
        match self {
            ScheduleChange::Schedule(d) => &d.key,
            ScheduleChange::Cancel { key, .. } => key,
        }
    }

    /// As a record of the schedule topic: key `{plugin}/{object key}` (plugin
    /// names have no `/`), value the entry as JSON, or none (a tombstone).
    pub fn record(&self) -> (String, Option<Vec<u8>>) {
        let key = format!("{}/{}", self.plugin(), self.key());
        match self {
            ScheduleChange::Schedule(d) => (
                key,
                Some(serde_json::to_vec(d).expect("a deletion serializes")),
            ),
            ScheduleChange::Cancel { .. } => (key, None),
        }
    }

    /// Read a record of the schedule topic back.
    pub fn from_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, String> {
        let key = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or("a schedule record without a UTF-8 key")?;
        let (plugin, object) = key
            .split_once('/')
            .ok_or_else(|| format!("schedule record key {key:?} is not plugin/key"))?;
        match value {
            None => Ok(ScheduleChange::Cancel {
                plugin: plugin.to_string(),
                key: object.to_string(),
            }),
            Some(v) => serde_json::from_slice(v)
                .map(ScheduleChange::Schedule)
                .map_err(|e| format!("schedule record {key:?}: {e}")),
        }
    }
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub deleted: Vec<ScheduledDeletion>,
    pub failed: Vec<(ScheduledDeletion, String)>,
    /// Due, but its plugin was never loaded on this host: kept, not carried out.
    pub held: usize,
    /// Dropped without deleting anything: the key is not one the plugin's
    /// storage grants allow (a forged record on the schedule topic, or grants
    /// narrowed since), with why.
    pub refused: Vec<(ScheduledDeletion, String)>,
    pub pending: usize,
}

/// Due times kept in memory, per plugin then object key: (due, scheduled at),
/// milliseconds since the Unix epoch. Compact, since a topic's worth of pending
/// deletions can run into the millions.
type Pending = HashMap<String, HashMap<Box<str>, (i64, i64)>>;

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

#[derive(Clone)]
pub struct DeletionSchedule {
    kind: Arc<Kind>,
    /// The storage prefixes of each plugin loaded on this host (its latest
    /// version's; `None`: storage not granted). A deletion is carried out only
    /// within them: anyone who can write the schedule topic can name any
    /// (plugin, key), so an entry is no proof of a grant.
    grants: Arc<Mutex<HashMap<String, Option<Vec<String>>>>>,
}

/// Whether a due deletion may be carried out here.
enum Authority {
    Granted,
    /// The plugin was never loaded on this host.
    Unknown,
    Refused(String),
}

enum Kind {
    Store(Arc<dyn ObjectStore>),
    Topic(Mutex<BTreeMap<i32, Partition>>),
}

fn apply_to(pending: &mut Pending, change: &ScheduleChange) {
    match change {
        ScheduleChange::Schedule(d) => {
            let keys = match pending.get_mut(&d.plugin) {
                Some(keys) => keys,
                None => pending.entry(d.plugin.clone()).or_default(),
            };
            keys.insert(d.key.as_str().into(), (d.due_ms, d.scheduled_at_ms));
        }
        ScheduleChange::Cancel { plugin, key } => {
            if let Some(keys) = pending.get_mut(plugin) {
                keys.remove(key.as_str());
            }
        }
    }
}

fn entries_of(pending: &Pending) -> impl Iterator<Item = ScheduledDeletion> + '_ {
    pending.iter().flat_map(|(plugin, keys)| {
        keys.iter().map(|(key, (due_ms, at))| ScheduledDeletion {
            plugin: plugin.clone(),
            key: key.to_string(),
            due_ms: *due_ms,
            scheduled_at_ms: *at,
        })
    })
}

/// Fold schedule records, in order, into the deletions still pending.
pub fn fold<'a>(changes: impl IntoIterator<Item = &'a ScheduleChange>) -> Vec<ScheduledDeletion> {
    let mut pending = Pending::default();
    for c in changes {
        apply_to(&mut pending, c);
    }
    let mut out: Vec<_> = entries_of(&pending).collect();
    out.sort_by(|a, b| (a.due_ms, &a.key).cmp(&(b.due_ms, &b.key)));
    out
}

impl DeletionSchedule {
    /// Kept in `store` under `_weir/scheduled-deletions/`, one small JSON object
    /// per (plugin, key): `weir invoke` and the runtime alone.
    pub fn in_store(store: Arc<dyn ObjectStore>) -> Self {
        DeletionSchedule {
            kind: Arc::new(Kind::Store(store)),
            grants: Default::default(),
        }
    }

    /// Kept as records on the schedule topic; this host holds the partitions it
    /// owns (`weir run`).
    pub fn in_topic() -> Self {
        DeletionSchedule {
            kind: Arc::new(Kind::Topic(Mutex::new(BTreeMap::new()))),
            grants: Default::default(),
        }
    }

    /// `plugin` was loaded with these storage prefixes (`None`: no storage):
    /// its due deletions are carried out within them from now on.
    pub fn allow(&self, plugin: &str, prefixes: Option<Vec<String>>) {
        self.grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(plugin.to_string(), prefixes);
    }

    fn authority(&self, entry: &ScheduledDeletion) -> Authority {
        let grants = self
            .grants
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(prefixes) = grants.get(&entry.plugin) else {
            return Authority::Unknown;
        };
        let Some(prefixes) = prefixes else {
            return Authority::Refused(format!("plugin {} is not granted storage", entry.plugin));
        };
        match crate::storage_key::authorize(&entry.key, prefixes) {
            Ok(()) => Authority::Granted,
            Err(crate::storage_key::KeyError::Invalid(why))
            | Err(crate::storage_key::KeyError::Denied(why)) => Authority::Refused(why),
        }
    }

    /// Whether changes are records sent with the event's outputs (`weir run`)
    /// rather than written by the host once the event is handled.
    pub fn is_topic(&self) -> bool {
        matches!(*self.kind, Kind::Topic(_))
    }

    fn partitions(&self) -> Option<std::sync::MutexGuard<'_, BTreeMap<i32, Partition>>> {
        match &*self.kind {
            Kind::Topic(parts) => Some(
                parts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
            Kind::Store(_) => None,
        }
    }

    /// This host now owns `partition`: it will be read from its start.
    pub fn assign(&self, partition: i32) {
        if let Some(mut parts) = self.partitions() {
            parts.insert(partition, Partition::default());
        }
    }

    /// This host no longer owns `partition`: forget what it held.
    pub fn revoke(&self, partition: i32) {
        if let Some(mut parts) = self.partitions() {
            parts.remove(&partition);
        }
    }

    /// Owned partitions whose end is not known yet.
    pub fn without_end(&self) -> Vec<i32> {
        self.partitions()
            .map(|parts| {
                parts
                    .iter()
                    .filter(|(_, p)| p.end.is_none())
                    .map(|(id, _)| *id)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The watermarks of an owned partition as of its assignment.
    pub fn set_end(&self, partition: i32, low: i64, high: i64) {
        if let Some(mut parts) = self.partitions() {
            if let Some(p) = parts.get_mut(&partition) {
                p.end = Some(high);
                p.next = p.next.max(low);
            }
        }
    }

    /// Apply the record at `offset` of an owned partition (ignored otherwise).
    pub fn apply_at(&self, partition: i32, offset: i64, change: Option<&ScheduleChange>) {
        if let Some(mut parts) = self.partitions() {
            if let Some(p) = parts.get_mut(&partition) {
                if let Some(change) = change {
                    apply_to(&mut p.pending, change);
                }
                p.next = offset + 1;
            }
        }
    }

    /// The consumer reached the end of an owned partition (librdkafka's
    /// partition EOF, which counts offsets that hold no record for the consumer:
    /// records the cleaner compacted away, transaction markers). Everything up to
    /// its end as of assignment has been read.
    pub fn reached_end(&self, partition: i32) {
        if let Some(mut parts) = self.partitions() {
            if let Some(p) = parts.get_mut(&partition) {
                if let Some(end) = p.end {
                    p.next = p.next.max(end);
                }
            }
        }
    }

    /// What this host holds of the schedule topic, partition by partition.
    pub fn owned(&self) -> Vec<PartitionStatus> {
        self.partitions()
            .map(|parts| {
                parts
                    .iter()
                    .map(|(id, p)| PartitionStatus {
                        partition: *id,
                        ready: p.ready(),
                        pending: p.pending.values().map(|k| k.len()).sum(),
                        next_offset: p.next,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Forget a carried-out deletion, unless it was rescheduled meanwhile.
    fn forget(&self, done: &ScheduledDeletion) {
        if let Some(mut parts) = self.partitions() {
            for p in parts.values_mut() {
                if let Some(keys) = p.pending.get_mut(&done.plugin) {
                    if keys.get(done.key.as_str()) == Some(&(done.due_ms, done.scheduled_at_ms)) {
                        keys.remove(done.key.as_str());
                    }
                }
            }
        }
    }

    fn entry_path(plugin: &str, key: &str) -> StorePath {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        StorePath::from(format!("{SCHEDULE_DIR}/{plugin}/{digest}.json"))
    }

    /// Write a change now (a store-kept schedule).
    pub async fn write(&self, change: &ScheduleChange) -> Result<(), String> {
        match change {
            ScheduleChange::Schedule(d) => self.schedule(d).await,
            ScheduleChange::Cancel { plugin, key } => self.cancel(plugin, key).await.map(|_| ()),
        }
    }

    /// Schedule (or reschedule) the deletion of `key` for `plugin`.
    pub async fn schedule(&self, entry: &ScheduledDeletion) -> Result<(), String> {
        match &*self.kind {
            Kind::Store(store) => {
                let body = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
                store
                    .put(
                        &Self::entry_path(&entry.plugin, &entry.key),
                        PutPayload::from(body),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
            Kind::Topic(_) => Err(TOPIC_WRITES.into()),
        }
    }

    /// Drop a scheduled deletion; whether there was one.
    pub async fn cancel(&self, plugin: &str, key: &str) -> Result<bool, String> {
        let Kind::Store(store) = &*self.kind else {
            return Err(TOPIC_WRITES.into());
        };
        let was = self.is_scheduled(plugin, key).await?;
        if was {
            delete_quietly(&**store, &Self::entry_path(plugin, key)).await?
        }
        Ok(was)
    }

    /// Whether a deletion of `key` is scheduled for `plugin`, as far as this
    /// host knows: under `weir run`, in the schedule partitions it owns.
    pub async fn is_scheduled(&self, plugin: &str, key: &str) -> Result<bool, String> {
        match &*self.kind {
            Kind::Store(store) => match store.head(&Self::entry_path(plugin, key)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(e.to_string()),
            },
            Kind::Topic(parts) => Ok(parts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .any(|p| p.pending.get(plugin).is_some_and(|k| k.contains_key(key)))),
        }
    }

    /// Every pending deletion this host knows of, soonest first.
    pub async fn list(&self) -> Result<Vec<ScheduledDeletion>, String> {
        self.entries_where(|_| true).await
    }

    /// The pending deletions this host may carry out: all of a store-kept
    /// schedule; those of the owned partitions read up to their end.
    async fn entries_where(
        &self,
        include: impl Fn(&Partition) -> bool,
    ) -> Result<Vec<ScheduledDeletion>, String> {
        let mut out: Vec<ScheduledDeletion> = match &*self.kind {
            Kind::Store(_) => self.entries().await?.into_iter().map(|(_, e)| e).collect(),
            Kind::Topic(parts) => parts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .values()
                .filter(|p| include(p))
                .flat_map(|p| entries_of(&p.pending).collect::<Vec<_>>())
                .collect(),
        };
        out.sort_by(|a, b| (a.due_ms, &a.key).cmp(&(b.due_ms, &b.key)));
        Ok(out)
    }

    /// Every entry of a store-kept schedule with its path.
    async fn entries(&self) -> Result<Vec<(StorePath, ScheduledDeletion)>, String> {
        use futures::TryStreamExt;
        let Kind::Store(store) = &*self.kind else {
            return Ok(Vec::new());
        };
        let prefix = StorePath::from(SCHEDULE_DIR);
        let metas: Vec<_> = store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for meta in metas {
            let bytes = match store.get(&meta.location).await {
                Ok(r) => r.bytes().await.map_err(|e| e.to_string())?,
                Err(object_store::Error::NotFound { .. }) => continue, // swept meanwhile
                Err(e) => return Err(e.to_string()),
            };
            match serde_json::from_slice::<ScheduledDeletion>(&bytes) {
                Ok(entry) => out.push((meta.location, entry)),
                Err(e) => {
                    tracing::warn!(entry = %meta.location, error = %e, "ignoring an unreadable scheduled-deletion entry")
                }
            }
        }
        Ok(out)
    }

    /// Delete from `storage` every object whose deletion is due at `now_ms`, then
    /// forget it with `forget` (for a store-kept schedule: remove its entry). A
    /// failed deletion stays scheduled and is retried by the next sweep.
    pub async fn sweep_with<F, Fut>(
        &self,
        storage: &dyn ObjectStore,
        now_ms: i64,
        mut forget: F,
    ) -> Result<SweepReport, String>
    where
        F: FnMut(ScheduleChange) -> Fut,
        Fut: std::future::Future<Output = Result<(), String>>,
    {
        let mut report = SweepReport::default();
        for entry in self.entries_where(Partition::ready).await? {
            if entry.due_ms > now_ms {
                report.pending += 1;
                continue;
            }
            let change = ScheduleChange::Cancel {
                plugin: entry.plugin.clone(),
                key: entry.key.clone(),
            };
            match self.authority(&entry) {
                Authority::Granted => {}
                Authority::Unknown => {
                    report.held += 1;
                    report.pending += 1;
                    continue;
                }
                Authority::Refused(why) => {
                    if let Err(e) = forget(change).await {
                        report.failed.push((entry, e));
                        continue;
                    }
                    self.forget(&entry);
                    tracing::error!(
                        plugin = %entry.plugin,
                        key = %entry.key,
                        "scheduled deletion refused and dropped, nothing deleted: {why} \
                         (a record on the schedule topic that this plugin did not write?)"
                    );
                    report.refused.push((entry, why));
                    continue;
                }
            }
            let target = StorePath::from(entry.key.as_str());
            let done = match delete_quietly(storage, &target).await {
                Ok(()) => forget(change).await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => {
                    self.forget(&entry);
                    tracing::info!(plugin = %entry.plugin, key = %entry.key, "scheduled deletion carried out");
                    report.deleted.push(entry);
                }
                Err(e) => {
                    tracing::warn!(plugin = %entry.plugin, key = %entry.key, error = %e, "scheduled deletion failed; will retry");
                    report.failed.push((entry, e));
                }
            }
        }
        Ok(report)
    }

    /// Sweep a store-kept schedule: the objects live in the same store.
    pub async fn sweep(&self, now_ms: i64) -> Result<SweepReport, String> {
        let Kind::Store(store) = &*self.kind else {
            return Err("this schedule is swept by the host that keeps its records".into());
        };
        let store = store.clone();
        self.sweep_with(&*store, now_ms, |change| {
            let schedule = self.clone();
            async move { schedule.write(&change).await }
        })
        .await
    }

    /// Sweep a store-kept schedule every `interval` until the task is dropped.
    pub fn spawn_sweeper(self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Err(e) = self.sweep(super::stores::now_ms()).await {
                    tracing::warn!(error = %e, "scheduled-deletion sweep failed; will retry");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::storage::local_store;

    fn entry(key: &str, due_ms: i64) -> ScheduledDeletion {
        ScheduledDeletion {
            plugin: "p".into(),
            key: key.into(),
            due_ms,
            scheduled_at_ms: 0,
        }
    }

    #[tokio::test]
    async fn a_store_kept_schedule_persists_and_sweeps_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        store
            .put(&StorePath::from("audio/a.mp3"), PutPayload::from(vec![1u8]))
            .await
            .unwrap();
        let schedule = DeletionSchedule::in_store(store.clone());
        schedule
            .schedule(&entry("audio/a.mp3", 1_000))
            .await
            .unwrap();
        schedule
            .schedule(&entry("audio/b.mp3", 9_000))
            .await
            .unwrap();
        // Rescheduling replaces, it does not duplicate.
        schedule
            .schedule(&entry("audio/a.mp3", 2_000))
            .await
            .unwrap();

        // A new schedule over the same directory (a restarted host) sees both.
        let restarted = DeletionSchedule::in_store(local_store(dir.path()).unwrap());
        restarted.allow("p", Some(vec!["audio/".into()]));
        let pending = restarted.list().await.unwrap();
        assert_eq!(
            pending,
            vec![entry("audio/a.mp3", 2_000), entry("audio/b.mp3", 9_000)]
        );

        let report = restarted.sweep(5_000).await.unwrap();
        assert_eq!(report.deleted, vec![entry("audio/a.mp3", 2_000)]);
        assert_eq!(report.pending, 1);
        assert!(store.head(&StorePath::from("audio/a.mp3")).await.is_err());
        assert_eq!(restarted.list().await.unwrap().len(), 1);
        assert!(restarted.cancel("p", "audio/b.mp3").await.unwrap());
        assert!(restarted.list().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn records_round_trip_and_rebuild_the_same_schedule() {
        let changes = [
            ScheduleChange::Schedule(entry("audio/a.mp3", 5)),
            ScheduleChange::Schedule(entry("audio/b/c.mp3", 7)),
            ScheduleChange::Schedule(entry("audio/a.mp3", 6)),
            ScheduleChange::Cancel {
                plugin: "p".into(),
                key: "audio/b/c.mp3".into(),
            },
        ];
        let schedule = DeletionSchedule::in_topic();
        schedule.assign(0);
        let mut back = Vec::new();
        for (offset, c) in changes.iter().enumerate() {
            let (key, value) = c.record();
            let change =
                ScheduleChange::from_record(Some(key.as_bytes()), value.as_deref()).unwrap();
            assert_eq!(&change, c);
            schedule.apply_at(0, offset as i64, Some(&change));
            back.push(change);
        }
        // A partition this host does not own is ignored.
        schedule.apply_at(1, 0, Some(&changes[1]));
        assert_eq!(fold(&back), vec![entry("audio/a.mp3", 6)]);
        assert_eq!(
            schedule.list().await.unwrap(),
            vec![entry("audio/a.mp3", 6)]
        );
        assert!(schedule.is_scheduled("p", "audio/a.mp3").await.unwrap());
        assert!(!schedule.is_scheduled("p", "audio/b/c.mp3").await.unwrap());
        assert!(ScheduleChange::from_record(Some(b"nokey"), None).is_err());
    }

    #[tokio::test]
    async fn only_an_owned_partition_read_to_its_end_is_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        let schedule = DeletionSchedule::in_topic();
        schedule.allow("p", Some(vec!["audio/".into()]));
        schedule.assign(2);
        schedule.apply_at(
            2,
            0,
            Some(&ScheduleChange::Schedule(entry("audio/a.mp3", 1))),
        );
        let forget = |_c: ScheduleChange| async { Ok::<(), String>(()) };
        // Its end is not known yet: a later record might cancel it.
        let report = schedule.sweep_with(&*store, 10, forget).await.unwrap();
        assert!(report.deleted.is_empty());
        schedule.set_end(2, 0, 2);
        let report = schedule.sweep_with(&*store, 10, forget).await.unwrap();
        assert!(report.deleted.is_empty(), "offset 1 not read yet");
        schedule.apply_at(2, 1, None);
        assert!(schedule.owned()[0].ready);
        let report = schedule.sweep_with(&*store, 10, forget).await.unwrap();
        assert_eq!(report.deleted, vec![entry("audio/a.mp3", 1)]);
        assert!(schedule.list().await.unwrap().is_empty());
        // Revoked: forgotten; assigned again: read again from the start.
        schedule.apply_at(
            2,
            2,
            Some(&ScheduleChange::Schedule(entry("audio/b.mp3", 1))),
        );
        schedule.revoke(2);
        assert!(schedule.owned().is_empty());
        assert!(schedule.list().await.unwrap().is_empty());
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
        let schedule = DeletionSchedule::in_topic();
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
        schedule.allow("p", Some(vec!["audio/".into()]));
        schedule.allow("nostorage", None);
        let forgotten = Mutex::new(Vec::new());
        let report = schedule
            .sweep_with(&*store, 10, |c| {
                forgotten.lock().unwrap().push(c);
                async { Ok::<(), String>(()) }
            })
            .await
            .unwrap();
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
