//! Scheduled deletions: what plugins asked the host to delete later, and when.
//!
//! A plugin's `schedule-deletion` / `cancel-deletion` is a [`ScheduleChange`]
//! that belongs to its event, like a published message: it takes effect only if
//! the handler succeeds. Where it is kept depends on how the host runs, one
//! module each:
//!
//! - [`topic`] (`weir run`): the change is a record on the schedule topic, sent
//!   with the event's other outputs; the event's offset moves only once it is
//!   acknowledged. The hosts share the topic's partitions through a consumer
//!   group (`crate::schedule_topic` reads them into a [`TopicSchedule`]); the
//!   owner of a partition, once caught up, carries out its deletions when due.
//!   A host that dies hands its partitions, and so its promises, to another.
//! - [`store`] (`weir invoke`, the runtime alone): the change is written to the
//!   object store under `_weir/scheduled-deletions/` once the event is handled,
//!   and read back from there.
//!
//! This module holds what both share: the entries and their record format, the
//! grants a due deletion is checked against, and the sweep.

pub mod store;
pub mod topic;

use object_store::{path::Path as StorePath, ObjectStore};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::stores::delete_quietly;
pub use store::StoreSchedule;
pub use topic::{PartitionStatus, TopicSchedule};

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

/// Why a schedule could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("cannot {action} the scheduled-deletion entry {path}: {source}")]
    Entry {
        action: &'static str,
        path: StorePath,
        source: object_store::Error,
    },
    #[error("cannot list the scheduled deletions under {prefix}: {source}")]
    List {
        prefix: StorePath,
        source: object_store::Error,
    },
    #[error("a topic-kept schedule changes only through records on the schedule topic")]
    TopicKept,
}

