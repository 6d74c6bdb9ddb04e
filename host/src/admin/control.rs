//! The control topic (`[admin] control_topic`, one partition): how an
//! operator's request reaches every host of the environment. A plugin's
//! partitions are spread over the hosts of its group, and only the host that
//! holds a partition may move it: were the requester to commit a new position
//! itself, the holder's next commit would undo it.
//!
//! The host that takes the request (admin API) resolves it to exact targets
//! (offsets per partition), publishes it, and gathers the answers; every host
//! reads the topic from its end as of its start ([`Listener`]), hands the
//! request to its own pipeline of that plugin and group (which drains, seeks,
//! commits: `pipeline::fetch`), and answers with what it moved. Partitions
//! nobody answered for (a rebalance moved them meanwhile) are asked for again
//! under the same id; a host never moves a partition twice for one request.
//! Records are bounded and checked: a malformed one is logged and skipped.
//!
//! Whoever can write the topic could ask for a reset, so with an admin token
//! every record carries an HMAC-SHA256 of itself keyed by the token, and a
//! host with a token acts only on requests (and counts only answers) that
//! carry a valid one: the hosts of a group share their token, as they share
//! their config. Without a token (a loopback-only API) records are unsigned.

use super::view::HostView;
use crate::config::Config;
use crate::pipeline::fetch::{Command, Moved, SeekDone, WorkersDone};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// The largest control record read (a request naming 10 000 partitions is
/// well under it).
const MAX_RECORD: usize = 2 * 1024 * 1024;
/// Requests remembered per host, so that one asked again is not applied twice.
const REMEMBERED: usize = 64;
/// How often partitions nobody answered for are asked for again.
const ASK_AGAIN: Duration = Duration::from_secs(5);

/// A record on the control topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum Record {
    Request(Request),
    Answer(Answer),
}

/// An operator's request to the hosts running `plugin` in `group`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub id: String,
    pub plugin: String,
    pub group: String,
    #[serde(flatten)]
    pub op: Op,
    /// Milliseconds since the epoch after which no host acts on it.
    pub expires_ms: i64,
    /// HMAC-SHA256 (hex) of the request without it, keyed by the admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    /// Move these partitions (each host moves those it holds).
    Seek { targets: Vec<Moved> },
    /// Run this many workers.
    Workers { count: usize },
}

/// One host's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub id: String,
    pub host: String,
    #[serde(default)]
    pub seek: Option<SeekDone>,
    #[serde(default)]
    pub workers: Option<WorkersDone>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

/// The MAC of a record (with its own `mac` empty) under `token`.
fn mac_of(token: &str, record: &Record) -> String {
    use hmac::Mac;
    let mut bare = record.clone();
    match &mut bare {
        Record::Request(r) => r.mac = None,
        Record::Answer(a) => a.mac = None,
    }
    let mut m = hmac::Hmac::<sha2::Sha256>::new_from_slice(token.as_bytes())
        .expect("HMAC takes a key of any length");
    m.update(&serde_json::to_vec(&bare).expect("control records serialize"));
    hex::encode(m.finalize().into_bytes())
}

/// Sign `record` with `token` (nothing without a token).
fn sign(token: Option<&str>, mut record: Record) -> Record {
    if let Some(token) = token {
        let mac = mac_of(token, &record);
        match &mut record {
            Record::Request(r) => r.mac = Some(mac),
            Record::Answer(a) => a.mac = Some(mac),
        }
    }
    record
}

/// Whether `record` may be trusted by a host with `token`: signed with it
/// (any record, without a token).
fn trusted(token: Option<&str>, record: &Record) -> bool {
    let Some(token) = token else {
        return true;
    };
    let given = match record {
        Record::Request(r) => r.mac.as_deref(),
        Record::Answer(a) => a.mac.as_deref(),
    };
    given.is_some_and(|g| {
        let want = mac_of(token, record);
        g.len() == want.len()
            && g.bytes()
                .zip(want.bytes())
                .fold(0u8, |acc, (x, y)| acc | (x ^ y))
                == 0
    })
}

