//! Precompiled components on disk, so a restart with many plugins does not
//! compile them again.
//!
//! An entry is keyed by the component's SHA-256 and a hash of the engine's
//! compilation settings (wasmtime version, target, tunables), so a changed engine
//! never reads an entry it did not write. An entry that cannot be read back
//! (corrupt, truncated, stale) is removed and the component compiled again.
//! Entries are written to a temporary file and renamed into place.
//!
//! wasmtime runs the native code it loads from an entry, so an entry is
//! trusted only if it carries a tag (HMAC-SHA256) made with a key kept outside
//! the cache, beside it (`<cache dir>.key`, readable by the host only): a
//! file put into the cache by anyone else, or another component's entry
//! renamed, fails the check and is compiled again instead of run. The check is
//! made on the bytes that are then loaded, so the file cannot change in
//! between. The directory is created private (mode 0700) and one owned by
//! another user, or that others may write to, is refused.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use wasmtime::component::Component;
use wasmtime::Engine;

type Tag = Hmac<Sha256>;
/// Bytes of the tag at the end of an entry.
const TAG_LEN: usize = 32;
/// A temporary file older than this is left over from a host that died while
/// writing it.
const STALE_TMP: Duration = Duration::from_secs(600);

pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
    key: [u8; 32],
    compiled: AtomicU64,
    hits: AtomicU64,
}

/// What the cache has done since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompileStats {
    /// Components compiled (cache misses, or no cache).
    pub compiled: u64,
    /// Components loaded precompiled from the cache.
    pub cache_hits: u64,
}

/// Why the compile cache cannot be used (the host then refuses to start: its
/// entries are run as native code).
#[derive(Debug, thiserror::Error)]
pub enum CompileCacheError {
    #[error("cannot create the compile cache {}: {source}", dir.display())]
    Create {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("compile cache key {}: {why} (delete it to make a new one; the cache is then rebuilt)", path.display())]
    Key { path: PathBuf, why: String },
    #[error("{what} {}: {source}", path.display())]
    Inspect {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} belongs to uid {owner}, not to this host's uid {me}{hint}", path.display())]
    NotOurs {
        what: &'static str,
        path: PathBuf,
        owner: u32,
        me: u32,
        hint: &'static str,
    },
    #[error("{what} {} is open to others and cannot be made private: {source}", path.display())]
    NotPrivate {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Why one entry of the cache is not used (it is then compiled again).
#[derive(Debug, thiserror::Error)]
enum EntryError {
    #[error("too short to carry a tag")]
    Short,
    #[error("its tag does not match: not written by this host for this component")]
    Tag,
    #[error("{0}")]
    Deserialize(String),
}

impl CompileCache {
    pub fn open(dir: PathBuf, engine: &Engine) -> Result<Self, CompileCacheError> {
        private_dir(&dir)?;
        let key = cache_key(&key_file(&dir))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompileCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
            key,
            compiled: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        })
    }

    pub fn stats(&self) -> CompileStats {
        CompileStats {
            compiled: self.compiled.load(Ordering::Relaxed),
            cache_hits: self.hits.load(Ordering::Relaxed),
        }
    }

