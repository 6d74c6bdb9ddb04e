//! # weir-sdk: write Weir event handlers in Rust
//!
//! A Weir plugin is a WebAssembly component built for `wasm32-wasip2` against the
//! `weir:plugin/batch-handler` world (the `wit/` folder of the Weir repository): the
//! `handler` world plus `handle-batch`, which this crate implements for you by
//! calling your `handle` once per event. It wraps the generated bindings so a
//! handler reads like ordinary Rust:
//!
//! ```ignore
//! use weir_sdk::{cache, Event, Handler};
//!
//! #[derive(serde::Deserialize)]
//! struct Deleted { user_id: String, track_id: String }
//!
//! struct Plugin;
//!
//! impl Handler for Plugin {
//!     fn handle(event: Event) -> weir_sdk::Result {
//!         let deleted: Deleted = event.json()?;          // malformed JSON → reject
//!         cache::delete(&format!("presigned:{}:{}", deleted.user_id, deleted.track_id))?; // backend down → retry
//!         Ok(())
//!     }
//! }
//!
//! weir_sdk::export!(Plugin);
//! ```
//!
//! Errors: [`HandleError::Retry`] asks the host to retry the event with backoff,
//! [`HandleError::Reject`] sends it to the dead-letter topic at once. A failed
//! capability call converts with `?`: `unavailable` becomes `Retry`, `denied` and
//! `invalid` become `Reject` (retrying cannot fix them).

use std::fmt;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        // `wit` is a link to the repository's `wit/`; `weir new` writes a copy.
        path: "wit",
        world: "batch-handler",
        pub_export_macro: true,
        default_bindings_module: "weir_sdk::bindings",
    });
}

pub use bindings::weir::plugin::types::{CapabilityError, Event, HandleError};
pub use bindings::weir::plugin::types::{CloudEvent, Header};

/// The result a handler returns; `?` converts capability errors into it.
pub type Result<T = (), E = HandleError> = std::result::Result<T, E>;

/// What a plugin implements. `init` is optional.
pub trait Handler {
    /// Called once per instance before the first event; an error keeps the plugin
    /// from loading and the message is shown to the operator.
    fn init() -> std::result::Result<(), String> {
        Ok(())
    }

    /// Handle one event.
    fn handle(event: Event) -> Result;
}

impl<T: Handler> bindings::Guest for T {
    fn init() -> std::result::Result<(), String> {
        <T as Handler>::init()
    }

    fn handle(event: Event) -> std::result::Result<(), HandleError> {
        <T as Handler>::handle(event)
    }

    /// Events one after the other, each announced to the host first so what it
    /// publishes, schedules and logs is its own.
    fn handle_batch(events: Vec<Event>) -> Vec<std::result::Result<(), HandleError>> {
        events
            .into_iter()
            .enumerate()
            .map(|(i, event)| {
                bindings::weir::plugin::batch::begin_event(i as u32);
                <T as Handler>::handle(event)
            })
            .collect()
    }
}

/// Export a [`Handler`] implementation as the component's entry points:
/// `weir_sdk::export!(MyPlugin);` once per plugin crate.
pub use bindings::export;

/// A transient failure: the host retries the event.
pub fn retry(reason: impl fmt::Display) -> HandleError {
    HandleError::Retry(reason.to_string())
}

/// A permanent failure: the host dead-letters the event.
pub fn reject(reason: impl fmt::Display) -> HandleError {
    HandleError::Reject(reason.to_string())
}

/// A readable form of a capability error: `unavailable: redis timed out`.
pub fn describe(err: &CapabilityError) -> String {
    match err {
        CapabilityError::Denied(m) => format!("denied: {m}"),
        CapabilityError::Invalid(m) => format!("invalid: {m}"),
        CapabilityError::Unavailable(m) => format!("unavailable: {m}"),
    }
}

impl From<CapabilityError> for HandleError {
    fn from(err: CapabilityError) -> Self {
        match err {
            CapabilityError::Unavailable(_) => HandleError::Retry(describe(&err)),
            CapabilityError::Denied(_) | CapabilityError::Invalid(_) => {
                HandleError::Reject(describe(&err))
            }
        }
    }
}