/// Why a request could not be sent or answered.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("operator requests need the control topic, which is not available: {0}")]
    Unavailable(String),
    #[error("control topic {topic}: {what}: {source}")]
    Kafka {
        topic: String,
        what: &'static str,
        source: Box<rdkafka::error::KafkaError>,
    },
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// This host as its answers name it.
pub fn host_name(config: &Config) -> String {
    match &config.host_id {
        Some(id) => format!("{}/{id}", crate::config::hostname()),
        None => format!("{}/{}", crate::config::hostname(), std::process::id()),
    }
}

/// Make sure the control topic exists (created with one partition under
/// `[topics] create`); its full name.
pub async fn ensure_topic(config: &Config) -> Result<String, String> {
    use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
    let topic = config.control_topic().map_err(|e| e.to_string())?;
    let existing = crate::kafka::wait_for_broker(config)
        .await
        .map_err(|e| e.to_string())?;
    if existing.contains(&topic) {
        return Ok(topic);
    }
    let Some(create) = &config.topics.create else {
        return Err(format!(
            "topic {topic} does not exist and [topics] create is not set: create it with one partition (admin.control_topic names it)"
        ));
    };
    let admin = crate::kafka::admin_client(config).map_err(|e| e.to_string())?;
    let new = NewTopic::new(&topic, 1, TopicReplication::Fixed(create.replication))
        .set("retention.ms", "86400000");
    let results = admin
        .create_topics(
            &[new],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| format!("cannot create topic {topic}: {e}"))?;
    for r in results {
        match r {
            Ok(_) => tracing::info!(topic = %topic, "created the control topic"),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => return Err(format!("cannot create topic {topic}: {code}")),
        }
    }
    Ok(topic)
}

/// A librdkafka error of `what` was done with the control topic.
fn kafka_error(
    topic: &str,
    what: &'static str,
) -> impl FnOnce(rdkafka::error::KafkaError) -> ControlError {
    let topic = topic.to_string();
    move |source| ControlError::Kafka {
        topic,
        what,
        source: Box::new(source),
    }
}

/// A reader of the control topic from `from` (its end when `None`).
fn reader(config: &Config, topic: &str, from: Option<i64>) -> Result<BaseConsumer, ControlError> {
    let kafka = |what| kafka_error(topic, what);
    let consumer: BaseConsumer = crate::kafka::base_config(config)
        .set("group.id", "weir-control-reader")
        .set("client.id", "weir-control")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .set("max.partition.fetch.bytes", MAX_RECORD.to_string())
        .create()
        .map_err(kafka("cannot create a reader"))?;
    let from = match from {
        Some(o) => Offset::Offset(o),
        None => Offset::Offset(end_of(&consumer, topic).map_err(kafka("cannot read its end"))?),
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, from)
        .map_err(kafka("cannot assign it"))?;
    consumer.assign(&tpl).map_err(kafka("cannot assign it"))?;
    Ok(consumer)
}

/// The control topic's end. A topic just created (by this host or another
/// starting with it) is unknown to the broker's metadata for a moment: asked
/// again for up to 30 s.
fn end_of(consumer: &BaseConsumer, topic: &str) -> rdkafka::error::KafkaResult<i64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match consumer.fetch_watermarks(topic, 0, Duration::from_secs(10)) {
            Ok((_, high)) => return Ok(high),
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(topic, error = %e, "control topic not ready yet");
                std::thread::sleep(Duration::from_millis(250));
            }
            Err(e) => return Err(e),
        }
    }
}

fn writer(config: &Config, topic: &str) -> Result<BaseProducer, ControlError> {
    crate::kafka::base_config(config)
        .set("client.id", "weir-control")
        .set("linger.ms", "0")
        .set("message.max.bytes", (MAX_RECORD + 4096).to_string())
        .create()
        .map_err(kafka_error(topic, "cannot create a producer"))
}