    /// Remove all but the `keep` most recently used entries, and temporary
    /// files left by a host that died while writing one.
    pub fn prune(&self, keep: usize) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut found: Vec<(SystemTime, PathBuf)> = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            let Some(modified) = std::fs::metadata(&path).and_then(|m| m.modified()).ok() else {
                continue;
            };
            match path.extension().and_then(|x| x.to_str()) {
                Some("cwasm") => found.push((modified, path)),
                Some(x)
                    if x.starts_with("tmp")
                        && modified.elapsed().is_ok_and(|age| age > STALE_TMP) =>
                {
                    let _ = std::fs::remove_file(&path);
                }
                _ => {}
            }
        }
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, old) in found.into_iter().skip(keep) {
            tracing::debug!(entry = %old.display(), "compile cache: pruned");
            let _ = std::fs::remove_file(old);
        }
    }

    fn tag(&self, entry: &str, compiled: &[u8]) -> Tag {
        let mut mac = Tag::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(entry.as_bytes());
        mac.update(&[0]);
        mac.update(compiled);
        mac
    }

    /// The component for `bytes`: from the cache if it is there and sound,
    /// compiled (and cached) otherwise.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let digest = hex::encode(Sha256::digest(bytes));
        let name = format!("{digest}-{}.cwasm", self.engine_key);
        let path = self.dir.join(&name);
        if let Ok(entry) = std::fs::read(&path) {
            match self.load(engine, &name, &entry) {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    // Used now: pruning keeps the entries in use.
                    let _ = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(SystemTime::now()));
                    return Ok(component);
                }
                Err(e) => {
                    tracing::warn!(entry = %path.display(), error = %e, "ignoring an unusable compile-cache entry; compiling again");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let component = Component::new(engine, bytes)?;
        self.compiled.fetch_add(1, Ordering::Relaxed);
        match component.serialize() {
            Ok(mut serialized) => {
                let tag = self.tag(&name, &serialized).finalize().into_bytes();
                serialized.extend_from_slice(&tag);
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                let written =
                    std::fs::write(&tmp, serialized).and_then(|_| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    let _ = std::fs::remove_file(&tmp);
                    tracing::warn!(entry = %path.display(), error = %e, "cannot write the compile cache");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot serialize a compiled component"),
        }
        Ok(component)
    }

    /// An entry's component, if its tag is this cache's for that entry name.
    fn load(&self, engine: &Engine, name: &str, entry: &[u8]) -> Result<Component, EntryError> {
        let Some(split) = entry.len().checked_sub(TAG_LEN) else {
            return Err(EntryError::Short);
        };
        let (compiled, tag) = entry.split_at(split);
        self.tag(name, compiled)
            .verify_slice(tag)
            .map_err(|_| EntryError::Tag)?;
        // SAFETY: `compiled` was written by `Component::serialize` of an engine
        // with the same compatibility hash, for this component: the tag, made
        // with a key only this host reads, was checked on these very bytes.
        // wasmtime still checks the header and rejects what does not match.
        unsafe { Component::deserialize(engine, compiled) }
            .map_err(|e| EntryError::Deserialize(e.to_string()))
    }
}

/// `<dir>.key` beside the cache directory.
fn key_file(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".key");
    dir.with_file_name(name)
}

/// The cache's key, made (random, mode 0600) the first time.
fn cache_key(path: &Path) -> Result<[u8; 32], CompileCacheError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let problem = |e: &dyn std::fmt::Display| CompileCacheError::Key {
        path: path.to_path_buf(),
        why: e.to_string(),
    };
    let mut fresh = [0u8; 32];
    rand::fill(&mut fresh);
    // Written whole to a file of its own, then linked in place: a host
    // starting at the same moment (sharing the data directory) sees no key
    // or all of it, never a file half written.
    let tmp = path.with_extension(format!(
        "key.{}.{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let written = std::fs::File::options()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| file.write_all(hex::encode(fresh).as_bytes()));
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => return Ok(fresh),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(problem(&e)),
    }
    private_file(path)?;
    let text = std::fs::read_to_string(path).map_err(|e| problem(&e))?;
    let mut key = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut key).map_err(|e| problem(&e))?;
    Ok(key)
}

/// Create `dir` (and its parents) with mode 0700 if missing; refuse one that
/// another user owns, and make one that others may write to private.
fn private_dir(dir: &Path) -> Result<(), CompileCacheError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| CompileCacheError::Create {
            dir: dir.to_path_buf(),
            source,
        })?;
    let made_private = own_and_private(
        dir,
        "the compile cache",
        0o700,
        0o022,
        ": its native code would be run; point plugins.cache_dir at a directory of this user's",
    )?;
    if made_private {
        tracing::warn!(dir = %dir.display(), "the compile cache could be written by other users: made private (0700)");
    }
    Ok(())
}

