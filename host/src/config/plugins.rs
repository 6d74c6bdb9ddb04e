//! `[plugins]`: where the plugins are, and the files beside them.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory of `<name>.wasm` + `<name>.toml` pairs (relative to weir.toml),
    /// watched for changes.
    pub dir: PathBuf,
    /// Plugins outside the directory (baked into an image): loaded the same way,
    /// reloaded when their files change.
    pub extra: Vec<ExtraPlugin>,
    /// Watch the directory and reload on changes.
    pub watch: bool,
    /// Also rescan this often, in case a file-system event was missed.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Precompiled components, so a restart does not compile again.
    pub cache_dir: PathBuf,
    /// Where the running host writes its plugins' status (read by `weir plugins`).
    pub status_file: PathBuf,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("plugins"),
            extra: Vec::new(),
            watch: true,
            rescan_interval: Duration::from_secs(30),
            cache_dir: PathBuf::from("data/compile-cache"),
            status_file: PathBuf::from("data/plugins-status.json"),
        }
    }
}

/// A plugin named in weir.toml rather than found in the directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraPlugin {
    pub wasm: PathBuf,
    pub manifest: PathBuf,
}

impl ExtraPlugin {
    /// The plugin's name: its manifest's file name without `.toml`.
    pub fn name(&self) -> String {
        self.manifest
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string()
    }
}
