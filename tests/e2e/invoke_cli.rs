//! `weir invoke`, the plugin author's harness, as a user runs it.

use crate::support::{example_manifest, wasm, workspace_root};
use std::path::Path;
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(workspace_root())
        .output()
        .expect("run weir")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn invoke(plugin: &str, events: &str, extra: &[&str]) -> Output {
    let wasm = wasm(plugin);
    let manifest = example_manifest(plugin);
    let mut args = vec![
        "invoke",
        wasm.to_str().unwrap(),
        events,
        "--manifest",
        manifest.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    weir(&args)
}

#[test]
fn invoke_prints_outcomes_capability_calls_and_published_messages() {
    let out = invoke(
        "track-deletions",
        "examples/events/track-deletions.jsonl",
        &[],
    );
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("event 1  dev-track-deletions/0@0  key=user-42  handled"),
        "{text}"
    );
    assert!(
        text.contains("cache.delete presigned:user-42:01HXKTRACK0001 -> absent"),
        "{text}"
    );
    assert!(
        text.contains("storage.schedule-deletion audio/user-42/01HXKTRACK0001.mp3 -> due 2026-12-20T10:00:00.000Z"),
        "{text}"
    );
    assert!(text.contains("log.info \"track deleted"), "{text}");
    assert!(text.contains("3 event(s): 3 handled, 0 failed"), "{text}");

    let out = invoke("envelope-router", "examples/events/item-events.jsonl", &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(
            "published -> customservice.item.created key=550e8400-e29b-41d4-a716-446655440000"
        ),
        "{text}"
    );
    assert!(text.contains("ce_type: customservice.created"), "{text}");
}