fn send(producer: &BaseProducer, topic: &str, record: &Record) -> Result<(), ControlError> {
    let body = serde_json::to_vec(record).expect("control records serialize");
    let kafka = |what| kafka_error(topic, what);
    producer
        .send(BaseRecord::<(), _>::to(topic).payload(&body))
        .map_err(|(e, _)| e)
        .map_err(kafka("cannot send"))?;
    producer
        .flush(Duration::from_secs(10))
        .map_err(kafka("cannot deliver"))
}

/// A control record, if this is one (bounded, well-formed); `None` and a
/// log line otherwise.
fn parse(m: &rdkafka::message::BorrowedMessage<'_>, topic: &str) -> Option<Record> {
    let payload = m.payload()?;
    if payload.len() > MAX_RECORD {
        tracing::warn!(
            topic,
            offset = m.offset(),
            bytes = payload.len(),
            "control record skipped: larger than {MAX_RECORD} bytes"
        );
        return None;
    }
    match serde_json::from_slice(payload) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(topic, offset = m.offset(), error = %e, "control record skipped: not a request or an answer");
            None
        }
    }
}

/// Reads the control topic on its own thread and carries out the requests
/// for this host's plugins.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Listener {
    pub fn start(
        config: &Config,
        topic: &str,
        view: Arc<HostView>,
    ) -> Result<Listener, ControlError> {
        let consumer = reader(config, topic, None)?;
        let producer = writer(config, topic)?;
        let stop = Arc::new(AtomicBool::new(false));
        let token = config.admin.resolved_token().ok().flatten();
        let mut handler = Handler {
            token,
            refused_at: None,
            view,
            host: host_name(config),
            wait: config.shutdown.drain_timeout + config.admin.control_timeout,
            topic: topic.to_string(),
            producer,
            remembered: VecDeque::new(),
        };
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-control".into())
            .spawn(move || {
                while !flag.load(Ordering::SeqCst) {
                    match consumer.poll(Duration::from_millis(200)) {
                        Some(Ok(m)) => {
                            if let Some(record) = parse(&m, &handler.topic) {
                                handler.take(record, m.offset());
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "control topic: read error (librdkafka retries)")
                        }
                        None => {}
                    }
                }
            })
            .map_err(|e| ControlError::Unavailable(format!("cannot start its thread: {e}")))?;
        Ok(Listener {
            stop,
            thread: Some(thread),
        })
    }

    /// Stop reading and wait for the thread (it answers the request at hand first).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Listener {
    /// Dropped without [`Listener::stop`]: its thread stops on its own soon.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Handler {
    token: Option<String>,
    /// When an unsigned request was last logged (at most one line a minute).
    refused_at: Option<Instant>,
    view: Arc<HostView>,
    host: String,
    wait: Duration,
    topic: String,
    producer: BaseProducer,
    remembered: VecDeque<Remembered>,
}

/// A request this host acted on: the partitions it moved, or how its
/// workers changed.
struct Remembered {
    id: String,
    moved: BTreeSet<(String, i32)>,
    workers: Option<WorkersDone>,
}

impl Handler {
    fn take(&mut self, record: Record, offset: i64) {
        let Record::Request(request) = &record else {
            return;
        };
        if !trusted(self.token.as_deref(), &record) {
            if self
                .refused_at
                .is_none_or(|t| t.elapsed() > Duration::from_secs(60))
            {
                tracing::warn!(topic = %self.topic, offset, plugin = %request.plugin.chars().take(100).collect::<String>(), "control request refused: not signed with this host's admin token (do the hosts share one?)");
                self.refused_at = Some(Instant::now());
            }
            return;
        }
        let Record::Request(request) = record else {
            return;
        };
        self.handle(request);
    }

