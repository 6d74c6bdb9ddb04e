//! A plugin's positions in its consumer group, and where an operator moves
//! them: `earliest`, `latest`, a point in time (ListOffsets by time) or
//! explicit offsets per partition. Read with a client of its own that never
//! joins the group; the moves themselves are carried out by the hosts that hold
//! the partitions (see [`super::control`]).

use crate::config::Config;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::Offset;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// How long one request to the broker may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One partition of a plugin's group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset (the next to read); `None` before its first commit.
    pub committed: Option<i64>,
    /// The partition's first and next offsets (low and high watermarks).
    pub earliest: i64,
    pub latest: i64,
    /// Records not yet committed past.
    pub lag: i64,
}

/// Where a partition is moved to, beside where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMove {
    #[serde(flatten)]
    pub now: PartitionOffsets,
    pub to: i64,
    /// `to - committed`: negative reads events again, positive skips them.
    pub moves: i64,
}

/// Where an operator moves a plugin's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Earliest,
    Latest,
    /// The first record at or after this time (the end where none is).
    Time(SystemTime),
    /// Explicit offsets; partitions not named stay.
    Offsets(BTreeMap<(String, i32), i64>),
}

/// Why positions could not be read or a target not resolved.
#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error("cannot create a client for the offsets of group {group:?}: {source}")]
    Client {
        group: String,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("cannot read {what} of topic {topic:?} (group {group:?}): {source}")]
    Broker {
        what: &'static str,
        topic: String,
        group: String,
        source: Box<rdkafka::error::KafkaError>,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Target {
    /// Parse `earliest` / `latest` (reset).
    pub fn reset(to: &str) -> Result<Target, OffsetsError> {
        match to.trim() {
            "earliest" | "beginning" => Ok(Target::Earliest),
            "latest" | "end" => Ok(Target::Latest),
            other => Err(OffsetsError::Invalid(format!(
                "reset to {:?}: expected \"earliest\" or \"latest\" (to a time or offsets: rewind)",
                bounded(other)
            ))),
        }
    }

    /// Parse an RFC 3339 time (`2026-12-03T10:00:00Z`).
    pub fn time(text: &str) -> Result<Target, OffsetsError> {
        humantime::parse_rfc3339_weak(text.trim())
            .map(Target::Time)
            .map_err(|e| {
                OffsetsError::Invalid(format!(
                    "time {:?} is not RFC 3339 (like 2026-12-03T10:00:00Z): {e}",
                    bounded(text)
                ))
            })
    }

    /// Parse `topic/partition=offset` pairs separated by commas. Topics are
    /// the plugin's: full names, or the names its manifest uses (`logical`
    /// turns one into the other, `None` if it is not one of them).
    pub fn offsets(
        text: &str,
        full_name: impl Fn(&str) -> Option<String>,
    ) -> Result<Target, OffsetsError> {
        let mut out = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let invalid = |why: &str| {
                OffsetsError::Invalid(format!(
                    "offset {:?}: {why}; write topic/partition=offset, separated by commas (e.g. orders/0=42,orders/1=17)",
                    bounded(pair)
                ))
            };
            let (tp, offset) = pair.split_once('=').ok_or_else(|| invalid("no '='"))?;
            let (topic, partition) = tp.rsplit_once('/').ok_or_else(|| invalid("no '/'"))?;
            let partition: i32 = partition
                .trim()
                .parse()
                .map_err(|_| invalid("the partition is not a number"))?;
            let offset: i64 = offset
                .trim()
                .parse()
                .ok()
                .filter(|o| *o >= 0)
                .ok_or_else(|| invalid("the offset is not a number ≥ 0"))?;
            let topic = full_name(topic.trim())
                .ok_or_else(|| invalid("the plugin does not read this topic"))?;
            if out.insert((topic, partition), offset).is_some() {
                return Err(invalid("this partition is named twice"));
            }
            if out.len() > 10_000 {
                return Err(invalid("more than 10000 partitions"));
            }
        }
        if out.is_empty() {
            return Err(OffsetsError::Invalid(
                "no offsets given: write topic/partition=offset, separated by commas".into(),
            ));
        }
        Ok(Target::Offsets(out))
    }

    pub fn describe(&self) -> String {
        match self {
            Target::Earliest => "earliest".into(),
            Target::Latest => "latest".into(),
            Target::Time(t) => format!("the time {}", humantime::format_rfc3339_millis(*t)),
            Target::Offsets(o) => format!("explicit offsets for {} partition(s)", o.len()),
        }
    }
}

fn bounded(text: &str) -> String {
    text.chars().take(200).collect()
}

/// A client of the group that never joins it.
fn client(config: &Config, group: &str) -> Result<BaseConsumer, OffsetsError> {
    crate::kafka::base_config(config)
        .set("group.id", group)
        .set("client.id", "weir-offsets")
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| OffsetsError::Client {
            group: group.to_string(),
            source: Box::new(source),
        })
}

