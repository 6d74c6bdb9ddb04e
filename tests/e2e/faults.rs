//! Misbehaving plugins and bad files: each fails precisely, and the host carries on.

use crate::support::{event, example_manifest, wasm, TestHost};
use weir_host::manifest::Manifest;
use weir_host::runtime::{LoadErrorKind, Outcome};

const FAULTY: &str = r#"
name = "faulty"
topics = ["t"]
[limits]
memory = "16 MiB"
timeout = "300ms"
[capabilities.cache]
[capabilities.storage]
prefixes = ["data/"]
[capabilities.publish]
topics = ["allowed"]
"#;

fn cmd(offset: i64, command: &str) -> weir_host::event::EventRecord {
    event("t", offset, None, command.as_bytes())
}

#[tokio::test]
async fn a_trap_fails_that_event_only() {
    let host = TestHost::new();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    assert_eq!(plugin.handle(&cmd(0, "ok")).await.outcome, Outcome::Handled);
    let trapped = plugin.handle(&cmd(1, "trap")).await;
    match &trapped.outcome {
        Outcome::Trap(reason) => {
            assert!(reason.contains("panicked at"), "{reason}");
            assert!(reason.contains("asked to trap"), "{reason}");
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // A fresh instance handles the next event.
    assert_eq!(plugin.handle(&cmd(2, "ok")).await.outcome, Outcome::Handled);
}

#[tokio::test]
async fn a_plugin_that_loops_forever_times_out_and_the_next_event_is_handled() {
    let host = TestHost::new();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    let looped = plugin.handle(&cmd(0, "loop")).await;
    match &looped.outcome {
        Outcome::Timeout(reason) => assert!(reason.contains("limits.timeout = 300ms"), "{reason}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(plugin.handle(&cmd(1, "ok")).await.outcome, Outcome::Handled);
}

/// A call that has not ended this long after its deadline has escaped it: the
/// test fails instead of hanging.
const ESCAPED: std::time::Duration = std::time::Duration::from_secs(60);

fn timed_out(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Timeout(reason) if reason.contains("limits.timeout = 300ms"))
}

/// Issue 20: `batch.begin-event` re-armed the deadline on every call, so a
/// plugin announcing its event in a loop ran for ever (and grew host memory).
#[tokio::test]
async fn announcing_an_event_again_does_not_extend_its_deadline() {
    let host = TestHost::new();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    let alone = tokio::time::timeout(ESCAPED, plugin.handle(&cmd(0, "rearm")))
        .await
        .expect("the plugin escaped its deadline");
    assert!(timed_out(&alone.outcome), "{:?}", alone.outcome);

    // In a batch: the re-announcing event times out within the batch's budget,
    // the one before it was handled.
    let events = [cmd(1, "ok"), cmd(2, "rearm"), cmd(3, "ok")];
    let refs: Vec<_> = events.iter().collect();
    let reports = tokio::time::timeout(ESCAPED, plugin.handle_batch(&refs))
        .await
        .expect("the batch escaped its deadline");
    let outcome = reports[1].as_ref().map(|r| r.outcome.clone());
    assert!(
        outcome.as_ref().is_some_and(timed_out),
        "{outcome:?} (all: {:?})",
        reports
            .iter()
            .map(|r| r.as_ref().map(|r| r.outcome.label()))
            .collect::<Vec<_>>()
    );
    assert_eq!(plugin.handle(&cmd(4, "ok")).await.outcome, Outcome::Handled);
}

/// Issue 20: the epoch only interrupts running wasm, so a plugin waiting in a
/// host call (here a WASI sleep) was never stopped.
#[tokio::test]
async fn a_plugin_waiting_in_a_host_call_is_stopped_at_its_deadline() {
    let host = TestHost::new();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    let slept = tokio::time::timeout(ESCAPED, plugin.handle(&cmd(0, "sleep:600000")))
        .await
        .expect("the sleeping plugin escaped its deadline");
    assert!(timed_out(&slept.outcome), "{:?}", slept.outcome);
    assert_eq!(
        plugin.handle(&cmd(1, "sleep:1")).await.outcome,
        Outcome::Handled
    );
}

/// Issue 20: `init` ran without a bound on host waits, holding up the loader
/// (the supervisor) for as long as the plugin liked.
#[tokio::test]
async fn init_that_never_ends_fails_the_load_at_its_deadline() {
    let host = TestHost::new();
    for init in ["loop", "sleep:600000"] {
        let manifest = Manifest::parse(
            &format!("{FAULTY}\n[config]\ninit = \"{init}\"\n"),
            std::path::Path::new("faulty.toml"),
        )
        .unwrap();
        let file = wasm("faulty");
        let load = host.runtime.load(&file, manifest, host.backends.clone());
        let err = tokio::time::timeout(ESCAPED, load)
            .await
            .expect("init escaped its deadline")
            .err()
            .expect("a plugin whose init never ends must not load");
        assert_eq!(err.kind, LoadErrorKind::Init, "{init}: {err}");
        assert!(
            err.to_string()
                .contains("init failed: did not finish within limits.timeout = 300ms"),
            "{init}: {err}"
        );
    }
}

/// Issue 20: publishing 1 MiB messages in a loop made the host buffer 1.1 GiB
/// for one event of a plugin whose `limits.memory` was 64 MiB. What the host
/// holds for a call is bounded by `limits.host_memory`.
#[tokio::test]
async fn what_the_host_holds_for_a_call_is_bounded_by_limits_host_memory() {
    let host = TestHost::new();
    let manifest = FAULTY.replace(
        "timeout = \"300ms\"",
        "timeout = \"30s\"\nhost_memory = \"8 MiB\"",
    );
    let mut plugin = host.load_with(&wasm("faulty"), &manifest).await;
    let big = plugin.handle(&cmd(0, "publish-big:1000")).await;
    match &big.outcome {
        Outcome::Reject(reason) => assert!(
            reason.contains("invalid") && reason.contains("past limits.host_memory = 8.0 MiB"),
            "{reason}"
        ),
        other => panic!("expected the plugin to see the refusal, got {other:?}"),
    }
    assert!(big.published.is_empty());
    // The budget is per call: the next event starts with nothing held.
    let fits = plugin.handle(&cmd(1, "publish-big:3")).await;
    assert_eq!(fits.outcome, Outcome::Handled);
    assert_eq!(fits.published.len(), 3);
}

#[tokio::test]
async fn a_plugin_that_allocates_without_bound_hits_its_memory_limit() {
    let host = TestHost::new();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    let hog = plugin.handle(&cmd(0, "hog")).await;
    match &hog.outcome {
        Outcome::OutOfMemory(reason) => {
            assert!(reason.contains("limits.memory is 16.0 MiB"), "{reason}")
        }
        other => panic!("expected out-of-memory, got {other:?}"),
    }
    assert_eq!(plugin.handle(&cmd(1, "ok")).await.outcome, Outcome::Handled);
}

#[tokio::test]
async fn retry_and_reject_are_reported_as_such() {
    let host = TestHost::new();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    assert_eq!(
        plugin.handle(&cmd(0, "retry")).await.outcome,
        Outcome::Retry("asked to retry".into())
    );
    assert_eq!(
        plugin.handle(&cmd(1, "reject")).await.outcome,
        Outcome::Reject("asked to reject".into())
    );
}

#[tokio::test]
async fn a_plugin_importing_an_unknown_interface_is_refused_at_load_naming_it() {
    let host = TestHost::new();
    let manifest = Manifest::parse(
        "name = \"rogue\"\ntopics = [\"t\"]\n",
        std::path::Path::new("rogue.toml"),
    )
    .unwrap();
    let err = host
        .runtime
        .load(&wasm("rogue"), manifest, host.backends.clone())
        .await
        .err()
        .expect("the rogue plugin must not load");
    assert_eq!(err.kind, LoadErrorKind::WrongWorld);
    let text = err.to_string();
    assert!(
        text.contains("imports `test:rogue/sockets`, which Weir does not provide"),
        "{text}"
    );
    assert!(text.contains("rogue.wasm"), "{text}");

    // The same runtime still loads and runs a good plugin.
    let mut good = host.load_with(&wasm("faulty"), FAULTY).await;
    assert_eq!(good.handle(&cmd(0, "ok")).await.outcome, Outcome::Handled);
}

#[tokio::test]
async fn half_written_and_wrong_files_are_refused_with_the_reason() {
    let host = TestHost::new();
    let dir = tempfile::tempdir().unwrap();
    let full = std::fs::read(wasm("track-deletions")).unwrap();
    let manifest = || Manifest::load(&example_manifest("track-deletions")).unwrap();

    let cases: Vec<(&str, Vec<u8>, LoadErrorKind, &str)> = vec![
        (
            "half.wasm",
            full[..full.len() / 2].to_vec(),
            LoadErrorKind::Compile,
            "failed to parse",
        ),
        (
            "empty.wasm",
            vec![],
            LoadErrorKind::NotAComponent,
            "the file is empty",
        ),
        (
            "core.wasm",
            b"\0asm\x01\0\0\0".to_vec(),
            LoadErrorKind::NotAComponent,
            "core WebAssembly module",
        ),
        (
            "notes.wasm",
            b"plain text".to_vec(),
            LoadErrorKind::NotAComponent,
            "not a WebAssembly file",
        ),
    ];
    for (name, bytes, kind, reason) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = host
            .runtime
            .load(&path, manifest(), host.backends.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("{name} must not load"));
        assert_eq!(err.kind, kind, "{name}: {err}");
        let text = err.to_string();
        assert!(text.contains(reason), "{name}: {text}");
        assert!(text.contains(name), "{name}: {text}");
    }
    let missing = host
        .runtime
        .load(
            &dir.path().join("gone.wasm"),
            manifest(),
            host.backends.clone(),
        )
        .await
        .err()
        .unwrap();
    assert_eq!(missing.kind, LoadErrorKind::Missing);

    // The complete file still loads.
    let mut plugin = host
        .load(
            &wasm("track-deletions"),
            &example_manifest("track-deletions"),
        )
        .await;
    let report = plugin
        .handle(&event("track-deletions", 0, None, b"{}"))
        .await;
    assert!(matches!(report.outcome, Outcome::Reject(_)));
}

#[tokio::test]
async fn storage_refuses_path_traversal_absolute_paths_and_ungranted_prefixes() {
    let host = TestHost::new();
    let secret = host.storage_dir.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    let cases = [
        ("../secret.txt", "path traversal is refused"),
        ("data/../secret.txt", "path traversal is refused"),
        ("/etc/passwd", "is an absolute path"),
        (secret.to_str().unwrap(), "is an absolute path"),
        ("secret.txt", "is outside the granted prefixes (data/)"),
        (
            "_weir/scheduled-deletions/x",
            "is outside the granted prefixes",
        ),
    ];
    for (i, (key, reason)) in cases.iter().enumerate() {
        let report = plugin
            .handle(&cmd(i as i64, &format!("storage-get:{key}")))
            .await;
        match &report.outcome {
            Outcome::Reject(r) => assert!(r.contains(reason), "{key}: {r}"),
            other => panic!("{key}: expected the plugin to see a refusal, got {other:?}"),
        }
    }
    assert_eq!(
        plugin
            .handle(&cmd(9, "storage-get:data/missing.txt"))
            .await
            .outcome,
        Outcome::Handled
    );
}

#[tokio::test]
async fn one_plugin_cannot_read_another_plugins_cache_namespace() {
    let host = TestHost::new();
    let mut alice = host
        .load_with(
            &wasm("faulty"),
            &FAULTY.replace("name = \"faulty\"", "name = \"alice\""),
        )
        .await;
    let mut bob = host
        .load_with(
            &wasm("faulty"),
            &FAULTY.replace("name = \"faulty\"", "name = \"bob\""),
        )
        .await;
    assert_eq!(
        alice
            .handle(&cmd(0, "cache-set:token=s3cr3t"))
            .await
            .outcome,
        Outcome::Handled
    );
    assert_eq!(
        alice.handle(&cmd(1, "cache-get:token")).await.outcome,
        Outcome::Handled
    );
    assert_eq!(
        bob.handle(&cmd(0, "cache-get:token")).await.outcome,
        Outcome::Reject("cache miss for token".into())
    );
    // Not through a crafted key either: keys are always inside the caller's namespace.
    assert!(matches!(
        bob.handle(&cmd(1, "cache-get:../alice:token"))
            .await
            .outcome,
        Outcome::Reject(_)
    ));
    assert!(matches!(
        bob.handle(&cmd(2, "cache-get::token")).await.outcome,
        Outcome::Reject(_)
    ));
    assert_eq!(host.cache.keys(), vec!["alice:token"]);

    // A plugin without a cache grant is denied, and sees the denial.
    let mut none = host
        .load_with(&wasm("faulty"), "name = \"none\"\ntopics = [\"t\"]\n")
        .await;
    let denied = none.handle(&cmd(0, "cache-get:token")).await;
    assert!(
        matches!(&denied.outcome, Outcome::Reject(r) if r.contains("the cache capability is not granted")),
        "{:?}",
        denied.outcome
    );
}

#[tokio::test]
async fn publishing_to_an_ungranted_topic_is_denied_and_nothing_is_sent() {
    let host = TestHost::new();
    let mut plugin = host.load_with(&wasm("faulty"), FAULTY).await;
    let denied = plugin.handle(&cmd(0, "publish:secret-topic")).await;
    assert!(
        matches!(&denied.outcome, Outcome::Reject(r) if r.contains("publishing to \"secret-topic\" is not granted (granted: allowed)")),
        "{:?}",
        denied.outcome
    );
    assert!(denied.published.is_empty());
    let allowed = plugin.handle(&cmd(1, "publish:allowed")).await;
    assert_eq!(allowed.outcome, Outcome::Handled);
    assert_eq!(allowed.published.len(), 1);
    assert_eq!(allowed.published[0].topic, "allowed");
}

/// Issue 20: plugin files were read whole and followed anywhere: a symlink to
/// `/dev/zero` read for ever, a FIFO blocked the reader. Both are refused, and
/// a symlink to a regular file (how Kubernetes mounts files) still loads.
#[tokio::test]
async fn plugin_files_must_be_regular_files_of_bounded_size() {
    let host = TestHost::new();
    let dir = tempfile::tempdir().unwrap();
    let zero = dir.path().join("zero.wasm");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let manifest = Manifest::parse(FAULTY, std::path::Path::new("faulty.toml")).unwrap();
    let err = host
        .runtime
        .load(&zero, manifest.clone(), host.backends.clone())
        .await
        .err()
        .expect("/dev/zero is no component");
    assert!(err.to_string().contains("not a regular file"), "{err}");

    let fifo = dir.path().join("faulty.toml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let err = Manifest::load(&fifo).expect_err("a FIFO is no manifest");
    assert!(err.to_string().contains("not a regular file"), "{err}");

    let linked = dir.path().join("linked.wasm");
    std::os::unix::fs::symlink(wasm("faulty"), &linked).unwrap();
    let mut plugin = host
        .runtime
        .load(&linked, manifest, host.backends.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(plugin.handle(&cmd(0, "ok")).await.outcome, Outcome::Handled);
}
