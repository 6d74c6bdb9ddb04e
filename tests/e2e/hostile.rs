//! Hostile records and hostile guest values through `weir run` against Kafka
//! (issue 20): each costs only its own event, with a precise error, and the
//! partition flows on.

use crate::kafka_support::*;
use crate::support::wasm;
use rdkafka::message::{BorrowedHeaders, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::time::{Duration, Instant};

/// Headers with one whose key is not UTF-8 (`\xff\xfe-key`), as kafka-python
/// or any client writing raw bytes can send: rdkafka's Rust API only takes
/// `&str` keys, so it is added through librdkafka itself.
fn headers_with_a_binary_key() -> OwnedHeaders {
    let headers = OwnedHeaders::new();
    let key = b"\xff\xfe-key";
    let value = b"v";
    // SAFETY: `as_borrowed` is the header list's own pointer (rdkafka's
    // `BorrowedHeaders` is a view at the native address); librdkafka copies the
    // name and value it is given.
    let err = unsafe {
        let raw = headers.as_borrowed() as *const BorrowedHeaders
            as *mut rdkafka::bindings::rd_kafka_headers_t;
        rdkafka::bindings::rd_kafka_header_add(
            raw,
            key.as_ptr().cast(),
            key.len() as isize,
            value.as_ptr().cast(),
            value.len() as isize,
        )
    };
    assert_eq!(
        err,
        rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
    );
    headers
}

/// A record whose header key is not UTF-8 (it panicked the fetch thread inside
/// rdkafka and stopped the partition on every host), a 2 MB reject reason (its
/// dead letter could never be written: the partition stalled and the log grew
/// by 4 MB a second) and a deletion due in the year 30 000 (its report panicked
/// a worker): each event gets its outcome, and the events behind them are
/// handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn hostile_records_and_guest_values_cost_only_their_event() {
    let Some(b) = broker() else { return };
    let names = ["hostile-in", "hostile-in.dlq"];
    b.create_topics(&names, 1).await;
    let files = HostFiles::new(&b.bootstrap(), "hostile");
    files.install(
        "faulty",
        &wasm("faulty"),
        "name = \"faulty\"\ntopics = [\"in\"]\n[retry]\nattempts = 1\n\
         [capabilities.storage]\nprefixes = [\"audio/\"]\n",
    );
    let producer = b.producer();
    let send = |payload: &'static str, headers: Option<OwnedHeaders>| {
        let producer = producer.clone();
        async move {
            let mut record = FutureRecord::<str, str>::to("hostile-in")
                .key("k")
                .payload(payload);
            if let Some(h) = headers {
                record = record.headers(h);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    };
    send("ok", Some(headers_with_a_binary_key())).await;
    send("reject-long:2000000", None).await;
    send("schedule-at:900000000000000", None).await;
    send("ok", None).await;
    let host = BinaryHost::start(&files, "h");

    let letters = b.read("hostile-in.dlq", 2);
    let deadline = Instant::now() + PATIENCE;
    let committed = || b.positions("hostile-faulty", "hostile-in", 1)[0].0;
    while committed() < 4 {
        assert!(
            Instant::now() < deadline,
            "the partition did not flow to its end (committed {}):\n{}",
            committed(),
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = host.log_text();
    drop(host);
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(letters.len(), 2, "{letters:?}");
    let long = letters[0].header("weir-error").unwrap();
    assert!(
        long.len() < 4200 && long.ends_with("(cut at 4096 of 2000000 bytes)"),
        "{} bytes: …{}",
        long.len(),
        &long[long.len().saturating_sub(80)..]
    );
    assert_eq!(letters[0].payload, b"reject-long:2000000");
    let far = letters[1].header("weir-error").unwrap();
    assert!(
        far.contains("invalid") && far.contains("after the year 9999"),
        "{far}"
    );
    let long_lines = log.lines().filter(|l| l.len() > 64 * 1024).count();
    assert_eq!(long_lines, 0, "no log line carries the 2 MB reason");
}
