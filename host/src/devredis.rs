//! A local Redis server for the tests (and for trying `[cache] backend = "redis"`).
//!
//! `redis-server` from the OS packages (Debian: `apt-get install redis-server`),
//! on a free loopback port, without persistence, in its own directory. Dropping the
//! [`DevRedis`] stops it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `$REDIS_SERVER_BIN`, else `redis-server` on the `PATH`.
pub fn find_redis_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("REDIS_SERVER_BIN").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

pub struct DevRedis {
    binary: PathBuf,
    workdir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl DevRedis {
    /// Start a server in `workdir` (created if needed) on a free port.
    pub fn start(binary: &Path, workdir: &Path) -> Result<DevRedis, String> {
        Self::start_on(binary, workdir, crate::devbroker::free_port())
    }

    /// Start a server on a given port (to bring one up where a host already looks).
    pub fn start_on(binary: &Path, workdir: &Path, port: u16) -> Result<DevRedis, String> {
        std::fs::create_dir_all(workdir)
            .map_err(|e| format!("cannot create {}: {e}", workdir.display()))?;
        let mut redis = DevRedis {
            binary: binary.to_path_buf(),
            workdir: workdir.to_path_buf(),
            port,
            child: None,
        };
        redis.spawn()?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log_path = self.workdir.join("redis.log");
        let log = std::fs::File::create(&log_path)
            .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
        let port = self.port.to_string();
        let child = Command::new(&self.binary)
            .current_dir(&self.workdir)
            .args(["--port", &port, "--bind", "127.0.0.1"])
            // No persistence, no config file from the system, nothing left behind.
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--dir", &self.workdir.to_string_lossy()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.pong() {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                let text = std::fs::read_to_string(&log_path).unwrap_or_default();
                return Err(format!(
                    "redis-server exited ({status}) before it was ready: {}",
                    text.lines().last().unwrap_or("")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server was not ready within 20 s (log: {})",
                    log_path.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` with `+PONG`.
    fn pong(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// Kill the server (as a crash would): its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start it again on the same port (empty).
    pub fn restart(&mut self) -> Result<(), String> {
        self.stop();
        self.spawn()
    }
}

impl Drop for DevRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
