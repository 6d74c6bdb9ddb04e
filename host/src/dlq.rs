//! `weir dlq replay`: send dead letters back to the topic they came from.
//!
//! Reads each dead-letter topic from its start up to its end as of the start of
//! the replay (records dead-lettered meanwhile wait for the next replay), keeps
//! those matching the filters, and publishes each to its `weir-original-topic`
//! with its original key, payload and headers (the `weir-*` headers removed, and
//! `weir-replayed-from` added). `--since` starts each partition at the first
//! dead letter written at or after that time (ListOffsets by time), so a long
//! dead-letter topic is not read from its start; the `weir-failed-at` header
//! then decides exactly. Every publish is acknowledged before the replay
//! reports success. The dead-letter topic itself is left untouched.
//!
//! Anyone who can write a dead-letter topic can put any `weir-original-topic`
//! there, so a letter goes back only to an input topic of a plugin in the
//! plugin directory (never the schedule topic, another plugin's dead-letter
//! topic or any other): the rest are skipped with a warning. So is a letter
//! written without its payload (`weir-omitted`: it did not fit).

use crate::config::Config;
use crate::kafka::BrokerError;
use crate::manifest::{Manifest, ManifestError};
use crate::pipeline::outputs::{OutputError, Outputs, H_FAILED_AT, H_OMITTED, H_PLUGIN, H_TOPIC};
use crate::plugin_dir::DiscoverError;
use crate::topics::TemplateError;
use rdkafka::message::Message;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::SystemTime;

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
    #[error(transparent)]
    Output(#[from] OutputError),
    #[error("no plugin named {plugin:?} in {} (name its dead-letter topic with --topic)", dir.display())]
    NoSuchPlugin { plugin: String, dir: PathBuf },
    #[error("no plugin in {} (name a dead-letter topic with --topic)", dir.display())]
    NoPlugins { dir: PathBuf },
    #[error("replaying {from} to {to} failed: {source}")]
    Replay {
        from: String,
        to: String,
        source: Box<OutputError>,
    },
}

#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only dead letters of this plugin.
    pub plugin: Option<String>,
    /// Only those that failed at or after this time.
    pub since: Option<SystemTime>,
    /// Only those that failed before this time.
    pub until: Option<SystemTime>,
    /// Only these dead-letter topics (default: every plugin's, from the plugin directory).
    pub topics: Vec<String>,
    /// Report what would be replayed, publish nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub read: usize,
    pub replayed: usize,
    pub skipped: usize,
}

/// The dead-letter topics of the plugins in the configured directory.
pub fn dlq_topics(config: &Config, plugin: Option<&str>) -> Result<BTreeSet<String>, DlqError> {
    Ok(input_topics(config, plugin)?
        .into_iter()
        .map(|(topic, plugin)| config.dlq_topic(&topic, &plugin))
        .collect())
}

/// The input topics (full names) of the plugins in the configured directory,
/// each with its plugin's name.
fn input_topics(
    config: &Config,
    plugin: Option<&str>,
) -> Result<BTreeSet<(String, String)>, DlqError> {
    let namer = config.namer()?;
    let mut topics = BTreeSet::new();
    for files in crate::plugin_dir::discover(&config.plugins.dir)? {
        if plugin.is_some_and(|p| p != files.name) {
            continue;
        }
        let m = Manifest::load(&files.manifest)?;
        for t in &m.topics {
            topics.insert((namer.full_name(t), m.name.clone()));
        }
    }
    Ok(topics)
}

