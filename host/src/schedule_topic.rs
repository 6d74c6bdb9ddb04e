//! The schedule topic: where `weir run` records scheduled deletions.
//!
//! Each plugin's `schedule-deletion` / `cancel-deletion` is a record on this
//! topic sent with the event's other outputs (key `{plugin}/{object key}`, the
//! entry as JSON, a tombstone to cancel or when done). The host keeps the due
//! times in memory: applied as the records are acknowledged, and rebuilt at start
//! by reading the topic from its start, so it works on brokers that do not
//! compact (on Kafka, make the topic `cleanup.policy=compact`).

use crate::capabilities::storage::now_ms;
use crate::capabilities::{DeletionSchedule, ScheduleChange};
use crate::config::Config;
use crate::pipeline::outputs::{Outputs, Record};
use object_store::ObjectStore;
use rdkafka::Message;
use std::sync::Arc;
use std::time::Duration;

/// Rebuild `schedule` from `topic` (if it exists): every record, in order; the
/// number of records read.
pub async fn rebuild(
    config: &Config,
    topic: &str,
    schedule: &DeletionSchedule,
) -> Result<u64, String> {
    let cfg = crate::kafka::base_config(config);
    let topic = topic.to_string();
    let schedule = schedule.clone();
    tokio::task::spawn_blocking(move || {
        let mut bad = 0;
        let read = crate::kafka::read_to_end(cfg, &topic, "weir-schedule-reader", |m| {
            match ScheduleChange::from_record(m.key(), m.payload()) {
                Ok(change) => schedule.apply(&change),
                Err(e) => {
                    bad += 1;
                    if bad <= 3 {
                        tracing::warn!(topic = %topic, offset = m.offset(), error = %e, "ignoring an unreadable schedule record");
                    }
                }
            }
        })
        .map_err(|e| format!("cannot read the schedule topic {topic}: {e}"))?;
        Ok(read)
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Every `interval`, carry out the deletions that are due: delete the object,
/// write the tombstone (acknowledged), forget it. A failure is retried by the
/// next sweep.
pub fn spawn_sweeper(
    schedule: DeletionSchedule,
    storage: Arc<dyn ObjectStore>,
    outputs: Outputs,
    topic: String,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            let swept = schedule
                .sweep_with(&*storage, now_ms(), |change| {
                    let (outputs, topic, schedule) =
                        (outputs.clone(), topic.clone(), schedule.clone());
                    async move {
                        let (key, payload) = change.record();
                        outputs
                            .send_record(Record {
                                topic: &topic,
                                key: Some(key.as_bytes()),
                                payload: payload.as_deref(),
                                headers: &[],
                            })
                            .await?;
                        schedule.apply(&change);
                        Ok(())
                    }
                })
                .await;
            if let Err(e) = swept {
                tracing::warn!(error = %e, "scheduled-deletion sweep failed; will retry");
            }
        }
    })
}