/// Why a record of the schedule topic is not a schedule change.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("a schedule record without a UTF-8 key")]
    KeyNotUtf8,
    #[error("schedule record key {0:?} is not plugin/key")]
    KeyShape(String),
    #[error("schedule record {key:?}: {why}")]
    Value { key: String, why: String },
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
    pub fn from_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, RecordError> {
        let key = key
            .and_then(|k| std::str::from_utf8(k).ok())
            .ok_or(RecordError::KeyNotUtf8)?;
        let (plugin, object) = key
            .split_once('/')
            .ok_or_else(|| RecordError::KeyShape(key.to_string()))?;
        match value {
            None => Ok(ScheduleChange::Cancel {
                plugin: plugin.to_string(),
                key: object.to_string(),
            }),
            Some(v) => serde_json::from_slice(v)
                .map(ScheduleChange::Schedule)
                .map_err(|e| RecordError::Value {
                    key: key.to_string(),
                    why: e.to_string(),
                }),
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
pub(crate) type Pending = HashMap<String, HashMap<Box<str>, (i64, i64)>>;

pub(crate) fn apply_to(pending: &mut Pending, change: &ScheduleChange) {
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

pub(crate) fn entries_of(pending: &Pending) -> impl Iterator<Item = ScheduledDeletion> + '_ {
    pending.iter().flat_map(|(plugin, keys)| {
        keys.iter().map(|(key, (due_ms, at))| ScheduledDeletion {
            plugin: plugin.clone(),
            key: key.to_string(),
            due_ms: *due_ms,
            scheduled_at_ms: *at,
        })
    })
}

/// Soonest first, then by key.
fn sort(entries: &mut [ScheduledDeletion]) {
    entries.sort_by(|a, b| (a.due_ms, &a.key).cmp(&(b.due_ms, &b.key)));
}

/// Fold schedule records, in order, into the deletions still pending.
pub fn fold<'a>(changes: impl IntoIterator<Item = &'a ScheduleChange>) -> Vec<ScheduledDeletion> {
    let mut pending = Pending::default();
    for c in changes {
        apply_to(&mut pending, c);
    }
    let mut out: Vec<_> = entries_of(&pending).collect();
    sort(&mut out);
    out
}

/// The storage prefixes of each plugin loaded on this host (its latest
/// version's; `None`: storage not granted). A deletion is carried out only
/// within them: anyone who can write the schedule topic can name any
/// (plugin, key), so an entry is no proof of a grant.
#[derive(Clone, Default)]
struct ScheduleGrants(Arc<Mutex<HashMap<String, Option<Vec<String>>>>>);

/// Whether a due deletion may be carried out here.
enum Authority {
    Granted,
    /// The plugin was never loaded on this host.
    Unknown,
    Refused(String),
}

impl ScheduleGrants {
    fn allow(&self, plugin: &str, prefixes: Option<Vec<String>>) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(plugin.to_string(), prefixes);
    }

    fn authority(&self, entry: &ScheduledDeletion) -> Authority {
        let grants = self
            .0
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
}

/// The deletion schedule of one host, kept in one of two places.
#[derive(Clone)]
pub enum DeletionSchedule {
    Store(StoreSchedule),
    Topic(TopicSchedule),
}

impl DeletionSchedule {
    /// Kept in `store` under `_weir/scheduled-deletions/`, one small JSON object
    /// per (plugin, key): `weir invoke` and the runtime alone.
    pub fn in_store(store: Arc<dyn ObjectStore>) -> Self {
        DeletionSchedule::Store(StoreSchedule::new(store))
    }

    /// Kept as records on the schedule topic; this host holds the partitions it
    /// owns (`weir run`).
    pub fn in_topic() -> Self {
        DeletionSchedule::Topic(TopicSchedule::new())
    }

    fn grants(&self) -> &ScheduleGrants {
        match self {
            DeletionSchedule::Store(s) => &s.grants,
            DeletionSchedule::Topic(t) => &t.grants,
        }
    }

    /// `plugin` was loaded with these storage prefixes (`None`: no storage):
    /// its due deletions are carried out within them from now on.
    pub fn allow(&self, plugin: &str, prefixes: Option<Vec<String>>) {
        self.grants().allow(plugin, prefixes)
    }

    /// The store-kept schedule, under `weir invoke`.
    pub fn store(&self) -> Option<&StoreSchedule> {
        match self {
            DeletionSchedule::Store(s) => Some(s),
            DeletionSchedule::Topic(_) => None,
        }
    }

    /// The topic-kept schedule, under `weir run`.
    pub fn topic(&self) -> Option<&TopicSchedule> {
        match self {
            DeletionSchedule::Topic(t) => Some(t),
            DeletionSchedule::Store(_) => None,
        }
    }

    /// Whether changes are records sent with the event's outputs (`weir run`)
    /// rather than written by the host once the event is handled.
    pub fn is_topic(&self) -> bool {
        self.topic().is_some()
    }

    /// Write a change now (a store-kept schedule; a topic-kept one refuses).
    pub async fn write(&self, change: &ScheduleChange) -> Result<(), ScheduleError> {
        match self {
            DeletionSchedule::Store(s) => s.write(change).await,
            DeletionSchedule::Topic(_) => Err(ScheduleError::TopicKept),
        }
    }

    /// Whether a deletion of `key` is scheduled for `plugin`, as far as this
    /// host knows: under `weir run`, in the schedule partitions it owns.
    pub async fn is_scheduled(&self, plugin: &str, key: &str) -> Result<bool, ScheduleError> {
        match self {
            DeletionSchedule::Store(s) => s.is_scheduled(plugin, key).await,
            DeletionSchedule::Topic(t) => Ok(t.is_scheduled(plugin, key)),
        }
    }

    /// Every pending deletion this host knows of, soonest first.
    pub async fn list(&self) -> Result<Vec<ScheduledDeletion>, ScheduleError> {
        match self {
            DeletionSchedule::Store(s) => s.list().await,
            DeletionSchedule::Topic(t) => Ok(t.list()),
        }
    }

    /// What this host holds of the schedule topic, partition by partition
    /// (nothing for a store-kept schedule).
    pub fn owned(&self) -> Vec<PartitionStatus> {
        self.topic().map(TopicSchedule::owned).unwrap_or_default()
    }
}

/// Carry out the due ones of `entries` (the deletions this host may carry out,
/// soonest first): delete each object from `storage` within its plugin's
/// grants, then `forget` it (write its cancellation) and `done` (drop it from
/// memory). A refused entry is forgotten without deleting anything; a failed
/// deletion stays scheduled and is retried by the next sweep.
async fn sweep_entries<F, Fut, E>(
    entries: Vec<ScheduledDeletion>,
    grants: &ScheduleGrants,
    storage: &dyn ObjectStore,
    now_ms: i64,
    mut forget: F,
    done: impl Fn(&ScheduledDeletion),
) -> SweepReport
where
    F: FnMut(ScheduleChange) -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let mut report = SweepReport::default();
    for entry in entries {
        if entry.due_ms > now_ms {
            report.pending += 1;
            continue;
        }
        let change = ScheduleChange::Cancel {
            plugin: entry.plugin.clone(),
            key: entry.key.clone(),
        };
        match grants.authority(&entry) {
            Authority::Granted => {}
            Authority::Unknown => {
                report.held += 1;
                report.pending += 1;
                continue;
            }
            Authority::Refused(why) => {
                if let Err(e) = forget(change).await {
                    report.failed.push((entry, e.to_string()));
                    continue;
                }
                done(&entry);
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
        let result = match delete_quietly(storage, &target).await {
            Ok(()) => forget(change).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match result {
            Ok(()) => {
                done(&entry);
                tracing::info!(plugin = %entry.plugin, key = %entry.key, "scheduled deletion carried out");
                report.deleted.push(entry);
            }
            Err(e) => {
                tracing::warn!(plugin = %entry.plugin, key = %entry.key, error = %e, "scheduled deletion failed; will retry");
                report.failed.push((entry, e));
            }
        }
    }
    report
}

#[cfg(test)]
pub(crate) fn entry(key: &str, due_ms: i64) -> ScheduledDeletion {
    ScheduledDeletion {
        plugin: "p".into(),
        key: key.into(),
        due_ms,
        scheduled_at_ms: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_fold_into_what_is_pending() {
        let changes = [
            ScheduleChange::Schedule(entry("audio/a.mp3", 5)),
            ScheduleChange::Schedule(entry("audio/b/c.mp3", 7)),
            ScheduleChange::Schedule(entry("audio/a.mp3", 6)),
            ScheduleChange::Cancel {
                plugin: "p".into(),
                key: "audio/b/c.mp3".into(),
            },
        ];
        let back: Vec<ScheduleChange> = changes
            .iter()
            .map(|c| {
                let (key, value) = c.record();
                ScheduleChange::from_record(Some(key.as_bytes()), value.as_deref()).unwrap()
            })
            .collect();
        assert_eq!(back, changes);
        assert_eq!(fold(&back), vec![entry("audio/a.mp3", 6)]);
        assert_eq!(
            ScheduleChange::from_record(Some(b"nokey"), None),
            Err(RecordError::KeyShape("nokey".into()))
        );
        assert_eq!(
            ScheduleChange::from_record(Some(&[0xff, b'/']), None),
            Err(RecordError::KeyNotUtf8)
        );
    }
}
