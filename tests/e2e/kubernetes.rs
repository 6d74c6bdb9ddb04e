//! The Kubernetes manifests of `examples/kubernetes`: valid against the
//! Kubernetes schema (kubernetes-validate, offline), and the configuration and
//! environment the StatefulSet gives the container accepted by `weir config check`.

use crate::support::{required, workspace_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A program of weir's Python environment (`just python`), else on `PATH`.
fn python_tool(name: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from)?;
    let cached = home.join(".cache/weir/py/bin").join(name);
    if cached.is_file() {
        return Some(cached);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|c| c.is_file())
    })
}

fn manifests() -> PathBuf {
    workspace_root().join("examples/kubernetes")
}

/// The documents of a YAML file, as JSON (through the Python environment's PyYAML).
fn yaml(python: &Path, file: &str) -> Vec<Value> {
    let out = Command::new(python)
        .args([
            "-c",
            "import sys, json, yaml; json.dump(list(yaml.safe_load_all(open(sys.argv[1]))), sys.stdout)",
        ])
        .arg(manifests().join(file))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
#[ignore = "needs kubernetes-validate (`just python`); `just test` installs it and runs the ignored tests"]
fn the_manifests_are_valid_kubernetes_and_their_config_passes_weir_config_check() {
    let Some(validate) = required(
        python_tool("kubernetes-validate"),
        "kubernetes-validate",
        "`just python` installs it into ~/.cache/weir/py (pip install kubernetes-validate)",
    ) else {
        return;
    };
    let python = python_tool("python").expect("the Python environment of kubernetes-validate");
    let files = [
        "configmap.yaml",
        "service.yaml",
        "secret.example.yaml",
        "statefulset.yaml",
        "plugins-pvc.yaml",
    ];
    let out = Command::new(&validate)
        .args(["--strict", "-k", "1.31.0"])
        .args(files.iter().map(|f| manifests().join(f)))
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        files.len(),
        "{text}"
    );
    println!("{}", text.trim());

    // What the pod weir-0 gets: the ConfigMap's weir.toml, the Secret's files and
    // the container's environment, with the Service's variables beside them.
    let dir = tempfile::tempdir().unwrap();
    let secret = &yaml(&python, "secret.example.yaml")[0]["stringData"];
    let secrets = dir.path().join("secrets");
    let plugins = dir.path().join("plugins");
    let data = dir.path().join("data");
    for d in [&secrets, &plugins, &data] {
        std::fs::create_dir_all(d).unwrap();
    }
    for key in ["kafka-sasl-password", "admin-token"] {
        std::fs::write(secrets.join(key), secret[key].as_str().unwrap()).unwrap();
    }
    let toml = yaml(&python, "configmap.yaml")[0]["data"]["weir.toml"]
        .as_str()
        .unwrap()
        .replace("/run/secrets/weir/", &format!("{}/", secrets.display()))
        .replace(
            "\"/plugins\"",
            &format!("{:?}", plugins.display().to_string()),
        )
        .replace("\"/data/", &format!("\"{}/", data.display()));
    let config = dir.path().join("weir.toml");
    std::fs::write(&config, toml).unwrap();

    let statefulset = &yaml(&python, "statefulset.yaml")[0];
    let container = &statefulset["spec"]["template"]["spec"]["containers"][0];
    let mut env: Vec<(String, String)> = vec![
        ("WEIR_SERVICE_HOST".into(), "10.96.0.20".into()),
        ("WEIR_SERVICE_PORT".into(), "9464".into()),
        ("WEIR_PORT".into(), "tcp://10.96.0.20:9464".into()),
        ("WEIR_PORT_9464_TCP_ADDR".into(), "10.96.0.20".into()),
    ];
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = var["value"].as_str() {
            // Kubernetes expands $(VAR) from the variables defined before.
            env.iter().fold(v.to_string(), |v, (k, val)| {
                v.replace(&format!("$({k})"), val)
            })
        } else if var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name" {
            "weir-0".into()
        } else {
            let key = var["valueFrom"]["secretKeyRef"]["key"].as_str().unwrap();
            secret[key].as_str().unwrap().to_string()
        };
        env.push((name, value));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["config", "check", "-c", config.to_str().unwrap()])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("run weir");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "kafka        kafka-0.kafka:9093,kafka-1.kafka:9093 (4 librdkafka properties set",
        "static member id weir-0-{plugin}",
        "schedule     topic prod-weir-schedule",
        "cache        redis; storage s3; admin 0.0.0.0:9464 (token required)",
        "no problems found",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }
    assert!(!text.contains(secret["kafka-sasl-password"].as_str().unwrap()));
    println!("{text}");
}
