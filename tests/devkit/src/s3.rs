//! A local S3-compatible server for the tests and the multi-host demo: the
//! `moto` server from PyPI (`just s3` installs it into `~/.cache/weir/py`), on a
//! free loopback port, in memory, in its own directory. Dropping the [`DevS3`]
//! stops it.

use crate::process::DevProcess;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `$MOTO_SERVER_BIN`, else `~/.cache/weir/py/bin/moto_server`, else
/// `moto_server` on the `PATH`.
pub fn find_s3_server() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MOTO_SERVER_BIN").map(PathBuf::from) {
        return p.is_file().then_some(p);
    }
    let cached = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/weir/py/bin/moto_server"))
        .filter(|p| p.is_file());
    cached.or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join("moto_server"))
            .find(|candidate| candidate.is_file())
    })
}

pub struct DevS3 {
    port: u16,
    process: DevProcess,
}

impl DevS3 {
    /// Start a server in `workdir` (created if needed) on a free port.
    pub fn start(binary: &Path, workdir: &Path) -> Result<DevS3, String> {
        Self::start_on(binary, workdir, crate::broker::free_port())
    }

    /// Start a server on a given port (to bring one back where hosts look).
    pub fn start_on(binary: &Path, workdir: &Path, port: u16) -> Result<DevS3, String> {
        let binary = binary.to_path_buf();
        let command = move || {
            let mut c = Command::new(&binary);
            c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
            c
        };
        let process = DevProcess::start(
            "the S3 server (moto)",
            workdir,
            "s3.log",
            command,
            Box::new(move |_| answers(port)),
            Duration::from_secs(60),
        )?;
        Ok(DevS3 { port, process })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Create a bucket (path style; this server does not check signatures).
    pub fn create_bucket(&self, bucket: &str) -> Result<(), String> {
        let status = request(self.port, "PUT", &format!("/{bucket}"))?;
        if status.starts_with("HTTP/1.1 200") || status.starts_with("HTTP/1.0 200") {
            Ok(())
        } else {
            Err(format!("creating bucket {bucket}: {status}"))
        }
    }

    /// Kill the server (as an outage would): its buckets are gone.
    pub fn stop(&mut self) {
        self.process.stop();
    }

    /// Start it again on the same port (empty).
    pub fn restart(&mut self) -> Result<(), String> {
        self.process.restart()
    }
}

/// The status line of a bodiless request.
fn request(port: u16, method: &str, path: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Whether a server on `port` answers HTTP.
fn answers(port: u16) -> bool {
    request(port, "GET", "/").is_ok_and(|status| status.starts_with("HTTP/"))
}
