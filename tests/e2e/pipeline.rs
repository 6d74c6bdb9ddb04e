//! The Kafka pipeline end to end: a real broker, real components, the real host.

use crate::kafka_support::*;
use serde_json::json;
use std::time::Duration;

/// In: `{prefix}-in` (3 partitions); out: `{prefix}-out`; DLQ: `{prefix}-in.dlq`.
async fn topics(b: &TestBroker, prefix: &str) {
    let names: Vec<String> = ["in", "out", "in.dlq", "secret"]
        .iter()
        .map(|t| format!("{prefix}-{t}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    b.create_topics(&refs, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn every_event_is_handled_once_in_key_order_with_parallel_workers() {
    let Some(b) = broker() else { return };
    topics(&b, "order").await;
    let producer = b.producer();
    let n = 300;
    for i in 0..n {
        let key = format!("k{}", i % 20);
        produce(&producer, "order-in", &key, json!({"seq": i, "key": key})).await;
    }
    let files = HostFiles::echo(
        &b.bootstrap(),
        "order",
        "[consumer]\nworkers = 4\nmax_in_flight = 50\n",
    );
    let manifest = files.plugins().join("echo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(
        &manifest,
        format!("{text}cloudevents_source = \"/weir/echo\"\n"),
    )
    .unwrap();
    let host = InProcessHost::start(files.load());
    let out = b.read("order-out", n);
    let report = host.stop().await;

    let (seen, duplicates) = seqs(&out);
    let missing: Vec<u64> = (0..n as u64).filter(|s| !seen.contains(s)).collect();
    println!(
        "pipeline: {n} events, {} outputs, {duplicates} duplicates, missing {missing:?}",
        out.len()
    );
    assert!(missing.is_empty(), "missing outputs for {missing:?}");
    assert_eq!(duplicates, 0, "a clean run handles each event once");
    assert_key_order(&out);
    for r in &out {
        let body = r.json();
        assert_eq!(
            r.key.as_deref(),
            body["key"].as_str(),
            "output keyed like its input"
        );
        assert_eq!(
            r.header("correlation-id"),
            Some(format!("c-{}", body["seq"]).as_str())
        );
        assert_eq!(r.header("ce_specversion"), Some("1.0"));
        assert_eq!(r.header("ce_source"), Some("/weir/echo"));
        assert_eq!(r.header("ce_type"), Some("out"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.header("ce_id").is_some() && r.header("ce_time").is_some());
    }
    let ids: std::collections::BTreeSet<&str> =
        out.iter().filter_map(|r| r.header("ce_id")).collect();
    assert_eq!(ids.len(), out.len(), "one ce_id per output");
    let stats = report.plugins["echo"];
    assert_eq!(stats.handled, n as u64);
    assert_eq!(stats.published, n as u64);
    assert_eq!(stats.dead_lettered, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_transient_failure_is_retried_then_handled_once_in_order() {
    let Some(b) = broker() else { return };
    topics(&b, "retry").await;
    let producer = b.producer();
    produce(
        &producer,
        "retry-in",
        "A",
        json!({"seq": 0, "mode": "fail-twice"}),
    )
    .await;
    produce(&producer, "retry-in", "A", json!({"seq": 1})).await;
    produce(&producer, "retry-in", "A", json!({"seq": 2})).await;
    let files = HostFiles::echo(
        &b.bootstrap(),
        "retry",
        "[retry]\nattempts = 5\ninitial_backoff = \"20ms\"\nmax_backoff = \"100ms\"\n",
    );
    let host = InProcessHost::start(files.load());
    let out = b.read("retry-out", 3);
    let report = host.stop().await;

    let order: Vec<u64> = out
        .iter()
        .map(|r| r.json()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        vec![0, 1, 2],
        "handled once each, the key's order kept"
    );
    let stats = report.plugins["echo"];
    assert_eq!(
        (stats.retries, stats.handled, stats.dead_lettered),
        (2, 3, 0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_permanent_failure_is_dead_lettered_with_its_headers_and_the_partition_flows_on() {
    let Some(b) = broker() else { return };
    topics(&b, "dlq").await;
    let producer = b.producer();
    produce(&producer, "dlq-in", "A", json!({"seq": 0})).await;
    produce(
        &producer,
        "dlq-in",
        "A",
        json!({"seq": 1, "mode": "reject"}),
    )
    .await;
    produce(&producer, "dlq-in", "A", json!({"seq": 2, "mode": "trap"})).await;
    produce(&producer, "dlq-in", "A", json!({"seq": 3})).await;
    let files = HostFiles::echo(
        &b.bootstrap(),
        "dlq",
        "[retry]\nattempts = 2\ninitial_backoff = \"10ms\"\nmax_backoff = \"10ms\"\n",
    );
    let host = InProcessHost::start(files.load());
    let out = b.read("dlq-out", 2);
    let dead = b.read("dlq-in.dlq", 2);
    let report = host.stop().await;

    let order: Vec<u64> = out
        .iter()
        .map(|r| r.json()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(order, vec![0, 3]);
    assert_eq!(dead.len(), 2, "{dead:?}");
    let rejected = &dead[0];
    assert_eq!(rejected.key.as_deref(), Some("A"));
    assert_eq!(rejected.json()["seq"], 1);
    assert_eq!(
        rejected.header("correlation-id"),
        Some("c-1"),
        "original headers kept"
    );
    assert_eq!(
        rejected.header("weir-error"),
        Some("rejected: asked to reject")
    );
    assert_eq!(rejected.header("weir-plugin"), Some("echo"));
    assert_eq!(rejected.header("weir-original-topic"), Some("dlq-in"));
    let partition: i32 = rejected
        .header("weir-original-partition")
        .unwrap()
        .parse()
        .unwrap();
    assert!((0..3).contains(&partition));
    assert_eq!(rejected.header("weir-original-offset"), Some("1"));
    assert_eq!(
        rejected.header("weir-attempts"),
        Some("1"),
        "a rejection is not retried"
    );
    assert!(humantime::parse_rfc3339(rejected.header("weir-failed-at").unwrap()).is_ok());

    let trapped = &dead[1];
    assert_eq!(trapped.json()["seq"], 2);
    assert_eq!(
        trapped.header("weir-attempts"),
        Some("2"),
        "a trap is retried first"
    );
    assert!(
        trapped
            .header("weir-error")
            .unwrap()
            .starts_with("trapped: "),
        "{trapped:?}"
    );
    assert!(trapped
        .header("weir-error")
        .unwrap()
        .contains("asked to trap"));
    let stats = report.plugins["echo"];
    assert_eq!(
        (stats.handled, stats.dead_lettered, stats.retries),
        (2, 2, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn publishing_to_an_ungranted_topic_is_denied_and_never_reaches_the_broker() {
    let Some(b) = broker() else { return };
    topics(&b, "deny").await;
    let producer = b.producer();
    produce(
        &producer,
        "deny-in",
        "A",
        json!({"seq": 0, "mode": "publish-secret"}),
    )
    .await;
    produce(&producer, "deny-in", "A", json!({"seq": 1})).await;
    let files = HostFiles::echo(&b.bootstrap(), "deny", "[retry]\nattempts = 1\n");
    let host = InProcessHost::start(files.load());
    let out = b.read("deny-out", 1);
    let dead = b.read("deny-in.dlq", 1);
    host.stop().await;

    assert_eq!(out.len(), 1);
    assert_eq!(dead.len(), 1);
    let error = dead[0].header("weir-error").unwrap();
    assert!(
        error.contains("publishing to \"secret\" is not granted"),
        "{error}"
    );
    assert_eq!(
        b.count("deny-secret"),
        0,
        "nothing reached the ungranted topic"
    );
}

/// Produce `n` events over 10 keys at a steady pace from a background task.
fn produce_stream(
    b: &TestBroker,
    topic: &str,
    n: u64,
    pace: Duration,
) -> tokio::task::JoinHandle<()> {
    let producer = b.producer();
    let topic = topic.to_string();
    tokio::spawn(async move {
        for i in 0..n {
            let key = format!("k{}", i % 10);
            produce(&producer, &topic, &key, json!({"seq": i, "key": key})).await;
            tokio::time::sleep(pace).await;
        }
    })
}

/// Stream 300 events while a `weir run` process handles them; send `signal` to it
/// mid-stream, check how it ended, start a second host, and return every output
/// plus how many were there before the restart.
async fn interrupt_mid_stream(
    prefix: &str,
    signal: &str,
    expected_exit: Option<i32>,
) -> Option<(Vec<Record>, i64)> {
    let b = broker()?;
    topics(&b, prefix).await;
    let (input, output) = (format!("{prefix}-in"), format!("{prefix}-out"));
    let files = HostFiles::echo(&b.bootstrap(), prefix, "[consumer]\nworkers = 2\n");
    let stream = produce_stream(&b, &input, 300, Duration::from_millis(10));
    let mut first = BinaryHost::start(&files, "first");
    first.wait_for_log("partitions assigned");
    // Mid-stream: the host has handled some of the events, not all.
    b.wait_count(&output, 60).await;
    first.signal(signal);
    assert_eq!(
        first.wait(),
        expected_exit,
        "after SIG{signal}:\n{}",
        first.log_text()
    );
    if expected_exit == Some(0) {
        assert!(
            first.log_text().contains("offsets committed"),
            "{}",
            first.log_text()
        );
    }
    let before_restart = b.count(&output);
    assert!(
        before_restart > 0 && before_restart < 300,
        "SIG{signal} landed mid-stream ({before_restart} handled)"
    );

    let second = BinaryHost::start(&files, "second");
    stream.await.unwrap();
    let out = b.read(&output, 300);
    drop(second);
    let (seen, _) = seqs(&out);
    let missing: Vec<u64> = (0..300).filter(|s| !seen.contains(s)).collect();
    assert!(missing.is_empty(), "missing {missing:?}");
    assert_key_order(&out);
    Some((out, before_restart))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn sigterm_mid_stream_then_restart_loses_nothing_and_handles_nothing_twice() {
    let Some((out, before)) = interrupt_mid_stream("term", "TERM", Some(0)).await else {
        return;
    };
    let (_, duplicates) = seqs(&out);
    println!(
        "sigterm: 300 events, {before} handled before SIGTERM, {} outputs, {duplicates} duplicates, 0 missing",
        out.len()
    );
    assert_eq!(
        duplicates, 0,
        "after a clean drain nothing is handled twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn sigkill_mid_stream_then_restart_loses_nothing() {
    let Some((out, before)) = interrupt_mid_stream("kill", "KILL", None).await else {
        return;
    };
    let (_, duplicates) = seqs(&out);
    println!(
        "sigkill: 300 events, {before} handled before SIGKILL, {} outputs, {duplicates} duplicates (redelivered after the crash), 0 missing",
        out.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn two_hosts_share_a_group_and_the_survivor_takes_over() {
    let Some(b) = broker() else { return };
    topics(&b, "pair").await;
    let n = 300;
    let files = HostFiles::echo(&b.bootstrap(), "pair", "");
    let stream = produce_stream(&b, "pair-in", n, Duration::from_millis(10));
    let a = BinaryHost::start(&files, "a");
    let mut z = BinaryHost::start(&files, "z");
    a.wait_for_log("partitions assigned");
    z.wait_for_log("partitions assigned");
    // Mid-stream: both hosts have been handling events for a while.
    b.wait_count("pair-out", 60).await;
    z.signal("TERM");
    assert_eq!(z.wait(), Some(0), "{}", z.log_text());
    stream.await.unwrap();
    let out = b.read("pair-out", n as usize);
    let a_log = a.log_text();
    drop(a);

    let (seen, duplicates) = seqs(&out);
    let missing: Vec<u64> = (0..n).filter(|s| !seen.contains(s)).collect();
    let z_log = z.log_text();
    println!(
        "two hosts: {n} events, {} outputs, {duplicates} duplicates, {} missing",
        out.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "missing {missing:?}");
    assert!(
        a_log.matches("partitions assigned").count() >= 2,
        "the survivor was reassigned partitions:\n{a_log}"
    );
    assert!(z_log.contains("partitions assigned"), "{z_log}");
    assert_key_order(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_host_started_before_its_broker_waits_and_then_consumes() {
    if kafka().is_none() {
        return;
    }
    let port = weir_devkit::free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let files = HostFiles::echo(&bootstrap, "late", "");
    let host = BinaryHost::start(&files, "host");
    host.wait_for_log("broker not reachable; retrying");

    let b = own_broker_on(port).expect("Kafka is installed");
    host.wait_for_log("weir is running");
    let producer = b.producer();
    for i in 0..5 {
        produce(&producer, "late-in", "k", json!({"seq": i})).await;
    }
    let out = b.read("late-out", 5);
    drop(host);
    assert_eq!(out.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn dlq_replay_brings_dead_letters_back_to_their_topic() {
    let Some(b) = broker() else { return };
    topics(&b, "replay").await;
    let producer = b.producer();
    produce(
        &producer,
        "replay-in",
        "A",
        json!({"seq": 0, "mode": "reject"}),
    )
    .await;
    produce(&producer, "replay-in", "B", json!({"seq": 1})).await;
    let files = HostFiles::echo(&b.bootstrap(), "replay", "[retry]\nattempts = 1\n");
    let host = InProcessHost::start(files.load());
    assert_eq!(b.read("replay-in.dlq", 1).len(), 1);
    assert_eq!(b.read("replay-out", 1).len(), 1);
    host.stop().await;

    // Replay with a filter that excludes it: nothing happens.
    let weir = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(args)
            .output()
            .unwrap()
    };
    let config = files.config();
    let config = config.to_str().unwrap();
    let unknown = weir(&["dlq", "replay", "--config", config, "--plugin", "other"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no plugin named \"other\""));
    let later = weir(&[
        "dlq",
        "replay",
        "--config",
        config,
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    assert!(
        later.status.success(),
        "{}",
        String::from_utf8_lossy(&later.stderr)
    );
    // ListOffsets by time finds no dead letter written since: none is even read.
    assert!(String::from_utf8_lossy(&later.stdout)
        .contains("replayed 0 of 0 dead letter(s) (0 skipped:"));
    assert_eq!(b.count("replay-in"), 2);

    let out = weir(&[
        "dlq",
        "replay",
        "--config",
        config,
        "--plugin",
        "echo",
        "--since",
        "2020-01-01T00:00:00Z",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("replayed 1 of 1 dead letter(s)"), "{text}");
    // Marked as replayed: a second replay does not send it again.
    let twice = weir(&["dlq", "replay", "--config", config, "--plugin", "echo"]);
    let text = String::from_utf8_lossy(&twice.stdout);
    assert!(
        text.contains(
            "replayed 0 of 1 dead letter(s) (1 skipped: by the filters, already replayed (1;"
        ),
        "{text}{}",
        String::from_utf8_lossy(&twice.stderr)
    );
    let input = b.read("replay-in", 3);
    assert_eq!(input.len(), 3);
    let replayed = input
        .iter()
        .find(|r| r.header("weir-replayed-from").is_some())
        .expect("the replayed record");
    assert_eq!(replayed.key.as_deref(), Some("A"));
    assert_eq!(replayed.json()["seq"], 0);
    assert_eq!(replayed.header("correlation-id"), Some("c-0"));
    assert!(
        replayed.header("weir-error").is_none(),
        "weir-* headers are removed"
    );

    // A fixed plugin now handles it.
    std::fs::write(
        files.plugins().join("echo.toml"),
        "name = \"echo\"\ntopics = [\"in\"]\n[capabilities.cache]\n[capabilities.publish]\ntopics = [\"out\"]\n[config]\naccept_all = \"yes\"\n",
    )
    .unwrap();
    let host = InProcessHost::start(files.load());
    let out = b.read("replay-out", 2);
    host.stop().await;
    let (seen, duplicates) = seqs(&out);
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!(duplicates, 0);

    // --since starts at the first dead letter written since (ListOffsets by
    // time): of the letters written in 2021 and 2022, a replay since 2022 reads
    // only the later ones. Of those, one names a topic that is no plugin's
    // input (anyone who can write the dead-letter topic can forge that header):
    // it is skipped.
    b.create_topics(&["replay-old.dlq"], 1).await;
    for (seq, at, target) in [
        (10, "2021-01-01T00:00:00Z", "replay-in"),
        (11, "2022-06-01T00:00:00Z", "replay-in"),
        (12, "2022-07-01T00:00:00Z", "replay-out"),
    ] {
        let ms = humantime::parse_rfc3339(at)
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "weir-original-topic",
                value: Some(target),
            })
            .insert(rdkafka::message::Header {
                key: "weir-plugin",
                value: Some("echo"),
            })
            .insert(rdkafka::message::Header {
                key: "weir-failed-at",
                value: Some(at),
            });
        let payload = json!({"seq": seq}).to_string();
        producer
            .send(
                rdkafka::producer::FutureRecord::to("replay-old.dlq")
                    .key("old")
                    .payload(&payload)
                    .timestamp(ms)
                    .headers(headers),
                Duration::from_secs(30),
            )
            .await
            .unwrap();
    }
    let since = weir(&[
        "dlq",
        "replay",
        "--config",
        config,
        "--topic",
        "replay-old.dlq",
        "--since",
        "2022-01-01T00:00:00Z",
    ]);
    let text = String::from_utf8_lossy(&since.stdout);
    assert!(
        text.contains("replayed 1 of 2 dead letter(s) (1 skipped:"),
        "{text}{}",
        String::from_utf8_lossy(&since.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn the_host_recovers_when_the_broker_restarts() {
    let Some(mut b) = own_broker() else {
        return;
    };
    topics(&b, "crash").await;
    let files = HostFiles::echo(&b.bootstrap(), "crash", "");
    let host = InProcessHost::start(files.load());
    let producer = b.producer();
    for i in 0..20 {
        produce(
            &producer,
            "crash-in",
            &format!("k{}", i % 5),
            json!({"seq": i}),
        )
        .await;
    }
    assert_eq!(b.read("crash-out", 20).len(), 20);
    drop(producer);

    // The broker dies and comes back on the same port and storage.
    b.restart().unwrap();
    let producer = b.producer();
    for i in 20..40 {
        produce(
            &producer,
            "crash-in",
            &format!("k{}", i % 5),
            json!({"seq": i}),
        )
        .await;
    }
    let out = b.read("crash-out", 40);
    host.stop().await;
    let (seen, duplicates) = seqs(&out);
    let missing: Vec<u64> = (0..40).filter(|s| !seen.contains(s)).collect();
    println!(
        "broker restart: 40 events, {} outputs, {duplicates} duplicates, missing {missing:?}",
        out.len()
    );
    assert!(missing.is_empty(), "missing {missing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_producer_that_failed_fatally_is_replaced_and_later_sends_go_through() {
    let Some(b) = broker() else {
        return;
    };
    b.create_topics(&["fatal-out"], 1).await;
    let files = HostFiles::echo(&b.bootstrap(), "fatal", "");
    let sink = weir_host::pipeline::outputs::Outputs::new(&files.load()).unwrap();
    sink.send("fatal-out", Some(b"k"), b"1", &[]).await.unwrap();

    // What librdkafka does when the broker answers out of sequence and the idempotent
    // producer can no longer keep its ordering: every later send on it fails.
    sink.fail_producer_for_test();
    let err = sink
        .send("fatal-out", Some(b"k"), b"lost", &[])
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("atal"),
        "the send fails with the fatal error: {err}"
    );
    assert_eq!(sink.producers_replaced(), 1);

    // The next attempt (an event's retry) goes through a new producer.
    sink.send("fatal-out", Some(b"k"), b"2", &[]).await.unwrap();
    let payloads: Vec<String> = b
        .read("fatal-out", 2)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["1", "2"]);
    assert_eq!(sink.producers_replaced(), 1);
}

/// Records that cannot be delivered (the broker gone longer than
/// `message_timeout`) rewind their partitions: the events are handled again once
/// the broker is back, nothing is lost, and the duplicates are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn undelivered_outputs_rewind_their_partitions_and_nothing_is_lost() {
    let Some(mut b) = own_broker() else {
        return;
    };
    topics(&b, "rewind").await;
    let files = HostFiles::echo(&b.bootstrap(), "rewind", "");
    files.write_config(
        &b.bootstrap(),
        "rewind",
        "[kafka.producer]\nmessage_timeout = \"1s\"\n",
    );
    let host = InProcessHost::start(files.load());
    let producer = b.producer();
    produce(&producer, "rewind-in", "k0", json!({"seq": 0})).await;
    assert_eq!(b.read("rewind-out", 1).len(), 1, "the host runs");

    // A burst, and the broker dies under it: outputs in flight time out.
    let n = 3_000;
    let sends = (1..n).map(|i| {
        let producer = &producer;
        async move {
            let key = format!("k{}", i % 20);
            produce(producer, "rewind-in", &key, json!({"seq": i, "key": key})).await
        }
    });
    futures::future::join_all(sends).await;
    drop(producer);
    b.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    b.start_again().unwrap();

    let out = b.read("rewind-out", n);
    let report = host.stop().await;
    let (seen, duplicates) = seqs(&out);
    let missing: Vec<u64> = (0..n as u64).filter(|s| !seen.contains(s)).collect();
    let stats = report.plugins["echo"];
    println!(
        "rewind: {n} events, broker down 3 s under load, {} outputs, {duplicates} duplicates, \
         {} events handed again after rewinds, missing {missing:?}",
        out.len(),
        stats.redelivered
    );
    assert!(missing.is_empty(), "missing {missing:?}");
    assert_key_order(&out);
}
