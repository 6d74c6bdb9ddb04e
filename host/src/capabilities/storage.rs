//! The `storage` capability: object storage scoped to granted key prefixes, and
//! scheduled deletions (see [`super::schedule`]: they belong to the event, like
//! its published messages).
//!
//! The backend is any `object_store::ObjectStore` (a local directory by default).

use super::cache::describe;
use super::schedule::{ScheduleChange, ScheduledDeletion};
pub use super::stores::{
    describe_store, local_store, now_ms, rfc3339, s3_store, s3_store_with_env, MAX_DUE_MS,
};
use super::Ctx;
use super::{not_granted, CallRecord, HostBudget, RECORD_OVERHEAD};
use crate::bindings::weir::plugin::storage::{DeletionTime, Host, ObjectInfo};
use crate::bindings::CapabilityError;
use crate::storage_key::{self, KeyError, RESERVED_PREFIX};
use futures::TryStreamExt;
use object_store::{path::Path as StorePath, ObjectStore, ObjectStoreExt, PutPayload};
use std::sync::Arc;
use std::time::Duration;

/// Largest object a plugin may put.
pub const MAX_OBJECT_LEN: usize = 64 * 1024 * 1024;

fn unavailable(e: impl std::fmt::Display) -> CapabilityError {
    CapabilityError::Unavailable(format!("storage backend: {e}"))
}

/// A store's error: `invalid` when the key itself caused it (on a local
/// store, a key under an object, `a/b` when `a` is an object, or an object
/// where a prefix is, `a` when `a/b` exists: the file system cannot hold
/// both), so it never counts against the shared circuit breaker; otherwise
/// `unavailable`.
fn store_error(e: object_store::Error) -> CapabilityError {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::NotADirectory | ErrorKind::IsADirectory | ErrorKind::AlreadyExists
            ) {
                return CapabilityError::Invalid(format!(
                    "the key is both an object and the prefix of another, which this store cannot hold ({e})"
                ));
            }
        }
        cause = c.source();
    }
    unavailable(e)
}

impl Ctx<'_> {
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

