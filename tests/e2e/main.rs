//! End-to-end tests: real plugins compiled to wasm32-wasip2 components, run by the
//! real host runtime and the real `weir` binary.

mod kafka_support;
mod support;

mod admin;
mod authoring;
mod batch;
mod broker_faults;
mod compose;
mod config_check;
mod container;
mod dashboard;
mod exactly_once;
mod faults;
mod group;
mod hostile;
mod invoke_cli;
mod kubernetes;
mod operate;
mod pipeline;
mod redis_cache;
mod reload;
mod s3_storage;
mod scale_out;
mod schedule_topic;
mod seed_plugins;
mod soak;
mod telemetry;
