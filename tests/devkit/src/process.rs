//! A server program run for the demo and the tests (the broker, Redis): started
//! in its own directory with its output in a log file there, waited for until it
//! is ready, killed (as a crash would) on `stop`, `restart` or drop.
//!
//! Every program is started from one long-lived thread and asks the kernel to kill
//! it when that thread ends (`PR_SET_PDEATHSIG`), so a server outlives neither a
//! test binary that exits without dropping it (a broker shared by the tests of one
//! binary lives in a `static`) nor one that is killed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Start `command` from the spawner thread, which lives as long as the process.
fn spawn_tied(command: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("devkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(spawn_with_parent_death_signal(&mut command));
                }
            })
            .expect("start the devkit's spawner thread");
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .lock()
        .expect("spawner")
        .send((command, reply))
        .map_err(|_| std::io::Error::other("the devkit's spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| std::io::Error::other("the devkit's spawner thread is gone"))?
}

#[cfg(target_os = "linux")]
fn spawn_with_parent_death_signal(command: &mut Command) -> std::io::Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

#[cfg(not(target_os = "linux"))]
fn spawn_with_parent_death_signal(command: &mut Command) -> std::io::Result<Child> {
    command.spawn()
}

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
        // A restart appends to the log: what came before the crash stays readable.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot create {}: {e}", self.log.display()))?;
        let start = log.metadata().map(|m| m.len() as usize).unwrap_or(0);
        let mut command = (self.command)();
        let program = command.get_program().to_string_lossy().into_owned();
        command
            .current_dir(&self.workdir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        let child = spawn_tied(command).map_err(|e| format!("cannot start {program}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + self.patience;
        loop {
            let all = std::fs::read(&self.log).unwrap_or_default();
            let text = String::from_utf8_lossy(all.get(start..).unwrap_or_default());
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

    /// The log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Whether the program has been started and has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Start it again after a `stop` (on the same directory, ports and data).
    pub fn start_again(&mut self) -> Result<(), String> {
        if self.is_running() {
            return Ok(());
        }
        self.spawn()
    }

    /// Ask it to stop (SIGTERM) and wait up to `patience` for it to exit, then
    /// kill it.
    pub fn terminate(&mut self, patience: Duration) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                // SAFETY: kill(2) on our own child's pid.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
            let deadline = Instant::now() + patience;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
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