impl Host for Ctx<'_> {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, CapabilityError> {
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(path) => {
                let (b, budget) = (self.backends, &*self.budget);
                b.storage_call(async {
                    match b.storage.get(&path).await {
                        Ok(r) => {
                            // Sized before it is read: an object past either
                            // bound is never buffered.
                            let len = usize::try_from(r.meta.size).unwrap_or(usize::MAX);
                            if len > MAX_OBJECT_LEN {
                                return Err(CapabilityError::Invalid(format!(
                                    "the object is {len} bytes; the limit is {MAX_OBJECT_LEN}"
                                )));
                            }
                            budget.check(len, "the object")?;
                            r.bytes()
                                .await
                                .map(|b| Some(b.to_vec()))
                                .map_err(unavailable)
                        }
                        Err(object_store::Error::NotFound { .. }) => Ok(None),
                        Err(e) => Err(store_error(e)),
                    }
                })
                .await
            }
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
            Ok(path) => {
                let b = self.backends;
                b.storage_call(async {
                    b.storage
                        .put(&path, PutPayload::from(data))
                        .await
                        .map(|_| ())
                        .map_err(store_error)
                })
                .await
            }
        };
        self.record_storage("put", &key, describe(&result, |_| format!("{len} bytes")));
        result
    }

    async fn delete(&mut self, key: String) -> Result<(), CapabilityError> {
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(path) => {
                let b = self.backends;
                b.storage_call(async {
                    match b.storage.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                        Err(e) => Err(store_error(e)),
                    }
                })
                .await
            }
        };
        self.record_storage("delete", &key, describe(&result, |_| "deleted".into()));
        result
    }

    async fn list(&mut self, prefix: String) -> Result<Vec<ObjectInfo>, CapabilityError> {
        let result = match self.granted_prefixes() {
            Err(e) => Err(e),
            Ok(granted) => {
                let b = self.backends;
                let granted = granted.to_vec();
                let budget = *self.budget;
                b.storage_call(list_objects(b.storage.clone(), granted, &prefix, budget))
                    .await
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
        let plugin = self.grants.plugin.clone();
        let result = check_due(due_ms, when)
            .and_then(|()| self.object_path(&key))
            .and_then(|_| {
                self.budget
                    .hold(key.len() + RECORD_OVERHEAD, "this scheduled deletion")
            })
            .map(|_| {
                self.effects()
                    .schedule
                    .push(ScheduleChange::Schedule(ScheduledDeletion {
                        plugin,
                        key: key.clone(),
                        due_ms,
                        scheduled_at_ms: now,
                    }));
            });
        self.record_storage(
            "schedule-deletion",
            &key,
            // A relative due time is recorded as asked, so recordings (and `weir test`
            // expectations) do not depend on the clock.
            describe(&result, |_| match when {
                DeletionTime::AtMs(_) => format!("due {}", rfc3339(due_ms)),
                DeletionTime::AfterMs(after) => format!(
                    "due after {}",
                    humantime::format_duration(Duration::from_millis(after))
                ),
            }),
        );
        result
    }

    async fn cancel_deletion(&mut self, key: String) -> Result<bool, CapabilityError> {
        let result = match self.object_path(&key) {
            Err(e) => Err(e),
            Ok(_) => {
                // This event's own earlier changes come first, then the schedule.
                let earlier = self
                    .effects()
                    .schedule
                    .iter()
                    .rev()
                    .find(|c| c.key() == key)
                    .map(|c| matches!(c, ScheduleChange::Schedule(_)));
                let was = match earlier {
                    Some(was) => Ok(was),
                    None => self
                        .backends
                        .deletions
                        .is_scheduled(&self.grants.plugin, &key)
                        .await
                        .map_err(unavailable),
                };
                was.and_then(|was| {
                    self.budget
                        .hold(key.len() + RECORD_OVERHEAD, "this cancellation")
                        .map(|()| was)
                })
                .inspect(|_| {
                    let plugin = self.grants.plugin.clone();
                    self.effects().schedule.push(ScheduleChange::Cancel {
                        plugin,
                        key: key.clone(),
                    });
                })
            }
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

/// Objects one `list` returns at most.
pub const MAX_LISTED: usize = 10_000;

async fn list_objects(
    store: Arc<dyn ObjectStore>,
    granted: Vec<String>,
    prefix: &str,
    budget: HostBudget,
) -> Result<Vec<ObjectInfo>, CapabilityError> {
    storage_key::authorize_prefix(prefix, &granted).map_err(key_error)?;
    // object_store lists by path segment: list the folder, then filter by text.
    let folder = match prefix.rfind('/') {
        Some(i) => &prefix[..i],
        None => "",
    };
    let folder = StorePath::from(folder);
    // Streamed, so a folder of millions of objects is never held, and bounded:
    // the matches in number and in bytes.
    let mut listing = store.list(Some(&folder));
    let (mut out, mut held) = (Vec::new(), 0usize);
    while let Some(meta) = listing.try_next().await.map_err(unavailable)? {
        if !meta.location.as_ref().starts_with(prefix) {
            continue;
        }
        if out.len() == MAX_LISTED {
            return Err(CapabilityError::Invalid(format!(
                "more than {MAX_LISTED} objects start with {prefix:?}: list a narrower prefix"
            )));
        }
        held += meta.location.as_ref().len() + RECORD_OVERHEAD;
        budget.check(held, "the listing")?;
        out.push(ObjectInfo {
            key: meta.location.to_string(),
            size: meta.size,
            last_modified_ms: meta.last_modified.timestamp_millis(),
        });
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

/// A due time the schedule can keep, or why not (a guest-chosen number).
fn check_due(due_ms: i64, when: DeletionTime) -> Result<(), CapabilityError> {
    if due_ms <= MAX_DUE_MS {
        return Ok(());
    }
    Err(CapabilityError::Invalid(match when {
        DeletionTime::AtMs(at) => format!(
            "schedule-deletion: at-ms {at} is after the year 9999; give milliseconds since the Unix epoch"
        ),
        DeletionTime::AfterMs(after) => format!(
            "schedule-deletion: after-ms {after} ends after the year 9999; give a grace period in milliseconds"
        ),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: a due time past the year 9999 panicked the host when shown.
    #[test]
    fn due_times_past_the_year_9999_are_refused_and_never_panic_when_shown() {
        assert!(check_due(MAX_DUE_MS, DeletionTime::AtMs(MAX_DUE_MS)).is_ok());
        let far = 900_000_000_000_000;
        match check_due(far, DeletionTime::AtMs(far)) {
            Err(CapabilityError::Invalid(m)) => assert!(m.contains("year 9999"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            check_due(i64::MAX, DeletionTime::AfterMs(u64::MAX)),
            Err(CapabilityError::Invalid(_))
        ));
        assert_eq!(rfc3339(i64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(rfc3339(i64::MIN), "1970-01-01T00:00:00.000Z");
    }

    /// Issue 20: on a local store, a key under an object (or an object where a
    /// prefix is) failed as `unavailable` and so fed the storage breaker every
    /// plugin shares; it is the key's fault: `invalid`.
    #[tokio::test]
    async fn a_key_the_file_system_cannot_hold_is_invalid_not_an_outage() {
        let dir = tempfile::tempdir().unwrap();
        let store = local_store(dir.path()).unwrap();
        let put = |key: &str| {
            let store = store.clone();
            let path = StorePath::from(key);
            async move { store.put(&path, PutPayload::from(vec![1u8])).await }
        };
        put("audio/a").await.unwrap();
        put("audio/dir/b").await.unwrap();
        for (what, result) in [
            ("under an object", put("audio/a/b").await.map(|_| ())),
            ("over a prefix", put("audio/dir").await.map(|_| ())),
            (
                "delete a prefix",
                store.delete(&StorePath::from("audio/dir")).await,
            ),
        ] {
            match result.map_err(store_error) {
                Err(CapabilityError::Invalid(m)) => {
                    assert!(m.contains("both an object and the prefix"), "{what}: {m}")
                }
                other => panic!("{what}: {other:?}"),
            }
        }
    }
}
