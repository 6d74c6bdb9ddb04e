//! Harness for the pipeline tests: a real Apache Kafka (one shared per test
//! binary, or a test's own when it stops the broker), topics, producing and
//! reading records, and hosts (in-process, or the real `weir` binary).

use crate::support::wasm;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use weir_devkit::{find_kafka, DevBroker, KafkaInstall};
use weir_host::reload::{read_status_file, PluginStatus};

/// Generous bound for waits, so a broken build fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// A Kafka broker for a test: the one this test binary shares, or one of its own.
pub struct TestBroker {
    bootstrap: String,
    /// A broker of the test's own (it may stop or restart it); `None` when shared.
    own: Option<DevBroker>,
    /// The own broker's directory, removed with it.
    _dir: Option<tempfile::TempDir>,
}

/// Java and Kafka's jars, or `None` (the caller skips its test, and this says so)
/// when they are not installed. Under CI (`CI=true`) a missing broker fails the test.
pub fn kafka() -> Option<KafkaInstall> {
    let found = find_kafka();
    crate::support::required(
        found.as_ref().map(|k| k.libs.clone()),
        "Apache Kafka",
        "`just kafka` installs it into ~/.cache/weir/kafka (tests/devkit/kafka/README.md)",
    )?;
    found
}

/// The single-node broker every test of this binary that does not stop the broker
/// shares (each test uses its own topic prefix, hence its own topics and groups),
/// or `None` when Kafka is not installed (see [`kafka`]). It is started by the
/// first test that asks and dies with the test binary.
pub fn broker() -> Option<TestBroker> {
    static SHARED: OnceLock<Result<String, String>> = OnceLock::new();
    static BROKER: OnceLock<std::sync::Mutex<DevBroker>> = OnceLock::new();
    let install = kafka()?;
    let bootstrap = SHARED.get_or_init(|| {
        let dir = shared_broker_dir();
        let broker = DevBroker::start(&install, &dir)?;
        let bootstrap = broker.bootstrap();
        let _ = BROKER.set(std::sync::Mutex::new(broker));
        Ok(bootstrap)
    });
    let bootstrap = bootstrap.clone().unwrap_or_else(|e| panic!("{e}"));
    Some(TestBroker {
        bootstrap,
        own: None,
        _dir: None,
    })
}

/// The shared broker's directory: one per test process, under the temp dir; the
/// directories of earlier processes that are gone are removed.
fn shared_broker_dir() -> PathBuf {
    let tmp = std::env::temp_dir();
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("weir-e2e-kafka-") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
    }
    tmp.join(format!("weir-e2e-kafka-{}", std::process::id()))
}

/// A broker of the test's own, which it may kill and restart (its data survives a
/// restart); see [`kafka`] for when it is `None`.
pub fn own_broker() -> Option<TestBroker> {
    own_broker_on(weir_devkit::free_port())
}

/// A broker of the test's own started on `port` (where a host already looks).
pub fn own_broker_on(port: u16) -> Option<TestBroker> {
    let install = kafka()?;
    let dir = tempfile::tempdir().expect("temp dir");
    let broker = DevBroker::start_on(&install, &dir.path().join("broker"), port)
        .unwrap_or_else(|e| panic!("{e}"));
    Some(TestBroker {
        bootstrap: broker.bootstrap(),
        own: Some(broker),
        _dir: Some(dir),
    })
}

impl TestBroker {
    pub fn bootstrap(&self) -> String {
        self.bootstrap.clone()
    }

    fn own(&mut self) -> &mut DevBroker {
        self.own
            .as_mut()
            .expect("the shared broker cannot be stopped: use own_broker()")
    }

    /// Kill the broker (SIGKILL) and start it again on its port and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.own().restart()
    }

    /// Kill the broker (SIGKILL); its data stays.
    pub fn stop(&mut self) {
        self.own().stop();
    }

    /// Start a stopped broker again.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.own().start_again()
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

    /// Wait until `topic` holds at least `n` records (a stream is under way).
    pub async fn wait_count(&self, topic: &str, n: i64) {
        let deadline = Instant::now() + PATIENCE;
        while self.count(topic) < n {
            assert!(
                Instant::now() < deadline,
                "{topic} never held {n} records (it holds {})",
                self.count(topic)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `group`'s committed offset (0 if none) and the high watermark of each of
    /// `topic`'s first `partitions` partitions.
    pub fn positions(&self, group: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
        let c: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut tpl = rdkafka::TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = c
            .committed_offsets(tpl, Duration::from_secs(10))
            .unwrap_or_default();
        (0..partitions)
            .map(|p| {
                let at = match committed.find_partition(topic, p).map(|e| e.offset()) {
                    Some(rdkafka::Offset::Offset(o)) => o,
                    _ => 0,
                };
                let (_, high) = c
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .unwrap();
                (at, high)
            })
            .collect()
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
    task: tokio::task::JoinHandle<Result<weir_host::run::RunReport, weir_host::run::RunError>>,
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
            // host name and host id file (the default static group membership id
            // is "{host_id}-{plugin}", as it is for hosts on different machines);
            // a host restarted under the same name keeps its id.
            .env("WEIR_ADMIN__LISTEN", "127.0.0.1:0")
            .env("HOSTNAME", name)
            .env(
                "WEIR_KAFKA__CONSUMER__HOST_ID_FILE",
                files.dir.path().join(format!("hosts/{name}/host-id")),
            )
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
