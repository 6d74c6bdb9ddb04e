//! Several hosts in one group, partitions moving between them, and stalls made
//! visible.

use crate::kafka_support::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Issue 10, item 6: a host under backpressure gives partitions away in a
/// rebalance and keeps one; every partition must flow to its end afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn partitions_handed_back_after_a_rebalance_under_backpressure_flow_to_the_end() {
    let Some(b) = broker() else { return };
    let names = ["grp-in", "grp-out", "grp-in.dlq"];
    b.create_topics(&names, 3).await;
    // A backlog of 30 000 events, then 10 000 more over a few seconds, so the
    // partitions keep receiving after they moved.
    let (backlog, n) = (30_000, 40_000);
    let producer = b.producer();
    let produce_range = |range: std::ops::Range<usize>| {
        let producer = producer.clone();
        async move {
            let sends = range.map(|i| {
                let producer = producer.clone();
                async move {
                    let key = format!("k{}", i % 300);
                    produce(&producer, "grp-in", &key, json!({"seq": i, "key": key})).await
                }
            });
            futures::future::join_all(sends).await;
        }
    };
    produce_range(0..backlog).await;

    let files = HostFiles::echo(&b.bootstrap(), "grp", "[consumer]\nmax_in_flight = 10000\n");
    // Started together, as the issue tried it: the first to join takes all three
    // partitions and a full window in flight; the group rebalances as the others
    // join.
    let a = BinaryHost::start(&files, "a");
    let others = [
        BinaryHost::start(&files, "b"),
        BinaryHost::start(&files, "c"),
    ];
    for chunk in 0..10 {
        let from = backlog + chunk * 1_000;
        produce_range(from..from + 1_000).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = b.read("grp-out", n);
    // Settled: every partition committed to its end, and the late joiners have
    // their share (on a slow machine one host can drain the whole backlog
    // before the others have compiled the plugin and joined; their assignment
    // then comes after, and the positions must still be at the end).
    let deadline = Instant::now() + PATIENCE;
    let logs_of = || -> Vec<String> {
        std::iter::once(&a)
            .chain(&others)
            .map(|h| h.log_text())
            .collect()
    };
    let assigned = |logs: &[String]| {
        logs.iter()
            .filter(|l| l.contains("partitions assigned"))
            .count()
    };
    let (settled, logs) = loop {
        let now = b.positions("grp-echo", "grp-in", 3);
        let logs = logs_of();
        let done = now.iter().all(|(at, high)| at == high) && assigned(&logs) >= 2;
        if done || Instant::now() > deadline {
            break (now, logs);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(a);
    drop(others);

    let (seen, duplicates) = seqs(&out);
    let missing = n - seen.len();
    println!(
        "rebalance under backpressure: {n} events, 3 hosts, {} outputs, {duplicates} duplicates, {missing} missing, positions {settled:?}",
        out.len()
    );
    assert_eq!(missing, 0, "every event handled");
    for (p, (at, high)) in settled.iter().enumerate() {
        assert_eq!(
            at,
            high,
            "partition {p} committed to its end:\n{}",
            logs.join("\n---\n")
        );
    }
    let shared = assigned(&logs);
    assert!(
        shared >= 2,
        "the partitions were shared: {shared} host(s) got some"
    );
    assert!(
        logs.iter().all(|l| !l.contains("partition stalled")),
        "no partition stalled"
    );
    assert_key_order(&out);
}

/// Static membership on Kafka: a host SIGKILLed and restarted under the same
/// host id (its `data/host-id` file) gets its partitions back without a
/// rebalance (the other host keeps its own, untouched), measured from the
/// restart; nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_host_restarted_with_its_id_gets_its_partitions_back_without_a_rebalance() {
    let Some(b) = broker() else { return };
    b.create_topics(&["static-in", "static-out", "static-in.dlq"], 4)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "static", "");
    let mut a = BinaryHost::start(&files, "a");
    a.wait_for_log("partitions assigned");
    let other = BinaryHost::start(&files, "b");
    other.wait_for_log("partitions assigned");
    // Both hosts hold partitions once a's share shrank.
    let deadline = Instant::now() + PATIENCE;
    while a.log_text().matches("partitions revoked").count() == 0 {
        assert!(Instant::now() < deadline, "a never gave partitions to b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let producer = b.producer();
    for i in 0..200 {
        let key = format!("k{}", i % 20);
        produce(&producer, "static-in", &key, json!({"seq": i, "key": key})).await;
    }
    assert!(b.read("static-out", 200).len() >= 200);
    let assigned_to_b = other.log_text().matches("partitions assigned").count();

    let assigned_to_a = a.log_text().matches("partitions assigned").count();
    a.signal("KILL");
    a.wait();
    let restarted = Instant::now();
    // The same log file: wait for an assignment after the restart.
    let a2 = BinaryHost::start(&files, "a");
    let deadline = Instant::now() + PATIENCE;
    while a2.log_text().matches("partitions assigned").count() <= assigned_to_a {
        assert!(
            Instant::now() < deadline,
            "a never got partitions back:\n{}",
            a2.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back = restarted.elapsed();
    for i in 200..400 {
        let key = format!("k{}", i % 20);
        produce(&producer, "static-in", &key, json!({"seq": i, "key": key})).await;
    }
    let out = b.read("static-out", 400);
    let handled = restarted.elapsed();
    let other_log = other.log_text();
    let a_log = a2.log_text();
    drop(a2);
    drop(other);
    let (seen, duplicates) = seqs(&out);
    println!(
        "static membership: the restarted host had its partitions back {:.1} s after its restart (events handled {:.1} s after), {duplicates} duplicates, {} missing",
        back.as_secs_f64(),
        handled.as_secs_f64(),
        400 - seen.len()
    );
    assert_eq!(seen.len(), 400, "nothing lost");
    assert_eq!(
        other_log.matches("partitions assigned").count(),
        assigned_to_b,
        "the other host saw no rebalance:\n{other_log}"
    );
    assert!(
        !other_log.contains("partitions revoked") && !a_log.contains("Fenced"),
        "no partition moved and nobody was fenced:\n{other_log}\n---\n{a_log}"
    );
    assert_key_order(&out);
}

/// Two hosts started on one data directory would share their static member ids
/// and fence each other: the second refuses to start and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_second_host_on_the_same_host_id_refuses_to_start() {
    let Some(b) = broker() else { return };
    let files = HostFiles::echo(&b.bootstrap(), "twin", "");
    let id_file = files.dir.path().join("data/host-id");
    let id_file = id_file.to_str().unwrap();
    let first = BinaryHost::start_with(
        &files,
        "first",
        &[("WEIR_KAFKA__CONSUMER__HOST_ID_FILE", id_file)],
    );
    first.wait_for_log("weir is running");
    let mut second = BinaryHost::start_with(
        &files,
        "second",
        &[("WEIR_KAFKA__CONSUMER__HOST_ID_FILE", id_file)],
    );
    let code = second.wait();
    let log = second.log_text();
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("another weir host is running with the host id file")
            && log.contains("host_id_file"),
        "{log}"
    );
    let id = std::fs::read_to_string(id_file).unwrap();
    assert!(
        first.log_text().contains(id.trim()),
        "the first host logs its id"
    );
    drop(first);
}

/// The time a log line was written (its leading RFC 3339 timestamp), in
/// milliseconds since the epoch.
fn logged_at_ms(line: &str) -> i64 {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    let at = humantime::parse_rfc3339_weak(stamp)
        .unwrap_or_else(|e| panic!("no timestamp in {line:?}: {e}"));
    at.duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Two hosts given the same static member id by hand (on different data
/// directories, which no lock can catch): the second fences the first. The
/// moment the first learns of it, it drops the partitions it held: none of its
/// events in flight sends a record after that (among them events waiting for a
/// retry, which would otherwise be handled seconds later), and the second
/// handles everything from the last commit. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_fenced_host_sends_nothing_more_for_the_partitions_it_held() {
    let Some(b) = broker() else { return };
    let names = ["fence-in", "fence-out", "fence-in.dlq"];
    b.create_topics(&names, 3).await;
    // Each host tags its outputs with its name; a retried event waits 2 s.
    let manifest = |who: &str| {
        format!(
            "[retry]\ninitial_backoff = \"2s\"\nmax_backoff = \"2s\"\n[config]\nversion = \"{who}\""
        )
    };
    let files_a = HostFiles::echo(&b.bootstrap(), "fence", &manifest("a"));
    let files_b = HostFiles::echo(&b.bootstrap(), "fence", &manifest("b"));
    let same_id = [("WEIR_KAFKA__CONSUMER__INSTANCE_ID", "twin-{plugin}")];
    let a = BinaryHost::start_with(&files_a, "a", &same_id);
    a.wait_for_log("partitions assigned");

    // Keyed events over about 4 s; one in 97 (over every key: 97 and 50 are
    // coprime) fails twice before it is handled.
    let n = 3_000;
    let producer = b.producer();
    let stream = tokio::spawn(async move {
        for chunk in 0..n / 100 {
            let sends = (chunk * 100..(chunk + 1) * 100).map(|i| {
                let producer = producer.clone();
                async move {
                    let key = format!("k{}", i % 50);
                    let mode = if i % 97 == 3 { "fail-twice" } else { "ok" };
                    produce(
                        &producer,
                        "fence-in",
                        &key,
                        json!({"seq": i, "key": key, "mode": mode}),
                    )
                    .await
                }
            });
            futures::future::join_all(sends).await;
            tokio::time::sleep(Duration::from_millis(130)).await;
        }
    });
    b.wait_count("fence-out", 300).await;
    let bh = BinaryHost::start_with(&files_b, "b", &same_id);
    a.wait_for_log("the consumer failed for good");
    stream.await.unwrap();
    // Duplicates count too: read until every event has its output.
    let deadline = Instant::now() + PATIENCE;
    let out = loop {
        let out = b.read("fence-out", n);
        if seqs(&out).0.len() == n || Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let (a_log, b_log) = (a.log_text(), bh.log_text());
    drop((a, bh));

    let fenced_line = a_log
        .lines()
        .find(|l| l.contains("the consumer failed for good"))
        .unwrap();
    let fenced_at = logged_at_ms(fenced_line);
    // Fenced at the broker when b joined with the id; a rejoins as a dynamic
    // member later and may then be given partitions again.
    let joined_at = logged_at_ms(
        b_log
            .lines()
            .find(|l| l.contains("partitions assigned"))
            .unwrap(),
    );
    let back_at = a_log
        .lines()
        .filter(|l| l.contains("partitions assigned"))
        .map(logged_at_ms)
        .find(|&at| at > fenced_at)
        .unwrap_or(i64::MAX);
    let by_a_at = |from: i64, to: i64| {
        out.iter()
            .filter(|r| r.json()["by"] == "a")
            .filter(|r| r.timestamp_ms.is_some_and(|t| t > from && t < to))
            .count()
    };
    let before_it_knew = by_a_at(joined_at, fenced_at + 1);
    let after_it_knew = by_a_at(fenced_at, back_at);
    let (seen, duplicates) = seqs(&out);
    println!(
        "fence: a learned of it {} ms after b joined with its id and dropped its partitions ({}); \
         a sent {before_it_knew} outputs in between and {after_it_knew} after; {} outputs, \
         {duplicates} duplicates, {} missing",
        fenced_at - joined_at,
        fenced_line
            .split("events_dropped=")
            .nth(1)
            .map(|s| format!(
                "{} events in flight dropped",
                s.split_whitespace().next().unwrap()
            ))
            .unwrap_or_default(),
        out.len(),
        n - seen.len()
    );
    assert_eq!(
        after_it_knew, 0,
        "a sent records for its fenced partitions after the fence:\n{a_log}"
    );
    assert_eq!(seen.len(), n, "nothing lost:\n{a_log}\n---\n{b_log}");
    assert_key_order(&out);
}

/// Three hosts join one group while keyed events flow, then one leaves
/// (SIGTERM): every event handled, order per key kept, whatever the group
/// protocol. Returns how many partitions the first host gave up at each of its
/// rebalances (printed too).
async fn three_hosts_with(prefix: &str, properties: &str) -> Vec<usize> {
    let b = broker().expect("Kafka is installed");
    let names: Vec<String> = ["in", "out", "in.dlq"]
        .iter()
        .map(|t| format!("{prefix}-{t}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    b.create_topics(&refs, 6).await;
    let files = HostFiles::echo(&b.bootstrap(), prefix, "");
    files.write_config(
        &b.bootstrap(),
        prefix,
        &format!("[kafka.properties]\n{properties}\n"),
    );
    let n = 6_000;
    let producer = b.producer();
    let input = names[0].clone();
    let stream = tokio::spawn(async move {
        for chunk in 0..n / 100 {
            let sends = (chunk * 100..(chunk + 1) * 100).map(|i| {
                let (producer, input) = (producer.clone(), input.clone());
                async move {
                    let key = format!("k{}", i % 60);
                    produce(&producer, &input, &key, json!({"seq": i, "key": key})).await
                }
            });
            futures::future::join_all(sends).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    let output = names[1].clone();
    let a = BinaryHost::start(&files, "a");
    a.wait_for_log("partitions assigned");
    b.wait_count(&output, 500).await;
    let bh = BinaryHost::start(&files, "b");
    bh.wait_for_log("partitions assigned");
    b.wait_count(&output, 2_000).await;
    let mut c = BinaryHost::start(&files, "c");
    c.wait_for_log("partitions assigned");
    b.wait_count(&output, 3_500).await;
    c.signal("TERM");
    assert_eq!(c.wait(), Some(0), "c stops cleanly:\n{}", c.log_text());
    stream.await.unwrap();
    let out = b.read(&output, n);
    let logs: Vec<String> = [&a, &bh, &c].iter().map(|h| h.log_text()).collect();
    drop((a, bh));
    let (seen, duplicates) = seqs(&out);
    println!(
        "{prefix} ({properties}): {n} events, 3 hosts, {} outputs, {duplicates} duplicates, {} missing",
        out.len(),
        n - seen.len()
    );
    assert_eq!(seen.len(), n, "nothing lost:\n{}", logs.join("\n---\n"));
    assert_key_order(&out);
    for log in &logs {
        assert!(
            !log.contains("Fenced") && !log.contains("panicked"),
            "{log}"
        );
    }
    let revoked = revocations(&logs[0]);
    println!("{properties}: host a's revocations (partitions each): {revoked:?}");
    revoked
}

/// The partitions a host's log says were revoked, one line per rebalance.
fn revocations(log: &str) -> Vec<usize> {
    log.lines()
        .filter(|l| l.contains("partitions revoked"))
        .map(|l| l.matches("-in/").count())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn three_hosts_with_an_eager_assignor_lose_nothing() {
    let a = three_hosts_with("eager", "\"partition.assignment.strategy\" = \"range\"").await;
    // Eager: every rebalance takes all of a host's partitions away first.
    assert!(a.first().is_some_and(|n| *n == 6), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn three_hosts_with_cooperative_sticky_move_only_the_moved_partitions() {
    let a = three_hosts_with(
        "coop",
        "\"partition.assignment.strategy\" = \"cooperative-sticky\"",
    )
    .await;
    // Incremental: when b joins, a gives up only the partitions b gets (3 of 6).
    assert!(a.first().is_some_and(|n| *n < 6), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn three_hosts_with_the_kip_848_consumer_protocol_lose_nothing() {
    let a = three_hosts_with("kip848", "\"group.protocol\" = \"consumer\"").await;
    // Incremental too: the broker assigns.
    assert!(a.first().is_some_and(|n| *n < 6), "{a:?}");
}
