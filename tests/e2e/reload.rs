//! Hot reload: swaps under load, rejected files, rollback, removal, compile cache.

use crate::kafka_support::*;
use crate::support::wasm;
use serde_json::json;
use std::path::Path;
use std::time::{Duration, Instant};

/// The echo component with a custom section appended: a valid component with
/// different bytes (and so a different content hash).
pub fn echo_variant(tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(wasm("echo")).unwrap();
    let name = format!("weir-test-{tag}");
    let mut body = leb(name.len());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(tag.as_bytes());
    bytes.push(0); // custom section
    bytes.extend(leb(body.len()));
    bytes.extend(body);
    bytes
}

fn leb(mut n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Write a file the safe way operators are told to: a temporary name, then rename.
fn put(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn echo_manifest(version: &str, extra_config: &str) -> String {
    format!(
        "name = \"echo\"\ntopics = [\"in\"]\n[retry]\nattempts = 3\ninitial_backoff = \"10ms\"\nmax_backoff = \"50ms\"\n\
         [capabilities.cache]\n[capabilities.publish]\ntopics = [\"out\"]\n[config]\nversion = \"{version}\"\n{extra_config}"
    )
}

/// Install echo version `version` (component variant and manifest).
fn deploy(files: &HostFiles, version: &str, extra_config: &str) {
    put(&files.plugins().join("echo.wasm"), &echo_variant(version));
    put(
        &files.plugins().join("echo.toml"),
        echo_manifest(version, extra_config).as_bytes(),
    );
}

/// Wait until echo's last reload was rejected for `reason`, and check that the
/// version with hash `running` still runs.
async fn assert_rejected_keeps(files: &HostFiles, what: &str, reason: &str, running: &str) {
    let s = files
        .wait_status("echo", what, |s| {
            s.reason.as_deref().is_some_and(|r| r.contains(reason))
        })
        .await;
    assert_eq!(s.state, "running", "{what}: {s:?}");
    assert_eq!(
        s.sha256.as_deref(),
        Some(running),
        "{what}: the running version stays"
    );
}

async fn setup(prefix: &str) -> Option<(TestBroker, HostFiles)> {
    let b = broker()?;
    let names: Vec<String> = ["in", "out", "in.dlq"]
        .iter()
        .map(|t| format!("{prefix}-{t}"))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    b.create_topics(&refs, 3).await;
    let files = HostFiles::echo(&b.bootstrap(), prefix, "");
    deploy(&files, "v1", "");
    Some((b, files))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn twenty_swaps_under_load_lose_nothing_and_duplicate_nothing() {
    let Some((b, files)) = setup("swap").await else {
        return;
    };
    let host = InProcessHost::start(files.load());
    let n = 600;
    let producer = b.producer();
    let stream = tokio::spawn(async move {
        for i in 0..n {
            let key = format!("k{}", i % 10);
            produce(&producer, "swap-in", &key, json!({"seq": i, "key": key})).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    files
        .wait_status("echo", "running v1", |s| s.state == "running")
        .await;
    let mut swaps = 0;
    let mut hashes = std::collections::BTreeSet::new();
    for i in 0..20 {
        let version = if i % 2 == 0 { "v2" } else { "v1" };
        deploy(&files, version, "");
        let want = weir_host_hash(&echo_variant(version));
        let s = files
            .wait_status("echo", version, |s| {
                s.sha256.as_deref() == Some(want.as_str())
            })
            .await;
        assert_eq!(s.state, "running");
        hashes.insert(want);
        swaps += 1;
    }
    stream.await.unwrap();
    let out = b.read("swap-out", n as usize);
    let report = host.stop().await;

    let (seen, duplicates) = seqs(&out);
    let missing: Vec<u64> = (0..n).filter(|s| !seen.contains(s)).collect();
    let v1 = out.iter().filter(|r| r.json()["by"] == "v1").count();
    let v2 = out.iter().filter(|r| r.json()["by"] == "v2").count();
    println!("swaps: {swaps} swaps under load, {n} events, {} outputs ({v1} by v1, {v2} by v2), {duplicates} duplicates, {} missing", out.len(), missing.len());
    assert_eq!(swaps, 20);
    assert_eq!(hashes.len(), 2);
    assert!(missing.is_empty(), "missing {missing:?}");
    assert_eq!(duplicates, 0, "a swap never makes an event run twice");
    assert_eq!(
        v1 + v2,
        out.len(),
        "every output is from exactly one version"
    );
    assert!(v1 > 0 && v2 > 0);
    assert_key_order(&out);
    assert_eq!(report.plugins["echo"].dead_lettered, 0);
}

fn weir_host_hash(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn bad_files_are_rejected_and_the_old_version_keeps_running() {
    let Some((b, files)) = setup("bad").await else {
        return;
    };
    let host = InProcessHost::start(files.load());
    let v1 = weir_host_hash(&echo_variant("v1"));
    files
        .wait_status("echo", "running v1", |s| s.state == "running")
        .await;
    let producer = b.producer();
    let wasm_path = files.plugins().join("echo.wasm");

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "not a component",
            b"this is not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "wrong world",
            std::fs::read(wasm("rogue")).unwrap(),
            "imports `test:rogue/sockets`",
        ),
    ];
    let mut seq = 0;
    for (what, bytes, reason) in cases {
        put(&wasm_path, &bytes);
        assert_rejected_keeps(&files, what, reason, &v1).await;
        produce(&producer, "bad-in", "k", json!({"seq": seq})).await;
        seq += 1;
    }
    // A half-written file (a copy in progress, written in place).
    let full = echo_variant("v2");
    std::fs::write(&wasm_path, &full[..full.len() / 3]).unwrap();
    let s = files
        .wait_status("echo", "half-written rejected", |s| {
            s.reason
                .as_deref()
                .is_some_and(|r| r.contains("last reload rejected"))
                && !s.reason.as_deref().unwrap().contains("rogue")
        })
        .await;
    assert_eq!(s.sha256.as_deref(), Some(v1.as_str()));
    produce(&producer, "bad-in", "k", json!({"seq": seq})).await;
    seq += 1;
    // The write completes: the new version loads.
    std::fs::write(&wasm_path, &full).unwrap();
    let v2 = weir_host_hash(&full);
    let s = files
        .wait_status("echo", "v2", |s| s.sha256.as_deref() == Some(v2.as_str()))
        .await;
    assert_eq!((s.state.as_str(), s.reason.as_deref()), ("running", None));
    produce(&producer, "bad-in", "k", json!({"seq": seq})).await;
    seq += 1;
    // A manifest whose config makes `init` fail, then one that does not parse: each
    // rejected with its reason, the running version untouched.
    let manifest_path = files.plugins().join("echo.toml");
    let manifests = [
        (
            "init fails",
            echo_manifest("v1", "fail_init = \"no database\"\n"),
            "init failed: refusing to start: no database",
        ),
        (
            "manifest does not parse",
            "name = \"echo\"\ntopics = 3\n".to_string(),
            "echo.toml:2: topics: invalid type",
        ),
    ];
    for (what, text, reason) in manifests {
        put(&manifest_path, text.as_bytes());
        assert_rejected_keeps(&files, what, reason, &v2).await;
        produce(&producer, "bad-in", "k", json!({"seq": seq})).await;
        seq += 1;
    }

    let out = b.read("bad-out", seq as usize);
    host.stop().await;
    let by: Vec<String> = out
        .iter()
        .map(|r| r.json()["by"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        by,
        vec!["v1"; 6],
        "every event handled: by the old component while the new files were bad, then by the completed one (same v1 config)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_version_that_traps_on_every_event_is_rolled_back_and_nothing_is_lost() {
    let Some((b, files)) = setup("rollback").await else {
        return;
    };
    let host = InProcessHost::start(files.load());
    files
        .wait_status("echo", "running", |s| s.state == "running")
        .await;
    deploy(&files, "v2", "always = \"trap\"\n");
    let v2 = weir_host_hash(&echo_variant("v2"));
    files
        .wait_status("echo", "v2 swapped in", |s| {
            s.sha256.as_deref() == Some(v2.as_str())
        })
        .await;

    let producer = b.producer();
    for i in 0..30 {
        produce(
            &producer,
            "rollback-in",
            &format!("k{}", i % 3),
            json!({"seq": i}),
        )
        .await;
    }
    let s = files
        .wait_status("echo", "rolled back", |s| s.state == "rolled-back")
        .await;
    assert_eq!(s.rollbacks, 1);
    assert!(
        s.reason.as_deref().unwrap().contains("asked to trap"),
        "{s:?}"
    );
    let out = b.read("rollback-out", 30);
    let report = host.stop().await;
    let (seen, duplicates) = seqs(&out);
    println!("rollback: 30 events, {} outputs, {duplicates} duplicates, rolled back after {} events trapped", out.len(), weir_host::versions::PROBATION_FAILURES);
    assert_eq!(seen.len(), 30, "every event handled");
    assert!(
        out.iter().all(|r| r.json()["by"] == "v1"),
        "handled by the good version"
    );
    assert_eq!(
        report.plugins["echo"].dead_lettered, 0,
        "the failing events were retried, not dead-lettered"
    );
    assert_eq!(b.count("rollback-in.dlq"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_removed_plugin_commits_and_stops_and_resumes_where_it_left_off_when_added_back() {
    let Some((b, files)) = setup("remove").await else {
        return;
    };
    // A second plugin on the same input: once it has handled an event, echo
    // would have had the same chance to (no sleep-then-assert for "nothing").
    b.create_topics(&["remove-ctl"], 3).await;
    files.install_echo_as("control", "in", "ctl");
    let host = InProcessHost::start(files.load());
    files
        .wait_status("echo", "running", |s| s.state == "running")
        .await;
    let producer = b.producer();
    for i in 0..20 {
        produce(
            &producer,
            "remove-in",
            &format!("k{}", i % 4),
            json!({"seq": i}),
        )
        .await;
    }
    assert_eq!(b.read("remove-out", 20).len(), 20);

    std::fs::remove_file(files.plugins().join("echo.wasm")).unwrap();
    std::fs::remove_file(files.plugins().join("echo.toml")).unwrap();
    let deadline = Instant::now() + PATIENCE;
    while files.status().iter().any(|s| s.name == "echo") {
        assert!(Instant::now() < deadline, "the plugin never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 20..40 {
        produce(
            &producer,
            "remove-in",
            &format!("k{}", i % 4),
            json!({"seq": i}),
        )
        .await;
    }
    assert_eq!(
        b.read("remove-ctl", 40).len(),
        40,
        "the control handled all"
    );
    assert_eq!(b.count("remove-out"), 20, "nothing consumed while removed");

    deploy(&files, "v1", "");
    let out = b.read("remove-out", 40);
    host.stop().await;
    let (seen, duplicates) = seqs(&out);
    assert_eq!(seen.len(), 40);
    assert_eq!(duplicates, 0, "resumed from the committed offset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_with_fifty_plugins_loads_them_all_from_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let storage = tempfile::tempdir().unwrap();
    let backends = weir_host::capabilities::Backends::local(storage.path()).unwrap();
    let plugins: Vec<(std::path::PathBuf, weir_host::manifest::Manifest)> = (0..50)
        .map(|i| {
            let name = format!("p{i:02}");
            let path = dir.path().join(format!("{name}.wasm"));
            std::fs::write(&path, echo_variant(&name)).unwrap();
            let manifest = weir_host::manifest::Manifest::parse(
                &format!("name = \"{name}\"\ntopics = [\"in\"]\n[capabilities.cache]\n[capabilities.publish]\ntopics = [\"out\"]\n"),
                Path::new("m.toml"),
            )
            .unwrap();
            (path, manifest)
        })
        .collect();

    let load_all = |runtime: weir_host::runtime::Runtime| {
        let plugins = plugins.clone();
        let backends = backends.clone();
        async move {
            let started = Instant::now();
            for (path, manifest) in plugins {
                runtime
                    .load(&path, manifest, backends.clone())
                    .await
                    .unwrap();
            }
            (started.elapsed(), runtime.compile_stats())
        }
    };
    let (cold, first) =
        load_all(weir_host::runtime::Runtime::with_compile_cache(cache.clone()).unwrap()).await;
    assert_eq!((first.compiled, first.cache_hits), (50, 0));
    let (warm, second) =
        load_all(weir_host::runtime::Runtime::with_compile_cache(cache.clone()).unwrap()).await;
    println!("compile cache: 50 plugins, cold start {cold:?}, cached start {warm:?}");
    assert_eq!(
        (second.compiled, second.cache_hits),
        (0, 50),
        "no compilation on restart"
    );

    // The pause a swap causes (compile excluded): the first event on a new version
    // pays for instantiating it; later events do not.
    let runtime = weir_host::runtime::Runtime::with_compile_cache(cache.clone()).unwrap();
    let (path, manifest) = plugins[0].clone();
    let loaded = runtime
        .load(&path, manifest, backends.clone())
        .await
        .unwrap();
    let mut pauses = Vec::new();
    let mut warm = Vec::new();
    for i in 0..10 {
        let mut fresh = loaded.fork();
        let event = crate::support::event("in", i, Some("k"), br#"{"seq": 1}"#);
        let first = fresh.handle(&event).await;
        assert!(first.outcome.is_handled(), "{:?}", first.outcome);
        pauses.push(first.duration_us);
        warm.push(fresh.handle(&event).await.duration_us);
    }
    pauses.sort();
    warm.sort();
    println!(
        "swap pause: first event on a new version {} µs (median of 10, instantiation included), a warm event {} µs",
        pauses[5], warm[5]
    );

    // A corrupt entry is ignored and rebuilt.
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"garbage").unwrap();
    let (_, third) =
        load_all(weir_host::runtime::Runtime::with_compile_cache(cache).unwrap()).await;
    assert_eq!((third.compiled, third.cache_hits), (1, 49));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_consumer_settings_change_restarts_that_consumer_after_committing() {
    let Some((b, files)) = setup("reshape").await else {
        return;
    };
    let host = InProcessHost::start(files.load());
    files
        .wait_status("echo", "running", |s| s.state == "running")
        .await;
    let n = 300;
    let producer = b.producer();
    let stream = tokio::spawn(async move {
        for i in 0..n {
            let key = format!("k{}", i % 10);
            produce(&producer, "reshape-in", &key, json!({"seq": i, "key": key})).await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // Mid-stream: some events handled by the first consumer.
    b.wait_count("reshape-out", 50).await;
    // Same code, more workers: the consumer must be rebuilt.
    put(
        &files.plugins().join("echo.toml"),
        format!("{}[consumer]\nworkers = 3\n", echo_manifest("v1", "")).as_bytes(),
    );
    stream.await.unwrap();
    let out = b.read("reshape-out", n as usize);
    host.stop().await;
    let (seen, duplicates) = seqs(&out);
    println!(
        "reshape: {n} events, consumer restarted mid-stream, {} outputs, {duplicates} duplicates",
        out.len()
    );
    assert_eq!(seen.len(), n as usize, "nothing lost");
    assert_eq!(duplicates, 0, "committed before the new consumer started");
    assert_key_order(&out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn plugins_listed_in_the_config_outside_the_directory_load_the_same_way() {
    let Some(b) = broker() else { return };
    b.create_topics(&["baked-in", "baked-out", "baked-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "baked", "");
    // Move the plugin out of the watched directory, into an "image" folder.
    let image = files.dir.path().join("opt");
    std::fs::create_dir_all(&image).unwrap();
    for f in ["echo.wasm", "echo.toml"] {
        std::fs::rename(files.plugins().join(f), image.join(f)).unwrap();
    }
    files.write_config(
        &b.bootstrap(),
        "baked",
        "[plugins]\nextra = [{ wasm = \"opt/echo.wasm\", manifest = \"opt/echo.toml\" }]\n",
    );
    let host = InProcessHost::start(files.load());
    let s = files
        .wait_status("echo", "running", |s| s.state == "running")
        .await;
    assert!(s.wasm.ends_with("opt/echo.wasm"), "{s:?}");
    let producer = b.producer();
    produce(&producer, "baked-in", "k", json!({"seq": 0})).await;
    assert_eq!(b.read("baked-out", 1).len(), 1);
    host.stop().await;
}
