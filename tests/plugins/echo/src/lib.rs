//! Test-only plugin for the Kafka pipeline: republishes each JSON event to the
//! `output` topic (config, default `out`) with the same key, tagged with the
//! configured `version` and the input's partition and offset.
//!
//! The event's `mode` field picks a behaviour: `ok` (default), `fail-twice` (asks
//! for a retry on its first two attempts, counted in the cache), `reject`, `trap`,
//! and `publish-secret` (tries an ungranted topic and rejects with the refusal).
//! With the `accept_all` config set, every event is handled as `ok`; with `always`
//! set, every event gets that mode. With `fail_init` set, `init` fails with its value
//! (a version that must be rejected at load).
//!
//! It does per event what a careful handler does, and no more (the bench measures
//! the host with it): the configuration is read once in `init`; the payload is
//! checked to be a JSON object and only `mode` is decoded; the output is the input
//! object with `by`, `partition` and `offset` appended (they win over fields of
//! the same name), not a re-encoded copy.

use serde::Deserialize;
use std::borrow::Cow;
use std::sync::OnceLock;
use weir_sdk::{cache, config, describe, publish::Message, reject, retry, Event, Handler};

struct Settings {
    accept_all: bool,
    always: Option<String>,
    version: String,
    output: String,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// The only field echo reads; the rest of the object is passed through.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow, default)]
    mode: Option<Cow<'a, str>>,
}

struct Echo;

impl Handler for Echo {
    fn init() -> Result<(), String> {
        let get = |key: &str| config::get(key).map_err(|e| describe(&e));
        if let Some(why) = get("fail_init")? {
            return Err(format!("refusing to start: {why}"));
        }
        let settings = Settings {
            accept_all: get("accept_all")?.is_some(),
            always: get("always")?,
            version: get("version")?.unwrap_or_else(|| "v1".into()),
            output: get("output")?.unwrap_or_else(|| "out".into()),
        };
        // A new instance (after a trap) runs init again with the same manifest.
        let _ = SETTINGS.set(settings);
        Ok(())
    }

    fn handle(event: Event) -> weir_sdk::Result {
        let settings = SETTINGS.get().ok_or_else(|| reject("init did not run"))?;
        let head: Head = serde_json::from_slice(&event.payload)
            .map_err(|e| reject(format!("payload is not a valid JSON object: {e}")))?;
        let mut mode = head.mode.as_deref().unwrap_or("ok");
        if settings.accept_all {
            mode = "ok"; // the "fixed" plugin of the replay test
        }
        if let Some(always) = &settings.always {
            mode = always; // a broken version for the rollback test
        }
        match mode {
            "reject" => return Err(reject("asked to reject")),
            "trap" => panic!("asked to trap"),
            "publish-secret" => {
                Message::to("secret")
                    .payload(b"leak".to_vec())
                    .send()
                    .map_err(|e| reject(describe(&e)))?;
            }
            "fail-twice" => {
                let counter = format!(
                    "attempts:{}:{}:{}",
                    event.topic, event.partition, event.offset
                );
                let n: u32 = cache::get_string(&counter)?
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                if n < 2 {
                    cache::set(&counter, (n + 1).to_string().as_bytes(), None)?;
                    return Err(retry(format!("transient failure {}", n + 1)));
                }
            }
            _ => {}
        }
        let version = serde_json::to_string(&settings.version).expect("a string serializes");
        let tail = format!(
            "\"by\":{version},\"partition\":{},\"offset\":{}}}",
            event.partition, event.offset
        );
        let mut msg = Message::to(&settings.output).payload(append(&event.payload, &tail)?);
        if let Some(key) = &event.key {
            msg = msg.key(key);
        }
        msg.send()?;
        Ok(())
    }
}

/// The JSON object `object` with `fields}` appended (`fields` ends the object).
fn append(object: &[u8], fields: &str) -> weir_sdk::Result<Vec<u8>> {
    let trimmed = object.trim_ascii();
    let inner = trimmed
        .strip_prefix(b"{")
        .and_then(|rest| rest.strip_suffix(b"}"))
        .ok_or_else(|| reject("payload is not a JSON object"))?;
    let mut out = Vec::with_capacity(trimmed.len() + fields.len() + 1);
    out.push(b'{');
    out.extend_from_slice(inner);
    if !inner.trim_ascii().is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(fields.as_bytes());
    Ok(out)
}

weir_sdk::export!(Echo);
