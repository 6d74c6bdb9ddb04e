//! Harness for the pipeline tests: a real broker per test, topics, producing and
//! reading records, and hosts (in-process, or the real `weir` binary).

use crate::support::wasm;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use weir_devkit::{find_nisshi, BrokerStorage, DevBroker};
use weir_host::reload::{read_status_file, PluginStatus};

/// Generous bound for waits, so a broken build fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(90);

pub struct TestBroker {
    pub broker: DevBroker,
    /// The broker's working directory, removed with it.
    pub _dir: tempfile::TempDir,
}

/// The nisshi binary, or `None` (the caller skips its test, and this says so) when
/// it is not installed. Under CI (`CI=true`) a missing broker fails the test.
pub fn nisshi() -> Option<PathBuf> {
    crate::support::required(
        find_nisshi(),
        "the nisshi broker",
        "`just broker` installs it (see ../shared/broker.md)",
    )
}

/// A broker for one test, or `None` (the test is skipped with a message) when nisshi
/// is not installed. Under CI (`CI=true`) a missing broker fails the test.
pub fn broker() -> Option<TestBroker> {
    let binary = nisshi()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = DevBroker::start(&binary, &dir.path().join("broker"), BrokerStorage::Memory)
        .unwrap_or_else(|e| panic!("{e}"));
    Some(TestBroker { broker, _dir: dir })
}

/// A broker keeping its data in SQLite, so it can be killed and restarted (see
/// [`broker`] for when it is `None`).
pub fn durable_broker() -> Option<TestBroker> {
    let binary = nisshi()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = DevBroker::start(&binary, dir.path(), BrokerStorage::Sqlite("weir.db".into()))
        .unwrap_or_else(|e| panic!("{e}"));
    Some(TestBroker { broker, _dir: dir })
}

impl TestBroker {
    pub fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.bootstrap());
        c
    }

    pub async fn create_topics(&self, names: &[&str], partitions: i32) {
        weir_devkit::create_topics(&self.bootstrap(), names, partitions)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }

    pub fn producer(&self) -> FutureProducer {
        let mut c = self.client();
        c.set("enable.idempotence", "true").set("acks", "all");
        c.create().unwrap()
    }

    /// Every record of `topic` (all partitions, from the start) once at least `min`
    /// are there, or what is there when PATIENCE runs out.
    pub fn read(&self, topic: &str, min: usize) -> Vec<Record> {
        weir_devkit::read_topic(&self.bootstrap(), topic, min, PATIENCE)
            .unwrap_or_else(|e| panic!("reading {topic}: {e}"))
    }

    /// How many records `topic` holds (sum of high watermarks).
    pub fn count(&self, topic: &str) -> i64 {
        let consumer: BaseConsumer = self.client().create().unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        md.topics()[0]
            .partitions()
            .iter()
            .map(|p| {
                let (lo, hi) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .unwrap();
                hi - lo
            })
            .sum()
    }
}

/// A record as read back.
pub use weir_devkit::TopicRecord as Record;

/// The payload of a record as JSON.
pub trait JsonPayload {
    fn json(&self) -> serde_json::Value;
}

impl JsonPayload for Record {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).expect("JSON payload")
    }
}

