//! The host configuration, `weir.toml`, with environment overrides.
//!
//! Every key can be overridden by `WEIR_<SECTION>__<KEY>` (for example
//! `WEIR_KAFKA__BOOTSTRAP_SERVERS`, `WEIR_TOPICS__PREFIX`), as containers expect.
//! Unknown keys and bad values are errors naming the key and where it came from.

use crate::topics::{TemplateError, TopicNamer};
use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod admin;
mod backends;
mod host;
mod kafka;
mod plugins;
mod topics;
pub use admin::*;
pub use backends::*;
pub use host::*;
pub use kafka::*;
pub use plugins::*;
pub use topics::*;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    #[serde(default)]
    pub topics: TopicsConfig,
    #[serde(default)]
    pub plugins: PluginsConfig,
    #[serde(default)]
    pub cache: CacheConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub dlq: DlqConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// This host's id (`{host_id}`), once `weir run` holds its host id file.
    #[serde(skip)]
    pub host_id: Option<String>,
}

/// A configuration that cannot be used: the message names the key and its source.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// The sections of `weir.toml`: `WEIR_<SECTION>__<KEY>` overrides a key of one.
    /// (Keep in step with [`Config`]'s fields; a unit test checks each is one.)
    pub const SECTIONS: &'static [&'static str] = &[
        "kafka",
        "topics",
        "plugins",
        "cache",
        "storage",
        "dlq",
        "shutdown",
        "admin",
        "breaker",
        "telemetry",
    ];

    /// Load `path` with `WEIR_*` environment overrides; relative directories are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        if !path.exists() {
            return Err(ConfigError(format!(
                "config file {} does not exist (see examples/weir.toml)",
                path.display()
            )));
        }
        let figment = Figment::new()
            .merge(Toml::file(path))
            .merge(env_overrides());
        let mut config = Self::from_figment(figment, path)?;
        // Taken as written: parsed like other variables, a numeric token would
        // be a number (its leading zeros lost) and a type error would echo it.
        if let Some(token) = std::env::var_os(TOKEN_VARIABLE) {
            let token = token
                .into_string()
                .map_err(|_| ConfigError(format!("{TOKEN_VARIABLE} is not valid UTF-8")))?;
            config.admin.token = Some(Secret(token));
        }
        Ok(config)
    }

    /// Build a config from a figment (for tests and embedding).
    pub fn from_figment(figment: Figment, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = figment.extract().map_err(|e| {
            let lines: Vec<String> = e.into_iter().map(|err| describe_error(&err)).collect();
            ConfigError(format!(
                "bad config {}: {}",
                path.display(),
                lines.join("; ")
            ))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut paths = vec![
            &mut config.plugins.dir,
            &mut config.plugins.cache_dir,
            &mut config.plugins.status_file,
            &mut config.storage.dir,
            &mut config.kafka.consumer.host_id_file,
        ];
        if let Some(file) = &mut config.admin.token_file {
            paths.push(file);
        }
        for file in config.kafka.property_files.values_mut() {
            paths.push(file);
        }
        for extra in &mut config.plugins.extra {
            paths.push(&mut extra.wasm);
            paths.push(&mut extra.manifest);
        }
        for path in paths {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        for (name, file) in &config.kafka.property_files {
            let value = read_small_file(file).map_err(|e| {
                ConfigError(format!(
                    "bad config {}: kafka.property_files.\"{name}\": {} cannot be read: {e}",
                    path.display(),
                    file.display()
                ))
            })?;
            let value = value.strip_suffix('\n').unwrap_or(&value);
            let value = value.strip_suffix('\r').unwrap_or(value).to_string();
            config.kafka.properties.insert(name.clone(), value);
        }
        config.validate().map_err(|(key, why)| {
            ConfigError(format!("bad config {}: {key}: {why}", path.display()))
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return Err(("kafka.bootstrap_servers".into(), "is empty".into()));
        }
        if let Some(bad) = self
            .admin
            .open
            .iter()
            .find(|g| !ADMIN_ROUTE_GROUPS.contains(&g.as_str()))
        {
            return Err((
                "admin.open".into(),
                format!(
                    "{bad:?} is not a route group: use {}",
                    ADMIN_ROUTE_GROUPS.join(", ")
                ),
            ));
        }
        self.namer()
            .map_err(|e| ("topics.template".into(), e.to_string()))?;
        if !["earliest", "latest"].contains(&self.kafka.consumer.auto_offset_reset.as_str()) {
            return Err((
                "kafka.consumer.auto_offset_reset".into(),
                format!(
                    "{:?}: use \"earliest\" or \"latest\"",
                    self.kafka.consumer.auto_offset_reset
                ),
            ));
        }
        check_template(
            &self.kafka.consumer.group_template,
            "plugin",
            &self.topics.vars,
        )
        .map_err(|e| ("kafka.consumer.group_template".into(), e.to_string()))?;
        check_template(&self.dlq.template, "topic", &self.topics.vars)
            .map_err(|e| ("dlq.template".into(), e.to_string()))?;
        check_template(
            &self.kafka.consumer.instance_id.replace("{host_id}", ""),
            "hostname",
            &self.topics.vars,
        )
        .map_err(|e| ("kafka.consumer.instance_id".into(), e.to_string()))?;
        if !["none", "gzip", "snappy", "lz4", "zstd"]
            .contains(&self.kafka.producer.compression.as_str())
        {
            return Err((
                "kafka.producer.compression".into(),
                format!(
                    "{:?}: use \"none\", \"gzip\", \"snappy\", \"lz4\" or \"zstd\"",
                    self.kafka.producer.compression
                ),
            ));
        }
        let max = self.kafka.producer.message_max_bytes.as_u64();
        if !(64 * 1024..=1_000_000_000).contains(&max) {
            return Err((
                "kafka.producer.message_max_bytes".into(),
                format!(
                    "{} is out of range: use 64 KiB to 1 GB (librdkafka's bounds), at most the broker's message.max.bytes",
                    self.kafka.producer.message_max_bytes
                ),
            ));
        }
        self.validate_storage()?;
        if self.breaker.failures > 0 && self.breaker.probes == 0 {
            return Err((
                "breaker.probes".into(),
                "must be at least 1 (or set breaker.failures = 0 to turn the breaker off)".into(),
            ));
        }
        if let Some(create) = &self.topics.create {
            if create.partitions < 1 || create.replication < 1 {
                return Err((
                    "topics.create".into(),
                    "partitions and replication must be at least 1".into(),
                ));
            }
        }
        if self.kafka.connect.attempts == 0 {
            return Err(("kafka.connect.attempts".into(), "must be at least 1".into()));
        }
        if self.admin.enabled && self.admin.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                "admin.listen".into(),
                format!(
                    "{:?} is not an address to listen on: use ip:port, e.g. \"127.0.0.1:9464\" or \"0.0.0.0:9464\"",
                    self.admin.listen
                ),
            ));
        }
        self.validate_cache()
    }

    fn validate_storage(&self) -> Result<(), (String, String)> {
        let storage = &self.storage;
        if storage.schedule_topic.trim().is_empty() {
            return Err(("storage.schedule_topic".into(), "is empty".into()));
        }
        check_template(&storage.schedule_group, "", &self.topics.vars)
            .map_err(|e| ("storage.schedule_group".into(), e.to_string()))?;
        if storage.timeout.is_zero() {
            return Err(("storage.timeout".into(), "must be more than zero".into()));
        }
        let s3 = &storage.s3;
        match storage.backend {
            StorageKind::S3 if s3.bucket.trim().is_empty() => Err((
                "storage.s3.bucket".into(),
                "is required with backend = \"s3\"".into(),
            )),
            StorageKind::S3
                if !s3.endpoint.is_empty()
                    && !s3.endpoint.starts_with("http://")
                    && !s3.endpoint.starts_with("https://") =>
            {
                Err((
                    "storage.s3.endpoint".into(),
                    format!(
                        "{:?}: use http(s)://host:port, e.g. \"http://minio:9000\"",
                        s3.endpoint
                    ),
                ))
            }
            StorageKind::Local if !s3.bucket.is_empty() => Err((
                "storage.s3".into(),
                "is set but storage.backend is \"local\": set backend = \"s3\" to use the bucket"
                    .into(),
            )),
            _ => Ok(()),
        }
    }

    fn validate_cache(&self) -> Result<(), (String, String)> {
        let cache = &self.cache;
        if cache.timeout.is_zero() {
            return Err(("cache.timeout".into(), "must be more than zero".into()));
        }
        match (cache.backend, &cache.url) {
            (CacheKind::Redis, None) => Err((
                "cache.url".into(),
                "is required with backend = \"redis\" (e.g. \"redis://127.0.0.1:6379/0\")".into(),
            )),
            (CacheKind::Redis, Some(url)) => {
                check_redis_url(url).map_err(|e| ("cache.url".into(), e))
            }
            (CacheKind::Memory, Some(_)) => Err((
                "cache.url".into(),
                "is set but cache.backend is \"memory\": set backend = \"redis\" to use it, or remove the url".into(),
            )),
            (CacheKind::Memory, None) if cache.max_bytes.as_u64() < 1024 * 1024 => Err((
                "cache.max_bytes".into(),
                format!("{} is too small: at least 1 MiB", cache.max_bytes),
            )),
            (CacheKind::Memory, None) => Ok(()),
        }
    }

    /// The topic namer of `[topics]`.
    pub fn namer(&self) -> Result<TopicNamer, TemplateError> {
        TopicNamer::new(&self.topics.template, self.topics.vars.clone())
    }

    /// The consumer group of a plugin (unless its manifest names one).
    pub fn group_for(&self, plugin: &str) -> String {
        fill(
            &self.kafka.consumer.group_template,
            &[("plugin", plugin)],
            &self.topics.vars,
        )
    }

    /// The static group membership id of `plugin`'s consumer, if any.
    pub fn instance_id_for(&self, plugin: &str) -> Option<String> {
        let template = self.kafka.consumer.instance_id.trim();
        if template.is_empty() {
            return None;
        }
        let host_id = self.host_id.as_deref().unwrap_or("{host_id}");
        Some(fill(
            template,
            &[
                ("plugin", plugin),
                ("hostname", &hostname()),
                ("host_id", host_id),
            ],
            &self.topics.vars,
        ))
    }

    /// The consumer group that shares the schedule topic among hosts.
    pub fn schedule_group(&self) -> Result<String, TemplateError> {
        if self.storage.schedule_group.trim().is_empty() {
            return self.schedule_topic();
        }
        Ok(fill(&self.storage.schedule_group, &[], &self.topics.vars))
    }

    /// The full name of the control topic (operators' requests to every host).
    pub fn control_topic(&self) -> Result<String, TemplateError> {
        Ok(self.namer()?.full_name(&self.admin.control_topic))
    }

    /// The full name of the topic that marks replayed dead letters.
    pub fn replayed_topic(&self) -> Result<String, TemplateError> {
        Ok(self.namer()?.full_name(&self.dlq.replayed_topic))
    }

    /// The full name of the schedule topic.
    pub fn schedule_topic(&self) -> Result<String, TemplateError> {
        Ok(self.namer()?.full_name(&self.storage.schedule_topic))
    }

    /// The dead-letter topic for events of `full_topic` handled by `plugin`.
    pub fn dlq_topic(&self, full_topic: &str, plugin: &str) -> String {
        fill(
            &self.dlq.template,
            &[("topic", full_topic), ("plugin", plugin)],
            &self.topics.vars,
        )
    }
}

