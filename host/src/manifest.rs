//! Plugin manifests: `<name>.toml` next to `<name>.wasm`.
//!
//! Parsing is strict: an unknown field, a wrong type or an out-of-range value is an
//! error naming the file, the line and the field's path (`limits.memroy`), so an
//! operator can fix it without guessing.

use crate::storage_key;
use bytesize::ByteSize;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A parsed, validated plugin manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name: lowercase letters, digits, `-` and `_`. Must match the file name.
    pub name: String,
    /// Free text shown by `weir plugins`.
    #[serde(default)]
    pub description: String,
    /// Logical topics the plugin consumes (without the environment prefix).
    pub topics: Vec<String>,
    /// What the plugin may reach. Everything not granted here is denied.
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub retry: RetryPolicy,
    /// How the plugin consumes: group, parallelism, backpressure.
    #[serde(default)]
    pub consumer: ConsumerSettings,
    /// Free-form values the plugin reads through the `config` capability.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    pub cache: Option<CacheGrant>,
    pub storage: Option<StorageGrant>,
    pub publish: Option<PublishGrant>,
}

/// `[capabilities.cache]`: present = the plugin may use the cache.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheGrant {
    /// A namespace shared with every plugin that names it. Without it the plugin
    /// gets a private namespace named after itself.
    pub namespace: Option<String>,
}

/// `[capabilities.storage]`: the key prefixes the plugin may read, write and delete.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageGrant {
    pub prefixes: Vec<String>,
}

/// `[capabilities.publish]`: logical topics the plugin may publish to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishGrant {
    pub topics: Vec<String>,
    /// When set, outputs carry CloudEvents binary-mode headers (`ce_specversion`,
    /// `ce_id`, `ce_source` = this value, `ce_type`, `ce_time`) unless the plugin set them.
    pub cloudevents_source: Option<String>,
}

/// `[limits]`: per-plugin resource limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Linear memory cap for one instance (`"64 MiB"`), all its memories together.
    pub memory: ByteSize,
    /// What the host may hold for one call into an instance (one event, or a
    /// batch): messages to publish, scheduled deletions, recorded calls, and
    /// each value read (object, cache value, listing). Past it a call is
    /// refused with `invalid`.
    pub host_memory: ByteSize,
    /// Wall-clock deadline for handling one event (`"5s"`, `"250ms"`).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: ByteSize::mib(64),
            host_memory: ByteSize::mib(64),
            timeout: Duration::from_secs(5),
        }
    }
}

/// `[consumer]`: the plugin's consumer group and parallelism.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsumerSettings {
    /// Consumer group id; default from the host's `kafka.consumer.group_template`.
    pub group: Option<String>,
    /// Parallel instances. Events of one key (within a partition) always go to the
    /// same worker, in order; events without a key keep their partition's order.
    pub workers: u32,
    /// Events read and not yet committed past, at most; past it the partitions
    /// are paused (they resume at half).
    pub max_in_flight: u32,
    /// The same bound in bytes (payloads and keys).
    pub max_in_flight_bytes: ByteSize,
    /// Events handed to the plugin in one call at most (when it exports
    /// `handle-batch`; one event per (partition, key) per call).
    pub batch: u32,
    /// What a reader of the outputs sees after a crash: `at-least-once` (the
    /// events since the last commit are handled and published again) or
    /// `exactly-once` (outputs and consumed offsets commit in one Kafka
    /// transaction; a `read_committed` reader sees each input's outputs once).
    pub delivery: DeliveryMode,
    /// Exactly-once: how often the open transaction is committed (Kafka
    /// Streams' `commit.interval.ms`). Longer: fewer commits, more latency.
    #[serde(with = "humantime_serde")]
    pub transaction_interval: Duration,
}

/// `[consumer] delivery`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeliveryMode {
    #[default]
    AtLeastOnce,
    ExactlyOnce,
}

impl DeliveryMode {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryMode::AtLeastOnce => "at-least-once",
            DeliveryMode::ExactlyOnce => "exactly-once",
        }
    }
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        ConsumerSettings {
            group: None,
            workers: 1,
            max_in_flight: 5_000,
            max_in_flight_bytes: ByteSize::mib(16),
            batch: 128,
            delivery: DeliveryMode::AtLeastOnce,
            transaction_interval: Duration::from_millis(100),
        }
    }
}

