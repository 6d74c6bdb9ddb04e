//! A local Redis server for the tests (and for trying `[cache] backend = "redis"`).
//!
//! `redis-server` from the OS packages (Debian: `apt-get install redis-server`),
//! on a free loopback port, without persistence, in its own directory. Dropping the
//! [`DevRedis`] stops it.

use crate::process::DevProcess;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

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
    port: u16,
    process: DevProcess,
}

impl DevRedis {
    /// Start a server in `workdir` (created if needed) on a free port.
    pub fn start(binary: &Path, workdir: &Path) -> Result<DevRedis, String> {
        Self::start_on(binary, workdir, crate::broker::free_port())
    }

    /// Start a server on a given port (to bring one up where a host already looks).
    pub fn start_on(binary: &Path, workdir: &Path, port: u16) -> Result<DevRedis, String> {
        let binary = binary.to_path_buf();
        let dir = workdir.to_string_lossy().into_owned();
        let command = move || {
            let mut c = Command::new(&binary);
            c.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                // No persistence, no config file from the system, nothing left behind.
                .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
                .args(["--dir", &dir]);
            c
        };
        let process = DevProcess::start(
            "redis-server",
            workdir,
            "redis.log",
            command,
            Box::new(move |_| pong(port)),
            Duration::from_secs(20),
        )?;
        Ok(DevRedis { port, process })
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the server (as a crash would): its data is gone.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Start it again on the same port (empty).
    pub fn restart(&mut self) -> Result<(), String> {
        self.process.restart()
    }
}

/// Whether a server on `port` answers `PING` with `+PONG`.
fn pong(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}
