//! Precompiled components on disk, so a restart with many plugins does not
//! compile them again.
//!
//! An entry is keyed by the component's SHA-256 and a hash of the engine's
//! compilation settings (wasmtime version, target, tunables), so a changed engine
//! never reads an entry it did not write. An entry that cannot be read back
//! (corrupt, truncated, stale) is removed and the component compiled again.
//! Entries are written to a temporary file and renamed into place.
//!
//! The directory must be writable by the host only: wasmtime trusts the native
//! code it loads from there.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct CompileCache {
    dir: PathBuf,
    engine_key: String,
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

impl CompileCache {
    pub fn open(dir: PathBuf, engine: &Engine) -> Result<Self, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create the compile cache {}: {e}", dir.display()))?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(CompileCache {
            dir,
            engine_key: format!("{:016x}", h.finish()),
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

    /// Remove all but the `keep` newest entries (by the time they were written).
    pub fn prune(&self, keep: usize) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .collect();
        found.sort_by_key(|f| std::cmp::Reverse(f.0));
        for (_, old) in found.into_iter().skip(keep) {
            let _ = std::fs::remove_file(old);
        }
    }

    /// The component for `bytes`: from the cache if it is there and sound,
    /// compiled (and cached) otherwise.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let digest = hex::encode(Sha256::digest(bytes));
        let path = self.dir.join(format!("{digest}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of an engine with
            // the same compatibility hash, in a directory only the host writes to;
            // wasmtime still checks its header and rejects what does not match.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
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
            Ok(serialized) => {
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
}