/// `[retry]`: how a failed event is retried before it is dead-lettered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. 1 = no retry.
    pub attempts: u32,
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Each backoff is the previous one times this (before jitter).
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            multiplier: 2.0,
        }
    }
}

/// A manifest that cannot be used, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// The field's path (`limits.memory`), when the problem is one field.
    pub field: Option<String>,
    pub reason: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad manifest {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        write!(f, "{}", self.reason)
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    /// Read and validate the manifest at `path`. The plugin's name must match the file name.
    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let cannot = |reason: String| ManifestError {
            file: path.to_path_buf(),
            line: None,
            field: None,
            reason,
        };
        let bytes = crate::plugin_dir::read_plugin_file(path, crate::plugin_dir::MAX_MANIFEST_FILE)
            .map_err(|e| cannot(format!("cannot read it: {e}")))?;
        let text = String::from_utf8(bytes)
            .map_err(|_| cannot("it is not UTF-8 text: a manifest is TOML".into()))?;
        let manifest = Self::parse(&text, path)?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem != manifest.name {
            return Err(field_error(
                path,
                &text,
                "name",
                format!(
                    "is {:?} but the file is named {stem:?}: a plugin's manifest must be <name>.toml",
                    manifest.name
                ),
            ));
        }
        Ok(manifest)
    }

    /// Parse and validate manifest text; `file` is used in error messages only.
    pub fn parse(text: &str, file: &Path) -> Result<Manifest, ManifestError> {
        let err = |line, field, reason| ManifestError {
            file: file.to_path_buf(),
            line,
            field,
            reason,
        };
        let de = toml::Deserializer::parse(text)
            .map_err(|e| err(line_of(text, e.span()), None, one_line(e.message())))?;
        let manifest: Manifest = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let field = (path != ".").then_some(path);
            err(
                line_of(text, inner.span()),
                field,
                one_line(inner.message()),
            )
        })?;
        manifest
            .validate()
            .map_err(|(field, reason)| field_error(file, text, &field, reason))?;
        Ok(manifest)
    }

    /// Checks serde cannot express. Returns the field's path and the reason.
    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |field: &str, reason: String| Err((field.to_string(), reason));
        if !is_name(&self.name) {
            return bad(
                "name",
                format!(
                    "{:?} is not a valid plugin name: use lowercase letters, digits, `-` and `_`, starting with a letter or digit",
                    self.name
                ),
            );
        }
        if self.topics.is_empty() {
            return bad(
                "topics",
                "is empty: list the logical topics the plugin consumes".into(),
            );
        }
        for (i, t) in self.topics.iter().enumerate() {
            if let Err(reason) = check_topic(t) {
                return bad(&format!("topics[{i}]"), reason);
            }
        }
        if let Some(cache) = &self.capabilities.cache {
            if let Some(ns) = &cache.namespace {
                if ns.is_empty() || ns.contains(':') || ns.chars().any(char::is_control) {
                    return bad(
                        "capabilities.cache.namespace",
                        format!("{ns:?} is not a valid namespace: it must be non-empty, without `:` or control characters"),
                    );
                }
            }
        }
        if let Some(storage) = &self.capabilities.storage {
            for (i, p) in storage.prefixes.iter().enumerate() {
                let field = format!("capabilities.storage.prefixes[{i}]");
                if !p.ends_with('/') {
                    return bad(&field, format!("{p:?} must end with `/` (a prefix names a folder; \"audio\" would also grant \"audiobooks/\")"));
                }
                if let Err(reason) = storage_key::check(p.trim_end_matches('/')) {
                    return bad(&field, format!("{p:?}: {reason}"));
                }
                if p.starts_with(storage_key::RESERVED_PREFIX) {
                    return bad(
                        &field,
                        format!(
                            "{p:?}: `{}` is reserved for the host",
                            storage_key::RESERVED_PREFIX
                        ),
                    );
                }
            }
        }
        if let Some(publish) = &self.capabilities.publish {
            for (i, t) in publish.topics.iter().enumerate() {
                if let Err(reason) = check_topic(t) {
                    return bad(&format!("capabilities.publish.topics[{i}]"), reason);
                }
            }
        }
        let mem = self.limits.memory.as_u64();
        if !(ByteSize::mib(1).as_u64()..=ByteSize::gib(4).as_u64()).contains(&mem) {
            return bad(
                "limits.memory",
                format!("{} is out of range: use 1 MiB to 4 GiB", self.limits.memory),
            );
        }
        let host = self.limits.host_memory.as_u64();
        if !(ByteSize::mib(1).as_u64()..=ByteSize::gib(1).as_u64()).contains(&host) {
            return bad(
                "limits.host_memory",
                format!(
                    "{} is out of range: use 1 MiB to 1 GiB",
                    self.limits.host_memory
                ),
            );
        }
        if self.limits.timeout < Duration::from_millis(1)
            || self.limits.timeout > Duration::from_secs(600)
        {
            return bad(
                "limits.timeout",
                format!(
                    "{} is out of range: use 1ms to 10m",
                    humantime::format_duration(self.limits.timeout)
                ),
            );
        }
        if !(1..=64).contains(&self.consumer.workers) {
            return bad(
                "consumer.workers",
                format!("{} is out of range: use 1 to 64", self.consumer.workers),
            );
        }
        if self.consumer.max_in_flight < self.consumer.workers {
            return bad(
                "consumer.max_in_flight",
                "must be at least consumer.workers".into(),
            );
        }
        if !(1..=4096).contains(&self.consumer.batch) {
            return bad(
                "consumer.batch",
                format!("{} is out of range: use 1 to 4096", self.consumer.batch),
            );
        }
        if self.consumer.max_in_flight_bytes.as_u64() < 1024 * 1024 {
            return bad(
                "consumer.max_in_flight_bytes",
                format!(
                    "{} is too small: at least 1 MiB",
                    self.consumer.max_in_flight_bytes
                ),
            );
        }
        let interval = self.consumer.transaction_interval;
        if interval < Duration::from_millis(10) || interval > Duration::from_secs(60) {
            return bad(
                "consumer.transaction_interval",
                format!(
                    "{} is out of range: use 10ms to 60s",
                    humantime::format_duration(interval)
                ),
            );
        }
        if let Some(group) = &self.consumer.group {
            if group.trim().is_empty() {
                return bad("consumer.group", "is empty".into());
            }
        }
        if self.retry.attempts == 0 {
            return bad(
                "retry.attempts",
                "must be at least 1 (1 means no retry)".into(),
            );
        }
        if self.retry.multiplier < 1.0 || !self.retry.multiplier.is_finite() {
            return bad("retry.multiplier", "must be a number ≥ 1.0".into());
        }
        if self.retry.max_backoff < self.retry.initial_backoff {
            return bad(
                "retry.max_backoff",
                "must not be shorter than retry.initial_backoff".into(),
            );
        }
        Ok(())
    }

    /// The cache namespace the plugin works in.
    pub fn cache_namespace(&self) -> Option<String> {
        self.capabilities
            .cache
            .as_ref()
            .map(|c| c.namespace.clone().unwrap_or_else(|| self.name.clone()))
    }

    /// `[config]` as strings: TOML strings verbatim, anything else as JSON text.
    pub fn config_strings(&self) -> BTreeMap<String, String> {
        self.config
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    other => serde_json::to_string(other).unwrap_or_default(),
                };
                (k.clone(), s)
            })
            .collect()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.len() <= 64
}

