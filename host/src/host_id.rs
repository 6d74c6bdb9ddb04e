//! This host's identity: an id created once in the host's data directory
//! (`kafka.consumer.host_id_file`, `data/host-id`), the `{host_id}` of the static
//! group membership ids (`{host_id}-{plugin}` by default).
//!
//! Two hosts with one static member id fence each other and, between fences,
//! both hand the same partitions' events to their plugins. Host names do not
//! make ids unique (three processes on one machine share one), a file in the
//! host's own directory does: it is created with the host name and random
//! digits, kept across restarts (a restarted host gets its partitions back), and
//! locked while the host runs, so a second host started on the same directory
//! refuses to start instead of taking the first one's id.

use crate::manifest::is_kafka_name_char;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The id of this host, held (locked) until dropped.
#[derive(Debug)]
pub struct HostId {
    id: String,
    path: PathBuf,
    /// The open, locked file: the lock goes when the process does, however it ends.
    _file: File,
}

/// Longest host id accepted from the file (a group.instance.id is at most 249
/// bytes, and the plugin name is appended).
const MAX_LEN: usize = 128;

/// How much of the id file is read (past MAX_LEN it is refused anyway).
const READ_LIMIT: u64 = 4096;

/// Why this host's id could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HostIdError {
    #[error("cannot create {} for the host id: {source} (kafka.consumer.host_id_file)", dir.display())]
    Dir {
        dir: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {action} the host id file {}: {source} (kafka.consumer.host_id_file)", path.display())]
    File {
        action: &'static str,
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("another weir host is running with the host id file {}: two hosts on one data directory would share their static group membership ids and fence each other. Give each host its own directory (kafka.consumer.host_id_file, or WEIR_KAFKA__CONSUMER__HOST_ID_FILE)", .0.display())]
    Taken(std::path::PathBuf),
    #[error("the host id file {} holds {id:?}: {why} (delete the file to get a new id)", path.display())]
    Invalid {
        path: std::path::PathBuf,
        id: String,
        why: String,
    },
}

impl HostId {
    /// Read the id in `path` (created with a new id if missing) and lock it for
    /// this process. Fails when another process holds it.
    pub fn acquire(path: &Path) -> Result<HostId, HostIdError> {
        let file_error = |action: &'static str| {
            move |source| HostIdError::File {
                action,
                path: path.to_path_buf(),
                source,
            }
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| HostIdError::Dir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(file_error("open"))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(HostIdError::Taken(path.to_path_buf()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(file_error("lock")(e)),
        }
        // Bounded: an id is short, whatever the file holds.
        let mut text = String::new();
        Read::by_ref(&mut file)
            .take(READ_LIMIT)
            .read_to_string(&mut text)
            .map_err(file_error("read"))?;
        let id = match text.trim() {
            "" => {
                let id = new_id(&crate::config::hostname());
                file.set_len(0)
                    .and_then(|_| file.seek(SeekFrom::Start(0)))
                    .and_then(|_| writeln!(file, "{id}"))
                    .and_then(|_| file.sync_all())
                    .map_err(file_error("write"))?;
                tracing::info!(file = %path.display(), host_id = %id, "created this host's id");
                id
            }
            id => {
                check(id).map_err(|why| HostIdError::Invalid {
                    path: path.to_path_buf(),
                    id: id.to_string(),
                    why,
                })?;
                id.to_string()
            }
        };
        Ok(HostId {
            id,
            path: path.to_path_buf(),
            _file: file,
        })
    }

    /// The id in `path` if a host created one there, without locking it (for
    /// `weir config check`).
    pub fn peek(path: &Path) -> Option<String> {
        let mut text = String::new();
        File::open(path)
            .ok()?
            .take(READ_LIMIT)
            .read_to_string(&mut text)
            .ok()?;
        let id = text.trim();
        (check(id).is_ok() && !id.is_empty()).then(|| id.to_string())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `{hostname}-{8 hex digits}`, the host name cut to characters Kafka ids and
/// log readers like.
fn new_id(hostname: &str) -> String {
    let name: String = hostname
        .chars()
        .map(|c| if is_kafka_name_char(c) { c } else { '-' })
        .take(64)
        .collect();
    let name = if name.is_empty() { "weir".into() } else { name };
    format!("{name}-{:08x}", rand::random::<u32>())
}

fn check(id: &str) -> Result<(), String> {
    if id.len() > MAX_LEN {
        return Err(format!("longer than {MAX_LEN} bytes"));
    }
    if let Some(c) = id.chars().find(|c| !is_kafka_name_char(*c)) {
        return Err(format!(
            "{c:?} is not allowed (letters, digits, '-', '_', '.')"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_created_once_kept_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/host-id");
        let first = HostId::acquire(&path).unwrap();
        assert!(first.id().len() > 9, "{}", first.id());
        let err = HostId::acquire(&path).unwrap_err().to_string();
        assert!(err.contains("another weir host"), "{err}");
        let id = first.id().to_string();
        drop(first);
        assert_eq!(
            HostId::acquire(&path).unwrap().id(),
            id,
            "kept across restarts"
        );
    }

    #[test]
    fn ids_are_unique_and_clean() {
        let a = new_id("my host/1");
        let b = new_id("my host/1");
        assert_ne!(a, b);
        assert!(a.starts_with("my-host-1-"), "{a}");
        assert!(check(&a).is_ok());
        assert!(check("x y").is_err());
    }

    #[test]
    fn an_oversized_id_file_is_refused_without_reading_it_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host-id");
        std::fs::write(&path, "a".repeat(10 << 20)).unwrap();
        let err = HostId::acquire(&path).unwrap_err().to_string();
        assert!(err.contains("longer than 128 bytes"), "{err}");
        assert_eq!(HostId::peek(&path), None);
    }

    #[test]
    fn a_bad_id_in_the_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("host-id");
        std::fs::write(&path, "bad id\n").unwrap();
        let err = HostId::acquire(&path).unwrap_err().to_string();
        assert!(
            err.contains("not allowed") && err.contains("delete the file"),
            "{err}"
        );
    }
}
