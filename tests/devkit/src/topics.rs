//! Topics on a dev broker: creating them, and reading every record back.

use std::time::{Duration, Instant};

/// Create topics with `partitions` partitions on `bootstrap`, replicated as the
/// broker's `default.replication.factor` says (1 on one node, 3 on the cluster).
pub async fn create_topics(bootstrap: &str, names: &[&str], partitions: i32) -> Result<(), String> {
    create_topics_with(bootstrap, names, partitions, &[]).await
}

/// [`create_topics`] with topic configs (`cleanup.policy`, `segment.ms`...).
pub async fn create_topics_with(
    bootstrap: &str,
    names: &[&str],
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<(), String> {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            configs.iter().fold(
                NewTopic::new(n, partitions, TopicReplication::Fixed(-1)),
                |t, (k, v)| t.set(k, v),
            )
        })
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
    /// The record's timestamp (milliseconds since the epoch), if it has one.
    pub timestamp_ms: Option<i64>,
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
        // What transactions aborted is never seen (librdkafka's default, said).
        .set("isolation.level", "read_committed")
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
                    timestamp_ms: m.timestamp().to_millis(),
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