/// Refuse a key file another user owns; make one others may read private.
fn private_file(path: &Path) -> Result<(), CompileCacheError> {
    own_and_private(path, "the compile cache key", 0o600, 0o077, "").map(|_| ())
}

/// Refuse `path` (`what`, for messages; `hint` ends the refusal) unless this
/// host's user owns it; set it to `mode` if it has any of the `forbidden`
/// permission bits. Whether it had to be changed.
fn own_and_private(
    path: &Path,
    what: &'static str,
    mode: u32,
    forbidden: u32,
    hint: &'static str,
) -> Result<bool, CompileCacheError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).map_err(|source| CompileCacheError::Inspect {
        what,
        path: path.to_path_buf(),
        source,
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(CompileCacheError::NotOurs {
            what,
            path: path.to_path_buf(),
            owner: meta.uid(),
            me,
            hint,
        });
    }
    if meta.mode() & forbidden == 0 {
        return Ok(false);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        CompileCacheError::NotPrivate {
            what,
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_making_the_key_at_the_same_moment_all_get_the_same_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("compile-cache.key");
        let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
            let racers: Vec<_> = (0..8)
                .map(|_| s.spawn(|| cache_key(&path).unwrap()))
                .collect();
            racers.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left");
    }

    /// A component of nothing (the component model's smallest).
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    fn engine() -> Engine {
        Engine::default()
    }

    #[test]
    fn an_entry_not_tagged_by_this_cache_is_compiled_again_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("compile-cache");
        let engine = engine();
        let cache = CompileCache::open(cache_dir.clone(), &engine).unwrap();
        cache.component(&engine, EMPTY).unwrap();
        assert_eq!(cache.stats().compiled, 1);
        let entry = std::fs::read_dir(&cache_dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .unwrap();
        // Sound: a hit.
        cache.component(&engine, EMPTY).unwrap();
        assert_eq!(cache.stats().cache_hits, 1);
        // The same native code without a valid tag (what a writer of the
        // directory without the key can make): compiled again.
        let mut forged = std::fs::read(&entry).unwrap();
        let n = forged.len();
        forged[n - 1] ^= 1;
        std::fs::write(&entry, &forged).unwrap();
        cache.component(&engine, EMPTY).unwrap();
        assert_eq!(
            cache.stats(),
            CompileStats {
                compiled: 2,
                cache_hits: 1
            }
        );
        // A cache with another key (another host's) does not trust this one's entries.
        std::fs::remove_file(key_file(&cache_dir)).unwrap();
        let other = CompileCache::open(cache_dir.clone(), &engine).unwrap();
        other.component(&engine, EMPTY).unwrap();
        assert_eq!(other.stats().compiled, 1);

        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&cache_dir), 0o700);
        assert_eq!(mode(&key_file(&cache_dir)), 0o600);
    }

    #[test]
    fn a_cache_others_may_write_is_made_private_and_pruning_keeps_the_newest() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cc");
        std::fs::create_dir(&cache_dir).unwrap();
        std::fs::set_permissions(&cache_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let engine = engine();
        let cache = CompileCache::open(cache_dir.clone(), &engine).unwrap();
        let mode = std::fs::metadata(&cache_dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        for (i, age) in [(0, 30), (1, 20), (2, 10)] {
            let p = cache_dir.join(format!("{i}-x.cwasm"));
            std::fs::write(&p, b"x").unwrap();
            let f = std::fs::File::options().write(true).open(&p).unwrap();
            f.set_modified(SystemTime::now() - Duration::from_secs(age))
                .unwrap();
        }
        let tmp = cache_dir.join("9-x.tmp123");
        std::fs::write(&tmp, b"x").unwrap();
        let f = std::fs::File::options().write(true).open(&tmp).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(3600))
            .unwrap();
        cache.prune(2);
        let mut left: Vec<String> = std::fs::read_dir(&cache_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["1-x.cwasm", "2-x.cwasm"]);
    }
}
