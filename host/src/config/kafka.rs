//! `[kafka]`: the brokers, the consumer, the producer and how to connect.

use super::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list.
    pub bootstrap_servers: String,
    /// Passed to librdkafka as is, for consumers, producers and the admin client
    /// (`security.protocol`, `sasl.mechanism`, `ssl.ca.location`...).
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties whose values are read from files, for secrets mounted
    /// by the platform (`"sasl.password" = "/run/secrets/kafka/password"`; the
    /// file's content, trailing newline removed). Relative to the config file.
    #[serde(default)]
    pub property_files: BTreeMap<String, PathBuf>,
    #[serde(default)]
    pub consumer: ConsumerConfig,
    #[serde(default)]
    pub producer: ProducerConfig,
    #[serde(default)]
    pub connect: ConnectConfig,
}

/// Consumer defaults (each plugin gets its own consumer and group).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerConfig {
    /// Group id template; `{plugin}` and the `[topics]` variables are available.
    pub group_template: String,
    /// Where a group with no committed offset starts: `earliest` or `latest`.
    pub auto_offset_reset: String,
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub max_poll_interval: Duration,
    /// How often finished offsets are committed (asynchronously). Short, so a
    /// crash redelivers little.
    #[serde(with = "humantime_serde")]
    pub commit_interval: Duration,
    /// Static group membership (`group.instance.id`): a host that restarts with
    /// the same id gets its partitions back at once instead of after
    /// `session_timeout`. `{host_id}` (see `host_id_file`), `{hostname}`,
    /// `{plugin}` and the `[topics]` variables are available; every host of a
    /// group needs its own. Empty: dynamic membership. A host stopped for good
    /// keeps its partitions until `session_timeout` has passed.
    pub instance_id: String,
    /// Where this host keeps its id (`{host_id}`), relative to weir.toml: created
    /// once as `{hostname}-{random}`, kept across restarts, and locked while the
    /// host runs, so a second host on the same directory refuses to start rather
    /// than share the first one's static member ids.
    pub host_id_file: PathBuf,
    /// A partition with lag and no progress for this long (not paused by an
    /// operator) is reported: logged, and `/health` turns `Degraded`. `0s`: never.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    pub fetch_max_bytes: u32,
    pub max_partition_fetch_bytes: u32,
    /// Longest a fetch waits for records (`fetch.wait.max.ms`). Kafka answers a
    /// fetch as soon as records arrive, so while records flow the wait costs no
    /// latency; when they do not, it bounds how many requests an idle consumer
    /// makes (10 a second per broker at 100 ms) and how long a partition that was
    /// just resumed (backpressure, an operator's resume) waits behind another
    /// partition's long poll on the same broker.
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// How much librdkafka reads ahead per consumer (`queued.max.messages.kbytes`),
    /// on top of the plugin's `max_in_flight_bytes`.
    pub prefetch_max_bytes: bytesize::ByteSize,
    /// How often each plugin's lag is measured (a watermark request per assigned
    /// partition, one committed-offsets request); `0s` turns it off.
    #[serde(with = "humantime_serde")]
    pub lag_interval: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group_template: "{prefix}-{plugin}".into(),
            auto_offset_reset: "earliest".into(),
            session_timeout: Duration::from_secs(45),
            max_poll_interval: Duration::from_secs(300),
            commit_interval: Duration::from_millis(100),
            instance_id: "{host_id}-{plugin}".into(),
            host_id_file: PathBuf::from("data/host-id"),
            stall_timeout: Duration::from_secs(60),
            fetch_max_bytes: 52_428_800,
            max_partition_fetch_bytes: 1_048_576,
            prefetch_max_bytes: bytesize::ByteSize::mib(8),
            fetch_wait: Duration::from_millis(100),
            lag_interval: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProducerConfig {
    /// How long a message may take to be acknowledged before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub message_timeout: Duration,
    /// librdkafka's `linger.ms`: how long the producer waits to fill a batch.
    /// Nothing in the event path waits for acknowledgements, so this trades a
    /// little latency for far fewer, larger produce requests.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// librdkafka's `compression.type`: `none`, `gzip`, `snappy`, `lz4`, `zstd`.
    pub compression: String,
    /// The largest record the host writes (librdkafka's `message.max.bytes`):
    /// a plugin's published message must fit with the headers the host adds,
    /// and a dead letter whose input does not fit goes out without its payload.
    /// Keep it at most the broker's `message.max.bytes` (topic `max.message.bytes`).
    pub message_max_bytes: bytesize::ByteSize,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            message_timeout: Duration::from_secs(30),
            linger: Duration::from_millis(5),
            compression: "none".into(),
            message_max_bytes: bytesize::ByteSize::b(1_000_000),
        }
    }
}

/// Reaching the broker at start-up (seed 000 retries 30 × 2 s).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectConfig {
    pub attempts: u32,
    #[serde(with = "humantime_serde")]
    pub backoff: Duration,
    /// Timeout of one metadata request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for ConnectConfig {
    fn default() -> Self {
        ConnectConfig {
            attempts: 30,
            backoff: Duration::from_secs(2),
            timeout: Duration::from_secs(5),
        }
    }
}
