//! The plugins' status as the running host reports it (`weir plugins`, the admin
//! API), the status file it writes for tools without the admin API, and the
//! offline check `weir plugins` makes when no host runs.

use crate::capabilities::Backends;
use crate::config::Config;
use crate::manifest::Manifest;
use crate::pipeline::stats::StatsSnapshot;
use crate::plugin_dir::{discover, PluginFiles};
use crate::runtime::Runtime;

/// What `weir plugins` shows of one plugin.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PluginStatus {
    pub name: String,
    /// `running`, `rolled-back` (running the last good version after a failed
    /// swap), `rejected` (nothing running: the files cannot be loaded).
    pub state: String,
    /// Why the last load failed or the last rollback happened.
    pub reason: Option<String>,
    /// SHA-256 of the running component.
    pub sha256: Option<String>,
    pub loaded_at: Option<String>,
    pub topics: Vec<String>,
    pub wasm: String,
    pub manifest: String,
    pub rollbacks: u64,
    pub stats: Option<StatsSnapshot>,
    /// `at-least-once` or `exactly-once` (`[consumer] delivery`), when loaded.
    #[serde(default)]
    pub delivery: Option<String>,
}

/// Write the status atomically (a temporary file renamed over it).
pub fn write_status_file(path: &std::path::Path, status: &[PluginStatus]) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(status)?)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(file = %path.display(), error = %e, "cannot write the plugin status");
    }
}

/// Read the status a running host wrote.
pub fn read_status_file(path: &std::path::Path) -> Option<Vec<PluginStatus>> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Why the plugins could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Store(#[from] crate::capabilities::StoreError),
    #[error(transparent)]
    Discover(#[from] crate::plugin_dir::DiscoverError),
}

/// The plugins' status: the running host's (from its status file) if there is
/// one, otherwise each plugin of the directory loaded and checked now. The text
/// says which.
pub async fn plugin_status(config: &Config) -> Result<(String, Vec<PluginStatus>), StatusError> {
    let path = &config.plugins.status_file;
    if let Some(list) = read_status_file(path).filter(|l| !l.is_empty()) {
        return Ok((
            format!("as reported by the running host ({})", path.display()),
            list,
        ));
    }
    let runtime = Runtime::with_compile_cache(config.plugins.cache_dir.clone())?;
    let scratch = std::env::temp_dir().join(format!("weir-plugins-{}", std::process::id()));
    let backends = Backends::local(&scratch)?;
    let mut list = Vec::new();
    let mut files = discover(&config.plugins.dir)?;
    files.extend(config.plugins.extra.iter().map(|e| PluginFiles {
        name: e.name(),
        wasm: e.wasm.clone(),
        manifest: e.manifest.clone(),
    }));
    for f in files {
        let loaded = match Manifest::load(&f.manifest) {
            Err(e) => Err(e.to_string()),
            Ok(m) => runtime
                .load(&f.wasm, m, backends.clone())
                .await
                .map_err(|e| e.to_string()),
        };
        list.push(PluginStatus {
            name: f.name.clone(),
            state: if loaded.is_ok() { "valid" } else { "rejected" }.into(),
            reason: loaded.as_ref().err().cloned(),
            sha256: loaded.as_ref().ok().map(|p| p.content_hash().to_string()),
            loaded_at: None,
            topics: loaded
                .as_ref()
                .map(|p| p.manifest().topics.clone())
                .unwrap_or_default(),
            wasm: f.wasm.display().to_string(),
            manifest: f.manifest.display().to_string(),
            rollbacks: 0,
            stats: None,
            delivery: loaded
                .as_ref()
                .ok()
                .map(|p| p.manifest().consumer.delivery.as_str().to_string()),
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok((
        format!(
            "no running host: checked the plugins in {}",
            config.plugins.dir.display()
        ),
        list,
    ))
}
