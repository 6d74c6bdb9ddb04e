//! The plugins' status as the running host reports it (`weir plugins`, the admin
//! API), and the status file it writes for tools without the admin API.

use crate::pipeline::stats::StatsSnapshot;

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
