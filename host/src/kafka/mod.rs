//! Kafka: client settings, reaching the broker, topics, reading a topic to its
//! end. The delivery path itself is in `pipeline/`.

use crate::config::Config;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::BorrowedMessage;
use rdkafka::{Message, Offset, TopicPartitionList};
use std::collections::BTreeSet;
use std::time::Duration;

/// What went wrong reaching the broker or managing its topics.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("cannot create the {what}: {source}")]
    Client {
        what: &'static str,
        source: Box<KafkaError>,
    },
    #[error("broker {servers} not reachable after {attempts} attempts: {last} (check kafka.bootstrap_servers and [kafka.connect])")]
    Unreachable {
        servers: String,
        attempts: u32,
        last: String,
    },
    /// A metadata request failed (librdkafka's reason).
    #[error("{0}")]
    Metadata(Box<KafkaError>),
    #[error("topics missing on the broker: {} (create them, or set [topics] create = {{ partitions = N, replication = M }})", .0.join(", "))]
    TopicsMissing(Vec<String>),
    #[error("cannot create topics: {0}")]
    CreateTopics(Box<KafkaError>),
    #[error("the broker refused to create topic {topic} with {settings}: {code} (create it by hand with these settings, or use a broker that supports them)")]
    SettingRefused {
        topic: String,
        settings: String,
        code: RDKafkaErrorCode,
    },
    #[error("cannot create topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
    #[error("cannot read the settings of topic {topic}: {source}")]
    TopicSettings {
        topic: String,
        source: Box<KafkaError>,
    },
    #[error("cannot look up {topic}'s offsets by time: {source}")]
    OffsetsByTime {
        topic: String,
        source: Box<KafkaError>,
    },
    #[error("reading {topic}: {source}")]
    Read {
        topic: String,
        source: Box<KafkaError>,
    },
    #[error("reading {topic} made no progress for {seconds} s before its end")]
    Stalled { topic: String, seconds: u64 },
    #[error("a blocking Kafka call did not finish: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A record's headers as (key, value); a header without a value reads as empty.
///
/// Keys are read as bytes, a key that is not UTF-8 with its invalid bytes
/// replaced (U+FFFD): rdkafka's own iterator unwraps each key as UTF-8 and
/// panics on such a record (rdkafka 0.39, `BorrowedHeaders::try_get`), which
/// anyone who can write to a topic could send.
pub fn headers_of(m: &BorrowedMessage<'_>) -> Vec<(String, Vec<u8>)> {
    use rdkafka::bindings as rd;
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `m.ptr()` is a live message for as long as `m` is borrowed; the
    // headers it returns are owned by the message and only read here.
    let err = unsafe { rd::rd_kafka_message_headers(m.ptr(), &mut headers) };
    if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || headers.is_null() {
        return Vec::new();
    }
    // SAFETY: `headers` is the message's header list (checked non-null above).
    let count = unsafe { rd::rd_kafka_header_cnt(headers) };
    let mut out = Vec::with_capacity(count);
    for idx in 0..count {
        let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
        // SAFETY: `idx` is below the count; librdkafka hands back pointers into
        // the header list: a NUL-terminated name and `size` bytes of value (or
        // a null value), valid while the message lives.
        let err =
            unsafe { rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            continue;
        }
        // SAFETY: as above; both are copied before the next call.
        let key = unsafe { std::ffi::CStr::from_ptr(name) }.to_bytes();
        let value = if value.is_null() {
            Vec::new()
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) }.to_vec()
        };
        out.push((String::from_utf8_lossy(key).into_owned(), value));
    }
    out
}

/// Settings every client shares: bootstrap servers and the pass-through properties.
pub fn base_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.kafka.bootstrap_servers);
    for (k, v) in &config.kafka.properties {
        c.set(k, v);
    }
    c
}

/// Whether the consumers use the KIP-848 consumer group protocol
/// (`group.protocol = "consumer"` in `[kafka.properties]`): the broker then owns
/// the session timeout, heartbeats and assignment, and librdkafka refuses
/// `session.timeout.ms`.
pub fn consumer_protocol(config: &Config) -> bool {
    config
        .kafka
        .properties
        .get("group.protocol")
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("consumer"))
}

/// An admin client for the configured brokers.
pub(crate) fn admin_client(
    config: &Config,
) -> Result<AdminClient<DefaultClientContext>, BrokerError> {
    base_config(config)
        .create()
        .map_err(|source| BrokerError::Client {
            what: "admin client",
            source: Box::new(source),
        })
}

