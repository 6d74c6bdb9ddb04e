//! An operator's changes to a running plugin through the CLI and the admin
//! API, on every host of its group: offsets shown, reset and rewound (to a
//! time, to explicit offsets), and the number of workers changed under load.

use crate::kafka_support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime};
use weir_host::admin::client;

/// `weir <args> --config <the host's weir.toml>`, against the admin API on
/// `port`: exit code and stdout + stderr.
async fn weir(files: &HostFiles, port: u16, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--config", files.config().to_str().unwrap()])
        .env("WEIR_ADMIN__LISTEN", format!("127.0.0.1:{port}"))
        .output()
        .await
        .expect("run weir");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

async fn get_json(port: u16, path: &str) -> Value {
    let (code, body) = client::call(&format!("127.0.0.1:{port}"), "GET", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(code, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Wait until the group's committed positions on `topic` are at its end.
async fn wait_committed_to_end(
    b: &TestBroker,
    group: &str,
    topic: &str,
    logs: impl Fn() -> String,
) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let now = b.positions(group, topic, 3);
        if now.iter().all(|(at, high)| at == high) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} never committed {topic} to its end: {now:?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Wait until `topic` holds `n` records.
async fn wait_records(b: &TestBroker, topic: &str, n: i64, logs: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while b.count(topic) < n {
        assert!(
            Instant::now() < deadline,
            "{topic} holds {} records, not {n}:\n{}",
            b.count(topic),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn offsets_are_shown_reset_and_rewound_on_every_host_of_the_group() {
    let Some(b) = broker() else { return };
    b.create_topics(&["ops-in", "ops-out", "ops-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "ops", "");
    let (port_a, port_b) = (weir_devkit::free_port(), weir_devkit::free_port());
    let a = BinaryHost::start_with(
        &files,
        "a",
        &[("WEIR_ADMIN__LISTEN", &format!("127.0.0.1:{port_a}"))],
    );
    let b_host = BinaryHost::start_with(
        &files,
        "b",
        &[("WEIR_ADMIN__LISTEN", &format!("127.0.0.1:{port_b}"))],
    );
    let logs = || format!("--- a:\n{}\n--- b:\n{}", a.log_text(), b_host.log_text());
    wait_ready(port_a, "host a", logs).await;
    wait_ready(port_b, "host b", logs).await;

    let producer = b.producer();
    for seq in 0..60 {
        produce(
            &producer,
            "ops-in",
            &format!("k{}", seq % 10),
            json!({"seq": seq}),
        )
        .await;
    }
    wait_records(&b, "ops-out", 60, logs).await;
    wait_committed_to_end(&b, "ops-echo", "ops-in", logs).await;
    // Both hosts hold some of the three partitions.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let held = |v: &Value| v["partitions"].as_array().map_or(0, Vec::len);
        let (pa, pb) = (
            held(&get_json(port_a, "/plugins/echo").await),
            held(&get_json(port_b, "/plugins/echo").await),
        );
        if pa > 0 && pb > 0 && pa + pb == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions were never shared ({pa}, {pb}):\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Shown: every partition, committed at its end.
    let (code, shown) = weir(&files, port_a, &["offsets", "show", "echo"]).await;
    assert_eq!(code, Some(0), "{shown}");
    assert!(shown.contains("group ops-echo"), "{shown}");
    for p in 0..3 {
        assert!(shown.contains(&format!("ops-in/{p}")), "{shown}");
    }
    let v = get_json(port_b, "/plugins/echo/offsets").await;
    let partitions = v["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3, "{v}");
    assert!(
        partitions
            .iter()
            .all(|p| p["lag"] == 0 && p["committed"] == p["latest"]),
        "{v}"
    );

    // A dry run says what would move and moves nothing.
    let (code, dry) = weir(
        &files,
        port_a,
        &["offsets", "reset", "echo", "--to", "earliest", "--dry-run"],
    )
    .await;
    assert_eq!(code, Some(0), "{dry}");
    assert!(dry.contains("would move to earliest"), "{dry}");
    assert!(dry.contains(" again"), "{dry}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.count("ops-out"), 60, "a dry run moves nothing");

    // Reset to earliest through host a: both hosts move what they hold, and
    // every event is handled once more.
    let (code, reset) = weir(
        &files,
        port_a,
        &["offsets", "reset", "echo", "--to", "earliest"],
    )
    .await;
    assert_eq!(code, Some(0), "{reset}\n{}", logs());
    assert!(reset.contains("moved to earliest"), "{reset}");
    assert_eq!(
        reset.matches("host ").count(),
        2,
        "both hosts answered: {reset}"
    );
    wait_records(&b, "ops-out", 120, logs).await;
    wait_committed_to_end(&b, "ops-echo", "ops-in", logs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = b.read("ops-out", 120);
    assert_eq!(
        out.len(),
        120,
        "each event exactly once more, no host undid the reset"
    );
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for r in &out {
        *counts.entry(r.json()["seq"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 2),
        "every seq twice: {counts:?}"
    );
    assert!(
        a.log_text()
            .contains("partitions moved and committed by the operator"),
        "{}",
        logs()
    );
    assert!(
        b_host
            .log_text()
            .contains("partitions moved and committed by the operator"),
        "{}",
        logs()
    );

    // Rewound to a time: only what came after it is handled again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let since = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for seq in 60..90 {
        produce(
            &producer,
            "ops-in",
            &format!("k{}", seq % 10),
            json!({"seq": seq}),
        )
        .await;
    }
    wait_records(&b, "ops-out", 150, logs).await;
    wait_committed_to_end(&b, "ops-echo", "ops-in", logs).await;
    let time = humantime::format_rfc3339_millis(since).to_string();
    let (code, rewound) = weir(
        &files,
        port_b,
        &["offsets", "rewind", "echo", "--time", &time],
    )
    .await;
    assert_eq!(code, Some(0), "{rewound}\n{}", logs());
    wait_records(&b, "ops-out", 180, logs).await;
    wait_committed_to_end(&b, "ops-echo", "ops-in", logs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out = b.read("ops-out", 180);
    assert_eq!(
        out.len(),
        180,
        "the 30 events after the time, once more:\n{rewound}"
    );
    let again: Vec<u64> = out[..]
        .iter()
        .map(|r| r.json()["seq"].as_u64().unwrap())
        .filter(|s| *s >= 60)
        .collect();
    assert_eq!(again.len(), 60, "events 60..90 twice each");

    // Explicit offsets: one partition back by one record.
    let high = b.positions("ops-echo", "ops-in", 3)[0].1;
    let pair = format!("in/0={}", high - 1);
    let (code, explicit) = weir(
        &files,
        port_a,
        &["offsets", "rewind", "echo", "--offset", &pair],
    )
    .await;
    assert_eq!(code, Some(0), "{explicit}\n{}", logs());
    assert!(explicit.contains("1 again"), "{explicit}");
    wait_records(&b, "ops-out", 181, logs).await;
    // Outside the partition: refused, and said why.
    let (code, refused) = weir(
        &files,
        port_a,
        &[
            "offsets",
            "rewind",
            "echo",
            "--offset",
            &format!("in/0={}", high + 5),
        ],
    )
    .await;
    assert_eq!(code, Some(1), "{refused}");
    assert!(refused.contains("outside the partition"), "{refused}");

    let (_, metrics) = client::call(&format!("127.0.0.1:{port_a}"), "GET", "/metrics")
        .await
        .unwrap();
    assert!(
        metrics.contains("weir_operator_actions_total{plugin=\"echo\",action=\"offsets_moved\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn workers_change_under_load_without_losing_duplicating_or_reordering_an_event() {
    let Some(b) = broker() else { return };
    b.create_topics(&["opw-in", "opw-out", "opw-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(
        &b.bootstrap(),
        "opw",
        "[consumer]\nworkers = 1\nbatch = 16\n",
    );
    let port = weir_devkit::free_port();
    let host = BinaryHost::start_with(
        &files,
        "w",
        &[("WEIR_ADMIN__LISTEN", &format!("127.0.0.1:{port}"))],
    );
    let logs = || host.log_text();
    wait_ready(port, "the host", logs).await;

    let n = 20_000;
    let producer = b.producer();
    let feed = tokio::spawn(async move {
        for chunk in 0..20 {
            let sends = (chunk * 1000..(chunk + 1) * 1000).map(|i| {
                let producer = producer.clone();
                async move {
                    let key = format!("k{}", i % 300);
                    produce(&producer, "opw-in", &key, json!({"seq": i, "key": key})).await
                }
            });
            futures::future::join_all(sends).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    wait_records(&b, "opw-out", 2_000, logs).await;
    let (code, up) = weir(&files, port, &["workers", "echo", "4"]).await;
    assert_eq!(code, Some(0), "{up}\n{}", logs());
    assert!(up.contains("1 → 4 worker(s)"), "{up}");
    assert_eq!(get_json(port, "/plugins/echo").await["workers"], 4);
    wait_records(&b, "opw-out", 10_000, logs).await;
    let (code, down) = weir(&files, port, &["workers", "echo", "2"]).await;
    assert_eq!(code, Some(0), "{down}\n{}", logs());
    feed.await.unwrap();
    wait_records(&b, "opw-out", n as i64, logs).await;
    wait_committed_to_end(&b, "opw-echo", "opw-in", logs).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let out = b.read("opw-out", n);
    let (seen, duplicates) = seqs(&out);
    println!(
        "workers 1 → 4 → 2 under load: {n} events, {} outputs, {duplicates} duplicates",
        out.len()
    );
    assert_eq!(seen.len(), n, "nothing lost");
    assert_eq!(
        duplicates, 0,
        "nothing handled twice (the change drained first)"
    );
    assert_key_order(&out);
    let v = get_json(port, "/plugins/echo").await;
    assert_eq!(v["workers"], 2, "{v}");
    // Out of range: refused with the range.
    let (code, refused) = weir(&files, port, &["workers", "echo", "0"]).await;
    assert_eq!(code, Some(1), "{refused}");
    assert!(refused.contains("1 to 64"), "{refused}");
    assert!(
        logs().contains("workers changed by the operator"),
        "{}",
        logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn an_exactly_once_plugin_reset_to_earliest_handles_each_event_exactly_once_more() {
    let Some(b) = broker() else { return };
    b.create_topics(&["opx-in", "opx-out", "opx-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(
        &b.bootstrap(),
        "opx",
        "[consumer]\ndelivery = \"exactly-once\"\n",
    );
    let port = weir_devkit::free_port();
    let host = BinaryHost::start_with(
        &files,
        "x",
        &[("WEIR_ADMIN__LISTEN", &format!("127.0.0.1:{port}"))],
    );
    let logs = || host.log_text();
    wait_ready(port, "the host", logs).await;
    let producer = b.producer();
    for seq in 0..40 {
        produce(
            &producer,
            "opx-in",
            &format!("k{}", seq % 7),
            json!({"seq": seq}),
        )
        .await;
    }
    assert_eq!(b.read("opx-out", 40).len(), 40);
    wait_committed_to_end(&b, "opx-echo", "opx-in", logs).await;

    let (code, reset) = weir(
        &files,
        port,
        &["offsets", "reset", "echo", "--to", "earliest"],
    )
    .await;
    assert_eq!(code, Some(0), "{reset}\n{}", logs());
    let out = b.read("opx-out", 80);
    wait_committed_to_end(&b, "opx-echo", "opx-in", logs).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let out_again = b.read("opx-out", 80);
    assert_eq!(
        (out.len(), out_again.len()),
        (80, 80),
        "read_committed: each event once more, no more"
    );
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for r in &out_again {
        *counts.entry(r.json()["seq"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(
        counts.values().all(|n| *n == 2),
        "every seq twice: {counts:?}"
    );
    assert_key_order(&out_again);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_reset_during_a_rebalance_moves_every_partition_once() {
    let Some(b) = broker() else { return };
    b.create_topics(&["opr-in", "opr-out", "opr-in.dlq"], 3)
        .await;
    // An event waiting for its retries keeps its host's hold (the reset waits
    // for it) for several seconds, while a third host joins and the group
    // rebalances.
    let files = HostFiles::echo(
        &b.bootstrap(),
        "opr",
        "[retry]\nattempts = 5\ninitial_backoff = \"3s\"\nmax_backoff = \"6s\"\n",
    );
    let ports = [
        weir_devkit::free_port(),
        weir_devkit::free_port(),
        weir_devkit::free_port(),
    ];
    let listen = |i: usize| format!("127.0.0.1:{}", ports[i]);
    let a = BinaryHost::start_with(&files, "a", &[("WEIR_ADMIN__LISTEN", &listen(0))]);
    let b_host = BinaryHost::start_with(&files, "b", &[("WEIR_ADMIN__LISTEN", &listen(1))]);
    let logs = || format!("--- a:\n{}\n--- b:\n{}", a.log_text(), b_host.log_text());
    wait_ready(ports[0], "host a", logs).await;
    wait_ready(ports[1], "host b", logs).await;
    let producer = b.producer();
    let n = 90;
    for seq in 0..n {
        produce(
            &producer,
            "opr-in",
            &format!("k{}", seq % 9),
            json!({"seq": seq}),
        )
        .await;
    }
    wait_records(&b, "opr-out", n as i64, logs).await;
    wait_committed_to_end(&b, "opr-echo", "opr-in", logs).await;

    produce(
        &producer,
        "opr-in",
        "slow",
        json!({"seq": n, "mode": "fail-twice"}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reset = {
        let config = files.config();
        let port = ports[0];
        tokio::spawn(async move {
            let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(["offsets", "reset", "echo", "--to", "earliest", "--config"])
                .arg(config)
                .env("WEIR_ADMIN__LISTEN", format!("127.0.0.1:{port}"))
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            )
        })
    };
    let c = BinaryHost::start_with(&files, "c", &[("WEIR_ADMIN__LISTEN", &listen(2))]);
    let (code, text) = reset.await.unwrap();
    let all_logs = || format!("{}\n--- c:\n{}", logs(), c.log_text());
    assert_eq!(code, Some(0), "{text}\n{}", all_logs());
    // Every event once more (the slow one too), and none a third time.
    let total = 2 * (n as i64 + 1);
    wait_records(&b, "opr-out", total, all_logs).await;
    wait_committed_to_end(&b, "opr-echo", "opr-in", all_logs).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let out = b.read("opr-out", total as usize);
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for r in &out {
        *counts.entry(r.json()["seq"].as_u64().unwrap()).or_default() += 1;
    }
    let wrong: Vec<_> = counts.iter().filter(|(_, c)| **c != 2).collect();
    assert!(
        wrong.is_empty() && counts.len() == n as usize + 1,
        "every event exactly twice; these were not: {wrong:?}\n{text}\n{}",
        all_logs()
    );
    let asked_again = a.log_text().contains("asking the hosts again");
    println!(
        "reset during a rebalance: {} events twice each; partitions asked for again: {asked_again}; {}",
        n + 1,
        text.lines().filter(|l| l.starts_with("host ")).collect::<Vec<_>>().join("; ")
    );
}
