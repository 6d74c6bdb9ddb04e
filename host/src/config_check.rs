//! `weir config check`: the host configuration and every plugin it would load,
//! resolved as `weir run` would resolve them (topics with the environment's prefix,
//! dead-letter topics, consumer groups, grants, limits), and every problem found,
//! each with its file (and line, where there is one). Nothing is contacted: no
//! broker, no cache, no object store. Meant for a deploy pipeline, before a rollout.

use crate::capabilities::Backends;
use crate::config::Config;
use crate::manifest::Manifest;
use crate::runtime::Runtime;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What `weir config check` found: the resolved view, and the problems (exit 1
/// when there is any).
#[derive(Debug, Default)]
pub struct CheckReport {
    pub text: String,
    pub problems: Vec<String>,
}

/// Check the configuration at `path` and the plugins it names.
pub async fn check(path: &Path) -> CheckReport {
    let mut report = CheckReport::default();
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            report.problems.push(e.to_string());
            return report;
        }
    };
    let out = &mut report.text;
    let namer = match config.namer() {
        Ok(n) => n,
        Err(e) => {
            report
                .problems
                .push(format!("{}: topics.template: {e}", path.display()));
            return report;
        }
    };
    let _ = writeln!(out, "config {}", path.display());
    let _ = writeln!(
        out,
        "  kafka        {} ({} librdkafka propert{} set{})",
        config.kafka.bootstrap_servers,
        config.kafka.properties.len(),
        if config.kafka.properties.len() == 1 {
            "y"
        } else {
            "ies"
        },
        if config.kafka.properties.is_empty() {
            String::new()
        } else {
            // Names only: values may be secrets (sasl.password).
            format!(
                ": {}",
                config
                    .kafka
                    .properties
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    );
    let _ = writeln!(
        out,
        "  topics       {} (example: track-deletions -> {})",
        config.topics.template,
        namer.full_name("track-deletions")
    );
    // The host id as `weir run` would use it: the file's, once a host created it.
    let mut with_id = config.clone();
    let id_file = &config.kafka.consumer.host_id_file;
    let id_note = if !config.kafka.consumer.instance_id.contains("{host_id}") {
        String::new()
    } else {
        match crate::host_id::HostId::peek(id_file) {
            Some(id) => {
                with_id.host_id = Some(id);
                format!(" (host id from {})", id_file.display())
            }
            None => format!(
                " (the host id is created at the first run in {})",
                id_file.display()
            ),
        }
    };
    let _ = writeln!(
        out,
        "  consumers    group {}, static member id {}{id_note}",
        config.group_for("{plugin}"),
        with_id
            .instance_id_for("{plugin}")
            .unwrap_or_else(|| "none (dynamic membership)".into())
    );
    match (config.schedule_topic(), config.schedule_group()) {
        (Ok(topic), Ok(group)) => {
            let _ = writeln!(out, "  schedule     topic {topic}, group {group}");
        }
        (Err(e), _) | (_, Err(e)) => report
            .problems
            .push(format!("{}: storage.schedule_topic: {e}", path.display())),
    }
    let _ = writeln!(
        out,
        "  cache        {}; storage {}; admin {}",
        format!("{:?}", config.cache.backend).to_lowercase(),
        format!("{:?}", config.storage.backend).to_lowercase(),
        if config.admin.enabled {
            format!(
                "{} ({})",
                config.admin.listen,
                match crate::admin::auth::Auth::from_config(&config.admin) {
                    Ok(auth) if auth.has_token() => "token required",
                    Ok(_) => "no token",
                    Err(_) => "REFUSED",
                }
            )
        } else {
            "off".into()
        }
    );
    let _ = writeln!(
        out,
        "  telemetry    {}",
        if config.telemetry.enabled {
            format!(
                "traces over OTLP/HTTP to {}",
                config
                    .telemetry
                    .endpoint
                    .as_deref()
                    .unwrap_or("OTEL_EXPORTER_OTLP_ENDPOINT or http://localhost:4318")
            )
        } else {
            "off".into()
        }
    );
    if config.admin.enabled {
        if let Err(e) = crate::admin::auth::Auth::from_config(&config.admin) {
            report.problems.push(format!("{}: {e}", path.display()));
        }
    }

    let plugins = plugin_files(&config, &mut report.problems);
    let runtime = Runtime::with_compile_cache(config.plugins.cache_dir.clone())
        .or_else(|_| Runtime::new().map_err(|e| e.to_string()));
    let scratch = std::env::temp_dir().join(format!("weir-config-check-{}", std::process::id()));
    let claims: Vec<crate::reserved::Claims> = plugins
        .iter()
        .filter_map(|(_, _, m)| Manifest::load(m).ok())
        .filter_map(|m| crate::reserved::Claims::of(&config, &m).ok())
        .collect();
    for (name, wasm, manifest_path) in plugins {
        let manifest = match Manifest::load(&manifest_path) {
            Ok(m) => m,
            Err(e) => {
                let _ = writeln!(out, "\nplugin {name}: REJECTED (manifest)");
                report.problems.push(e.to_string());
                continue;
            }
        };
        if let Err(e) = crate::reserved::check(&config, &manifest, &claims) {
            let _ = writeln!(out, "\nplugin {name}: REJECTED (manifest)");
            report
                .problems
                .push(format!("{}: {e}", manifest_path.display()));
            continue;
        }
        let component = match (&runtime, Backends::local(&scratch)) {
            (Ok(rt), Ok(backends)) => rt
                .load(&wasm, manifest.clone(), backends)
                .await
                .map(|p| p.content_hash()[..12].to_string())
                .map_err(|e| e.to_string()),
            (Err(e), _) => Err(e.clone()),
            (_, Err(e)) => Err(e.to_string()),
        };
        let _ = writeln!(
            out,
            "\nplugin {name} ({}): {}",
            manifest_path.display(),
            match &component {
                Ok(hash) => format!("ok, sha256 {hash}…"),
                Err(_) => "REJECTED (component)".into(),
            }
        );
        if let Err(e) = component {
            report.problems.push(e);
        }
        describe_plugin(out, &config, &namer, &manifest);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    report
}

/// The plugins `weir run` would load: the directory's pairs and `plugins.extra`;
/// a lone `.wasm` or `.toml` is a problem.
fn plugin_files(config: &Config, problems: &mut Vec<String>) -> Vec<(String, PathBuf, PathBuf)> {
    let dir = &config.plugins.dir;
    let mut found = Vec::new();
    match std::fs::read_dir(dir) {
        Err(e) => problems.push(format!(
            "plugins.dir {}: cannot be read ({e}); create it or point plugins.dir elsewhere",
            dir.display()
        )),
        Ok(entries) => {
            let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                let (Some(stem), Some(ext)) = (
                    p.file_stem().and_then(|s| s.to_str()),
                    p.extension().and_then(|s| s.to_str()),
                ) else {
                    continue;
                };
                let other = match ext {
                    "wasm" => p.with_extension("toml"),
                    "toml" => p.with_extension("wasm"),
                    _ => continue,
                };
                if !other.is_file() {
                    problems.push(format!(
                        "{}: no {} beside it: a plugin is <name>.wasm with <name>.toml",
                        p.display(),
                        other.file_name().and_then(|n| n.to_str()).unwrap_or("")
                    ));
                } else if ext == "toml" {
                    found.push((stem.to_string(), other, p.clone()));
                }
            }
        }
    }
    for extra in &config.plugins.extra {
        let name = extra.name();
        found.push((name, extra.wasm.clone(), extra.manifest.clone()));
    }
    found
}

fn describe_plugin(
    out: &mut String,
    config: &Config,
    namer: &crate::topics::TopicNamer,
    m: &Manifest,
) {
    let consumed: Vec<String> = m.topics.iter().map(|t| namer.full_name(t)).collect();
    let group = m
        .consumer
        .group
        .clone()
        .unwrap_or_else(|| config.group_for(&m.name));
    let _ = writeln!(
        out,
        "  consumes     {} (group {group})",
        consumed.join(", ")
    );
    let dead: Vec<String> = consumed
        .iter()
        .map(|t| config.dlq_topic(t, &m.name))
        .collect();
    let _ = writeln!(out, "  dead letters {}", dead.join(", "));
    let c = &m.capabilities;
    let published = c.publish.as_ref().map_or("-".to_string(), |p| {
        p.topics
            .iter()
            .map(|t| namer.full_name(t))
            .collect::<Vec<_>>()
            .join(", ")
    });
    let _ = writeln!(out, "  publishes    {published}");
    let cache = m
        .cache_namespace()
        .map_or("no cache".to_string(), |ns| format!("cache namespace {ns}"));
    let storage = c.storage.as_ref().map_or("no storage".to_string(), |s| {
        format!("storage {}", s.prefixes.join(", "))
    });
    let _ = writeln!(out, "  grants       {cache}; {storage}");
    let delivery = match m.consumer.delivery {
        crate::manifest::DeliveryMode::ExactlyOnce => format!(
            "exactly-once (outputs and offsets in one transaction every {}; cache and storage calls stay at-least-once)",
            humantime::format_duration(m.consumer.transaction_interval)
        ),
        crate::manifest::DeliveryMode::AtLeastOnce => {
            "at-least-once (after a crash, events since the last commit are handled again)".into()
        }
    };
    let _ = writeln!(out, "  delivery     {delivery}");
    let _ = writeln!(
        out,
        "  limits       memory {}, timeout {}; retry {} attempt(s), backoff {} to {}; workers {}, batch {}",
        m.limits.memory,
        humantime::format_duration(m.limits.timeout),
        m.retry.attempts,
        humantime::format_duration(m.retry.initial_backoff),
        humantime::format_duration(m.retry.max_backoff),
        m.consumer.workers,
        m.consumer.batch
    );
}
