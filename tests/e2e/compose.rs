//! `compose.yaml` for real (`just compose-test`): three host containers of the
//! image `weir:dev` in one group, with the broker, Redis and the S3 server in
//! containers built on the same local base. One host is killed (SIGKILL) and
//! another stopped (SIGTERM) mid-stream: no event is lost, and the deletions
//! scheduled before are carried out by the survivor.
//!
//! Runs only when `TEST_COMPOSE` is set: building the images is too slow for
//! every `just test`.

use crate::kafka_support::{wait_ready, JsonPayload, PATIENCE};
use crate::support::workspace_root;
use object_store::{path::Path as StorePath, ObjectStoreExt, PutPayload};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

const EVENTS: usize = 10_000;
const TRACKS: usize = 50;

/// The compose project, taken down when dropped.
struct Project {
    name: String,
    env: Vec<(String, String)>,
}

impl Project {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        let file = workspace_root().join("compose.yaml");
        Command::new("docker-compose")
            .args(["-f", file.to_str().unwrap(), "-p", &self.name])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .output()
            .expect("run docker-compose")
    }

    fn run(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn logs(&self, service: &str) -> String {
        let out = self.compose(&["logs", "--no-color", service]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn port(&self, key: &str) -> u16 {
        self.env
            .iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1
            .parse()
            .unwrap()
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = self.compose(&["down", "-v", "-t", "5"]);
    }
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, body: serde_json::Value) {
    let payload = serde_json::to_vec(&body).unwrap();
    producer
        .send(
            FutureRecord::to(topic).key(key).payload(&payload),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Docker engine and the compose images: `just compose-test` builds them and runs this (not in `just test`)"]
async fn three_host_containers_lose_nothing_and_keep_a_killed_hosts_promises() {
    assert!(
        std::env::var("TEST_COMPOSE").is_ok(),
        "set TEST_COMPOSE: `just compose-test` builds the images and runs this"
    );
    let ports = [
        "BROKER_PORT",
        "REDIS_PORT",
        "S3_PORT",
        "ADMIN_PORT_1",
        "ADMIN_PORT_2",
        "ADMIN_PORT_3",
    ];
    let mut env: Vec<(String, String)> = ports
        .iter()
        .map(|k| (k.to_string(), weir_devkit::free_port().to_string()))
        .collect();
    env.push(("PREFIX".into(), "ctest".into()));
    env.push(("SWEEP_INTERVAL".into(), "1s".into()));
    let project = Project {
        name: format!("weir-test-{}", std::process::id()),
        env,
    };
    project.run(&["up", "-d"]);
    for (i, service) in ["weir-1", "weir-2", "weir-3"].iter().enumerate() {
        let admin = project.port(&format!("ADMIN_PORT_{}", i + 1));
        wait_ready(admin, service, || project.logs(service)).await;
    }
    let bootstrap = format!("127.0.0.1:{}", project.port("BROKER_PORT"));
    let bucket = weir_host::capabilities::storage::s3_store_with_env(
        &weir_host::config::S3Config {
            bucket: "weir".into(),
            region: "us-east-1".into(),
            endpoint: format!("http://127.0.0.1:{}", project.port("S3_PORT")),
            path_style: true,
        },
        Duration::from_secs(10),
        [
            ("AWS_ACCESS_KEY_ID".to_string(), "weir".to_string()),
            (
                "AWS_SECRET_ACCESS_KEY".to_string(),
                "weir-secret".to_string(),
            ),
        ],
    )
    .unwrap();
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .unwrap();

    // Deletions due in 45 s, scheduled while all three hosts run.
    let mut objects = Vec::new();
    let due = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(45));
    for i in 0..TRACKS {
        let (audio, waveform) = (
            format!("audio/user-{i}/D{i}.mp3"),
            format!("waveforms/user-{i}/D{i}.json"),
        );
        for key in [&audio, &waveform] {
            bucket
                .put(
                    &StorePath::from(key.as_str()),
                    PutPayload::from(vec![1u8; 16]),
                )
                .await
                .unwrap();
        }
        let body = serde_json::json!({
            "SchemaVersion": 2, "TrackId": format!("D{i}"), "UserId": format!("user-{i}"),
            "ObjectKey": audio, "WaveformObjectKey": waveform, "FileSizeBytes": 16,
            "DeletedAt": "2026-11-20T10:00:00Z", "ScheduledDeletionAt": due.to_string(),
            "CorrelationId": format!("d-{i}"), "Timestamp": "2026-11-20T10:00:00Z"
        });
        send(
            &producer,
            "ctest-track-deletions",
            &format!("user-{i}"),
            body,
        )
        .await;
        objects.push(audio);
        objects.push(waveform);
    }

    // The stream: uploads, each stored in S3 and turned into a waveform job.
    let kill = |container: &str| {
        docker(&["kill", &format!("{}_{container}_1", project.name)]);
    };
    for chunk in 0..10 {
        let sends = (chunk * EVENTS / 10..(chunk + 1) * EVENTS / 10).map(|i| {
            let producer = producer.clone();
            async move {
                let body = serde_json::json!({
                    "SchemaVersion": 1, "TrackId": format!("T{i}"), "UserId": format!("user-{}", i % 100),
                    "ObjectKey": format!("audio/user-{}/T{i}.mp3", i % 100), "MimeType": "audio/mpeg",
                    "FileSizeBytes": 1024, "CorrelationId": format!("c-{i}"), "Timestamp": "2026-11-23T09:15:00Z"
                });
                send(&producer, "ctest-audio-events", &format!("T{i}"), body).await
            }
        });
        futures::future::join_all(sends).await;
        match chunk {
            3 => kill("weir-1"),
            6 => {
                project.run(&["stop", "-t", "40", "weir-2"]);
            }
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let code = docker(&[
        "inspect",
        "--format",
        "{{.State.ExitCode}}",
        &format!("{}_weir-2_1", project.name),
    ]);

    let deadline = Instant::now() + PATIENCE * 2;
    let (jobs, distinct) = loop {
        let jobs = weir_devkit::read_topic(&bootstrap, "ctest-waveform-jobs", EVENTS, PATIENCE)
            .unwrap_or_default();
        let distinct: std::collections::BTreeSet<String> = jobs
            .iter()
            .map(|r| r.json()["TrackId"].as_str().unwrap_or_default().to_string())
            .collect();
        if distinct.len() >= EVENTS || Instant::now() > deadline {
            break (jobs, distinct);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let deadline = Instant::now() + PATIENCE * 2;
    let left = loop {
        let mut left = 0;
        for key in &objects {
            if bucket.head(&StorePath::from(key.as_str())).await.is_ok() {
                left += 1;
            }
        }
        if left == 0 || Instant::now() > deadline {
            break left;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let logs: Vec<String> = ["weir-1", "weir-2", "weir-3"]
        .iter()
        .map(|s| project.logs(s))
        .collect();
    let carried = |log: &str| log.matches("scheduled deletion carried out").count();
    println!(
        "compose: {EVENTS} events through 3 host containers, weir-1 killed, weir-2 stopped (exit {code}); \
         {} missing, {} duplicates; {} deletions, carried out by weir-1: {}, weir-2: {}, weir-3: {}; {left} objects left",
        EVENTS - distinct.len(),
        jobs.len() - distinct.len(),
        objects.len(),
        carried(&logs[0]),
        carried(&logs[1]),
        carried(&logs[2]),
    );
    assert_eq!(code, "0", "weir-2 exits 0 on SIGTERM:\n{}", logs[1]);
    assert_eq!(distinct.len(), EVENTS, "every event handled");
    assert_key_order_by_track(&jobs);
    assert_eq!(
        left, 0,
        "every scheduled deletion carried out:\n{}",
        logs[2]
    );
    assert_eq!(
        carried(&logs[0]),
        0,
        "weir-1 was killed before anything was due"
    );
}

/// Jobs are keyed by TrackId, one event per key: a key's jobs (a redelivery
/// repeats one) never spread over partitions.
fn assert_key_order_by_track(jobs: &[crate::kafka_support::Record]) {
    let mut partitions: std::collections::BTreeMap<String, i32> = Default::default();
    for j in jobs {
        let key = j.key.clone().unwrap_or_default();
        let p = *partitions.entry(key.clone()).or_insert(j.partition);
        assert_eq!(p, j.partition, "key {key} spread over partitions");
    }
}

/// Run `docker args`; its output. Fails the test if docker fails.
fn docker(args: &[&str]) -> String {
    crate::container::run("docker", args).trim().to_string()
}