    fn handle(&mut self, request: Request) {
        if now_ms() > request.expires_ms {
            return;
        }
        let Some(plugin) = self.view.plugin(&request.plugin) else {
            return;
        };
        if plugin.group.as_deref() != Some(request.group.as_str()) {
            return;
        }
        let Some(source) = plugin.source.clone() else {
            return;
        };
        if !self.remembered.iter().any(|r| r.id == request.id) {
            if self.remembered.len() >= REMEMBERED {
                self.remembered.pop_front();
            }
            self.remembered.push_back(Remembered {
                id: request.id.clone(),
                moved: BTreeSet::new(),
                workers: None,
            });
        }
        let entry = self
            .remembered
            .iter_mut()
            .find(|r| r.id == request.id)
            .expect("remembered above");
        let mut answer = Answer {
            id: request.id.clone(),
            host: self.host.clone(),
            seek: None,
            workers: None,
            error: None,
            mac: None,
        };
        match request.op {
            Op::Seek { targets } => {
                let targets: BTreeMap<(String, i32), i64> = targets
                    .into_iter()
                    .take(10_000)
                    .map(|m| ((m.topic, m.partition), m.to))
                    .filter(|(tp, _)| !entry.moved.contains(tp))
                    .collect();
                let held: BTreeSet<(String, i32)> = source
                    .partitions()
                    .into_iter()
                    .map(|p| (p.topic, p.partition))
                    .collect();
                if !targets.keys().any(|tp| held.contains(tp)) {
                    // Nothing of it here (now): say so, so the requester knows this host.
                    answer.seek = Some(SeekDone::default());
                } else {
                    let (reply, done) = std::sync::mpsc::channel();
                    source.command(Command::Seek { targets, reply });
                    match done.recv_timeout(self.wait) {
                        Ok(done) => {
                            entry
                                .moved
                                .extend(done.moved.iter().map(|m| (m.topic.clone(), m.partition)));
                            answer.seek = Some(done);
                        }
                        Err(_) => {
                            answer.error =
                                Some("its pipeline stopped or did not answer in time".into())
                        }
                    }
                }
            }
            Op::Workers { count } => {
                if let Some(done) = entry.workers {
                    answer.workers = Some(done);
                } else {
                    let (reply, done) = std::sync::mpsc::channel();
                    source.command(Command::Workers { count, reply });
                    match done.recv_timeout(self.wait) {
                        Ok(done) => {
                            plugin.workers.store(done.to, Ordering::SeqCst);
                            entry.workers = Some(done);
                            answer.workers = Some(done);
                        }
                        Err(_) => {
                            answer.error =
                                Some("its pipeline stopped or did not answer in time".into())
                        }
                    }
                }
            }
        }
        let answer = sign(self.token.as_deref(), Record::Answer(answer));
        if let Err(e) = send(&self.producer, &self.topic, &answer) {
            tracing::warn!(plugin = %request.plugin, error = %e, "cannot answer an operator's request");
        }
    }
}

/// What the hosts answered to one request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Gathered {
    pub answers: Vec<Answer>,
    /// Partitions no host answered for in time.
    pub missing: Vec<(String, i32)>,
}

