//! A server program run for the demo and the tests (the broker, Redis): started
//! in its own directory with its output in a log file there, waited for until it
//! is ready, killed (as a crash would) on `stop`, `restart` or drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the program is ready, given what it has logged so far.
pub type ReadyCheck = Box<dyn Fn(&str) -> bool + Send + Sync>;

pub struct DevProcess {
    /// For messages: "the broker", "redis-server".
    what: &'static str,
    workdir: PathBuf,
    log: PathBuf,
    /// The command, built afresh for each start.
    command: Box<dyn Fn() -> Command + Send + Sync>,
    ready: ReadyCheck,
    patience: Duration,
    child: Option<Child>,
}

impl DevProcess {
    /// Start `command()` in `workdir` (created if needed), logging to `workdir/log_name`,
    /// and wait up to `patience` for `ready`.
    pub fn start(
        what: &'static str,
        workdir: &Path,
        log_name: &str,
        command: impl Fn() -> Command + Send + Sync + 'static,
        ready: ReadyCheck,
        patience: Duration,
    ) -> Result<DevProcess, String> {
        std::fs::create_dir_all(workdir)
            .map_err(|e| format!("cannot create {}: {e}", workdir.display()))?;
        let mut process = DevProcess {
            what,
            workdir: workdir.to_path_buf(),
            log: workdir.join(log_name),
            command: Box::new(command),
            ready,
            patience,
            child: None,
        };
        process.spawn()?;
        Ok(process)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(&self.log)
            .map_err(|e| format!("cannot create {}: {e}", self.log.display()))?;
        let mut command = (self.command)();
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + self.patience;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if (self.ready)(&text) {
                return Ok(());
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(format!(
                    "{} exited ({status}) before it was ready: {}",
                    self.what,
                    text.lines().last().unwrap_or("")
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} was not ready within {} s (log: {})",
                    self.what,
                    self.patience.as_secs(),
                    self.log.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill it (as a crash would) and start it again.
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

impl Drop for DevProcess {
    fn drop(&mut self) {
        self.stop();
    }
}
