//! Weir: a host that hands Kafka events to sandboxed WebAssembly handlers.
//!
//! The path of an event: a source (a Kafka topic; a file in `weir invoke`) builds an
//! [`event::EventRecord`]; the [`runtime`] calls the plugin's `handle` under its
//! limits; the plugin reaches the world only through [`capabilities`] granted by
//! its [`manifest`]; what it published comes back with the outcome.

pub mod admin;
pub mod authoring;
pub mod bindings;
pub mod capabilities;
pub mod config;
pub mod config_check;
pub mod dlq;
pub mod event;
pub mod failpoint;
pub mod host_id;
pub mod invoke;
pub mod kafka;
pub mod manifest;
pub mod pipeline;
pub mod plugin_dir;
pub mod reload;
pub mod reserved;
pub mod run;
pub mod runtime;
pub mod schedule_topic;
pub mod status;
pub mod storage_key;
pub mod telemetry;
pub mod topics;
pub mod versions;
