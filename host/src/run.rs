//! `weir run`: consume every plugin's topics and drive its workers until shutdown.

use crate::admin::view::{HostView, Phase};
use crate::admin::AdminServer;
use crate::capabilities::storage;
use crate::capabilities::{
    Backends, CacheBackend, DeletionSchedule, Guards, MemoryCache, RedisCache,
};
use crate::config::Config;
use crate::config::{CacheKind, StorageKind};
pub use crate::reload::RunReport;
use crate::reload::Supervisor;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Why `weir run` stopped or could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cache.url: {0}")]
    Cache(crate::capabilities::cache::RedisSetupError),
    #[error(transparent)]
    Store(#[from] crate::capabilities::StoreError),
    #[error(transparent)]
    HostId(#[from] crate::host_id::HostIdError),
    #[error(transparent)]
    Auth(#[from] crate::admin::auth::AuthError),
    #[error(transparent)]
    Admin(#[from] crate::admin::AdminError),
    #[error(transparent)]
    Supervisor(#[from] crate::reload::SupervisorError),
    #[error(transparent)]
    Discover(#[from] crate::plugin_dir::DiscoverError),
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        dir: std::path::PathBuf,
        source: notify::Error,
    },
}

/// Run until `shutdown` completes, then drain, commit and return what happened.
/// Scheduled deletions are records on the schedule topic.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    let mut backends = backends(&config).await?;
    backends.deletions = DeletionSchedule::in_topic();
    run_with(config, backends, shutdown).await
}

/// The backends `weir.toml` asks for (`[cache]`, `[storage]`). Must run inside a
/// tokio runtime. A Redis server that does not answer yet is not an error: it is
/// reported, and cache calls are `unavailable` (events retried) until it answers.
pub async fn backends(config: &Config) -> Result<Backends, RunError> {
    let cache: Arc<dyn CacheBackend> = match config.cache.backend {
        CacheKind::Memory => Arc::new(MemoryCache::new(config.cache.max_bytes.as_u64())),
        CacheKind::Redis => {
            let url = config.cache.url.as_deref().unwrap_or_default();
            let redis = RedisCache::connect(url, config.cache.timeout).map_err(RunError::Cache)?;
            match redis.ping().await {
                Ok(()) => tracing::info!(cache = %redis.describe(), "cache backend reachable"),
                Err(e) => tracing::warn!(
                    cache = %redis.describe(),
                    error = %e,
                    "cache backend not reachable yet; cache calls fail as unavailable (events are retried) until it answers"
                ),
            }
            Arc::new(redis)
        }
    };
    let storage = match config.storage.backend {
        StorageKind::Local => storage::local_store(&config.storage.dir),
        StorageKind::S3 => storage::s3_store(&config.storage.s3, config.storage.timeout),
    }?;
    tracing::info!(storage = %storage::describe_store(&config.storage), "storage backend");
    let mut backends = Backends::new(
        cache,
        storage,
        Guards::new(&config.breaker, config.storage.timeout),
    );
    backends.max_message = config.kafka.producer.message_max_bytes.as_u64() as usize;
    Ok(backends)
}

/// How long the plugin directory must stay quiet before a change is applied, so
/// a burst of writes is applied once.
pub const DEBOUNCE: Duration = Duration::from_millis(300);

/// [`run`] with given capability backends (to share them with the caller).
pub async fn run_with(
    mut config: Config,
    backends: Backends,
    shutdown: impl Future<Output = ()>,
) -> Result<RunReport, RunError> {
    // The static member ids are this host's own: its id file is held (locked)
    // until the host stops.
    let _host_id = if config.kafka.consumer.instance_id.contains("{host_id}") {
        let id = crate::host_id::HostId::acquire(&config.kafka.consumer.host_id_file)?;
        tracing::info!(host_id = %id.id(), file = %id.path().display(), "host id");
        config.host_id = Some(id.id().to_string());
        Some(id)
    } else {
        None
    };
    // The admin API answers from the start: live at once, ready once running.
    let view = Arc::new(HostView::new(&config, &backends));
    let admin = if config.admin.enabled {
        let auth = crate::admin::auth::Auth::from_config(&config.admin)?;
        Some(AdminServer::start(&config.admin.listen, auth, view.clone()).await?)
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
            return Err(e.into());
        }
    };
    // The first load, like every later one, is abandoned by a shutdown: a
    // plugin whose `init` takes its whole `limits.timeout` does not hold up SIGTERM.
    tokio::pin!(shutdown);
    let loaded = tokio::select! {
        pending = supervisor.prepare() => Some(pending),
        _ = &mut shutdown => None,
    };
    let loaded = match loaded {
        Some(Ok(pending)) => {
            supervisor.commit(pending).await;
            supervisor.log_loaded();
            true
        }
        Some(Err(e)) => {
            supervisor.shutdown().await;
            sweeper.abort();
            if let Some(admin) = admin {
                admin.stop().await;
            }
            return Err(e.into());
        }
        None => false,
    };
    let mut result = Ok(());
    let mut control = None;
    if loaded {
        // In the background: creating the topic and reading its end take a
        // moment, which neither consumption nor reloads wait for.
        control = Some(tokio::spawn(listen_for_operators(
            config.clone(),
            view.clone(),
        )));
        view.set_phase(Phase::Running);
        result = reload_until(&config, &mut supervisor, shutdown.as_mut()).await;
    }
    if let Some(control) = control {
        control.abort();
        if let Ok(Some(listener)) = control.await {
            let _ = tokio::task::spawn_blocking(move || listener.stop()).await;
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
    result.map(|()| report)
}

/// Read the control topic (operators' requests to every host), creating it
/// under `[topics] create`; tried again every 10 s until it works. Until then
/// the host runs on, and moving offsets or changing workers answers why not.
async fn listen_for_operators(
    config: Config,
    view: Arc<HostView>,
) -> Option<crate::admin::control::Listener> {
    use crate::admin::control;
    let mut warned = false;
    loop {
        let started = match control::ensure_topic(&config).await {
            Ok(topic) => {
                let (config, view) = (config.clone(), view.clone());
                tokio::task::spawn_blocking(move || {
                    control::Listener::start(&config, &topic, view)
                        .map(|l| (topic, l))
                        .map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
            Err(why) => Err(why),
        };
        match started {
            Ok((topic, listener)) => {
                tracing::info!(topic = %topic, "reading the control topic (offsets and workers changed by operators)");
                view.set_control_topic(Ok(topic));
                return Some(listener);
            }
            Err(why) => {
                if !warned {
                    tracing::warn!("no control topic yet, so operators cannot move offsets or change workers (tried again every 10 s): {why}");
                    warned = true;
                }
                view.set_control_topic(Err(why));
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    }
}

/// Keep the plugins in line with their files (watched and rescanned) until
/// `shutdown` completes.
async fn reload_until(
    config: &Config,
    supervisor: &mut Supervisor,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), RunError> {
    let (changed_tx, mut changed) = mpsc::unbounded_channel::<()>();
    let _watcher = if config.plugins.watch {
        Some(watch(config, changed_tx)?)
    } else {
        None
    };
    tracing::info!(dir = %config.plugins.dir.display(), watching = config.plugins.watch, "weir is running");
    let mut rescan = tokio::time::interval(config.plugins.rescan_interval);
    rescan.tick().await;
    let mut status = tokio::time::interval(Duration::from_secs(1));
    loop {
        let reload = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            Some(()) = changed.recv() => {
                // Debounce: wait for a quiet moment, then apply everything at once.
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(DEBOUNCE) => break,
                        Some(()) = changed.recv() => {}
                    }
                }
                true
            }
            _ = rescan.tick() => true,
            _ = status.tick() => {
                supervisor.mend().await;
                supervisor.write_status();
                false
            }
        };
        if reload {
            // Loading (compile, instantiate, init) takes a while and changes
            // nothing yet: a shutdown meanwhile abandons it.
            let pending = tokio::select! {
                pending = supervisor.prepare() => pending,
                _ = &mut shutdown => return Ok(()),
            };
            match pending {
                Ok(pending) => supervisor.commit(pending).await,
                Err(e) => tracing::error!("{e}"),
            }
        }
    }
}

/// Watch the plugin directory (and the folders of `[plugins] extra`); every event
/// becomes a nudge on `changed`.
fn watch(
    config: &Config,
    changed: mpsc::UnboundedSender<()>,
) -> Result<notify::RecommendedWatcher, RunError> {
    use notify::Watcher;
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok() {
            let _ = changed.send(());
        }
    })
    .map_err(|source| RunError::Watch {
        dir: config.plugins.dir.clone(),
        source,
    })?;
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
            .map_err(|source| RunError::Watch {
                dir: dir.clone(),
                source,
            })?;
    }
    Ok(watcher)
}
