//! A local Kafka-protocol broker (nisshi) for the demo and the tests.
//!
//! It runs on a free loopback port, in its own working directory (nisshi reads a
//! `.env` there), with in-memory storage or, for restart tests, SQLite. Dropping
//! the [`DevBroker`] stops it.

use crate::process::DevProcess;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
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
    port: u16,
    process: DevProcess,
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
        let url = format!("tcp://127.0.0.1:{port}");
        let storage = match storage {
            BrokerStorage::Memory => "memory://nisshi/".to_string(),
            BrokerStorage::Sqlite(name) => format!("sqlite://{name}"),
        };
        let binary = binary.to_path_buf();
        let command = move || {
            let mut c = Command::new(&binary);
            c.args(["broker", "--listener-url", &url])
                .args(["--advertised-listener-url", &url])
                .args(["--storage-engine", &storage])
                .args(["--group-initial-rebalance-delay", "0s"])
                // The host's RUST_LOG is not the broker's: info-level broker logging
                // slows it several times over. NISSHI_LOG sets the broker's own.
                .env_remove("RUST_LOG")
                .envs(std::env::var("NISSHI_LOG").map(|l| ("RUST_LOG", l)));
            c
        };
        let process = DevProcess::start(
            "the broker",
            workdir,
            "broker.log",
            command,
            Box::new(|log| log.contains("ready in")),
            Duration::from_secs(30),
        )?;
        Ok(DevBroker { port, process })
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kill the broker (as a crash would) and start it again on the same port and
    /// storage.
    pub fn restart(&mut self) -> Result<(), String> {
        self.process.restart()
    }

    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Create topics with `partitions` partitions (replication 1) on `bootstrap`.
pub async fn create_topics(bootstrap: &str, names: &[&str], partitions: i32) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&topics, &AdminOptions::new())
        .await
        .map_err(|e| e.to_string())?
    {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(format!("cannot create {t}: {e}")),
        }
    }
    Ok(())
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl TopicRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// Every record of `topic` (all partitions, from the start, without a consumer
/// group) once at least `min` are there and no more arrive, or whatever is there
/// when `patience` runs out.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    min: usize,
    patience: Duration,
) -> Result<Vec<TopicRecord>, String> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "weir-reader")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in md
        .topics()
        .first()
        .map(|t| t.partitions())
        .unwrap_or_default()
    {
        tpl.add_partition_offset(topic, p.id(), rdkafka::Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    consumer.assign(&tpl).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let deadline = Instant::now() + patience;
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                out.push(TopicRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    headers: text_headers(&m),
                });
                quiet_since = Instant::now();
            }
            Some(Err(e)) => tracing::debug!(topic, error = %e, "reader"),
            None => {
                if out.len() >= min && quiet_since.elapsed() > Duration::from_millis(500) {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// A record's headers as text (a header without a value reads as empty).
fn text_headers<M: rdkafka::Message>(m: &M) -> Vec<(String, String)> {
    use rdkafka::message::Headers;
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    let value = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                    (h.key.to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default()
}