pub async fn replay(config: &Config, filter: &ReplayFilter) -> Result<ReplayReport, DlqError> {
    let topics: BTreeSet<String> = if filter.topics.is_empty() {
        dlq_topics(config, filter.plugin.as_deref())?
    } else {
        filter.topics.iter().cloned().collect()
    };
    if topics.is_empty() {
        let dir = config.plugins.dir.clone();
        return Err(match &filter.plugin {
            Some(p) => DlqError::NoSuchPlugin {
                plugin: p.clone(),
                dir,
            },
            None => DlqError::NoPlugins { dir },
        });
    }
    // Where a letter may go back to: an input topic of a plugin here.
    let inputs: BTreeSet<String> = input_topics(config, None)?
        .into_iter()
        .map(|(topic, _)| topic)
        .filter(|t| config.schedule_topic().map_or(true, |s| &s != t))
        .collect();
    let existing = crate::kafka::wait_for_broker(config).await?;
    let sink = Outputs::new(config)?;
    let mut report = ReplayReport::default();
    for topic in topics {
        if !existing.contains(&topic) {
            tracing::info!(topic = %topic, "dead-letter topic does not exist: nothing to replay");
            continue;
        }
        let letters = {
            let cfg = crate::kafka::base_config(config);
            let (topic, since) = (topic.clone(), filter.since);
            tokio::task::spawn_blocking(move || read_to_end(cfg, &topic, since))
                .await
                .map_err(BrokerError::from)??
        };
        for letter in letters {
            report.read += 1;
            let Some(target) = letter.header(H_TOPIC).map(str::to_string) else {
                tracing::warn!(topic = %topic, offset = letter.offset, "no {H_TOPIC} header; skipped");
                report.skipped += 1;
                continue;
            };
            if !filter.matches(&letter) {
                report.skipped += 1;
                continue;
            }
            if !inputs.contains(&target) {
                tracing::warn!(topic = %topic, offset = letter.offset, target = %target, "{H_TOPIC} is not an input topic of a plugin in {}: skipped", config.plugins.dir.display());
                report.skipped += 1;
                continue;
            }
            if let Some(why) = letter.header(H_OMITTED) {
                tracing::warn!(topic = %topic, offset = letter.offset, "the dead letter was written without its {why}: skipped");
                report.skipped += 1;
                continue;
            }
            let mut headers: Vec<(String, Vec<u8>)> = letter
                .headers
                .iter()
                .filter(|(k, _)| !crate::pipeline::outputs::is_host_header(k))
                .cloned()
                .collect();
            headers.push((
                "weir-replayed-from".into(),
                format!("{topic}/{}@{}", letter.partition, letter.offset).into_bytes(),
            ));
            if filter.dry_run {
                println!(
                    "would replay {topic}/{}@{} -> {target}",
                    letter.partition, letter.offset
                );
            } else {
                sink.send(&target, letter.key.as_deref(), &letter.payload, &headers)
                    .await
                    .map_err(|source| DlqError::Replay {
                        from: format!("{topic}/{}@{}", letter.partition, letter.offset),
                        to: target.clone(),
                        source: Box::new(source),
                    })?;
                tracing::info!(from = %format!("{topic}/{}@{}", letter.partition, letter.offset), to = %target, "dead letter replayed");
            }
            report.replayed += 1;
        }
    }
    Ok(report)
}

impl ReplayFilter {
    fn matches(&self, letter: &Letter) -> bool {
        if let Some(p) = &self.plugin {
            if letter.header(H_PLUGIN) != Some(p.as_str()) {
                return false;
            }
        }
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(at) = letter
            .header(H_FAILED_AT)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
        else {
            return false;
        };
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }
}

struct Letter {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Letter {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// Every record of `topic` up to its end as of now; with `since`, from the first
/// record of each partition written at or after it (a dead letter is written
/// after it failed, so none that failed since then is before it).
fn read_to_end(
    cfg: rdkafka::ClientConfig,
    topic: &str,
    since: Option<SystemTime>,
) -> Result<Vec<Letter>, BrokerError> {
    let mut out = Vec::new();
    crate::kafka::read_to_end_since(cfg, topic, "weir-dlq-replay", since, |m| {
        out.push(Letter {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers: crate::kafka::headers_of(m),
        })
    })?;
    Ok(out)
}
