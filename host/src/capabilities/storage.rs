//! The `storage` capability: object storage scoped to granted key prefixes, and
//! scheduled deletions that survive restarts.
//!
//! The backend is any `object_store::ObjectStore` (a local directory by default).
//! Scheduled deletions are kept in that same store under `_weir/scheduled-deletions/`,
//! one small JSON object per (plugin, key), so they live as long as the data they
//! concern and a restarted host (or another replica) finds them.

use super::cache::describe;
use super::{not_granted, CallRecord};
use crate::runtime::bindings::weir::plugin::storage::{DeletionTime, Host, ObjectInfo};
use crate::runtime::bindings::CapabilityError;
use crate::runtime::HostState;
use crate::storage_key::{self, KeyError, RESERVED_PREFIX};
use futures::TryStreamExt;
use object_store::{path::Path as StorePath, ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Largest object a plugin may put.
pub const MAX_OBJECT_LEN: usize = 64 * 1024 * 1024;

const SCHEDULE_DIR: &str = "_weir/scheduled-deletions";

/// A local directory as an object store (created if missing).
pub fn local_store(dir: &std::path::Path) -> Result<Arc<dyn ObjectStore>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create storage directory {}: {e}", dir.display()))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
        .map_err(|e| format!("cannot use storage directory {}: {e}", dir.display()))?;
    Ok(Arc::new(store))
}

/// One pending deletion.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScheduledDeletion {
    pub plugin: String,
    pub key: String,
    /// When it is due, milliseconds since the Unix epoch.
    pub due_ms: i64,
    pub scheduled_at_ms: i64,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    pub deleted: Vec<ScheduledDeletion>,
    pub failed: Vec<(ScheduledDeletion, String)>,
    pub pending: usize,
}

/// The persisted schedule of deletions, and the sweep that carries them out.
#[derive(Clone)]
pub struct DeletionSchedule {
    store: Arc<dyn ObjectStore>,
}

