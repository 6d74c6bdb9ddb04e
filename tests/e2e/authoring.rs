//! Plugin authoring as an author does it: `weir new` → `weir build` → `weir test`
//! in Rust, Python, JavaScript and TypeScript, then the new plugin under `weir run`
//! handling an event from a real topic; the Rust, Python and TypeScript
//! `track-deletions` side by side; and the failures an author meets (a wrong
//! expectation, a bug that traps, a type error, a missing toolchain).

use crate::kafka_support::{broker, BinaryHost, HostFiles, JsonPayload};
use crate::support::{example_manifest, required, wasm, workspace_root};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Instant;
use weir_host::authoring::build::find_componentize_py;

fn weir(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .current_dir(cwd)
        .envs(env.iter().copied())
        .output()
        .expect("run weir")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// componentize-py, or `None` (skipped, and said) when it is not installed; under
/// CI a failure.
fn componentize_py() -> Option<PathBuf> {
    required(
        find_componentize_py(Path::new(".")),
        "componentize-py",
        "`just python` installs it into ~/.cache/weir/py (pip install componentize-py)",
    )
}

/// Node.js, or `None` (skipped, and said) when it is not installed; under CI a
/// failure. `weir build` installs componentize-js and TypeScript with its npm.
fn node() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("node"))
            .find(|p| p.is_file())
    });
    required(
        on_path,
        "Node.js",
        "install Node.js 20+ with npm (apt-get install nodejs npm); `just js` then installs \
         componentize-js and TypeScript into ~/.cache/weir/js",
    )
}

