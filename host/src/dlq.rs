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
//! Each letter replayed is marked on the compacted `[dlq] replayed_topic`
//! (keyed by the letter's own `topic/partition@offset`) once its publish is
//! acknowledged; a later replay skips marked letters unless asked `again`.
//! The dashboard lists letters newest first ([`browse`]) and replays one, a
//! selection or all since a time through the same path.
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
    /// Only these letters (`dlq-topic/partition@offset`); all when empty.
    pub letters: BTreeSet<String>,
    /// Replay letters even if they were replayed before.
    pub again: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReplayReport {
    pub read: usize,
    pub replayed: usize,
    pub skipped: usize,
    /// Skipped because an earlier replay sent them (counted in `skipped`).
    pub already_replayed: usize,
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
    let marks_topic = config.replayed_topic()?;
    let marks = if existing.contains(&marks_topic) {
        let cfg = crate::kafka::base_config(config);
        let topic = marks_topic.clone();
        tokio::task::spawn_blocking(move || replayed(cfg, &topic))
            .await
            .map_err(BrokerError::from)??
    } else {
        BTreeSet::new()
    };
    let marking = filter.dry_run
        || existing.contains(&marks_topic)
        || crate::kafka::ensure_topics_with(
            config,
            &existing,
            &BTreeSet::from([marks_topic.clone()]),
            &[("cleanup.policy", "compact")],
        )
        .await
        .inspect_err(|e| tracing::warn!(topic = %marks_topic, error = %e, "replayed letters cannot be marked: a later replay sends them again"))
        .is_ok();
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
            let id = format!("{topic}/{}@{}", letter.partition, letter.offset);
            if !filter.matches(&letter)
                || !(filter.letters.is_empty() || filter.letters.contains(&id))
            {
                report.skipped += 1;
                continue;
            }
            if marks.contains(&id) && !filter.again {
                tracing::info!(letter = %id, "already replayed: skipped (ask again to send it once more)");
                report.skipped += 1;
                report.already_replayed += 1;
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
                tracing::info!(from = %id, to = %target, "dead letter replayed");
                if marking {
                    let mark = serde_json::json!({
                        "to": target,
                        "at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
                    });
                    if let Err(e) = sink
                        .send(
                            &marks_topic,
                            Some(id.as_bytes()),
                            mark.to_string().as_bytes(),
                            &[],
                        )
                        .await
                    {
                        tracing::warn!(letter = %id, error = %e, "replayed, but not marked: a later replay sends it again");
                    }
                }
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

/// The letters replayed before, as marked on `topic` (the newest mark of each
/// key; at most a million).
fn replayed(cfg: rdkafka::ClientConfig, topic: &str) -> Result<BTreeSet<String>, BrokerError> {
    let mut out = BTreeSet::new();
    crate::kafka::read_to_end(cfg, topic, "weir-dlq-replayed", |m| {
        if out.len() < 1_000_000 {
            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                if m.payload().is_some() {
                    out.insert(key.to_string());
                }
            }
        }
    })?;
    Ok(out)
}

/// One dead letter as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LetterView {
    /// `dlq-topic/partition@offset`: what a replay names.
    pub id: String,
    pub failed_at: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<String>,
    /// `topic/partition@offset` of the event that failed.
    pub original: String,
    pub key: Option<String>,
    /// The payload's first 200 bytes (lossy UTF-8), and its size.
    pub preview: String,
    pub bytes: usize,
    pub replayed: bool,
}

/// The newest `limit` dead letters of `plugin` (at most 500), newest first.
pub async fn browse(
    config: &Config,
    plugin: &str,
    limit: usize,
) -> Result<Vec<LetterView>, DlqError> {
    use crate::pipeline::outputs::{H_ATTEMPTS, H_ERROR, H_OFFSET, H_PARTITION};
    let limit = limit.clamp(1, 500);
    let topics = dlq_topics(config, Some(plugin))?;
    let existing = crate::kafka::wait_for_broker(config).await?;
    let marks_topic = config.replayed_topic()?;
    let (cfg, read): (_, BTreeSet<String>) = (crate::kafka::base_config(config), topics);
    let (plugin, marks_exist) = (plugin.to_string(), existing.contains(&marks_topic));
    let letters = tokio::task::spawn_blocking(move || -> Result<Vec<LetterView>, BrokerError> {
        let marks = if marks_exist {
            replayed(cfg.clone(), &marks_topic)?
        } else {
            BTreeSet::new()
        };
        let mut out: Vec<(i64, LetterView)> = Vec::new();
        for topic in read.iter().filter(|t| existing.contains(*t)) {
            crate::kafka::read_tail(cfg.clone(), topic, "weir-dlq-browse", limit as i64, |m| {
                let headers = crate::kafka::headers_of(m);
                let header = |name: &str| {
                    headers.iter().find(|(k, _)| k == name).map(|(_, v)| {
                        String::from_utf8_lossy(v)
                            .chars()
                            .take(1000)
                            .collect::<String>()
                    })
                };
                if header(H_PLUGIN).is_some_and(|p| p != plugin) {
                    return;
                }
                let id = format!("{topic}/{}@{}", m.partition(), m.offset());
                let payload = m.payload().unwrap_or_default();
                let view = LetterView {
                    replayed: marks.contains(&id),
                    id,
                    failed_at: header(H_FAILED_AT),
                    error: header(H_ERROR),
                    attempts: header(H_ATTEMPTS),
                    original: format!(
                        "{}/{}@{}",
                        header(H_TOPIC).unwrap_or_default(),
                        header(H_PARTITION).unwrap_or_default(),
                        header(H_OFFSET).unwrap_or_default()
                    ),
                    key: m
                        .key()
                        .map(|k| String::from_utf8_lossy(&k[..k.len().min(200)]).into_owned()),
                    preview: String::from_utf8_lossy(&payload[..payload.len().min(200)])
                        .into_owned(),
                    bytes: payload.len(),
                };
                out.push((m.timestamp().to_millis().unwrap_or(0), view));
            })?;
        }
        out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.id.cmp(&a.1.id)));
        Ok(out.into_iter().take(limit).map(|(_, v)| v).collect())
    })
    .await
    .map_err(BrokerError::from)??;
    Ok(letters)
}
