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
/// a worker), an input too large to copy into a dead letter (it could never
/// be written) and an event publishing 1 000 messages of 512 KiB (the host
/// buffered 1.1 GiB for it): each event gets its outcome, the host's memory
/// stays bounded, and the events behind them are handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn hostile_records_and_guest_values_cost_only_their_event() {
    let Some(b) = broker() else { return };
    let names = ["hostile-in", "hostile-in.dlq", "hostile-allowed"];
    b.create_topics(&names, 1).await;
    let files = HostFiles::new(&b.bootstrap(), "hostile");
    files.install(
        "faulty",
        &wasm("faulty"),
        // A long timeout: copying 64 MiB of messages in a debug build on
        // busy cores must not time out before the budget refuses.
        "name = \"faulty\"\ntopics = [\"in\"]\n[limits]\ntimeout = \"60s\"\n\
         [retry]\nattempts = 1\n\
         [capabilities.storage]\nprefixes = [\"audio/\"]\n\
         [capabilities.publish]\ntopics = [\"allowed\"]\n",
    );
    let producer = b.producer();
    let send = |payload: String, headers: Option<OwnedHeaders>| {
        let producer = producer.clone();
        async move {
            let mut record = FutureRecord::<str, str>::to("hostile-in")
                .key("k")
                .payload(&payload);
            if let Some(h) = headers {
                record = record.headers(h);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    };
    send("ok".into(), Some(headers_with_a_binary_key())).await;
    send("reject-long:2000000".into(), None).await;
    send("schedule-at:900000000000000".into(), None).await;
    // 999 800 bytes: about as large as a producer writes by default; with its
    // dead-letter headers it is larger.
    send(format!("reject{}", " ".repeat(999_794)), None).await;
    send("publish-big:1000".into(), None).await;
    send("ok".into(), None).await;
    let host = BinaryHost::start(&files, "h");

    let letters = b.read("hostile-in.dlq", 4);
    let deadline = Instant::now() + PATIENCE;
    let committed = || b.positions("hostile-faulty", "hostile-in", 1)[0].0;
    while committed() < 6 {
        assert!(
            Instant::now() < deadline,
            "the partition did not flow to its end (committed {}):\n{}",
            committed(),
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = host.log_text();
    let peak = peak_rss_mib(host.child.id());
    drop(host);
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(letters.len(), 4, "{letters:?}");
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
    let omitted = letters[2].header("weir-omitted").unwrap();
    assert!(omitted.starts_with("payload (999800 bytes)"), "{omitted}");
    assert!(letters[2].payload.is_empty());
    assert_eq!(
        letters[2].header("weir-error"),
        Some("rejected: asked to reject")
    );
    let budget = letters[3].header("weir-error").unwrap();
    assert!(
        budget.contains("invalid") && budget.contains("past limits.host_memory = 64.0 MiB"),
        "{budget}"
    );
    assert_eq!(
        b.count("hostile-allowed"),
        0,
        "nothing of the refused event was sent"
    );
    let long_lines = log.lines().filter(|l| l.len() > 64 * 1024).count();
    assert_eq!(long_lines, 0, "no log line carries the 2 MB reason");
    // One event published 500 MiB before its budget; the host holds one
    // call's 64 MiB (and the guest's own 64 MiB), not the 1.1 GiB it held.
    println!("peak RSS of the host: {peak} MiB");
    assert!(peak < 300, "peak RSS {peak} MiB");
}

/// The highest resident set size of process `pid` so far (`VmHWM`), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/PID/status")
        / 1024
}

/// Issue 20: a plugin's `init` ran on the supervisor with no bound on host
/// waits, so one sleeping in it held up SIGTERM (and reloads) for as long as
/// it liked. SIGTERM now ends the host while such a plugin loads, whether it
/// was there at the start or added to a running host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn sigterm_ends_the_host_while_a_plugins_init_waits() {
    let Some(b) = broker() else { return };
    b.create_topics(&["slow-in"], 1).await;
    let files = HostFiles::new(&b.bootstrap(), "slow");
    let slow = "name = \"faulty\"\ntopics = [\"in\"]\n[limits]\ntimeout = \"600s\"\n\
                [config]\ninit = \"sleep:600000\"\n";

    // Added to a running host.
    let mut host = BinaryHost::start(&files, "added");
    host.wait_for_log("weir is running");
    files.install("faulty", &wasm("faulty"), slow);
    host.wait_for_log("init starts");
    host.signal("TERM");
    assert_eq!(host.wait(), Some(0), "{}", host.log_text());

    // There at the start (the host is not ready yet).
    let mut host = BinaryHost::start(&files, "at-start");
    host.wait_for_log("init starts");
    host.signal("TERM");
    assert_eq!(host.wait(), Some(0), "{}", host.log_text());
    assert!(!host.log_text().contains("weir is running"));
}

/// Issue 20: a stage of the pipeline that dies (the fetch thread or a worker
/// panicking) stopped that plugin's partitions for good while `/health` said
/// Healthy. No record or guest value is known to panic the host any more, so
/// the panics are injected (`WEIR_FAILPOINTS`, debug builds only). Once: the
/// supervisor restarts the pipeline and every event is handled, none lost.
/// Every time: the plugin is `failed` and `/health` is Unhealthy (503) while it
/// cannot run, and SIGTERM still ends the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_failed_pipeline_is_restarted_and_loses_nothing() {
    let Some(b) = broker() else { return };
    b.create_topics(&["mend-in", "mend-out", "mend-in.dlq"], 1)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "mend", "");
    let producer = b.producer();
    let trigger = std::str::from_utf8(weir_host::failpoint::TRIGGER).unwrap();
    let send = |payload: String| {
        let producer = producer.clone();
        async move {
            producer
                .send(
                    FutureRecord::<str, str>::to("mend-in")
                        .key("k")
                        .payload(&payload),
                    Duration::from_secs(30),
                )
                .await
                .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
        }
    };
    for seq in 0..20 {
        send(format!("{{\"seq\":{seq}}}")).await;
    }
    send(trigger.to_string()).await;
    for seq in 20..40 {
        send(format!("{{\"seq\":{seq}}}")).await;
    }
    // The fetch thread dies on the trigger, then (restarted) a worker does;
    // the third time echo rejects it (not JSON): a dead letter.
    let host = BinaryHost::start_with(&files, "once", &[("WEIR_FAILPOINTS", "fetch:1,worker:1")]);
    let mut saw_failed = false;
    let deadline = Instant::now() + PATIENCE;
    let committed = || b.positions("mend-echo", "mend-in", 1)[0].0;
    while committed() < 41 {
        saw_failed |= files.status().iter().any(|s| s.state == "failed");
        assert!(
            Instant::now() < deadline,
            "the partition did not flow to its end (committed {}):\n{}",
            committed(),
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = host.log_text();
    drop(host);
    assert!(
        log.contains("the fetch thread failed: failpoint fetch"),
        "{log}"
    );
    assert!(log.contains("a worker failed: failpoint worker"), "{log}");
    assert_eq!(
        log.matches("plugin started again after its pipeline failed")
            .count(),
        2,
        "{log}"
    );
    assert!(
        saw_failed,
        "the status showed the plugin failed between restarts"
    );
    let outputs = b.read("mend-out", 40);
    let (seen, duplicates) = seqs(&outputs);
    assert_eq!(seen.len(), 40, "every event handled: {seen:?}");
    println!("40 events, 2 injected failures, 0 missing, {duplicates} duplicate outputs");
    assert_key_order(&outputs);
    let letters = b.read("mend-in.dlq", 1);
    assert_eq!(letters[0].payload, weir_host::failpoint::TRIGGER);

    // A pipeline that fails every time it starts.
    send(trigger.to_string()).await;
    let listen = format!("127.0.0.1:{}", files.admin_port);
    let mut host = BinaryHost::start_with(
        &files,
        "always",
        &[
            ("WEIR_FAILPOINTS", "worker:1000"),
            ("WEIR_ADMIN__LISTEN", listen.as_str()),
        ],
    );
    let address = format!("127.0.0.1:{}", files.admin_port);
    let deadline = Instant::now() + PATIENCE;
    let health = loop {
        if let Ok((503, body)) = weir_host::admin::client::call(&address, "GET", "/health").await {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "/health never turned Unhealthy:\n{}",
            host.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["checks"]["plugins"]["status"], "Unhealthy",
        "{health}"
    );
    assert_eq!(
        health["checks"]["plugins"]["data"]["echo"], "failed",
        "{health}"
    );
    let status = files.status();
    let echo = status.iter().find(|s| s.name == "echo").unwrap();
    assert!(
        echo.reason
            .as_deref()
            .unwrap_or("")
            .contains("injected panic"),
        "{echo:?}"
    );
    assert_eq!(committed(), 41, "the event that fails is not committed");
    host.signal("TERM");
    assert_eq!(host.wait(), Some(0), "{}", host.log_text());
}

/// Issue 23's inputs, hostile: records on the control topic written by
/// someone without the admin token (malformed, unsigned, forged) move nothing;
/// admin requests with bad values are refused with what is wrong; the host
/// stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn forged_control_records_and_bad_operator_requests_move_nothing() {
    use serde_json::json;
    use weir_host::admin::client;
    let Some(b) = broker() else { return };
    b.create_topics(&["hsc-in", "hsc-out", "hsc-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "hsc", "");
    std::fs::write(files.dir.path().join("admin-token"), "hsc-token\n").unwrap();
    files.write_config(&b.bootstrap(), "hsc", "token_file = \"admin-token\"");
    let port = weir_devkit::free_port();
    let host = BinaryHost::start_with(
        &files,
        "h",
        &[("WEIR_ADMIN__LISTEN", &format!("127.0.0.1:{port}"))],
    );
    host.wait_for_log("reading the control topic");
    let producer = b.producer();
    for seq in 0..20 {
        produce(&producer, "hsc-in", &format!("k{seq}"), json!({"seq": seq})).await;
    }
    assert_eq!(b.read("hsc-out", 20).len(), 20);

    // Anyone who can write the control topic, without the token.
    let expires_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 600_000;
    let request = |mac: Option<&str>| {
        let mut r = json!({
            "kind": "request", "id": "forged", "plugin": "echo", "group": "hsc-echo",
            "op": "seek", "expires_ms": expires_ms,
            "targets": (0..3).map(|p| json!({"topic": "hsc-in", "partition": p, "to": 0})).collect::<Vec<_>>(),
        });
        if let Some(mac) = mac {
            r["mac"] = json!(mac);
        }
        r.to_string()
    };
    for body in [
        "not json".to_string(),
        json!({"kind": "request", "id": "x"}).to_string(),
        request(None),
        request(Some(&"ab".repeat(32))),
    ] {
        producer
            .send(
                FutureRecord::<(), _>::to("hsc-weir-control").payload(&body),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    host.wait_for_log("control request refused: not signed with this host's admin token");
    host.wait_for_log("control record skipped: not a request or an answer");

    // Bad values through the admin API, with the token: refused, said why.
    let addr = format!("127.0.0.1:{port}");
    for (path, says) in [
        (
            "/plugins/echo/offsets/rewind?time=yesterday",
            "is not RFC 3339",
        ),
        (
            "/plugins/echo/offsets/rewind?time=2026-01-01T00:00:00Z&offsets=in/0=1",
            "needs one of",
        ),
        (
            "/plugins/echo/offsets/rewind?offsets=in/0=-5",
            "the offset is not a number",
        ),
        (
            "/plugins/echo/offsets/rewind?offsets=elsewhere/0=1",
            "does not read this topic",
        ),
        (
            "/plugins/echo/offsets/rewind?offsets=in/0=999999",
            "outside the partition",
        ),
        (
            "/plugins/echo/offsets/reset?to=everything",
            "expected \\\"earliest\\\"",
        ),
        ("/plugins/echo/workers?count=65", "use 1 to 64"),
        ("/plugins/echo/dead-letters/replay?ids=", "names no letter"),
        (
            "/plugins/echo/dead-letters/replay?all=true&since=2026-01-01T00:00:00Z",
            "exactly one of",
        ),
        (
            "/plugins/nobody/offsets/reset?to=earliest",
            "no plugin named",
        ),
    ] {
        let (code, body) = client::call_with_token(&addr, "POST", path, Some("hsc-token"))
            .await
            .unwrap();
        assert!((400..500).contains(&code), "{path}: {code} {body}");
        assert!(body.contains(says), "{path}: {body}");
    }
    // A huge limit is clamped, not obeyed.
    let (code, body) = client::call_with_token(
        &addr,
        "GET",
        "/plugins/echo/dead-letters?limit=100000000",
        Some("hsc-token"),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{body}");

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        b.count("hsc-out"),
        20,
        "nothing was moved back and handled again"
    );
    let (code, health) = client::call(&addr, "GET", "/health").await.unwrap();
    assert_eq!(code, 200, "{health}");
    assert!(health.contains("\"status\":\"Healthy\""), "{health}");
    assert!(
        !host
            .log_text()
            .contains("partitions moved and committed by the operator"),
        "{}",
        host.log_text()
    );
}