impl Event {
    /// Decode the payload as JSON into `T`; a payload that does not decode is
    /// rejected with serde's reason (field and position).
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            reject(format!(
                "payload is not a valid {}: {e}",
                short_type_name::<T>()
            ))
        })
    }

    /// The payload as UTF-8 text.
    pub fn text(&self) -> Result<&str> {
        std::str::from_utf8(&self.payload).map_err(|e| reject(format!("payload is not UTF-8: {e}")))
    }

    /// The record key as UTF-8 text, if it has a key and the key is text.
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The first header named `name` (case-sensitive, as Kafka headers are).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.key == name)
            .map(|h| h.value.as_slice())
    }

    /// The first header named `name`, if it is UTF-8 text.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The correlation id carried by the record's headers (`correlation-id`,
    /// `x-correlation-id` or `correlationId`), if any.
    pub fn correlation_id(&self) -> Option<&str> {
        ["correlation-id", "x-correlation-id", "correlationId"]
            .iter()
            .find_map(|name| self.header_str(name))
    }
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

/// The cache capability (see the `cache` interface in the WIT package).
pub mod cache {
    use super::{bindings::weir::plugin::cache as wit, CapabilityError};
    use std::time::Duration;

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        wit::get(key)
    }

    /// The value under `key` as UTF-8 text (a non-UTF-8 value reads as `invalid`).
    pub fn get_string(key: &str) -> Result<Option<String>, CapabilityError> {
        match wit::get(key)? {
            None => Ok(None),
            Some(bytes) => String::from_utf8(bytes).map(Some).map_err(|_| {
                CapabilityError::Invalid(format!("cache value of `{key}` is not UTF-8"))
            }),
        }
    }

    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), CapabilityError> {
        wit::set(key, value, ttl.map(|d| d.as_millis() as u64))
    }

    /// Remove `key`; returns whether it was there.
    pub fn delete(key: &str) -> Result<bool, CapabilityError> {
        wit::delete(key)
    }

    /// Remove every key starting with `prefix`; returns how many.
    pub fn delete_prefix(prefix: &str) -> Result<u64, CapabilityError> {
        wit::delete_prefix(prefix)
    }
}

/// The storage capability (see the `storage` interface in the WIT package).
pub mod storage {
    use super::{bindings::weir::plugin::storage as wit, CapabilityError};
    use std::time::Duration;

    pub use wit::{DeletionTime, ObjectInfo};

    pub fn get(key: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        wit::get(key)
    }

    pub fn put(key: &str, data: &[u8]) -> Result<(), CapabilityError> {
        wit::put(key, data)
    }

    pub fn delete(key: &str) -> Result<(), CapabilityError> {
        wit::delete(key)
    }

    pub fn list(prefix: &str) -> Result<Vec<ObjectInfo>, CapabilityError> {
        wit::list(prefix)
    }

    /// Delete `key` at `unix_ms` (milliseconds since the Unix epoch).
    pub fn schedule_deletion_at(key: &str, unix_ms: i64) -> Result<(), CapabilityError> {
        wit::schedule_deletion(key, DeletionTime::AtMs(unix_ms))
    }

    /// Delete `key` once `grace` has passed.
    pub fn schedule_deletion_after(key: &str, grace: Duration) -> Result<(), CapabilityError> {
        wit::schedule_deletion(key, DeletionTime::AfterMs(grace.as_millis() as u64))
    }

    /// Drop a scheduled deletion; returns whether there was one.
    pub fn cancel_deletion(key: &str) -> Result<bool, CapabilityError> {
        wit::cancel_deletion(key)
    }
}

/// The publish capability (see the `publish` interface in the WIT package).
pub mod publish {
    use super::{bindings::weir::plugin::publish as wit, reject, CapabilityError, Header};

    /// A message under construction: `Message::to("topic").key(..).json(&v)?.send()?`.
    #[derive(Debug, Clone)]
    pub struct Message(wit::Message);

