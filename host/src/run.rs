//! `weir run`: consume every plugin's topics and drive its workers until shutdown.

use crate::admin::view::{HostView, Phase};
use crate::admin::AdminServer;
use crate::capabilities::{Backends, DeletionSchedule};
use crate::config::Config;
use crate::pipeline::stats::StatsSnapshot;
use crate::reload::Supervisor;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a run did, per plugin.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct RunReport {
    pub plugins: BTreeMap<String, StatsSnapshot>,
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

/// Run until `shutdown` completes, then drain, commit and return what happened.
/// Scheduled deletions are records on the schedule topic.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<RunReport, String> {
    let mut backends = Backends::from_config(&config).await?;
    backends.deletions = DeletionSchedule::in_records();
    run_with(config, backends, shutdown).await
}

/// How long the plugin directory must stay quiet before a change is applied, so
/// a burst of writes is applied once.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// [`run`] with given capability backends (to share them with the caller).
pub async fn run_with(
    config: Config,
    backends: Backends,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, String> {
    // The admin API answers from the start: live at once, ready once running.
    let view = Arc::new(HostView::new(&config, backends.cache.clone()));
    let admin = if config.admin.enabled {
        Some(AdminServer::start(&config.admin.listen, view.clone()).await?)
    } else {
        None
    };
    let started = Supervisor::start(config.clone(), backends, view.clone())
        .await
        .and_then(|s| Ok((s.spawn_sweeper(config.storage.sweep_interval)?, s)));
    let (sweeper, mut supervisor) = match started {
        Ok(s) => s,
        Err(e) => {
            if let Some(admin) = admin {
                admin.stop().await;
            }
            return Err(e);
        }
    };
    view.set_phase(Phase::Running);
    let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
    let _watcher = if config.plugins.watch {
        Some(watch(&config, changed_tx)?)
    } else {
        None
    };
    tracing::info!(dir = %config.plugins.dir.display(), watching = config.plugins.watch, "weir is running");

    let mut rescan = tokio::time::interval(config.plugins.rescan_interval);
    rescan.tick().await;
    let mut status = tokio::time::interval(Duration::from_secs(1));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(()) = changed.recv() => {
                // Debounce: wait for a quiet moment, then apply everything at once.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                        Some(()) = changed.recv() => {}
                    }
                }
                if let Err(e) = supervisor.reconcile().await {
                    tracing::error!("{e}");
                }
            }
            _ = rescan.tick() => {
                if let Err(e) = supervisor.reconcile().await {
                    tracing::error!("{e}");
                }
            }
            _ = status.tick() => supervisor.write_status(),
        }
    }
    tracing::info!("shutting down: draining in-flight events");
    view.set_phase(Phase::Stopping);
    let report = supervisor.shutdown().await;
    sweeper.abort();
    if let Some(admin) = admin {
        admin.stop().await;
    }
    tracing::info!("stopped");
    Ok(report)
}

/// Watch the plugin directory (and the folders of `[plugins] extra`); every event
/// becomes a nudge on `changed`.
fn watch(
    config: &Config,
    changed: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = changed.send(());
        }
    })
    .map_err(|e| format!("cannot watch the plugin directory: {e}"))?;
    let mut dirs = BTreeSet::new();
    dirs.insert(config.plugins.dir.clone());
    for extra in &config.plugins.extra {
        for file in [&extra.wasm, &extra.manifest] {
            if let Some(dir) = file.parent() {
                dirs.insert(dir.to_path_buf());
            }
        }
    }
    for dir in dirs {
        watcher
            .watch(&dir, notify::RecursiveMode::NonRecursive)
            .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    }
    Ok(watcher)
}
