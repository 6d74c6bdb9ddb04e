//! A local Kafka-protocol broker (nisshi) for the demo and the tests.
//!
//! It runs on a free loopback port, in its own working directory (nisshi reads a
//! `.env` there), with in-memory storage or, for restart tests, SQLite. Dropping
//! the [`DevBroker`] stops it.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where nisshi is looked for, in order: `$NISSHI_BIN`, `nisshi` on the `PATH`,
/// `~/.cache/weir/nisshi/bin/nisshi` (where `just broker` installs it).
pub fn find_nisshi() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NISSHI_BIN").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nisshi");
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    let cached = PathBuf::from(std::env::var_os("HOME")?).join(".cache/weir/nisshi/bin/nisshi");
    cached.is_file().then_some(cached)
}

/// How the broker keeps its data.
#[derive(Debug, Clone)]
pub enum BrokerStorage {
    Memory,
    /// A SQLite file in the broker's working directory: survives a restart.
    Sqlite(String),
}

pub struct DevBroker {
    binary: PathBuf,
    workdir: PathBuf,
    port: u16,
    storage: BrokerStorage,
    child: Option<Child>,
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port")
}

impl DevBroker {
    /// Start a broker in `workdir` (created if needed) on a free port.
    pub fn start(
        binary: &Path,
        workdir: &Path,
        storage: BrokerStorage,
    ) -> Result<DevBroker, String> {
        Self::start_on(binary, workdir, storage, free_port())
    }

    /// Start a broker on a given port (to bring one up where a host already looks).
    pub fn start_on(
        binary: &Path,
        workdir: &Path,
        storage: BrokerStorage,
        port: u16,
    ) -> Result<DevBroker, String> {
        std::fs::create_dir_all(workdir)
            .map_err(|e| format!("cannot create {}: {e}", workdir.display()))?;
        let mut broker = DevBroker {
            binary: binary.to_path_buf(),
            workdir: workdir.to_path_buf(),
            port,
            storage,
            child: None,
        };
        broker.spawn()?;
        Ok(broker)
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) -> Result<(), String> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let storage = match &self.storage {
            BrokerStorage::Memory => "memory://nisshi/".to_string(),
            BrokerStorage::Sqlite(name) => format!("sqlite://{name}"),
        };
        let log_path = self.workdir.join("broker.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let child = Command::new(&self.binary)
            .current_dir(&self.workdir)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args([
                "--storage-engine",
                &storage,
                "--group-initial-rebalance-delay",
                "0s",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut text = String::new();
            if let Ok(mut f) = std::fs::File::open(&log_path) {
                let _ = f.read_to_string(&mut text);
            }
            if text.contains("ready in") {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "the broker exited ({status}) before it was ready: {}",
                    text.lines().last().unwrap_or("")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the broker was not ready within 30 s (log: {})",
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kill the broker (as a crash would) and start it again on the same port and
    /// storage.
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