#[test]
fn invoke_json_is_one_object_per_event_then_a_summary() {
    let out = invoke(
        "audio-uploaded",
        "examples/events/audio-uploaded.jsonl",
        &["--json"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["report"]["outcome"], "handled");
    assert_eq!(lines[0]["report"]["published"][0]["topic"], "waveform-jobs");
    assert_eq!(
        lines[0]["report"]["published"][0]["payload"]["TrackId"],
        "01HXKTRACK0100"
    );
    assert_eq!(lines[0]["report"]["calls"][0]["capability"], "config");
    assert_eq!(lines[2]["summary"]["handled"], 2);
}

#[test]
fn invoke_exits_1_when_events_fail_and_says_why() {
    let out = invoke(
        "track-deletions",
        "examples/events/track-deletions-bad.jsonl",
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("REJECTED: payload is not a valid"), "{text}");
    assert!(
        text.contains("REJECTED: unsupported SchemaVersion 3"),
        "{text}"
    );
    assert!(text.contains("path traversal is refused"), "{text}");
    assert!(
        text.contains("4 event(s): 0 handled, 4 failed (4 rejected)"),
        "{text}"
    );
}

#[test]
fn invoke_shows_what_the_plugin_printed_and_why_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("faulty.toml");
    std::fs::write(
        &manifest,
        "name = \"faulty\"\ntopics = [\"t\"]\n[limits]\ntimeout = \"200ms\"\n",
    )
    .unwrap();
    let events = dir.path().join("e.jsonl");
    std::fs::write(&events, "{\"payload_text\": \"print:hello from the plugin\"}\n{\"payload_text\": \"trap\"}\n{\"payload_text\": \"loop\"}\n{\"payload_text\": \"ok\"}\n").unwrap();
    let out = weir(&[
        "invoke",
        wasm("faulty").to_str().unwrap(),
        events.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("stdout: hello from the plugin"), "{text}");
    assert!(
        text.contains("TRAPPED: wasm trap: wasm `unreachable` instruction executed"),
        "{text}"
    );
    assert!(
        text.contains("panicked at tests/plugins/faulty/src/lib.rs"),
        "{text}"
    );
    assert!(
        text.contains("TIMED OUT: did not finish within limits.timeout = 200ms"),
        "{text}"
    );
    assert!(
        text.contains("4 event(s): 2 handled, 2 failed (1 timed out, 1 trapped)"),
        "{text}"
    );
}

#[test]
fn invoke_with_a_kept_storage_dir_carries_out_deletions_that_fell_due() {
    let dir = tempfile::tempdir().unwrap();
    let storage = dir.path().join("storage");
    let object = storage.join("audio/user-1/t1.mp3");
    std::fs::create_dir_all(object.parent().unwrap()).unwrap();
    std::fs::write(&object, "audio").unwrap();
    let events = dir.path().join("e.jsonl");
    std::fs::write(
        &events,
        r#"{"payload": {"SchemaVersion": 2, "TrackId": "t1", "UserId": "user-1", "ObjectKey": "audio/user-1/t1.mp3", "FileSizeBytes": 1, "DeletedAt": "2020-01-01T00:00:00Z", "ScheduledDeletionAt": "2020-01-02T00:00:00Z", "CorrelationId": "c", "Timestamp": "2020-01-01T00:00:00Z"}}"#,
    )
    .unwrap();
    let run = || {
        invoke(
            "track-deletions",
            events.to_str().unwrap(),
            &["--storage-dir", storage.to_str().unwrap()],
        )
    };
    let first = run();
    assert!(first.status.success(), "{}", stderr(&first));
    assert!(
        stdout(&first).contains(
            "scheduled deletions now pending:\n  audio/user-1/t1.mp3  due 2020-01-02T00:00:00.000Z"
        ),
        "{}",
        stdout(&first)
    );
    assert!(object.exists(), "not yet: the host sweeps when it starts");

    // The next run (a restarted host) finds the schedule and carries it out.
    std::fs::write(&events, "").unwrap();
    let second = run();
    assert!(second.status.success(), "{}", stderr(&second));
    assert!(
        stdout(&second)
            .contains("carried out a scheduled deletion that was due: audio/user-1/t1.mp3"),
        "{}",
        stdout(&second)
    );
    assert!(!object.exists());
}

/// Exit status 2 and exactly one line on stderr that contains every `needle`.
fn assert_one_line_error(out: &Output, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stderr: {err}\nstdout: {}",
        stdout(out)
    );
    assert_eq!(err.trim().lines().count(), 1, "one line expected: {err}");
    for needle in needles {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
}

#[test]
fn bad_inputs_exit_2_with_a_one_line_cause_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let events = "examples/events/track-deletions.jsonl";
    let manifest = example_manifest("track-deletions");
    let manifest = manifest.to_str().unwrap();

    // Missing component.
    let out = weir(&["invoke", &d("nothing.wasm"), events, "--manifest", manifest]);
    assert_one_line_error(&out, &["nothing.wasm", "does not exist"]);

    // Not a component.
    std::fs::write(d("notes.wasm"), "hello").unwrap();
    let out = weir(&["invoke", &d("notes.wasm"), events, "--manifest", manifest]);
    assert_one_line_error(&out, &["notes.wasm", "not a WebAssembly file"]);

    // Bad manifest: an unknown field, reported with file, line and field path.
    std::fs::copy(wasm("track-deletions"), d("track-deletions.wasm")).unwrap();
    let text = std::fs::read_to_string(example_manifest("track-deletions")).unwrap();
    let broken = text.replace("memory = \"32 MiB\"", "memroy = \"32 MiB\"");
    std::fs::write(d("track-deletions.toml"), &broken).unwrap();
    let line = broken
        .lines()
        .position(|l| l.starts_with("memroy"))
        .unwrap()
        + 1;
    let out = weir(&["invoke", &d("track-deletions.wasm"), events]);
    assert_one_line_error(
        &out,
        &[&format!(
            "track-deletions.toml:{line}: limits.memroy: unknown field `memroy`"
        )],
    );

    // No manifest beside the component.
    std::fs::copy(wasm("track-deletions"), d("orphan.wasm")).unwrap();
    let out = weir(&["invoke", &d("orphan.wasm"), events]);
    assert_one_line_error(&out, &["orphan.toml", "cannot read it"]);

    // An invalid JSON line, named by file and line number.
    std::fs::write(
        d("events.jsonl"),
        "# comment\n{\"payload\": {\"a\": 1}}\n{\"payload\": {\"a\": \n",
    )
    .unwrap();
    let out = weir(&[
        "invoke",
        wasm("track-deletions").to_str().unwrap(),
        &d("events.jsonl"),
        "--manifest",
        manifest,
    ]);
    assert_one_line_error(&out, &["events.jsonl:3: invalid event"]);

    // A line without a payload.
    std::fs::write(d("nopayload.jsonl"), "{\"key\": \"k\"}\n").unwrap();
    let out = weir(&[
        "invoke",
        wasm("track-deletions").to_str().unwrap(),
        &d("nopayload.jsonl"),
        "--manifest",
        manifest,
    ]);
    assert_one_line_error(&out, &["nopayload.jsonl:1: the event has no payload"]);

    // A missing events file.
    let out = weir(&[
        "invoke",
        wasm("track-deletions").to_str().unwrap(),
        &d("gone.jsonl"),
        "--manifest",
        manifest,
    ]);
    assert_one_line_error(&out, &["gone.jsonl"]);

    // A component that does not fit the world.
    std::fs::copy(wasm("rogue"), d("rogue.wasm")).unwrap();
    std::fs::write(d("rogue.toml"), "name = \"rogue\"\ntopics = [\"t\"]\n").unwrap();
    std::fs::write(d("t.jsonl"), "{\"payload_text\": \"x\"}\n").unwrap();
    let out = weir(&["invoke", &d("rogue.wasm"), &d("t.jsonl")]);
    assert_one_line_error(&out, &["rogue.wasm", "test:rogue/sockets"]);
    assert!(Path::new(&d("rogue.wasm")).exists());
}
