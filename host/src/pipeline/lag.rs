//! Lag: every `lag_interval` a thread with its own client asks the broker for
//! each assigned partition's high watermark and the group's committed offset.
//!
//! librdkafka's own statistics stop updating the watermark while a partition is
//! paused, which is when an operator most wants to see it; and on the
//! consumer's connection these requests would queue behind long-polling fetches.

use super::fetch::Shared;
use super::StartError;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::topic_partition_list::TopicPartitionList;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(100);

/// Start measuring the lag of `shared`'s assigned partitions until `stop`.
pub fn spawn(
    config: &crate::config::Config,
    group: &str,
    plugin: &str,
    shared: Arc<Shared>,
    interval: Duration,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<()>, StartError> {
    // Same group, never joining it: only reads the group's committed offsets.
    let probe: BaseConsumer = crate::kafka::base_config(config)
        .set("group.id", group)
        .set("client.id", format!("weir-{plugin}-lag"))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|source| StartError::Client {
            plugin: plugin.to_string(),
            what: "lag client",
            source: Box::new(source),
        })?;
    std::thread::Builder::new()
        .name(format!("weir-lag-{plugin}"))
        .spawn(move || {
            let mut next = Instant::now() + Duration::from_secs(1).min(interval);
            while !stop.load(Ordering::SeqCst) {
                if Instant::now() >= next {
                    measure(&probe, &shared, Duration::from_secs(5));
                    next = Instant::now() + interval;
                }
                std::thread::sleep(TICK);
            }
        })
        .map_err(|source| StartError::Thread {
            what: "lag",
            source,
        })
}

/// High watermark minus the committed offset (minus the low watermark before the
/// group's first commit), per assigned partition.
fn measure(consumer: &BaseConsumer, shared: &Shared, timeout: Duration) {
    let assigned = shared.assigned();
    if assigned.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for (topic, partition) in &assigned {
        tpl.add_partition(topic, *partition);
    }
    let committed = consumer.committed_offsets(tpl, timeout).ok();
    for tp in assigned {
        let Ok((low, high)) = consumer.fetch_watermarks(&tp.0, tp.1, timeout) else {
            continue; // broker unreachable: keep the last figure
        };
        let base = committed
            .as_ref()
            .and_then(|c| c.find_partition(&tp.0, tp.1))
            .and_then(|e| match e.offset() {
                rdkafka::Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low);
        shared.set_lag(tp, (high - base).max(0));
    }
}
