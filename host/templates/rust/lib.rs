//! `{{name}}`: a Weir plugin.
//!
//! The worked example: an `ItemViewed` event (`{"userId": "...", "itemId": "..."}`)
//! is decoded, remembered in the cache for an hour, and announced on the
//! `{{name}}-out` topic, keyed by user so one user's messages stay in order.
//!
//! Outcomes: `Ok(())` means done. `Err(weir_sdk::retry(..))` asks the host to retry
//! (then dead-letter), `Err(weir_sdk::reject(..))` dead-letters at once. `?` on a
//! capability call does the right thing: `unavailable` retries, `denied` and
//! `invalid` reject. Handlers must be idempotent: at-least-once delivery means an
//! event may come again after a crash or a rebalance.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use weir_sdk::{cache, log, publish::Message, Event, Handler};

/// The topic this plugin publishes to (granted in `{{name}}.toml`).
const OUT: &str = "{{name}}-out";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ItemViewed {
    user_id: String,
    item_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Seen<'a> {
    user_id: &'a str,
    item_id: &'a str,
    first_time: bool,
}

struct Plugin;

impl Handler for Plugin {
    fn handle(event: Event) -> weir_sdk::Result {
        // A payload that is not an ItemViewed is rejected with serde's reason.
        let viewed: ItemViewed = event.json()?;
        let key = format!("seen:{}:{}", viewed.user_id, viewed.item_id);
        let first_time = cache::get(&key)?.is_none();
        cache::set(&key, b"1", Some(Duration::from_secs(3600)))?;
        Message::to(OUT)
            .key(&viewed.user_id)
            .json(&Seen {
                user_id: &viewed.user_id,
                item_id: &viewed.item_id,
                first_time,
            })?
            .send()?;
        log::info(
            "item viewed",
            &[("user-id", &viewed.user_id), ("first-time", &first_time)],
        );
        Ok(())
    }
}

weir_sdk::export!(Plugin);