/// Committed offset, watermarks and lag of every partition of `topics` for
/// `group` (blocking: call off the async runtime).
pub fn show(
    config: &Config,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionOffsets>, OffsetsError> {
    let consumer = client(config, group)?;
    let broker = |what, topic: &str| {
        let (topic, group) = (topic.to_string(), group.to_string());
        move |source| OffsetsError::Broker {
            what,
            topic,
            group,
            source: Box::new(source),
        }
    };
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let md = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(broker("the partitions", topic))?;
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer
        .committed_offsets(tpl.clone(), TIMEOUT)
        .map_err(broker(
            "the committed offsets",
            topics.first().map_or("", |t| t),
        ))?;
    let mut out = Vec::new();
    for e in tpl.elements() {
        let (earliest, latest) = consumer
            .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
            .map_err(broker("the watermarks", e.topic()))?;
        let committed = committed
            .find_partition(e.topic(), e.partition())
            .and_then(|c| match c.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        out.push(PartitionOffsets {
            topic: e.topic().to_string(),
            partition: e.partition(),
            committed,
            earliest,
            latest,
            lag: (latest - committed.unwrap_or(earliest).max(earliest)).max(0),
        });
    }
    Ok(out)
}

/// Where `target` moves each partition of `topics` (blocking). Explicit
/// offsets must lie within their partition (earliest..=latest).
pub fn plan(
    config: &Config,
    group: &str,
    topics: &[String],
    target: &Target,
) -> Result<Vec<PlannedMove>, OffsetsError> {
    let now = show(config, group, topics)?;
    let by_time = match target {
        Target::Time(t) => Some(offsets_at(config, group, &now, *t)?),
        _ => None,
    };
    if let Target::Offsets(given) = target {
        for (topic, partition) in given.keys() {
            if !now
                .iter()
                .any(|p| p.topic == *topic && p.partition == *partition)
            {
                return Err(OffsetsError::Invalid(format!(
                    "{topic}/{partition}: no such partition of the plugin's topics"
                )));
            }
        }
    }
    let mut out = Vec::new();
    for p in now {
        let key = (p.topic.clone(), p.partition);
        let to = match target {
            Target::Earliest => p.earliest,
            Target::Latest => p.latest,
            Target::Time(_) => by_time
                .as_ref()
                .and_then(|m| m.get(&key).copied())
                .unwrap_or(p.latest),
            Target::Offsets(given) => match given.get(&key) {
                Some(&o) if o < p.earliest || o > p.latest => {
                    return Err(OffsetsError::Invalid(format!(
                        "{}/{}: offset {o} is outside the partition, which holds {}..{} (its next offset is {})",
                        p.topic, p.partition, p.earliest, p.latest, p.latest
                    )))
                }
                Some(&o) => o,
                None => continue,
            },
        };
        let from = p.committed.unwrap_or(p.earliest);
        out.push(PlannedMove {
            moves: to - from,
            to,
            now: p,
        });
    }
    Ok(out)
}

/// The first offset at or after `time` of each partition (its end where no
/// record is that recent).
fn offsets_at(
    config: &Config,
    group: &str,
    partitions: &[PartitionOffsets],
    time: SystemTime,
) -> Result<BTreeMap<(String, i32), i64>, OffsetsError> {
    let consumer = client(config, group)?;
    let ms = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        let _ = tpl.add_partition_offset(&p.topic, p.partition, Offset::Offset(ms));
    }
    let found =
        consumer
            .offsets_for_times(tpl, TIMEOUT)
            .map_err(|source| OffsetsError::Broker {
                what: "the offsets by time",
                topic: partitions
                    .first()
                    .map_or(String::new(), |p| p.topic.clone()),
                group: group.to_string(),
                source: Box::new(source),
            })?;
    let mut out = BTreeMap::new();
    for e in found.elements() {
        let end = partitions
            .iter()
            .find(|p| p.topic == e.topic() && p.partition == e.partition())
            .map_or(0, |p| p.latest);
        let at = match e.offset() {
            Offset::Offset(o) => o.min(end),
            _ => end,
        };
        out.insert((e.topic().to_string(), e.partition()), at);
    }
    Ok(out)
}

/// Commit `moves` for `group` from outside it: the broker accepts this only
/// while no member is in the group (no host runs the plugin), and refuses it
/// otherwise (blocking).
pub fn commit_outside(
    config: &Config,
    group: &str,
    moves: &[(String, i32, i64)],
) -> Result<(), String> {
    let consumer = client(config, group).map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for (topic, partition, to) in moves {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*to))
            .map_err(|e| e.to_string())?;
    }
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(t: &str) -> Option<String> {
        match t {
            "orders" | "dev-orders" => Some("dev-orders".into()),
            _ => None,
        }
    }

    #[test]
    fn explicit_offsets_parse_with_precise_errors() {
        let t = Target::offsets("orders/0=42, dev-orders/1=7", full).unwrap();
        assert_eq!(
            t,
            Target::Offsets(BTreeMap::from([
                (("dev-orders".into(), 0), 42),
                (("dev-orders".into(), 1), 7)
            ]))
        );
        for (text, says) in [
            ("orders/0", "no '='"),
            ("orders=4", "no '/'"),
            ("orders/x=4", "partition is not a number"),
            ("orders/0=-1", "offset is not a number"),
            ("other/0=1", "does not read this topic"),
            ("orders/0=1,orders/0=2", "named twice"),
            ("", "no offsets given"),
        ] {
            let e = Target::offsets(text, full).unwrap_err().to_string();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        assert!(Target::reset("start")
            .unwrap_err()
            .to_string()
            .contains("earliest"));
        assert!(Target::time("yesterday")
            .unwrap_err()
            .to_string()
            .contains("RFC 3339"));
        assert_eq!(Target::reset("latest").unwrap(), Target::Latest);
    }
}
