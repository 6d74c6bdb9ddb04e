//! The plugin directory: `<name>.wasm` beside `<name>.toml`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest component file read (a Python component is about 40 MB).
pub const MAX_COMPONENT_FILE: u64 = 256 * 1024 * 1024;
/// The largest manifest file read.
pub const MAX_MANIFEST_FILE: u64 = 1024 * 1024;

/// The bytes of a plugin file, which must be a regular file (a symlink to one
/// is fine: Kubernetes mounts files that way) of at most `limit` bytes. Opened
/// without blocking, so a FIFO put in its place cannot stall the host, and
/// read no further than the limit, so `/dev/zero` cannot exhaust it.
pub fn read_plugin_file(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    const O_NONBLOCK: i32 = 0o4000; // Linux's, on every architecture Weir targets
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a device, FIFO or directory); it must be a regular file",
        ));
    }
    if meta.len() > limit {
        return Err(std::io::Error::other(format!(
            "the file is {} bytes; the limit is {limit}",
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(std::io::Error::other(format!(
            "the file grew past the limit of {limit} bytes while it was read"
        )));
    }
    Ok(bytes)
}

/// The plugin directory could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the plugin directory {}: {source}", dir.display())]
pub struct DiscoverError {
    pub dir: PathBuf,
    pub source: std::io::Error,
}

/// A plugin found in the plugin directory: `<name>.wasm` beside `<name>.toml`.
#[derive(Debug, Clone)]
pub struct PluginFiles {
    pub name: String,
    pub wasm: PathBuf,
    pub manifest: PathBuf,
}

/// The plugin pairs in `dir`, sorted by name. A lone `.wasm` or `.toml` is reported
/// and skipped.
pub fn discover(dir: &Path) -> Result<Vec<PluginFiles>, DiscoverError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DiscoverError {
        dir: dir.to_path_buf(),
        source,
    })?;
    let mut stems: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let (Some(stem), Some(ext)) = (
            path.file_stem().and_then(|s| s.to_str()),
            path.extension().and_then(|s| s.to_str()),
        ) else {
            continue;
        };
        let slot = stems.entry(stem.to_string()).or_default();
        match ext {
            "wasm" => slot.0 = true,
            "toml" => slot.1 = true,
            _ => {}
        }
    }
    let mut found = Vec::new();
    for (name, (wasm, toml)) in stems {
        match (wasm, toml) {
            (true, true) => found.push(PluginFiles {
                wasm: dir.join(format!("{name}.wasm")),
                manifest: dir.join(format!("{name}.toml")),
                name,
            }),
            (true, false) => {
                tracing::warn!(plugin = %name, "{name}.wasm has no manifest {name}.toml beside it; skipped")
            }
            (false, true) => {
                tracing::warn!(plugin = %name, "{name}.toml has no component {name}.wasm beside it; skipped")
            }
            (false, false) => {}
        }
    }
    Ok(found)
}
