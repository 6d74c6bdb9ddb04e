//! `[cache]` and `[storage]`: the capability backends (memory or Redis, a directory or S3).

use super::*;

/// Which cache backend serves the `cache` capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheKind {
    /// In this process: fast, private to one host, lost on restart.
    Memory,
    /// A Redis server shared by every host (and by other services using the same keys).
    Redis,
}

/// `[cache]`: the backend of the `cache` capability.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    pub backend: CacheKind,
    /// `redis://[user:password@]host:port[/db]` (or `redis+unix:///path`), for `backend = "redis"`.
    pub url: Option<String>,
    /// Longest a cache call may wait for Redis (connecting included); past it the
    /// plugin gets `unavailable` and the event is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Capacity of the memory backend (keys and values).
    pub max_bytes: bytesize::ByteSize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            backend: CacheKind::Memory,
            url: None,
            timeout: Duration::from_secs(2),
            max_bytes: bytesize::ByteSize::mib(256),
        }
    }
}

/// Which object store serves the `storage` capability.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    /// A directory of this host (`storage.dir`): for one host, or a shared volume.
    Local,
    /// An S3-compatible bucket (`[storage.s3]`), shared by every host.
    S3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageKind,
    /// Local directory for the storage capability (relative to weir.toml).
    pub dir: PathBuf,
    /// The bucket, for `backend = "s3"`.
    pub s3: S3Config,
    /// Longest one storage call may take (retries included); past it the plugin
    /// gets `unavailable` and the event is retried.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How often the host carries out the due deletions of the schedule
    /// partitions it owns.
    #[serde(with = "humantime_serde")]
    pub sweep_interval: Duration,
    /// The topic scheduled deletions are recorded on (a logical name: the
    /// `[topics]` template applies).
    pub schedule_topic: String,
    /// The consumer group in which hosts share the schedule topic's partitions:
    /// the owner of a partition carries out its deletions. The `[topics]`
    /// variables are available. Empty: the schedule topic's full name.
    pub schedule_group: String,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageKind::Local,
            dir: PathBuf::from("data/storage"),
            s3: S3Config::default(),
            timeout: Duration::from_secs(10),
            sweep_interval: Duration::from_secs(60),
            schedule_topic: "weir-schedule".into(),
            schedule_group: String::new(),
        }
    }
}

/// `[storage.s3]`: an S3-compatible bucket. Credentials come from the usual
/// environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`; `AWS_REGION` and `AWS_ENDPOINT_URL` when not set here),
/// or from the instance's role.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    pub bucket: String,
    /// Empty: `AWS_REGION` (else `us-east-1`).
    pub region: String,
    /// For S3-compatible servers (MinIO, Ceph, moto...): `http(s)://host:port`.
    /// Empty: AWS (or `AWS_ENDPOINT_URL`).
    pub endpoint: String,
    /// Address the bucket as `endpoint/bucket/key` rather than
    /// `bucket.endpoint/key` (most S3-compatible servers want this).
    pub path_style: bool,
}