/// Publish `op` for `plugin` in `group` and gather the answers (blocking).
/// A seek is done once every target was moved by some host, asking again
/// every few seconds for the partitions nobody moved, until `wait`; a change
/// of workers gathers answers until no new one came for two seconds.
pub fn request(
    config: &Config,
    topic: &str,
    plugin: &str,
    group: &str,
    op: Op,
    wait: Duration,
) -> Result<Gathered, ControlError> {
    let kafka = |what| kafka_error(topic, what);
    let producer = writer(config, topic)?;
    let probe = reader(config, topic, None)?;
    let start = end_of(&probe, topic).map_err(kafka("cannot read its end"))?;
    drop(probe);
    let consumer = reader(config, topic, Some(start))?;
    let id = format!(
        "{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let deadline = Instant::now() + wait;
    let expires_ms = now_ms() + wait.as_millis() as i64;
    let targets: BTreeMap<(String, i32), i64> = match &op {
        Op::Seek { targets } => targets
            .iter()
            .map(|m| ((m.topic.clone(), m.partition), m.to))
            .collect(),
        Op::Workers { .. } => BTreeMap::new(),
    };
    let token = config.admin.resolved_token().ok().flatten();
    let ask = |op: Op| {
        let request = Record::Request(Request {
            id: id.clone(),
            plugin: plugin.to_string(),
            group: group.to_string(),
            op,
            expires_ms,
            mac: None,
        });
        send(&producer, topic, &sign(token.as_deref(), request))
    };
    ask(op.clone())?;
    let mut gathered = Gathered::default();
    let mut moved: BTreeSet<(String, i32)> = BTreeSet::new();
    let mut asked = Instant::now();
    let mut last_answer: Option<Instant> = None;
    loop {
        let missing: Vec<(String, i32)> = targets
            .keys()
            .filter(|tp| !moved.contains(*tp))
            .cloned()
            .collect();
        let done = match &op {
            Op::Seek { .. } => missing.is_empty(),
            Op::Workers { .. } => last_answer.is_some_and(|t| t.elapsed() > Duration::from_secs(2)),
        };
        if done || Instant::now() >= deadline {
            gathered.missing = missing;
            return Ok(gathered);
        }
        if matches!(op, Op::Seek { .. }) && asked.elapsed() >= ASK_AGAIN {
            let again = missing
                .iter()
                .map(|tp| Moved {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    to: targets[tp],
                })
                .collect();
            tracing::info!(plugin, partitions = missing.len(), "asking the hosts again for the partitions nobody moved yet (a rebalance moved them?)");
            ask(Op::Seek { targets: again })?;
            asked = Instant::now();
        }
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let record = parse(&m, topic).filter(|r| trusted(token.as_deref(), r));
            if let Some(Record::Answer(a)) = record {
                if a.id == id {
                    if let Some(done) = &a.seek {
                        moved.extend(done.moved.iter().map(|m| (m.topic.clone(), m.partition)));
                    }
                    last_answer = Some(Instant::now());
                    gathered.answers.push(a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mac: Option<String>) -> Record {
        Record::Request(Request {
            id: "1".into(),
            plugin: "echo".into(),
            group: "dev-echo".into(),
            op: Op::Seek {
                targets: vec![Moved {
                    topic: "dev-in".into(),
                    partition: 0,
                    to: 5,
                }],
            },
            expires_ms: 1,
            mac,
        })
    }

    #[test]
    fn with_a_token_only_records_signed_with_it_are_trusted() {
        let signed = sign(Some("secret"), request(None));
        assert!(trusted(Some("secret"), &signed));
        assert!(!trusted(Some("other"), &signed), "another token");
        assert!(!trusted(Some("secret"), &request(None)), "unsigned");
        assert!(
            !trusted(Some("secret"), &request(Some("00".repeat(32)))),
            "forged"
        );
        // Changed after signing: the target moved.
        let Record::Request(mut r) = signed.clone() else {
            unreachable!()
        };
        r.op = Op::Seek { targets: vec![] };
        assert!(!trusted(Some("secret"), &Record::Request(r)));
        // Without a token, anything (a loopback-only API, no token to share).
        assert!(trusted(None, &request(None)));
        // It survives the wire.
        let wire: Record = serde_json::from_slice(&serde_json::to_vec(&signed).unwrap()).unwrap();
        assert!(trusted(Some("secret"), &wire));
    }

    #[test]
    fn records_parse_strictly() {
        let text = serde_json::to_string(&request(None)).unwrap();
        assert!(text.contains("\"kind\":\"request\""), "{text}");
        assert!(text.contains("\"op\":\"seek\""), "{text}");
        for bad in [
            r#"{"kind":"request"}"#,
            r#"{"kind":"reset-everything","id":"1"}"#,
            r#"{"kind":"request","id":"1","plugin":"p","group":"g","op":"seek","targets":"all","expires_ms":1}"#,
            "not json",
        ] {
            assert!(serde_json::from_str::<Record>(bad).is_err(), "{bad}");
        }
    }
}
