//! The container image (`just image`, `just image-test`), checked and run
//! without a Docker engine: its configuration read from the OCI layout
//! (entrypoint, non-root user, exposed port, stop signal, size), then the image
//! unpacked with umoci and its entrypoint run under bubblewrap, as the image's
//! user, against a real broker: events handled, a clean stop on SIGTERM.
//!
//! Runs only when `TEST_OCI` names the OCI layout (`just image-test` builds it
//! and sets it). (Not a `WEIR_` variable: the host reads every one of those as
//! configuration.)

use crate::kafka_support::*;
use crate::support::workspace_root;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Run a tool; its standard output. Fails the test if it fails.
pub fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e} (`just image-test` installs it)"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pid of `parent`'s child process.
fn child_of(parent: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let status = std::fs::read_to_string(e.path().join("status")).ok()?;
        let ppid: u32 = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))?
            .trim()
            .parse()
            .ok()?;
        (ppid == parent).then_some(pid)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the image and umoci, skopeo and bubblewrap: `just image-test` builds and installs them and runs this (CI does)"]
async fn the_image_runs_the_host_against_a_broker_and_stops_cleanly() {
    let layout = std::env::var("TEST_OCI").expect(
        "set TEST_OCI to the image's OCI layout: `just image-test` builds it and runs this",
    );
    let image = format!("oci:{layout}:dev");

    // What the image says about itself.
    let config: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--config", &image])).unwrap();
    let c = &config["config"];
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/usr/local/bin/weir"]),
        "{config}"
    );
    assert_eq!(c["Cmd"][0], "run", "{config}");
    let user = c["User"].as_str().unwrap_or("");
    assert!(
        !user.is_empty() && !user.starts_with("0") && user != "root",
        "non-root: {config}"
    );
    assert!(c["ExposedPorts"].get("9464/tcp").is_some(), "{config}");
    assert_eq!(c["StopSignal"], "SIGTERM", "{config}");
    assert!(c["Volumes"].get("/data").is_some(), "{config}");
    let manifest: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--raw", &image])).unwrap();
    let size: u64 = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["size"].as_u64().unwrap())
        .sum();
    assert!(size < 150 * 1024 * 1024, "compressed layers: {size} bytes");

    // Unpacked and run as the image runs: entrypoint + cmd, as its user, in /data.
    let Some(b) = broker() else { return };
    b.create_topics(&["ctr-audio-events", "ctr-audio-events.dlq"], 3)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{layout}:dev"),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs = bundle.join("rootfs");
    let (uid, gid) = user.split_once(':').unwrap_or((user, user));
    let admin = weir_devkit::free_port();
    let log = dir.path().join("container.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut args: Vec<String> = vec![
        "--bind".into(),
        rootfs.to_str().unwrap().into(),
        "/".into(),
        "--proc".into(),
        "/proc".into(),
        "--dev".into(),
        "/dev".into(),
        "--tmpfs".into(),
        "/tmp".into(),
        "--die-with-parent".into(),
        "--chdir".into(),
        c["WorkingDir"].as_str().unwrap_or("/").into(),
        "/usr/bin/setpriv".into(),
        format!("--reuid={uid}"),
        format!("--regid={gid}"),
        "--clear-groups".into(),
    ];
    for part in c["Entrypoint"]
        .as_array()
        .unwrap()
        .iter()
        .chain(c["Cmd"].as_array().unwrap())
    {
        args.push(part.as_str().unwrap().into());
    }
    // Host networking, as `docker run --network host` would: the test's broker on loopback.
    let mut bwrap = Command::new("bwrap")
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("WEIR_KAFKA__BOOTSTRAP_SERVERS", b.bootstrap())
        .env("WEIR_TOPICS__PREFIX", "ctr")
        .env("WEIR_TOPICS__CREATE__PARTITIONS", "3")
        .env("WEIR_ADMIN__LISTEN", format!("127.0.0.1:{admin}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("run bwrap (`just image-test` installs bubblewrap)");
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_ready(admin, "the container", logs).await;

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
    assert_eq!(jobs.len(), events.len(), "{}", logs());

    // The stop signal, to the host inside: drain, commit, exit 0.
    let host = child_of(bwrap.id()).expect("the host runs under bwrap");
    run("kill", &["-TERM", &host.to_string()]);
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = bwrap.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the host did not stop:\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = logs();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("offsets committed"), "{text}");
    println!(
        "image: {size} bytes of compressed layers, user {user}; run under bwrap: {} events, {} waveform jobs, exit 0 after SIGTERM",
        events.len(),
        jobs.len()
    );
}
