//! Development-only helpers, kept out of the `weir` binary: a local broker
//! (nisshi), a local Redis and a local S3-compatible server on free loopback ports, for the demo, the bench and
//! the end-to-end tests. Each runs in its own directory with its log there, and
//! stops when dropped.

pub mod broker;
pub mod process;
pub mod redis;
pub mod s3;

pub use broker::{
    create_topics, find_nisshi, free_port, read_topic, BrokerStorage, DevBroker, TopicRecord,
};
pub use redis::{find_redis_server, DevRedis};
pub use s3::{find_s3_server, DevS3};
