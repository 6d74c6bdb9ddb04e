//! The container image (`just image`, `just image-test`): the host in Docker
//! against a real broker, events handled, a clean stop on `docker stop`.
//!
//! Runs only when `TEST_IMAGE` names the image to test: building it (a Debian base
//! with debootstrap, an optimised host) is too slow for every `just test`. (Not a
//! `WEIR_` variable: the host reads every one of those as configuration.)

use crate::kafka_support::*;
use crate::support::workspace_root;
use std::process::Command;

/// A container removed when dropped, whatever the test did.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// Run `docker args`; its output. Fails the test if docker fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// What the container wrote (the host logs to stderr; `docker logs` replays both).
fn logs(id: &str) -> String {
    let out = Command::new("docker")
        .args(["logs", id])
        .output()
        .expect("run docker");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a container runtime and the image weir:dev: `just image-test` builds it and runs this (not in `just test`)"]
async fn the_image_runs_the_host_against_a_broker_and_stops_cleanly() {
    let image = std::env::var("TEST_IMAGE")
        .expect("set TEST_IMAGE: `just image-test` builds weir:dev and runs this");
    let Some(b) = broker() else { return };
    b.create_topics(&["ctr-audio-events", "ctr-audio-events.dlq"], 3)
        .await;
    let admin = weir_devkit::free_port();
    let name = format!("weir-test-{}", std::process::id());
    // Host networking: the container reaches the test's broker on loopback.
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "host",
        "-e",
        &format!("WEIR_KAFKA__BOOTSTRAP_SERVERS={}", b.bootstrap()),
        "-e",
        "WEIR_TOPICS__PREFIX=ctr",
        "-e",
        "WEIR_TOPICS__CREATE__PARTITIONS=3",
        "-e",
        &format!("WEIR_ADMIN__LISTEN=127.0.0.1:{admin}"),
        &image,
    ]);
    let _container = Container(id.clone());

    wait_ready(admin, "the container", || logs(&id)).await;

    // The example audio-uploaded plugin, baked into the image, handles the samples.
    let samples = workspace_root().join("examples/events/audio-uploaded.jsonl");
    let namer = weir_host::topics::TopicNamer::new(
        "{prefix}-{topic}",
        [("prefix".to_string(), "ctr".to_string())].into(),
    )
    .unwrap();
    let events =
        weir_host::invoke::read_events(Some(&samples), &["audio-events".to_string()], &namer)
            .unwrap();
    let sink =
        weir_host::pipeline::outputs::Outputs::new(&HostFiles::new(&b.bootstrap(), "ctr").load())
            .unwrap();
    for (_, e) in &events {
        sink.send("ctr-audio-events", e.key.as_deref(), &e.payload, &e.headers)
            .await
            .unwrap();
    }
    let jobs = b.read("ctr-waveform-jobs", events.len());
    assert_eq!(jobs.len(), events.len(), "{}", logs(&id));

    // `docker stop`: SIGTERM, drain, commit, exit 0.
    docker(&["stop", "-t", "40", &id]);
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &id]);
    let logs = logs(&id);
    assert_eq!(code, "0", "{logs}");
    assert!(logs.contains("offsets committed"), "{logs}");
    println!(
        "container: {} events, {} waveform jobs, exit code {code} after docker stop",
        events.len(),
        jobs.len()
    );
}