impl DeletionSchedule {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        DeletionSchedule { store }
    }

    fn entry_path(plugin: &str, key: &str) -> StorePath {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        StorePath::from(format!("{SCHEDULE_DIR}/{plugin}/{digest}.json"))
    }

    /// Schedule (or reschedule) the deletion of `key` for `plugin`.
    pub async fn schedule(&self, entry: &ScheduledDeletion) -> Result<(), String> {
        let body = serde_json::to_vec(entry).map_err(|e| e.to_string())?;
        self.store
            .put(
                &Self::entry_path(&entry.plugin, &entry.key),
                PutPayload::from(body),
            )
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Drop a scheduled deletion; whether there was one.
    pub async fn cancel(&self, plugin: &str, key: &str) -> Result<bool, String> {
        let path = Self::entry_path(plugin, key);
        match self.store.head(&path).await {
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.to_string()),
            Ok(_) => delete_quietly(&*self.store, &path).await.map(|_| true),
        }
    }

    /// Every pending deletion, soonest first.
    pub async fn list(&self) -> Result<Vec<ScheduledDeletion>, String> {
        Ok(self.entries().await?.into_iter().map(|(_, e)| e).collect())
    }

    /// Every entry with its path, soonest due first.
    async fn entries(&self) -> Result<Vec<(StorePath, ScheduledDeletion)>, String> {
        let prefix = StorePath::from(SCHEDULE_DIR);
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for meta in metas {
            let bytes = match self.store.get(&meta.location).await {
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
        out.sort_by(|(_, a), (_, b)| (a.due_ms, &a.key).cmp(&(b.due_ms, &b.key)));
        Ok(out)
    }

    /// Delete every object whose deletion is due at `now_ms`, then its entry.
    /// A failed deletion stays scheduled and is retried by the next sweep.
    pub async fn sweep(&self, now_ms: i64) -> Result<SweepReport, String> {
        let mut report = SweepReport::default();
        for (entry_path, entry) in self.entries().await? {
            if entry.due_ms > now_ms {
                report.pending += 1;
                continue;
            }
            let target = StorePath::from(entry.key.as_str());
            match delete_quietly(&*self.store, &target).await {
                Ok(()) => {
                    delete_quietly(&*self.store, &entry_path).await?;
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

    /// Sweep every `interval` until the task is dropped.
    pub fn spawn_sweeper(self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Err(e) = self.sweep(now_ms()).await {
                    tracing::warn!(error = %e, "scheduled-deletion sweep failed; will retry");
                }
            }
        })
    }
}

async fn delete_quietly(store: &dyn ObjectStore, path: &StorePath) -> Result<(), String> {
    match store.delete(path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn unavailable(e: impl std::fmt::Display) -> CapabilityError {
    CapabilityError::Unavailable(format!("storage backend: {e}"))
}

impl HostState {
    fn granted_prefixes(&self) -> Result<&[String], CapabilityError> {
        self.grants
            .storage_prefixes
            .as_deref()
            .ok_or_else(|| CapabilityError::Denied(not_granted("storage")))
    }

    /// The store path of a plugin key, if the plugin may touch it.
    fn object_path(&self, key: &str) -> Result<StorePath, CapabilityError> {
        let prefixes = self.granted_prefixes()?;
        storage_key::authorize(key, prefixes).map_err(key_error)?;
        debug_assert!(!key.starts_with(RESERVED_PREFIX));
        Ok(StorePath::from(key))
    }

    fn record_storage(&mut self, op: &'static str, target: &str, result: String) {
        self.record(|| CallRecord {
            capability: "storage",
            op,
            target: target.to_string(),
            result,
        });
    }
}

fn key_error(e: KeyError) -> CapabilityError {
    match e {
        KeyError::Invalid(m) => CapabilityError::Invalid(m),
        KeyError::Denied(m) => CapabilityError::Denied(m),
    }
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, CapabilityError> {
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(path) => match self.backends.storage.get(&path).await {
                Ok(r) => r
                    .bytes()
                    .await
                    .map(|b| Some(b.to_vec()))
                    .map_err(unavailable),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(unavailable(e)),
            },
        };
        self.record_storage(
            "get",
            &key,
            describe(&result, |v| match v {
                Some(b) => format!("{} bytes", b.len()),
                None => "not found".into(),
            }),
        );
        result
    }

    async fn put(&mut self, key: String, data: Vec<u8>) -> Result<(), CapabilityError> {
        let len = data.len();
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(_) if len > MAX_OBJECT_LEN => Err(CapabilityError::Invalid(format!(
                "the object is {len} bytes; the limit is {MAX_OBJECT_LEN}"
            ))),
            Ok(path) => self
                .backends
                .storage
                .put(&path, PutPayload::from(data))
                .await
                .map(|_| ())
                .map_err(unavailable),
        };
        self.record_storage("put", &key, describe(&result, |_| format!("{len} bytes")));
        result
    }

    async fn delete(&mut self, key: String) -> Result<(), CapabilityError> {
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(path) => delete_quietly(&*self.backends.storage, &path)
                .await
                .map_err(unavailable),
        };
        self.record_storage("delete", &key, describe(&result, |_| "deleted".into()));
        result
    }

    async fn list(&mut self, prefix: String) -> Result<Vec<ObjectInfo>, CapabilityError> {
        let result = match self.granted_prefixes() {
            Err(e) => Err(e),
            Ok(granted) => {
                list_objects(self.backends.storage.clone(), granted.to_vec(), &prefix).await
            }
        };
        self.record_storage(
            "list",
            &prefix,
            describe(&result, |v| format!("{} objects", v.len())),
        );
        result
    }

    async fn schedule_deletion(
        &mut self,
        key: String,
        when: DeletionTime,
    ) -> Result<(), CapabilityError> {
        let now = now_ms();
        let due_ms = match when {
            DeletionTime::AtMs(at) => at,
            DeletionTime::AfterMs(after) => now.saturating_add(after.min(i64::MAX as u64) as i64),
        };
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(_) => {
                let entry = ScheduledDeletion {
                    plugin: self.grants.plugin.clone(),
                    key: key.clone(),
                    due_ms,
                    scheduled_at_ms: now,
                };
                self.backends
                    .deletions
                    .schedule(&entry)
                    .await
                    .map_err(unavailable)
            }
        };
        self.record_storage(
            "schedule-deletion",
            &key,
            describe(&result, |_| format!("due {}", rfc3339(due_ms))),
        );
        result
    }

    async fn cancel_deletion(&mut self, key: String) -> Result<bool, CapabilityError> {
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(_) => self
                .backends
                .deletions
                .cancel(&self.grants.plugin, &key)
                .await
                .map_err(unavailable),
        };
        self.record_storage(
            "cancel-deletion",
            &key,
            describe(&result, |found| {
                if *found {
                    "cancelled"
                } else {
                    "none scheduled"
                }
                .into()
            }),
        );
        result
    }
}

async fn list_objects(
    store: Arc<dyn ObjectStore>,
    granted: Vec<String>,
    prefix: &str,
) -> Result<Vec<ObjectInfo>, CapabilityError> {
    storage_key::authorize_prefix(prefix, &granted).map_err(key_error)?;
    // object_store lists by path segment: list the folder, then filter by text.
    let folder = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let folder = StorePath::from(folder);
    let metas: Vec<_> = store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(unavailable)?;
    let mut out: Vec<ObjectInfo> = metas
        .into_iter()
        .filter(|m| m.location.as_ref().starts_with(prefix))
        .map(|m| ObjectInfo {
            key: m.location.to_string(),
            size: m.size,
            last_modified_ms: m.last_modified.timestamp_millis(),
        })
        .collect();
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// Milliseconds since the epoch as RFC 3339, for reports.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn schedule_persists_and_sweeps_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        store
            .put(&StorePath::from("audio/a.mp3"), PutPayload::from(vec![1u8]))
            .await
            .unwrap();
        let entry = |key: &str, due_ms| ScheduledDeletion {
            plugin: "p".into(),
            key: key.into(),
            due_ms,
            scheduled_at_ms: 0,
        };
        let schedule = DeletionSchedule::new(store.clone());
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
        let restarted = DeletionSchedule::new(local_store(dir.path()).unwrap());
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
}