/// The broker's topic names, asked with a bounded timeout, retried with backoff
/// as `[kafka.connect]` says, logging each failed attempt.
pub async fn wait_for_broker(config: &Config) -> Result<BTreeSet<String>, BrokerError> {
    let connect = &config.kafka.connect;
    let mut attempt = 1;
    loop {
        let cfg = base_config(config);
        let timeout = connect.timeout;
        let result = tokio::task::spawn_blocking(move || list_topics(&cfg, timeout)).await?;
        match result {
            Ok(topics) => {
                if attempt > 1 {
                    tracing::info!(attempt, "broker reachable");
                }
                return Ok(topics);
            }
            Err(e) if attempt < connect.attempts => {
                tracing::warn!(
                    attempt,
                    of = connect.attempts,
                    retry_in = %humantime::format_duration(connect.backoff),
                    bootstrap_servers = %config.kafka.bootstrap_servers,
                    error = %e,
                    "broker not reachable; retrying"
                );
                tokio::time::sleep(connect.backoff).await;
                attempt += 1;
            }
            Err(e) => {
                return Err(BrokerError::Unreachable {
                    servers: config.kafka.bootstrap_servers.clone(),
                    attempts: attempt,
                    last: e.to_string(),
                })
            }
        }
    }
}

/// The topic names, or why the broker did not answer (its reason alone: the
/// caller says which broker).
fn list_topics(cfg: &ClientConfig, timeout: Duration) -> Result<BTreeSet<String>, KafkaOrEmpty> {
    let consumer: BaseConsumer = cfg.create().map_err(KafkaOrEmpty::Kafka)?;
    let md = consumer
        .fetch_metadata(None, timeout)
        .map_err(KafkaOrEmpty::Kafka)?;
    if md.brokers().is_empty() {
        return Err(KafkaOrEmpty::NoBrokers);
    }
    Ok(md.topics().iter().map(|t| t.name().to_string()).collect())
}

/// Why one metadata request failed.
#[derive(Debug, thiserror::Error)]
enum KafkaOrEmpty {
    #[error(transparent)]
    Kafka(KafkaError),
    #[error("the cluster reported no brokers")]
    NoBrokers,
}

/// Make sure every topic in `needed` exists: create the missing ones when
/// `[topics] create` is set, refuse otherwise (never rely on auto-creation).
pub async fn ensure_topics(
    config: &Config,
    existing: &BTreeSet<String>,
    needed: &BTreeSet<String>,
) -> Result<(), BrokerError> {
    ensure_topics_with(config, existing, needed, &[]).await
}

