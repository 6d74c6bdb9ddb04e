//! The store-kept deletion schedule (`weir invoke`, the runtime alone): one
//! small JSON object per (plugin, key) under `_weir/scheduled-deletions/` in
//! the object store, written once the event is handled and read back from
//! there by a later run.

use object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt, PutPayload};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use super::{
    sort, sweep_entries, ScheduleChange, ScheduleError, ScheduleGrants, ScheduledDeletion,
    SweepReport,
};
use crate::capabilities::stores::delete_quietly;

const SCHEDULE_DIR: &str = "_weir/scheduled-deletions";

#[derive(Clone)]
pub struct StoreSchedule {
    store: Arc<dyn ObjectStore>,
    pub(super) grants: ScheduleGrants,
}

fn entry_error<'a>(
    action: &'static str,
    path: &'a StorePath,
) -> impl FnOnce(object_store::Error) -> ScheduleError + 'a {
    move |source| ScheduleError::Entry {
        action,
        path: path.clone(),
        source,
    }
}

impl StoreSchedule {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        StoreSchedule {
            store,
            grants: ScheduleGrants::default(),
        }
    }

    fn entry_path(plugin: &str, key: &str) -> StorePath {
        let digest = hex::encode(Sha256::digest(key.as_bytes()));
        StorePath::from(format!("{SCHEDULE_DIR}/{plugin}/{digest}.json"))
    }

    /// Write a change now.
    pub async fn write(&self, change: &ScheduleChange) -> Result<(), ScheduleError> {
        match change {
            ScheduleChange::Schedule(d) => self.schedule(d).await,
            ScheduleChange::Cancel { plugin, key } => self.cancel(plugin, key).await.map(|_| ()),
        }
    }

    /// Schedule (or reschedule) the deletion of `key` for `plugin`.
    pub async fn schedule(&self, entry: &ScheduledDeletion) -> Result<(), ScheduleError> {
        let body = serde_json::to_vec(entry).expect("a deletion serializes");
        let path = Self::entry_path(&entry.plugin, &entry.key);
        self.store
            .put(&path, PutPayload::from(body))
            .await
            .map(|_| ())
            .map_err(entry_error("write", &path))
    }

    /// Drop a scheduled deletion; whether there was one.
    pub async fn cancel(&self, plugin: &str, key: &str) -> Result<bool, ScheduleError> {
        let was = self.is_scheduled(plugin, key).await?;
        if was {
            let path = Self::entry_path(plugin, key);
            delete_quietly(&*self.store, &path)
                .await
                .map_err(entry_error("delete", &path))?;
        }
        Ok(was)
    }

    /// Whether a deletion of `key` is scheduled for `plugin`.
    pub async fn is_scheduled(&self, plugin: &str, key: &str) -> Result<bool, ScheduleError> {
        let path = Self::entry_path(plugin, key);
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(entry_error("read", &path)(e)),
        }
    }

    /// Every pending deletion, soonest first.
    pub async fn list(&self) -> Result<Vec<ScheduledDeletion>, ScheduleError> {
        use futures::TryStreamExt;
        let prefix = StorePath::from(SCHEDULE_DIR);
        let metas: Vec<_> =
            self.store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|source| ScheduleError::List {
                    prefix: prefix.clone(),
                    source,
                })?;
        let mut out = Vec::new();
        for meta in metas {
            let read = match self.store.get(&meta.location).await {
                Ok(r) => r.bytes().await,
                Err(object_store::Error::NotFound { .. }) => continue, // swept meanwhile
                Err(e) => Err(e),
            };
            let bytes = read.map_err(entry_error("read", &meta.location))?;
            match serde_json::from_slice::<ScheduledDeletion>(&bytes) {
                Ok(entry) => out.push(entry),
                Err(e) => {
                    tracing::warn!(entry = %meta.location, error = %e, "ignoring an unreadable scheduled-deletion entry")
                }
            }
        }
        sort(&mut out);
        Ok(out)
    }

    /// Delete every object of the store whose deletion is due at `now_ms` (the
    /// objects live in the same store) and remove its entry.
    pub async fn sweep(&self, now_ms: i64) -> Result<SweepReport, ScheduleError> {
        let entries = self.list().await?;
        Ok(sweep_entries(
            entries,
            &self.grants,
            &*self.store,
            now_ms,
            |change| async move { self.write(&change).await },
            |_| {},
        )
        .await)
    }

    /// Sweep every `interval` until the task is dropped.
    pub fn spawn_sweeper(self, interval: std::time::Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                if let Err(e) = self.sweep(crate::capabilities::stores::now_ms()).await {
                    tracing::warn!(error = %e, "scheduled-deletion sweep failed; will retry");
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::entry;
    use super::*;
    use crate::capabilities::stores::local_store;

    #[tokio::test]
    async fn a_store_kept_schedule_persists_and_sweeps_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        store
            .put(&StorePath::from("audio/a.mp3"), PutPayload::from(vec![1u8]))
            .await
            .unwrap();
        let schedule = StoreSchedule::new(store.clone());
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
        let restarted = StoreSchedule::new(local_store(dir.path()).unwrap());
        restarted.grants.allow("p", Some(vec!["audio/".into()]));
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