    impl Message {
        /// A message for the logical `topic` (the host adds the environment prefix).
        pub fn to(topic: &str) -> Self {
            Message(wit::Message {
                topic: topic.to_string(),
                key: None,
                payload: Vec::new(),
                headers: Vec::new(),
            })
        }

        /// The partitioning key: messages with one key stay in order.
        pub fn key(mut self, key: impl AsRef<[u8]>) -> Self {
            self.0.key = Some(key.as_ref().to_vec());
            self
        }

        pub fn payload(mut self, payload: impl Into<Vec<u8>>) -> Self {
            self.0.payload = payload.into();
            self
        }

        /// Serialize `value` as the JSON payload.
        pub fn json<T: serde::Serialize>(mut self, value: &T) -> super::Result<Self> {
            self.0.payload = serde_json::to_vec(value)
                .map_err(|e| reject(format!("cannot serialize message: {e}")))?;
            Ok(self)
        }

        pub fn header(mut self, key: &str, value: impl AsRef<[u8]>) -> Self {
            self.0.headers.push(Header {
                key: key.to_string(),
                value: value.as_ref().to_vec(),
            });
            self
        }

        /// Queue the message; it is sent when the handler returns `Ok`.
        pub fn send(self) -> Result<(), CapabilityError> {
            wit::send(&self.0)
        }
    }
}

/// The log capability: lines go to the host's log, tagged with the plugin and event.
pub mod log {
    use super::bindings::weir::plugin::log as wit;
    use std::fmt::Display;

    pub use wit::Level;

    /// Write one line with structured fields; logging never fails the event.
    pub fn write(level: Level, message: &str, fields: &[(&str, &dyn Display)]) {
        let fields: Vec<wit::Field> = fields
            .iter()
            .map(|(k, v)| wit::Field {
                key: k.to_string(),
                value: v.to_string(),
            })
            .collect();
        // The only failure is the per-event line limit: dropping the line is the point.
        let _ = wit::write(level, message, &fields);
    }

    pub fn debug(message: &str, fields: &[(&str, &dyn Display)]) {
        write(Level::Debug, message, fields)
    }

    pub fn info(message: &str, fields: &[(&str, &dyn Display)]) {
        write(Level::Info, message, fields)
    }

    pub fn warn(message: &str, fields: &[(&str, &dyn Display)]) {
        write(Level::Warn, message, fields)
    }

    pub fn error(message: &str, fields: &[(&str, &dyn Display)]) {
        write(Level::Error, message, fields)
    }
}

/// The config capability: the `[config]` table of the plugin's manifest.
pub mod config {
    use super::{bindings::weir::plugin::config as wit, CapabilityError};
    use std::str::FromStr;

    pub fn get(key: &str) -> Result<Option<String>, CapabilityError> {
        wit::get(key)
    }

    /// The value of `key`, or `default` when it is not configured.
    pub fn get_or(key: &str, default: &str) -> Result<String, CapabilityError> {
        Ok(wit::get(key)?.unwrap_or_else(|| default.to_string()))
    }

    /// The value of `key` parsed with `FromStr` (numbers, booleans...).
    pub fn get_parsed<T: FromStr>(key: &str) -> Result<Option<T>, CapabilityError>
    where
        T::Err: std::fmt::Display,
    {
        match wit::get(key)? {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|e: T::Err| {
                CapabilityError::Invalid(format!("config `{key}` = {v:?}: {e}"))
            }),
        }
    }

    /// The value of `key` (a TOML table or array, given as JSON) decoded into `T`.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        key: &str,
    ) -> Result<Option<T>, CapabilityError> {
        match wit::get(key)? {
            None => Ok(None),
            Some(v) => serde_json::from_str(&v)
                .map(Some)
                .map_err(|e| CapabilityError::Invalid(format!("config `{key}`: {e}"))),
        }
    }

    pub fn get_all() -> Result<Vec<(String, String)>, CapabilityError> {
        wit::get_all()
    }
}
