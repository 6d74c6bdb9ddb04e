//! Test harness: builds the plugins once per test run and loads them into a host.

use object_store::ObjectStore;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use weir_devkit::{find_redis_server, find_s3_server, DevRedis, DevS3};
use weir_host::capabilities::storage::s3_store_with_env;
use weir_host::capabilities::{Backends, CacheBackend, MemoryCache};
use weir_host::config::S3Config;
use weir_host::event::EventRecord;
use weir_host::manifest::Manifest;
use weir_host::runtime::{Plugin, Runtime};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ has a parent")
        .to_path_buf()
}

/// Build every plugin crate to wasm32-wasip2 (once per test process) and return
/// the directory holding the components. A failed build fails the test: no plugin,
/// no test.
pub fn wasm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--release", "--target", "wasm32-wasip2"])
            .args([
                "-p",
                "track-deletions",
                "-p",
                "audio-uploaded",
                "-p",
                "envelope-router",
            ])
            .args([
                "-p", "echo", "-p", "faulty", "-p", "rogue", "-p", "noop", "-p", "plain",
            ])
            .status()
            .expect("run cargo to build the plugins");
        assert!(
            status.success(),
            "building the plugins for wasm32-wasip2 failed (is the target installed? `just setup`)"
        );
        target.join("wasm32-wasip2").join("release")
    })
}

/// A program a test needs. A test that needs one is `#[ignore]`d with the reason
/// (plain `cargo test` lists it as ignored); `just test` installs everything and
/// runs the ignored tests too, and then a missing program fails the test: no
/// test passes by skipping. (`Option` so callers keep their `let Some(..) else`.)
pub fn required(found: Option<PathBuf>, what: &str, hint: &str) -> Option<PathBuf> {
    if found.is_none() {
        let ci = if std::env::var("CI").is_ok_and(|v| v == "true") {
            "CI=true and "
        } else {
            ""
        };
        panic!("{ci}{what} is not installed: {hint}");
    }
    found
}

/// A Redis server for one test, in its own directory.
pub struct TestRedis {
    pub server: DevRedis,
    pub _dir: tempfile::TempDir,
}

/// The redis-server binary, or `None` (the test is skipped, and this says so).
pub fn redis_server() -> Option<PathBuf> {
    required(
        find_redis_server(),
        "redis-server",
        "`just redis` installs it: apt-get install redis-server",
    )
}

/// A Redis server on a free port (or on `port`), or `None` when redis-server is missing.
pub fn redis_on(port: Option<u16>) -> Option<TestRedis> {
    let binary = redis_server()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = match port {
        Some(port) => DevRedis::start_on(&binary, dir.path(), port),
        None => DevRedis::start(&binary, dir.path()),
    }
    .unwrap_or_else(|e| panic!("{e}"));
    Some(TestRedis { server, _dir: dir })
}

/// A Redis server on a free port, or `None` when redis-server is missing.
pub fn redis() -> Option<TestRedis> {
    redis_on(None)
}

/// An S3-compatible server (moto) for one test, with one bucket.
pub struct TestS3 {
    pub server: DevS3,
    pub bucket: String,
    pub _dir: tempfile::TempDir,
}

/// An S3 server on a free port with the bucket `weir-test`, or `None` (the
/// test is skipped, and this says so) when the moto server is not installed.
pub fn s3() -> Option<TestS3> {
    let binary = required(
        find_s3_server(),
        "the moto S3 server",
        "`just s3` installs it into ~/.cache/weir/py (pip install 'moto[server]')",
    )?;
    let dir = tempfile::tempdir().expect("temp dir");
    let server = DevS3::start(&binary, dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let bucket = "weir-test".to_string();
    server
        .create_bucket(&bucket)
        .unwrap_or_else(|e| panic!("{e}"));
    Some(TestS3 {
        server,
        bucket,
        _dir: dir,
    })
}

impl TestS3 {
    /// `[storage.s3]` for this server.
    pub fn config(&self) -> S3Config {
        S3Config {
            bucket: self.bucket.clone(),
            region: "us-east-1".into(),
            endpoint: self.server.endpoint(),
            path_style: true,
        }
    }

    /// The credentials the hosts get, as environment variables.
    pub fn env() -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", "weir-test"),
            ("AWS_SECRET_ACCESS_KEY", "weir-test-secret"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .to_vec()
    }

    /// Weir's S3 backend on this server's bucket.
    pub fn store(&self, timeout: Duration) -> Arc<dyn ObjectStore> {
        s3_store_with_env(&self.config(), timeout, Self::env()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `[storage]` for a weir.toml using this bucket, with more `[storage]`
    /// lines (`sweep_interval = ...`).
    pub fn toml(&self, storage_extra: &str) -> String {
        format!(
            "[storage]\nbackend = \"s3\"\ntimeout = \"3s\"\n{storage_extra}\n[storage.s3]\nbucket = \"{}\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\npath_style = true\n",
            self.bucket,
            self.server.endpoint()
        )
    }
}

/// The component of a plugin crate (`track-deletions` → `track_deletions.wasm`).
pub fn wasm(crate_name: &str) -> PathBuf {
    wasm_dir().join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// The example manifest of a seed plugin.
pub fn example_manifest(name: &str) -> PathBuf {
    workspace_root()
        .join("examples/plugins")
        .join(format!("{name}.toml"))
}

/// A host with in-memory cache and storage in a temporary directory.
pub struct TestHost {
    pub runtime: Runtime,
    pub cache: Arc<MemoryCache>,
    pub backends: Backends,
    pub storage_dir: tempfile::TempDir,
}

impl TestHost {
    pub fn new() -> Self {
        let storage_dir = tempfile::tempdir().expect("temp dir");
        Self::with_storage(storage_dir)
    }

    /// A host whose plugins use `cache` (e.g. Redis); the `cache` field is then unused.
    pub fn with_cache_backend(cache: Arc<dyn CacheBackend>) -> Self {
        let mut host = Self::new();
        host.backends.cache = cache;
        host
    }

    pub fn with_storage(storage_dir: tempfile::TempDir) -> Self {
        let cache = Arc::new(MemoryCache::new(64 * 1024 * 1024));
        let mut backends = Backends::local(storage_dir.path()).expect("local backends");
        backends.cache = cache.clone();
        TestHost {
            runtime: Runtime::new().expect("runtime"),
            cache,
            backends,
            storage_dir,
        }
    }

    /// Load a plugin from a component and a manifest file.
    pub async fn load(&self, wasm: &Path, manifest: &Path) -> Plugin {
        let manifest = Manifest::load(manifest).unwrap_or_else(|e| panic!("{e}"));
        self.runtime
            .load(wasm, manifest, self.backends.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Load a plugin with manifest text given inline.
    pub async fn load_with(&self, wasm: &Path, manifest_toml: &str) -> Plugin {
        let manifest = Manifest::parse(manifest_toml, Path::new("inline.toml"))
            .unwrap_or_else(|e| panic!("{e}"));
        self.runtime
            .load(wasm, manifest, self.backends.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// An event on `dev-{topic}`, partition 0, at `offset`.
pub fn event(topic: &str, offset: i64, key: Option<&str>, payload: &[u8]) -> EventRecord {
    EventRecord {
        topic: format!("dev-{topic}").into(),
        logical_topic: topic.into(),
        partition: 0,
        offset,
        timestamp_ms: Some(1_764_000_000_000),
        key: key.map(|k| k.as_bytes().to_vec()),
        payload: payload.to_vec(),
        headers: vec![],
    }
}
