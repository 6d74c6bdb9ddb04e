//! Test-only plugin whose behaviour is chosen by the event payload, to exercise the
//! host's failure handling with a real component:
//!
//! - `ok`: handled; `retry` / `reject`: that error
//! - `trap`: panics; `loop`: spins forever; `hog`: allocates without bound
//! - `publish:<topic>`: publishes to `<topic>`, rejecting with the error if refused
//! - `storage-get:<key>`: reads `<key>`, rejecting with the error if refused
//! - `cache-set:<key>=<value>` / `cache-get:<key>`: uses the cache
//! - `print:<text>`: writes `<text>` to stdout
//! - `reject-long:<n>`: rejects with a reason of `n` bytes
//! - `schedule-at:<ms>`: schedules the deletion of `audio/x` at `<ms>` since the
//!   epoch, rejecting with the error if refused

use weir_sdk::{cache, describe, publish::Message, reject, retry, storage, Event, Handler};

struct Faulty;

impl Handler for Faulty {
    fn handle(event: Event) -> weir_sdk::Result {
        let command = event.text()?.trim().to_string();
        let (verb, arg) = command.split_once(':').unwrap_or((command.as_str(), ""));
        match verb {
            "ok" => Ok(()),
            "retry" => Err(retry("asked to retry")),
            "reject" => Err(reject("asked to reject")),
            "trap" => panic!("asked to trap"),
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![7u8; 1 << 20]));
                }
            }
            "publish" => Message::to(arg)
                .payload(b"x".to_vec())
                .send()
                .map_err(|e| reject(describe(&e))),
            "storage-get" => storage::get(arg)
                .map(|_| ())
                .map_err(|e| reject(describe(&e))),
            "cache-set" => {
                let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
                Ok(cache::set(k, v.as_bytes(), None)?)
            }
            "cache-get" => match cache::get(arg)? {
                Some(_) => Ok(()),
                None => Err(reject(format!("cache miss for {arg}"))),
            },
            "print" => {
                println!("{arg}");
                Ok(())
            }
            "reject-long" => Err(reject("x".repeat(arg.parse().unwrap_or(0)))),
            "schedule-at" => {
                let at: i64 = arg.parse().map_err(|_| reject("not a number"))?;
                storage::schedule_deletion_at("audio/x", at).map_err(|e| reject(describe(&e)))
            }
            other => Err(reject(format!("unknown command {other:?}"))),
        }
    }
}

weir_sdk::export!(Faulty);