/// Cargo's target directory for the generated Rust projects: kept between runs
/// (beside the workspace's), so only the first run compiles their dependencies.
fn authoring_target() -> String {
    let root = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    root.join("authoring").to_string_lossy().into_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs Apache Kafka (`just kafka`), componentize-py (`just python`); `just test` installs it and runs the ignored tests"]
async fn a_new_plugin_is_built_tested_and_handles_an_event_from_a_topic() {
    let Some(broker) = broker() else { return };
    let Some(_) = componentize_py() else { return };
    let Some(_) = node() else { return };
    let work = tempfile::tempdir().unwrap();
    let target = authoring_target();
    for lang in ["rust", "python", "js", "ts"] {
        let name = format!("viewed-{lang}");
        let dir = work.path().join(&name);
        let dir_s = dir.to_str().unwrap();
        let started = Instant::now();

        let new = weir(
            &["new", &name, "--lang", lang, "--dir", dir_s],
            work.path(),
            &[],
        );
        assert!(new.status.success(), "{}", text(&new));
        assert!(
            text(&new).contains(&format!("next: weir build {dir_s}")),
            "{}",
            text(&new)
        );

        let build = weir(&["build"], &dir, &[("CARGO_TARGET_DIR", &target)]);
        assert!(build.status.success(), "{lang} build:\n{}", text(&build));
        let built_after = started.elapsed();
        let component = dir.join(format!("{name}.wasm"));
        assert!(component.is_file(), "{}", text(&build));

        let test = weir(&["test"], &dir, &[]);
        let report = text(&test);
        assert!(test.status.success(), "{lang} test:\n{report}");
        assert!(report.contains("3 passed, 0 failed"), "{report}");

        // Deployed as an operator would: the two files into a host's plugin directory.
        let prefix = format!("auth{lang}");
        let files = HostFiles::new(&broker.bootstrap(), &prefix);
        let manifest = std::fs::read_to_string(dir.join(format!("{name}.toml"))).unwrap();
        files.install(&name, &component, &manifest);
        let input = format!("{prefix}-{name}");
        let output = format!("{prefix}-{name}-out");
        broker.create_topics(&[&input, &output], 3).await;
        let mut host = BinaryHost::start(&files, &format!("author-{lang}"));
        crate::kafka_support::produce(
            &broker.producer(),
            &input,
            "user-7",
            serde_json::json!({"userId": "user-7", "itemId": "item-1", "seq": 1}),
        )
        .await;
        let out = broker.read(&output, 1);
        let handled_after = started.elapsed();
        assert_eq!(out.len(), 1, "{}", host.log_text());
        assert_eq!(
            out[0].json(),
            serde_json::json!({"userId": "user-7", "itemId": "item-1", "firstTime": true})
        );
        assert_eq!(out[0].key.as_deref(), Some("user-7"));
        host.signal("TERM");
        assert_eq!(host.wait(), Some(0), "{}", host.log_text());
        println!(
            "{lang}: weir new → build → test → an event handled from a topic: {:.1} s \
             (built after {:.1} s; {} bytes)",
            handled_after.as_secs_f64(),
            built_after.as_secs_f64(),
            std::fs::metadata(&component).unwrap().len()
        );
    }
}

#[test]
#[ignore = "needs componentize-py (`just python`); `just test` installs it and runs the ignored tests"]
fn a_wrong_expectation_fails_with_a_diff_naming_the_event_and_the_field() {
    let Some(_) = componentize_py() else { return };
    wrong_expectation("python");
}

#[test]
#[ignore = "needs Node.js (`just js` installs componentize-js and TypeScript); `just test` installs it and runs the ignored tests"]
fn a_wrong_expectation_fails_with_a_diff_in_javascript_and_typescript() {
    let Some(_) = node() else { return };
    for lang in ["js", "ts"] {
        wrong_expectation(lang);
    }
}

#[test]
#[ignore = "needs Node.js (`just js`) and componentize-py (`just python`); `just test` installs them and runs the ignored tests"]
fn a_bug_traps_with_its_message_and_a_typescript_type_error_stops_the_build() {
    let Some(_) = node() else { return };
    let Some(_) = componentize_py() else { return };
    let work = tempfile::tempdir().unwrap();
    for lang in ["js", "ts", "python"] {
        let new = weir(&["new", lang, "--lang", lang], work.path(), &[]);
        assert!(new.status.success(), "{}", text(&new));
    }
    // A typo the JavaScript engine finds at run time: the event traps, and the
    // report (and so the dead letter's reason) names the exception and where.
    let app = work.path().join("js/app.js");
    let source = std::fs::read_to_string(&app).unwrap();
    let buggy = source.replacen(
        "const { userId, itemId } = viewed;",
        "const { userId, itemId } = viewed;\n  if (userId === \"user-2\") viewed.profile.name = 1;",
        1,
    );
    assert_ne!(buggy, source);
    std::fs::write(&app, buggy).unwrap();
    let build = weir(&["build", "js"], work.path(), &[]);
    assert!(build.status.success(), "{}", text(&build));
    std::fs::write(
        work.path().join("bug.jsonl"),
        "{\"key\": \"user-2\", \"payload\": {\"userId\": \"user-2\", \"itemId\": \"i\"}, \"expect\": {\"outcome\": \"handled\"}}\n",
    )
    .unwrap();
    let test = weir(&["test", "js", "--events", "bug.jsonl"], work.path(), &[]);
    let report = text(&test);
    assert_eq!(test.status.code(), Some(1), "{report}");
    assert!(
        report.contains(
            "TypeError: can't access property \"name\", viewed.profile is undefined (at app.js:"
        ),
        "{report}"
    );
    // In Python, the SDK names the exception and its line the same way.
    let app = work.path().join("python/app.py");
    let source = std::fs::read_to_string(&app).unwrap();
    let buggy = source.replacen(
        "        key = f\"seen:{user_id}:{item_id}\"",
        "        if user_id == \"user-2\":\n            viewed[\"profile\"][\"name\"] = 1\n        key = f\"seen:{user_id}:{item_id}\"",
        1,
    );
    assert_ne!(buggy, source);
    std::fs::write(&app, buggy).unwrap();
    let build = weir(&["build", "python"], work.path(), &[]);
    assert!(build.status.success(), "{}", text(&build));
    let test = weir(
        &["test", "python", "--events", "bug.jsonl"],
        work.path(),
        &[],
    );
    let report = text(&test);
    assert_eq!(test.status.code(), Some(1), "{report}");
    assert!(
        report.contains("KeyError: 'profile' (at app.py:"),
        "{report}"
    );

    // The same typo in TypeScript is a type error: the build stops with tsc's message.
    let app = work.path().join("ts/app.ts");
    let source = std::fs::read_to_string(&app).unwrap();
    let typo = source.replacen(
        "cache.get(key) === undefined",
        "cache.gte(key) === undefined",
        1,
    );
    assert_ne!(typo, source);
    std::fs::write(&app, typo).unwrap();
    let build = weir(&["build", "ts"], work.path(), &[]);
    assert_eq!(build.status.code(), Some(2), "{}", text(&build));
    assert!(
        text(&build).contains("error TS2339: Property 'gte' does not exist")
            && text(&build).contains("tsc (the TypeScript compiler) failed"),
        "{}",
        text(&build)
    );
}

/// `weir test` on a new `lang` project whose first expectation is wrong: the diff,
/// `--update`, and an expectation that is not one.
fn wrong_expectation(lang: &str) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("viewed");
    let new = weir(&["new", "viewed", "--lang", lang], work.path(), &[]);
    assert!(new.status.success(), "{}", text(&new));
    let build = weir(&["build", "viewed"], work.path(), &[]);
    assert!(build.status.success(), "{lang}: {}", text(&build));

    // The first event's message says firstTime: true; expect false.
    let events = dir.join("events.jsonl");
    let original = std::fs::read_to_string(&events).unwrap();
    let wrong = original.replacen("\"firstTime\": true", "\"firstTime\": false", 1);
    assert_ne!(wrong, original);
    std::fs::write(&events, &wrong).unwrap();
    let test = weir(&["test", "viewed"], work.path(), &[]);
    let report = text(&test);
    assert_eq!(test.status.code(), Some(1), "{lang}: {report}");
    assert!(report.contains("FAIL  event 1"), "{lang}: {report}");
    assert!(
        report.contains(
            "publish[0].json.firstTime:\n            expected false\n            got      true"
        ),
        "{report}"
    );
    assert!(report.contains("2 passed, 1 failed"), "{report}");

    // --update writes what the plugin did; then it passes, comments kept.
    let update = weir(&["test", "viewed", "--update"], work.path(), &[]);
    assert_eq!(update.status.code(), Some(1), "{}", text(&update));
    let rewritten = std::fs::read_to_string(&events).unwrap();
    assert!(rewritten.starts_with("# Sample events"), "{rewritten}");
    assert!(rewritten.contains("\"firstTime\": true"), "{rewritten}");
    let again = weir(&["test", "viewed"], work.path(), &[]);
    assert!(again.status.success(), "{}", text(&again));

    // An expectation that is not one is an unusable input (exit 2), with its line.
    std::fs::write(
        &events,
        "{\"payload\": {}, \"expect\": {\"outcome\": \"fine\"}}\n",
    )
    .unwrap();
    let bad = weir(&["test", "viewed"], work.path(), &[]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    assert!(
        text(&bad).contains("events.jsonl:1: `expect.outcome` \"fine\""),
        "{}",
        text(&bad)
    );
}

#[test]
fn a_missing_toolchain_gives_the_install_hint() {
    let work = tempfile::tempdir().unwrap();
    for lang in ["rust", "python", "js", "ts"] {
        let new = weir(&["new", lang, "--lang", lang], work.path(), &[]);
        assert!(new.status.success(), "{}", text(&new));
    }
    // A PATH where componentize-py is not, and a HOME without weir's virtualenv.
    let bin = work.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let no_python = weir(
        &["build", "python"],
        work.path(),
        &[
            ("PATH", bin.to_str().unwrap()),
            ("HOME", work.path().to_str().unwrap()),
        ],
    );
    assert_eq!(no_python.status.code(), Some(2), "{}", text(&no_python));
    assert!(
        text(&no_python).contains("componentize-py is not installed")
            && text(&no_python).contains("pip install componentize-py=="),
        "{}",
        text(&no_python)
    );
    // A toolchain without the wasm32-wasip2 target: what rustup would list.
    let rustup = bin.join("rustup");
    std::fs::write(&rustup, "#!/bin/sh\necho x86_64-unknown-linux-gnu\n").unwrap();
    std::fs::set_permissions(&rustup, std::fs::Permissions::from_mode(0o755)).unwrap();
    let no_target = weir(
        &["build", "rust"],
        work.path(),
        &[("PATH", bin.to_str().unwrap())],
    );
    assert_eq!(no_target.status.code(), Some(2), "{}", text(&no_target));
    assert!(
        text(&no_target).contains("rustup target add wasm32-wasip2"),
        "{}",
        text(&no_target)
    );
    // No Node.js: JavaScript and TypeScript say what to install.
    for lang in ["js", "ts"] {
        let no_node = weir(
            &["build", lang],
            work.path(),
            &[
                ("PATH", bin.to_str().unwrap()),
                ("HOME", work.path().to_str().unwrap()),
            ],
        );
        assert_eq!(no_node.status.code(), Some(2), "{}", text(&no_node));
        assert!(
            text(&no_node).contains("Node.js is not installed")
                && text(&no_node).contains("apt-get install nodejs npm"),
            "{}",
            text(&no_node)
        );
    }
    // Node.js without npm, and no toolchain installed yet: npm is named.
    let node_only = work.path().join("node-only");
    std::fs::create_dir_all(&node_only).unwrap();
    std::fs::write(node_only.join("node"), "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(
        node_only.join("node"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let no_npm = weir(
        &["build", "ts"],
        work.path(),
        &[
            ("PATH", node_only.to_str().unwrap()),
            ("HOME", work.path().to_str().unwrap()),
        ],
    );
    assert_eq!(no_npm.status.code(), Some(2), "{}", text(&no_npm));
    assert!(
        text(&no_npm).contains("npm is not installed")
            && text(&no_npm).contains("apt-get install nodejs npm"),
        "{}",
        text(&no_npm)
    );
    // And a directory that is no project says what one is.
    let none = weir(&["build", "bin"], work.path(), &[]);
    assert!(
        text(&none).contains("`weir new <name> --lang rust|python|js|ts` makes one"),
        "{}",
        text(&none)
    );
}

/// `plugins/track-deletions-py` built with `weir build` (once per test process).
fn python_track_deletions() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_in_repo("plugins/track-deletions-py"))
}

/// `plugins/track-deletions-ts` built with `weir build` (once per test process).
fn typescript_track_deletions() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| build_in_repo("plugins/track-deletions-ts"))
}