/// [`ensure_topics`], creating the missing ones with these topic settings
/// (`cleanup.policy`...). A broker that refuses a setting is an error that names
/// it: the topic is not created without it.
pub async fn ensure_topics_with(
    config: &Config,
    existing: &BTreeSet<String>,
    needed: &BTreeSet<String>,
    settings: &[(&str, &str)],
) -> Result<(), BrokerError> {
    let missing: Vec<&String> = needed.difference(existing).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let Some(create) = &config.topics.create else {
        return Err(BrokerError::TopicsMissing(
            missing.iter().map(|s| s.to_string()).collect(),
        ));
    };
    let admin = admin_client(config)?;
    let new: Vec<NewTopic> = missing
        .iter()
        .map(|t| {
            settings.iter().fold(
                NewTopic::new(
                    t,
                    create.partitions,
                    TopicReplication::Fixed(create.replication),
                ),
                |topic, (k, v)| topic.set(k, v),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .map_err(|e| BrokerError::CreateTopics(Box::new(e)))?;
    for r in results {
        match r {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = create.partitions, settings = ?settings, "created topic")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) if !settings.is_empty() => {
                return Err(BrokerError::SettingRefused {
                    topic,
                    settings: settings
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    code,
                })
            }
            Err((topic, code)) => return Err(BrokerError::CreateTopic { topic, code }),
        }
    }
    Ok(())
}

/// The value of one setting of an existing topic (DescribeConfigs), or `None`
/// when the broker does not report it.
pub async fn topic_setting(
    config: &Config,
    topic: &str,
    name: &str,
) -> Result<Option<String>, BrokerError> {
    use rdkafka::admin::ResourceSpecifier;
    let admin = admin_client(config)?;
    let results = admin
        .describe_configs(
            &[ResourceSpecifier::Topic(topic)],
            &AdminOptions::new().request_timeout(Some(Duration::from_secs(10))),
        )
        .await;
    let settings_error = |source| BrokerError::TopicSettings {
        topic: topic.to_string(),
        source: Box::new(source),
    };
    for r in results.map_err(settings_error)? {
        let resource = r.map_err(|code| settings_error(KafkaError::AdminOp(code)))?;
        if let Some(entry) = resource.get(name) {
            return Ok(entry.value.clone());
        }
    }
    Ok(None)
}

/// A reader's client context: a partition's end (EOF, asked for with
/// `enable.partition.eof`) is how reading stops, not an error to log.
struct EndAware;

impl rdkafka::ClientContext for EndAware {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if !is_partition_end(&error) {
            tracing::warn!(error = %error, "librdkafka: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndAware {}

/// Whether an error a client reported is a partition's end (not worth a log line).
pub fn is_partition_end(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    )
}

/// Visit every record of `topic` up to its end as of now (all partitions, from
/// their start, without joining a group). Fails if the reading stops making
/// progress for 30 s.
pub fn read_to_end(
    cfg: ClientConfig,
    topic: &str,
    group: &str,
    visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, BrokerError> {
    read_to_end_since(cfg, topic, group, None, visit)
}

/// [`read_to_end`] from the first record of each partition whose timestamp is
/// at or after `since` (ListOffsets by time); partitions with none are skipped.
pub fn read_to_end_since(
    cfg: ClientConfig,
    topic: &str,
    group: &str,
    since: Option<std::time::SystemTime>,
    visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, BrokerError> {
    read_partitions(cfg, topic, group, since, None, visit)
}

/// The last `last` records (at most) of each partition of `topic`, up to its
/// end as of now.
pub fn read_tail(
    cfg: ClientConfig,
    topic: &str,
    group: &str,
    last: i64,
    visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, BrokerError> {
    read_partitions(cfg, topic, group, None, Some(last), visit)
}

fn read_partitions(
    mut cfg: ClientConfig,
    topic: &str,
    group: &str,
    since: Option<std::time::SystemTime>,
    tail: Option<i64>,
    mut visit: impl FnMut(&BorrowedMessage<'_>),
) -> Result<u64, BrokerError> {
    let read_error = |source| BrokerError::Read {
        topic: topic.to_string(),
        source: Box::new(source),
    };
    cfg.set("group.id", group)
        .set("enable.auto.commit", "false")
        // A partition's last offsets may hold no record (compacted away, or
        // transaction markers): its EOF ends it.
        .set("enable.partition.eof", "true");
    let consumer: BaseConsumer<EndAware> =
        cfg.create_with_context(EndAware)
            .map_err(|source| BrokerError::Client {
                what: "topic reader",
                source: Box::new(source),
            })?;
    let timeout = Duration::from_secs(10);
    let md = consumer
        .fetch_metadata(Some(topic), timeout)
        .map_err(read_error)?;
    let mut ends = std::collections::BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in md
        .topics()
        .first()
        .map(|t| t.partitions())
        .unwrap_or_default()
    {
        let (lo, hi) = consumer
            .fetch_watermarks(topic, p.id(), timeout)
            .map_err(read_error)?;
        if hi > lo {
            ends.insert(p.id(), hi);
            let start = tail.map_or(lo, |n| (hi - n).max(lo));
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(start))
                .map_err(read_error)?;
        }
    }
    if let Some(since) = since.filter(|_| !ends.is_empty()) {
        let ms = since
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let mut by_time = TopicPartitionList::new();
        for p in ends.keys() {
            by_time
                .add_partition_offset(topic, *p, Offset::Offset(ms))
                .map_err(read_error)?;
        }
        let starts = consumer
            .offsets_for_times(by_time, timeout)
            .map_err(|source| BrokerError::OffsetsByTime {
                topic: topic.to_string(),
                source: Box::new(source),
            })?;
        tpl = TopicPartitionList::new();
        for e in starts.elements() {
            let end = ends.get(&e.partition()).copied().unwrap_or(0);
            match e.offset() {
                Offset::Offset(start) if start < end => {
                    tpl.add_partition_offset(topic, e.partition(), Offset::Offset(start))
                        .map_err(read_error)?;
                }
                // No record at or after the time (End), or past the end as of now.
                _ => {
                    ends.remove(&e.partition());
                }
            }
        }
    }
    let mut read = 0;
    if ends.is_empty() {
        return Ok(read);
    }
    consumer.assign(&tpl).map_err(read_error)?;
    let patience = Duration::from_secs(30);
    let mut progress = std::time::Instant::now();
    while !ends.is_empty() {
        if progress.elapsed() > patience {
            return Err(BrokerError::Stalled {
                topic: topic.to_string(),
                seconds: patience.as_secs(),
            });
        }
        match consumer.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                progress = std::time::Instant::now();
                ends.remove(&p);
            }
            Some(Err(e)) => tracing::warn!(topic, error = %e, "reading to the end of the topic"),
            Some(Ok(m)) => {
                progress = std::time::Instant::now();
                let Some(&end) = ends.get(&m.partition()) else {
                    continue;
                };
                if m.offset() < end {
                    visit(&m);
                    read += 1;
                }
                if m.offset() + 1 >= end {
                    ends.remove(&m.partition());
                }
            }
        }
    }
    Ok(read)
}
