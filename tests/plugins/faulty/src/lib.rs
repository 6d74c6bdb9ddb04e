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
//! - `rearm`: announces its batch's first event again and again
//!   (`batch.begin-event(0)` in a loop), as if that re-armed its deadline
//! - `sleep:<ms>`: sleeps (a WASI poll: the host waits, no wasm runs)
//! - `publish-big:<n>`: publishes `n` messages of 512 KiB to `allowed`
//!
//! `[config] init = "sleep:<ms>"` or `"loop"` makes `init` do that first.

use weir_sdk::{cache, describe, publish::Message, reject, retry, storage, Event, Handler};

struct Faulty;

impl Handler for Faulty {
    fn init() -> Result<(), String> {
        let init = weir_sdk::config::get("init").map_err(|e| describe(&e))?;
        if let Some(init) = &init {
            weir_sdk::log::info("init starts", &[("init", init)]);
        }
        match init.as_deref() {
            Some("loop") => spin(),
            Some(other) => match other.strip_prefix("sleep:").map(str::parse::<u64>) {
                Some(Ok(ms)) => std::thread::sleep(std::time::Duration::from_millis(ms)),
                _ => return Err(format!("unknown init {other:?}")),
            },
            None => {}
        }
        Ok(())
    }

    fn handle(event: Event) -> weir_sdk::Result {
        let command = event.text()?.trim().to_string();
        let (verb, arg) = command.split_once(':').unwrap_or((command.as_str(), ""));
        match verb {
            "ok" => Ok(()),
            "retry" => Err(retry("asked to retry")),
            "reject" => Err(reject("asked to reject")),
            "trap" => panic!("asked to trap"),
            "loop" => spin(),
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
            "rearm" => loop {
                weir_sdk::bindings::weir::plugin::batch::begin_event(0);
            },
            "sleep" => {
                let ms: u64 = arg.parse().map_err(|_| reject("not a number"))?;
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(())
            }
            "publish-big" => {
                let n: usize = arg.parse().map_err(|_| reject("not a number"))?;
                for _ in 0..n {
                    Message::to("allowed")
                        .payload(vec![b'x'; 512 * 1024])
                        .send()
                        .map_err(|e| reject(describe(&e)))?;
                }
                Ok(())
            }
            other => Err(reject(format!("unknown command {other:?}"))),
        }
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

weir_sdk::export!(Faulty);
