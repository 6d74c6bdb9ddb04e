//! Development-only helpers, kept out of the `weir` binary: Apache Kafka (one
//! KRaft node, or a three-node cluster), a local Redis and a local S3-compatible
//! server on free loopback ports, for the demo, the bench and the end-to-end
//! tests. Each runs in its own directory with its log there, and stops when
//! dropped (or when the process that started it ends).

pub mod broker;
pub mod process;
pub mod redis;
pub mod s3;
pub mod topics;

pub use broker::{find_kafka, free_port, DevBroker, DevCluster, KafkaInstall, KAFKA_VERSION};
pub use redis::{find_redis_server, DevRedis};
pub use s3::{find_s3_server, DevS3};
pub use topics::{create_topics, create_topics_with, read_topic, TopicRecord};