/// Whether `c` may appear in a Kafka name (a topic, a client or member id that
/// stays readable): `[a-zA-Z0-9._-]`.
pub fn is_kafka_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Kafka's rules for topic names: 1 to 249 of `[a-zA-Z0-9._-]`.
pub fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 249 {
        return Err(format!(
            "{t:?} is not a valid topic: use 1 to 249 characters"
        ));
    }
    if let Some(c) = t.chars().find(|c| !is_kafka_name_char(*c)) {
        return Err(format!(
            "{t:?} is not a valid topic: {c:?} is not allowed (use letters, digits, `.`, `_`, `-`)"
        ));
    }
    Ok(())
}

fn field_error(file: &Path, text: &str, field: &str, reason: String) -> ManifestError {
    ManifestError {
        file: file.to_path_buf(),
        line: find_key_line(text, field),
        field: Some(field.to_string()),
        reason,
    }
}

/// Best-effort line of a field for validation errors: the line where its last key
/// segment is assigned, searched after its table header.
fn find_key_line(text: &str, field: &str) -> Option<usize> {
    let path: Vec<&str> = field
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .collect();
    let (key, tables) = path.split_last()?;
    let header = format!("[{}]", tables.join("."));
    let mut in_table = tables.is_empty();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') {
            in_table = l == header;
            continue;
        }
        if in_table && l.split('=').next().map(str::trim) == Some(*key) {
            return Some(i + 1);
        }
    }
    None
}

