//! `weir config check`, as a deploy pipeline runs it: the example deployment
//! passes; a broken one names each problem with its file (and line).

use crate::support::{example_manifest, wasm, workspace_root};
use std::process::Command;

fn config_check(config: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["config", "check", "-c", config.to_str().unwrap()])
        .current_dir(workspace_root())
        .output()
        .expect("run weir");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_example_deployment_resolves_without_problems() {
    // The example plugins are built beside their manifests by `just plugins`; here
    // the same two files go into a directory of their own.
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    for name in ["track-deletions", "audio-uploaded"] {
        std::fs::copy(wasm(name), plugins.join(format!("{name}.wasm"))).unwrap();
        std::fs::copy(example_manifest(name), plugins.join(format!("{name}.toml"))).unwrap();
    }
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "[kafka]\nbootstrap_servers = \"broker:9092\"\nproperties = { \"sasl.password\" = \"s3cret\" }\n\
         [topics]\nprefix = \"prod\"\n[plugins]\ndir = \"plugins\"\n[dlq]\ntemplate = \"{prefix}-dlq-events\"\n",
    )
    .unwrap();
    let (code, text) = config_check(&config);
    assert_eq!(code, Some(0), "{text}");
    for line in [
        "kafka        broker:9092 (1 librdkafka property set: sasl.password)",
        "schedule     topic prod-weir-schedule, group prod-weir-schedule",
        "consumes     prod-track-deletions (group prod-track-deletions)",
        "dead letters prod-dlq-events",
        "publishes    prod-waveform-jobs",
        "grants       cache namespace novatune; storage audio/, waveforms/",
        "delivery     at-least-once (after a crash, events since the last commit are handled again)",
        "limits       memory 32.0 MiB, timeout 2s; retry 5 attempt(s)",
        "no problems found",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(!text.contains("s3cret"), "a secret was printed:\n{text}");
}

#[test]
fn every_problem_is_named_with_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins).unwrap();
    let manifest = std::fs::read_to_string(example_manifest("track-deletions")).unwrap();
    // Two copies of one plugin in one group: they would split the topic.
    for name in ["track-deletions", "track-deletions-2"] {
        std::fs::copy(
            wasm("track-deletions"),
            plugins.join(format!("{name}.wasm")),
        )
        .unwrap();
        std::fs::write(
            plugins.join(format!("{name}.toml")),
            manifest
                .replace("name = \"track-deletions\"", &format!("name = \"{name}\""))
                .replace("[limits]", "[consumer]\ngroup = \"shared\"\n\n[limits]"),
        )
        .unwrap();
    }
    // A misspelt limit, a component that is not one, a lone manifest.
    std::fs::copy(wasm("echo"), plugins.join("echo.wasm")).unwrap();
    std::fs::write(
        plugins.join("echo.toml"),
        "name = \"echo\"\ntopics = [\"in\"]\n[limits]\nmemroy = \"1 MiB\"\n",
    )
    .unwrap();
    std::fs::write(plugins.join("junk.wasm"), b"not wasm").unwrap();
    std::fs::write(
        plugins.join("junk.toml"),
        "name = \"junk\"\ntopics = [\"in\"]\n",
    )
    .unwrap();
    std::fs::write(
        plugins.join("lonely.toml"),
        "name = \"lonely\"\ntopics = [\"in\"]\n",
    )
    .unwrap();
    let config = dir.path().join("weir.toml");
    // And an admin API open to other machines.
    std::fs::write(
        &config,
        "[kafka]\nbootstrap_servers = \"broker:9092\"\n[admin]\nlisten = \"0.0.0.0:9464\"\n",
    )
    .unwrap();

    let (code, text) = config_check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("6 problem(s):"), "{text}");
    assert!(
        text.contains("admin.listen = \"0.0.0.0:9464\" is reachable"),
        "{text}"
    );
    assert!(
        text.contains("echo.toml:4: limits.memroy: unknown field"),
        "{text}"
    );
    assert!(
        text.contains("lonely.toml: no lonely.wasm beside it"),
        "{text}"
    );
    assert!(
        text.contains("junk.wasm") && text.contains("REJECTED (component)"),
        "{text}"
    );
    // Two plugins in one group would split each other's partitions: both are
    // refused (as `weir run` refuses them).
    assert!(
        text.contains("consumer.group = \"shared\" is also plugin \"track-deletions\"'s group")
            && text.contains(
                "consumer.group = \"shared\" is also plugin \"track-deletions-2\"'s group"
            ),
        "{text}"
    );

    // A config that does not parse stops there, with its line.
    std::fs::write(
        &config,
        "[kafka]\nbootstrap_servers = \"b:9092\"\nbogus = 1\n",
    )
    .unwrap();
    let (code, text) = config_check(&config);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("bogus"), "{text}");
}
