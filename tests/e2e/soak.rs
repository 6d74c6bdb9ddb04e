//! The crash soak (`just soak`; a shortened run in `just test`): a steady stream
//! of keyed events through `echo` while the host is killed with SIGKILL at random
//! moments and restarted each time. Afterwards every event produced an output,
//! within each key the outputs never skip ahead (a replay may go back), and the
//! duplicates and the recovery after each kill are reported.
//!
//! `SOAK_EVENTS` (default 20 000) and `SOAK_KILLS` (default 2) size it.

use crate::kafka_support::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn killed_and_restarted_at_random_moments_nothing_is_lost_and_keys_never_skip_ahead() {
    let Some(b) = broker() else { return };
    let n = setting("SOAK_EVENTS", 20_000);
    let kills = setting("SOAK_KILLS", 2) as usize;
    let keys = 100;
    let rate = 5_000.0; // events per second
    b.create_topics(&["soak-in", "soak-out", "soak-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "soak", "");
    // The defaults operators get: commits every 100 ms, static membership.
    let env = [("WEIR_KAFKA__CONSUMER__COMMIT_INTERVAL", "100ms")];

    // The stream: n events at `rate`, keyed over `keys` keys, seq per key in order.
    // Every 10 ms the events due by then are sent at once.
    let producer = b.producer();
    let stream = tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0;
        while sent < n {
            let due = ((started.elapsed().as_secs_f64() * rate) as u64 + 1).min(n);
            let sends = (sent..due).map(|i| {
                let key = format!("k{}", i % keys);
                let body = serde_json::json!({"seq": i, "key": key});
                let producer = &producer;
                async move { produce(producer, "soak-in", &key, body).await }
            });
            futures::future::join_all(sends).await;
            sent = due;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // Kill at random moments of the stream (a small LCG: no extra crate). The
    // seed is printed; SOAK_SEED=N repeats a run's moments.
    let span = n as f64 / rate;
    let mut seed = std::env::var("SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_u64 ^ std::process::id() as u64);
    println!("soak: seed {seed} (SOAK_SEED={seed} repeats these kill moments)");
    let mut at: Vec<f64> = (0..kills)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            span * (0.1 + 0.8 * ((seed >> 11) as f64 / (1u64 << 53) as f64))
        })
        .collect();
    at.sort_by(|a, b| a.partial_cmp(b).unwrap());

    let started = Instant::now();
    let mut host = BinaryHost::start_with(&files, "soak", &env);
    host.wait_for_log("partitions assigned");
    let mut recoveries = Vec::new();
    for moment in &at {
        let wait = Duration::from_secs_f64(*moment).saturating_sub(started.elapsed());
        tokio::time::sleep(wait).await;
        host.signal("KILL");
        host.wait();
        let killed = Instant::now();
        let before = b.count("soak-out");
        // Same host name, same static member id: its partitions come back at once.
        host = BinaryHost::start_with(&files, "soak", &env);
        let deadline = killed + PATIENCE;
        while b.count("soak-out") == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        recoveries.push(killed.elapsed());
    }
    stream.await.unwrap();

    // Everything comes out eventually.
    let deadline = Instant::now() + PATIENCE * 2;
    let out = loop {
        let out = b.read("soak-out", n as usize);
        let (seen, _) = seqs(&out);
        if seen.len() as u64 >= n || Instant::now() > deadline {
            break out;
        }
    };
    drop(host);
    let (seen, duplicates) = seqs(&out);
    let missing = n - seen.len() as u64;
    // Per key, in the order the outputs were written: never ahead of the next
    // expected event (a replay after a crash may go back).
    let mut by_key: BTreeMap<String, Vec<(i32, i64, u64)>> = BTreeMap::new();
    for r in &out {
        let body = r.json();
        by_key
            .entry(r.key.clone().unwrap_or_default())
            .or_default()
            .push((r.partition, r.offset, body["seq"].as_u64().unwrap()));
    }
    let mut skips = Vec::new();
    for (key, mut items) in by_key {
        items.sort();
        let mut next = 0; // index of the next event of this key not yet seen
        for (_, _, seq) in items {
            let index = seq / keys;
            if index > next {
                skips.push(format!("{key}: seq {seq} before index {next}"));
            }
            next = next.max(index + 1);
        }
    }
    let recovery: Vec<String> = recoveries
        .iter()
        .map(|d| format!("{:.2} s", d.as_secs_f64()))
        .collect();
    println!(
        "soak: {n} events, {kills} kills, {missing} missing, {duplicates} duplicates \
         ({:.0} per kill, {:.2} s of traffic), recovery per kill: {}",
        duplicates as f64 / kills.max(1) as f64,
        duplicates as f64 / kills.max(1) as f64 / rate,
        recovery.join(", ")
    );
    assert_eq!(missing, 0, "every event produced an output");
    assert!(skips.is_empty(), "outputs skipped ahead: {skips:?}");
}