/// Produce one JSON event with a key and a correlation id; waits for the ack.
pub async fn produce(producer: &FutureProducer, topic: &str, key: &str, body: serde_json::Value) {
    let payload = serde_json::to_vec(&body).unwrap();
    let correlation = format!("c-{}", body["seq"]);
    let headers = OwnedHeaders::new().insert(Header {
        key: "correlation-id",
        value: Some(correlation.as_bytes()),
    });
    producer
        .send(
            FutureRecord::to(topic)
                .key(key)
                .payload(&payload)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
}

/// A host's files: `weir.toml`, a plugin directory, storage; and its admin port.
pub struct HostFiles {
    pub dir: tempfile::TempDir,
    pub admin_port: u16,
}

impl HostFiles {
    /// A config for `bootstrap` with topic prefix `prefix` and an empty plugin directory.
    pub fn new(bootstrap: &str, prefix: &str) -> HostFiles {
        let files = HostFiles {
            dir: tempfile::tempdir().unwrap(),
            admin_port: weir_devkit::free_port(),
        };
        std::fs::create_dir_all(files.plugins()).unwrap();
        files.write_config(bootstrap, prefix, "");
        files
    }

    /// A config for `bootstrap` with topic prefix `prefix` and the echo plugin
    /// installed with `manifest_extra` appended to its manifest.
    pub fn echo(bootstrap: &str, prefix: &str, manifest_extra: &str) -> HostFiles {
        let files = HostFiles::new(bootstrap, prefix);
        files.install(
            "echo",
            &wasm("echo"),
            &format!(
                "name = \"echo\"\ntopics = [\"in\"]\n{manifest_extra}\n\
                 [capabilities.cache]\n[capabilities.publish]\ntopics = [\"out\"]\n"
            ),
        );
        files
    }

    /// Another copy of echo, as the plugin `name`, consuming `input` and
    /// publishing to `output` (logical topics).
    pub fn install_echo_as(&self, name: &str, input: &str, output: &str) {
        self.install(
            name,
            &wasm("echo"),
            &format!(
                "name = \"{name}\"\ntopics = [\"{input}\"]\n[capabilities.cache]\n\
                 [capabilities.publish]\ntopics = [\"{output}\"]\n[config]\noutput = \"{output}\"\n"
            ),
        );
    }

    /// Put a plugin into the plugin directory.
    pub fn install(&self, name: &str, component: &std::path::Path, manifest: &str) {
        std::fs::copy(component, self.plugins().join(format!("{name}.wasm"))).unwrap();
        std::fs::write(self.plugins().join(format!("{name}.toml")), manifest).unwrap();
    }

    pub fn write_config(&self, bootstrap: &str, prefix: &str, extra: &str) {
        std::fs::write(
            self.config(),
            format!(
                "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
                 [kafka.consumer]\ncommit_interval = \"200ms\"\nsession_timeout = \"6s\"\nlag_interval = \"1s\"\n\
                 [kafka.connect]\nattempts = 120\nbackoff = \"500ms\"\n\
                 [topics]\nprefix = \"{prefix}\"\ncreate = {{ partitions = 3, replication = 1 }}\n\
                 [shutdown]\ndrain_timeout = \"20s\"\n\
                 [admin]\nlisten = \"127.0.0.1:{}\"\n{extra}\n",
                self.admin_port
            ),
        )
        .unwrap();
    }

    pub fn config(&self) -> PathBuf {
        self.dir.path().join("weir.toml")
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn load(&self) -> weir_host::config::Config {
        weir_host::config::Config::load(&self.config()).unwrap_or_else(|e| panic!("{e}"))
    }

    /// What the running host last wrote to its status file (default location).
    pub fn status(&self) -> Vec<PluginStatus> {
        read_status_file(&self.dir.path().join("data/plugins-status.json")).unwrap_or_default()
    }

    /// Wait until the status of `plugin` satisfies `ok`.
    pub async fn wait_status(
        &self,
        plugin: &str,
        what: &str,
        ok: impl Fn(&PluginStatus) -> bool,
    ) -> PluginStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(s) = self.status().into_iter().find(|s| s.name == plugin) {
                if ok(&s) {
                    return s;
                }
            }
            assert!(
                Instant::now() < deadline,
                "status of {plugin} never became {what}: {:?}",
                self.status()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A host running in this process; `stop` drains it and returns its report.
pub struct InProcessHost {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<weir_host::run::RunReport, String>>,
}

impl InProcessHost {
    pub fn start(config: weir_host::config::Config) -> InProcessHost {
        let (stop, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(weir_host::run::run(config, async move {
            let _ = rx.await;
        }));
        InProcessHost { stop, task }
    }

    pub async fn stop(self) -> weir_host::run::RunReport {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("host task")
            .unwrap_or_else(|e| panic!("host failed: {e}"))
    }
}

/// The `weir` binary running `weir run`, its log in the host directory.
pub struct BinaryHost {
    pub child: Child,
    pub log: PathBuf,
}

impl BinaryHost {
    pub fn start(files: &HostFiles, name: &str) -> BinaryHost {
        Self::start_with(files, name, &[])
    }

    /// [`BinaryHost::start`] with more environment variables (config overrides).
    pub fn start_with(files: &HostFiles, name: &str, env: &[(&str, &str)]) -> BinaryHost {
        let log = files.dir.path().join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["run", "--config", files.config().to_str().unwrap()])
            .env("RUST_LOG", "info")
            // Several binaries may share one config: each gets its own admin port,
            // and its own host name (the default static group membership id is
            // "{hostname}-{plugin}", as it is for hosts on different machines).
            .env("WEIR_ADMIN__LISTEN", "127.0.0.1:0")
            .env("HOSTNAME", name)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start weir run");
        BinaryHost { child, log }
    }

    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Wait for the process to exit; its exit code (None if killed by a signal).
    pub fn wait(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "weir did not exit; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log_text().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "{needle:?} never logged:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for BinaryHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait until the admin API on `admin_port` answers `/health/ready` with 200;
/// past PATIENCE, fail with `what` and the logs `logs` gives.
pub async fn wait_ready(admin_port: u16, what: &str, logs: impl Fn() -> String) {
    let addr = format!("127.0.0.1:{admin_port}");
    let deadline = Instant::now() + PATIENCE;
    while !matches!(
        weir_host::admin::client::call(&addr, "GET", "/health/ready").await,
        Ok((200, _))
    ) {
        assert!(
            Instant::now() < deadline,
            "{what} never became ready:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seq numbers of the echo outputs, and how many appear more than once.
pub fn seqs(records: &[Record]) -> (std::collections::BTreeSet<u64>, usize) {
    let mut seen = std::collections::BTreeSet::new();
    let mut duplicates = 0;
    for r in records {
        let seq = r.json()["seq"].as_u64().expect("seq");
        if !seen.insert(seq) {
            duplicates += 1;
        }
    }
    (seen, duplicates)
}

/// Assert that, per key, the outputs appear in increasing seq order (outputs of one
/// key share a partition, so the topic's order is their order).
pub fn assert_key_order(records: &[Record]) {
    let mut by_key: std::collections::BTreeMap<String, Vec<(i32, i64, u64)>> = Default::default();
    for r in records {
        by_key
            .entry(r.key.clone().unwrap_or_default())
            .or_default()
            .push((r.partition, r.offset, r.json()["seq"].as_u64().unwrap()));
    }
    for (key, mut items) in by_key {
        items.sort();
        let partitions: std::collections::BTreeSet<i32> = items.iter().map(|i| i.0).collect();
        assert_eq!(
            partitions.len(),
            1,
            "key {key} spread over partitions {partitions:?}"
        );
        let order: Vec<u64> = items.iter().map(|i| i.2).collect();
        // Duplicates (redeliveries) may repeat a seq, but never go backwards past it.
        let mut max = 0;
        for (i, s) in order.iter().enumerate() {
            assert!(
                i == 0 || *s >= max || order[..i].contains(s),
                "key {key}: out of order: {order:?}"
            );
            max = max.max(*s);
        }
    }
}