fn line_of(text: &str, span: Option<std::ops::Range<usize>>) -> Option<usize> {
    let start = span?.start.min(text.len());
    Some(text[..start].matches('\n').count() + 1)
}

fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text, Path::new("p.toml"))
    }

    #[test]
    fn minimal_manifest_gets_defaults() {
        let m = parse("name = \"p\"\ntopics = [\"t\"]\n").unwrap();
        assert_eq!(m.limits.memory, ByteSize::mib(64));
        assert_eq!(m.retry.attempts, 5);
        assert!(m.capabilities.cache.is_none());
        assert_eq!(m.cache_namespace(), None);
    }

    #[test]
    fn delivery_defaults_to_at_least_once_and_names_a_bad_mode() {
        let m = parse("name = \"p\"\ntopics = [\"t\"]\n").unwrap();
        assert_eq!(m.consumer.delivery, DeliveryMode::AtLeastOnce);
        let m = parse(
            "name = \"p\"\ntopics = [\"t\"]\n[consumer]\ndelivery = \"exactly-once\"\ntransaction_interval = \"250ms\"\n",
        )
        .unwrap();
        assert_eq!(m.consumer.delivery, DeliveryMode::ExactlyOnce);
        assert_eq!(m.consumer.transaction_interval, Duration::from_millis(250));
        let e = parse("name = \"p\"\ntopics = [\"t\"]\n[consumer]\ndelivery = \"exactly_once\"\n")
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("consumer.delivery"));
        assert!(e.reason.contains("exactly-once"), "{e}");
        let e =
            parse("name = \"p\"\ntopics = [\"t\"]\n[consumer]\ntransaction_interval = \"1ms\"\n")
                .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("consumer.transaction_interval"));
    }

    #[test]
    fn unknown_field_names_its_path_and_line() {
        let e =
            parse("name = \"p\"\ntopics = [\"t\"]\n[limits]\nmemroy = \"1 MiB\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limits.memroy"));
        assert_eq!(e.line, Some(4));
        assert!(e.reason.contains("unknown field `memroy`"), "{e}");
        assert!(e
            .to_string()
            .starts_with("bad manifest p.toml:4: limits.memroy:"));
    }

    #[test]
    fn wrong_type_names_the_field() {
        let e = parse("name = \"p\"\ntopics = \"t\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("topics"));
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn validation_errors_name_the_field() {
        let e = parse(
            "name = \"p\"\ntopics = [\"t\"]\n[capabilities.storage]\nprefixes = [\"../x/\"]\n",
        )
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("capabilities.storage.prefixes[0]"));
        assert_eq!(e.line, Some(4));
        let e = parse("name = \"p\"\ntopics = [\"bad topic\"]\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("topics[0]"));
        let e =
            parse("name = \"p\"\ntopics = [\"t\"]\n[limits]\nmemory = \"1 KiB\"\n").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("limits.memory"));
        let e = parse(
            "name = \"p\"\ntopics = [\"t\"]\n[capabilities.storage]\nprefixes = [\"_weir/\"]\n",
        )
        .unwrap_err();
        assert!(e.reason.contains("reserved"), "{e}");
    }

    #[test]
    fn config_values_become_strings() {
        let m = parse("name = \"p\"\ntopics = [\"t\"]\n[config]\na = \"x\"\nb = 3\n[config.routes]\ncreated = \"t1\"\n").unwrap();
        let c = m.config_strings();
        assert_eq!(c["a"], "x");
        assert_eq!(c["b"], "3");
        assert_eq!(c["routes"], "{\"created\":\"t1\"}");
    }
}