fn build_in_repo(project: &str) -> PathBuf {
    let dir = workspace_root().join(project);
    let build = weir(&["build", dir.to_str().unwrap()], &workspace_root(), &[]);
    assert!(build.status.success(), "{}", text(&build));
    dir.join("track-deletions.wasm")
}

/// The Rust track-deletions with its example manifest, in a directory of its own.
fn rust_track_deletions(dir: &Path) -> PathBuf {
    let component = dir.join("track-deletions.wasm");
    std::fs::copy(wasm("track-deletions"), &component).unwrap();
    std::fs::copy(
        example_manifest("track-deletions"),
        dir.join("track-deletions.toml"),
    )
    .unwrap();
    component
}

/// Each event's outcome (without its reason's wording) and capability calls.
fn recording(component: &Path, events: &str) -> Vec<serde_json::Value> {
    let out = weir(
        &["invoke", component.to_str().unwrap(), events, "--json"],
        &workspace_root(),
        &[],
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("report").is_some())
        .map(|v| {
            serde_json::json!({
                "outcome": v["report"]["outcome"],
                "calls": v["report"]["calls"],
                "published": v["report"]["published"],
            })
        })
        .collect()
}

#[test]
#[ignore = "needs componentize-py (`just python`) and Node.js (`just js`); `just test` installs them and runs the ignored tests"]
fn rust_python_and_typescript_track_deletions_make_the_same_calls_and_pass_the_same_expectations() {
    let Some(_) = componentize_py() else { return };
    let Some(_) = node() else { return };
    let python = python_track_deletions();
    let typescript = typescript_track_deletions();
    let work = tempfile::tempdir().unwrap();
    let rust = rust_track_deletions(work.path());

    for events in [
        "examples/events/track-deletions.jsonl",
        "examples/events/track-deletions-bad.jsonl",
    ] {
        let r = serde_json::to_string_pretty(&recording(&rust, events)).unwrap();
        for (lang, component) in [("Python", python), ("TypeScript", typescript)] {
            let other = serde_json::to_string_pretty(&recording(component, events)).unwrap();
            assert!(r.len() > 2);
            assert_eq!(r, other, "{events}: the Rust and {lang} recordings differ");
        }
    }

    // One expectation file for all three.
    for events in [
        "examples/events/track-deletions.jsonl",
        "examples/events/track-deletions-bad.jsonl",
    ] {
        for component in [rust.as_path(), python, typescript] {
            let test = weir(
                &[
                    "test",
                    "--plugin",
                    component.to_str().unwrap(),
                    "--events",
                    events,
                ],
                &workspace_root(),
                &[],
            );
            let report = text(&test);
            assert!(
                test.status.success(),
                "{} on {events}:\n{report}",
                component.display()
            );
            assert!(report.contains(" passed, 0 failed, 0 without"), "{report}");
            println!(
                "{} on {events}: {}",
                component.display(),
                report.lines().last().unwrap_or("")
            );
        }
    }
}