/// Whether `url` is a usable Redis URL (nothing is contacted).
fn check_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| redis_url_error(url, &e))
}

/// Why `url` is not a usable Redis URL (the URL itself, with its password, is
/// not repeated).
pub fn redis_url_error(url: &str, e: &redis::RedisError) -> String {
    let scheme = url.split("://").next().unwrap_or("");
    if scheme == "rediss" || scheme == "valkeys" {
        return "TLS (rediss://) is not supported by this build of weir yet; use redis:// on a trusted network or a TLS proxy".into();
    }
    format!("not a usable Redis URL ({e}); expected redis://[user:password@]host:port[/db]")
}

/// This machine's name (`$HOSTNAME`, else the kernel's), `weir` if unknown.
pub fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "weir".into())
}

/// Replace `{name}` placeholders from `fixed` then `vars`.
fn fill(template: &str, fixed: &[(&str, &str)], vars: &BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (k, v) in fixed {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Every `{name}` must be `extra`, `plugin`, `topic` or a variable.
fn check_template(
    template: &str,
    extra: &str,
    vars: &BTreeMap<String, String>,
) -> Result<(), TemplateError> {
    for name in crate::topics::placeholders(template)? {
        if name != extra && name != "plugin" && name != "topic" && !vars.contains_key(name) {
            return Err(TemplateError::NotAVariable {
                template: template.to_string(),
                name: name.to_string(),
            });
        }
    }
    Ok(())
}

/// The `WEIR_<SECTION>__<KEY>` variables of a known section. Any other `WEIR_*`
/// variable is not Weir's: Kubernetes gives every pod `WEIR_SERVICE_HOST`,
/// `WEIR_PORT`, `WEIR_PORT_9464_TCP`... for a Service named `weir`. Those are
/// ignored (one debug line each); a misspelt key of a known section still stops
/// the host with its precise message.
pub fn env_overrides() -> Env {
    Env::prefixed("WEIR_")
        .filter(|key| {
            let key = key.as_str();
            if key.eq_ignore_ascii_case("admin__token") {
                return false; // read as written by `Config::load`
            }
            let ours = key.split_once("__").is_some_and(|(section, _)| {
                Config::SECTIONS
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(section))
            });
            if !ours {
                tracing::debug!(
                    variable = %format!("WEIR_{}", key.to_ascii_uppercase()),
                    "ignored: not of the form WEIR_<SECTION>__<KEY> with a section of weir.toml"
                );
            }
            ours
        })
        .split("__")
}

/// `kafka.consumer.session_timeout: invalid type ... (from WEIR_KAFKA__CONSUMER__SESSION_TIMEOUT)`
/// The text of a file a setting names (a secret, a property): a regular file
/// of at most 1 MiB, so `/dev/zero` or a FIFO named by mistake is an error,
/// not a host that hangs at start.
fn read_small_file(path: &Path) -> std::io::Result<String> {
    let bytes = crate::plugin_dir::read_plugin_file(path, 1024 * 1024)?;
    String::from_utf8(bytes)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

fn describe_error(err: &figment::Error) -> String {
    let key = err.path.join(".");
    let origin = match &err.metadata {
        Some(md) if md.name.contains("environment") => format!(
            " (from the environment variable WEIR_{})",
            err.path.join("__").to_uppercase()
        ),
        Some(md) if !matches!(md.source, Some(figment::Source::File(_))) => {
            format!(" (from {})", md.name)
        }
        _ => String::new(),
    };
    let what = err.kind.to_string();
    let what = what.split_whitespace().collect::<Vec<_>>().join(" ");
    if key.is_empty() {
        format!("{what}{origin}")
    } else {
        format!("{key}: {what}{origin}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(toml: &str) -> Result<Config, ConfigError> {
        Config::from_figment(
            Figment::new().merge(Toml::string(toml)),
            Path::new("/etc/weir/weir.toml"),
        )
    }

    #[test]
    fn property_files_fill_properties_from_mounted_secrets() {
        let dir = std::env::temp_dir().join(format!("weir-props-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("password"), "s3cret\n").unwrap();
        let config = dir.join("weir.toml");
        std::fs::write(
            &config,
            "[kafka]\nbootstrap_servers = \"b:9092\"\n[kafka.property_files]\n\"sasl.password\" = \"password\"\n",
        )
        .unwrap();
        let c = Config::from_figment(Figment::new().merge(Toml::file(&config)), &config).unwrap();
        assert_eq!(c.kafka.properties["sasl.password"], "s3cret");
        std::fs::remove_file(dir.join("password")).unwrap();
        let err =
            Config::from_figment(Figment::new().merge(Toml::file(&config)), &config).unwrap_err();
        assert!(
            err.0.contains("kafka.property_files.\"sasl.password\""),
            "{err}"
        );
        assert!(!err.0.contains("s3cret"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_sections_of_the_environment_overrides_are_the_configs() {
        // An unknown top-level key makes serde list the real sections.
        let err = load("[kafka]\nbootstrap_servers = \"b:9092\"\n[nope]\n").unwrap_err();
        let listed: Vec<String> = err
            .0
            .split("one of ")
            .nth(1)
            .and_then(|rest| rest.split(" (from").next())
            .unwrap_or_else(|| panic!("{err}"))
            .split(',')
            .map(|s| {
                s.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .to_string()
            })
            .filter(|s| !s.is_empty())
            .collect();
        let mut sections: Vec<String> = Config::SECTIONS.iter().map(|s| s.to_string()).collect();
        sections.sort();
        let mut listed_sorted = listed.clone();
        listed_sorted.sort();
        assert_eq!(sections, listed_sorted, "from: {err}");
    }

    #[test]
    fn the_documented_shape_loads() {
        let c = load(
            r#"
            [kafka]
            bootstrap_servers = "127.0.0.1:9092"
            [kafka.properties]
            "security.protocol" = "SASL_SSL"
            [topics]
            template = "{prefix}-{topic}"
            prefix = "dev"
            create = { partitions = 3, replication = 1 }
            [plugins]
            dir = "plugins"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.namer().unwrap().full_name("track-deletions"),
            "dev-track-deletions"
        );
        assert_eq!(c.group_for("lifecycle"), "dev-lifecycle");
        assert_eq!(
            c.dlq_topic("dev-track-deletions", "p"),
            "dev-track-deletions.dlq"
        );
        assert_eq!(c.plugins.dir, PathBuf::from("/etc/weir/plugins"));
        assert_eq!(c.topics.create.unwrap().partitions, 3);
        assert_eq!(c.kafka.properties["security.protocol"], "SASL_SSL");
    }

    #[test]
    fn seed_004_template_and_a_shared_dlq() {
        let c = load(
            r#"
            [kafka]
            bootstrap_servers = "b:9092"
            [topics]
            template = "{env}.{domain}.{topic}.{version}"
            env = "prod"
            domain = "audio"
            version = "v1"
            [kafka.consumer]
            group_template = "{env}-{plugin}"
            [dlq]
            template = "{env}.dlq-events"
            "#,
        )
        .unwrap();
        assert_eq!(
            c.namer().unwrap().full_name("events"),
            "prod.audio.events.v1"
        );
        assert_eq!(c.dlq_topic("prod.audio.events.v1", "p"), "prod.dlq-events");
        assert_eq!(c.group_for("p"), "prod-p");
    }

    #[test]
    fn errors_name_the_key_and_file() {
        let e = load("[kafka]\nbootstrap_servers = \"b\"\nbootstrap = 1\n").unwrap_err();
        assert!(e.0.contains("/etc/weir/weir.toml"), "{e}");
        assert!(
            e.0.contains("kafka.bootstrap: unknown field: found `bootstrap`"),
            "{e}"
        );
        let e = load(
            "[kafka]\nbootstrap_servers = \"b\"\n[kafka.consumer]\nsession_timeout = \"soon\"\n",
        )
        .unwrap_err();
        assert!(e.0.contains("kafka.consumer.session_timeout"), "{e}");
        let e =
            load("[kafka]\nbootstrap_servers = \"b\"\n[topics]\ntemplate = \"{env}-{topic}\"\n")
                .unwrap_err();
        assert!(e.0.contains("topics.template"), "{e}");
        let e = load("[topics]\nprefix = \"dev\"\n").unwrap_err();
        assert!(e.0.contains("kafka"), "{e}");
    }

    #[test]
    fn the_cache_backend_is_memory_unless_redis_is_configured() {
        let c = load("[kafka]\nbootstrap_servers = \"b\"\n").unwrap();
        assert_eq!(c.cache.backend, CacheKind::Memory);
        let c = load(
            "[kafka]\nbootstrap_servers = \"b\"\n[cache]\nbackend = \"redis\"\n\
             url = \"redis://:pw@cache:6379/2\"\ntimeout = \"750ms\"\n",
        )
        .unwrap();
        assert_eq!(c.cache.backend, CacheKind::Redis);
        assert_eq!(c.cache.timeout, Duration::from_millis(750));

        let bad = |toml: &str, needles: &[&str]| {
            let e = load(&format!(
                "[kafka]\nbootstrap_servers = \"b\"\n[cache]\n{toml}"
            ))
            .unwrap_err();
            for n in needles {
                assert!(e.0.contains(n), "{e} lacks {n}");
            }
            assert!(!e.0.contains("pw"), "a password leaked: {e}");
        };
        bad("backend = \"redis\"\n", &["cache.url: is required"]);
        bad(
            "backend = \"memcached\"\n",
            &["cache.backend", "memory", "redis"],
        );
        bad(
            "url = \"redis://:pw@cache:6379\"\n",
            &["cache.url", "backend = \"redis\""],
        );
        bad(
            "backend = \"redis\"\nurl = \"http://:pw@cache:6379\"\n",
            &["cache.url", "redis://"],
        );
        bad("timeout = \"0s\"\n", &["cache.timeout"]);
        bad("max_bytes = \"1 KiB\"\n", &["cache.max_bytes"]);
    }

    #[test]
    fn storage_is_a_directory_unless_a_bucket_is_configured() {
        let c = load("[kafka]\nbootstrap_servers = \"b\"\n").unwrap();
        assert_eq!(c.storage.backend, StorageKind::Local);
        assert_eq!(c.schedule_group().unwrap(), "dev-weir-schedule");
        let c = load(
            "[kafka]\nbootstrap_servers = \"b\"\n[storage]\nbackend = \"s3\"\ntimeout = \"3s\"\n\
             [storage.s3]\nbucket = \"audio\"\nendpoint = \"http://minio:9000\"\npath_style = true\n",
        )
        .unwrap();
        assert_eq!(c.storage.backend, StorageKind::S3);
        assert_eq!(c.storage.s3.bucket, "audio");
        assert!(c.storage.s3.path_style);
        assert_eq!(c.storage.timeout, Duration::from_secs(3));

        let bad = |toml: &str, needles: &[&str]| {
            let e = load(&format!("[kafka]\nbootstrap_servers = \"b\"\n{toml}")).unwrap_err();
            for n in needles {
                assert!(e.0.contains(n), "{e} lacks {n}");
            }
        };
        bad(
            "[storage]\nbackend = \"s3\"\n",
            &["storage.s3.bucket: is required"],
        );
        bad(
            "[storage]\nbackend = \"s3\"\n[storage.s3]\nbucket = \"a\"\nendpoint = \"minio:9000\"\n",
            &["storage.s3.endpoint", "http(s)://"],
        );
        bad(
            "[storage.s3]\nbucket = \"a\"\n",
            &["storage.s3", "backend = \"s3\""],
        );
        bad(
            "[storage]\nbackend = \"gcs\"\n",
            &["storage.backend", "local", "s3"],
        );
        bad("[storage]\ntimeout = \"0s\"\n", &["storage.timeout"]);
        bad("[breaker]\nprobes = 0\n", &["breaker.probes"]);
        bad(
            "[storage.s3]\nbucket = \"a\"\nsecret = \"x\"\n",
            &["storage.s3.secret", "unknown field"],
        );
    }

    /// Through `Config::load` and its `env_overrides`, with real variables (in
    /// figment's jail: a temp directory, the environment restored afterwards).
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns its own error type
    fn environment_overrides_win() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "weir.toml",
                "[kafka]\nbootstrap_servers = \"file:9092\"\n[kafka.consumer]\nfetch_wait = \"1s\"\n",
            )?;
            jail.set_env("WEIR_KAFKA__BOOTSTRAP_SERVERS", "env:9092");
            jail.set_env("WEIR_KAFKA__CONSUMER__FETCH_WAIT", "250ms");
            jail.set_env("WEIR_TOPICS__PREFIX", "staging");
            // Not Weir's (a Kubernetes Service named weir): ignored.
            jail.set_env("WEIR_PORT", "tcp://10.0.0.1:9464");
            let c = Config::load(Path::new("weir.toml")).expect("loads");
            assert_eq!(c.kafka.bootstrap_servers, "env:9092");
            assert_eq!(c.kafka.consumer.fetch_wait, Duration::from_millis(250));
            assert_eq!(c.group_for("p"), "staging-p");
            // A misspelt key of a known section stops the host, naming it.
            jail.set_env("WEIR_KAFKA__BOOTSTRAP_SERVER", "typo:9092");
            let e = Config::load(Path::new("weir.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("bootstrap_server"), "{e}");
            Ok(())
        });
    }

    /// Issue 20: a numeric `WEIR_ADMIN__TOKEN` was parsed as a number, and
    /// the type error echoed it.
    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail closure returns its own error type
    fn a_numeric_admin_token_is_taken_as_written() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("weir.toml", "[kafka]\nbootstrap_servers = \"b:9092\"\n")?;
            jail.set_env("WEIR_ADMIN__TOKEN", "0012345678");
            let c = Config::load(Path::new("weir.toml")).expect("loads");
            assert_eq!(c.admin.token.map(|t| t.0).as_deref(), Some("0012345678"));
            Ok(())
        });
    }

    #[test]
    fn urls_are_checked_without_echoing_credentials() {
        assert!(check_redis_url("redis://127.0.0.1:6379/0").is_ok());
        assert!(check_redis_url("redis://:secret@cache:6379").is_ok());
        let e = check_redis_url("http://:secret@cache:6379").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert!(e.contains("redis://"), "{e}");
        let e = check_redis_url("rediss://cache:6380").unwrap_err();
        assert!(e.contains("TLS"), "{e}");
    }
}
