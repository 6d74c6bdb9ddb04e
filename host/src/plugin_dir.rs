//! The plugin directory: `<name>.wasm` beside `<name>.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A plugin found in the plugin directory: `<name>.wasm` beside `<name>.toml`.
#[derive(Debug, Clone)]
pub struct PluginFiles {
    pub name: String,
    pub wasm: PathBuf,
    pub manifest: PathBuf,
}

/// The plugin pairs in `dir`, sorted by name. A lone `.wasm` or `.toml` is reported
/// and skipped.
pub fn discover(dir: &Path) -> Result<Vec<PluginFiles>, String> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot read the plugin directory {}: {e}", dir.display()))?;
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
