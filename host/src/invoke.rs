//! `weir invoke`: run one plugin over events from a JSON Lines file, without a broker.
//!
//! Each line is one event:
//!
//! ```json
//! {"topic": "track-deletions", "key": "user-1", "headers": {"correlation-id": "c-1"}, "payload": {"TrackId": "t1"}}
//! ```
//!
//! `payload` is any JSON value (sent as its JSON text); use `payload_text` for a
//! payload that is not JSON, or `payload_base64` for bytes. `topic` is the logical
//! topic (default: the manifest's first); `partition`, `offset` (default: the event's
//! index) and `timestamp_ms` are optional. Blank lines and lines starting with `#`
//! are skipped.

use crate::capabilities::storage::rfc3339;
use crate::capabilities::{Backends, OutgoingMessage};
use crate::event::EventRecord;
use crate::manifest::Manifest;
use crate::runtime::{Outcome, Report, Runtime};
use crate::topics::TopicNamer;
use base64::Engine as _;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

/// What `weir invoke` was asked to do.
#[derive(Debug, Clone)]
pub struct InvokeOptions {
    pub wasm: PathBuf,
    /// `None` or `-`: standard input.
    pub events: Option<PathBuf>,
    /// Default: `<wasm without .wasm>.toml`.
    pub manifest: Option<PathBuf>,
    pub json: bool,
    /// Topic prefix for the `{prefix}-{topic}` full names shown to the plugin.
    pub prefix: String,
    /// Where storage lives; default: a temporary directory removed afterwards.
    pub storage_dir: Option<PathBuf>,
}

/// Failures that stop `weir invoke` before or between events (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvokeError(pub String);

/// The per-event summary `weir invoke` ends with.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Summary {
    pub events: usize,
    pub handled: usize,
    pub failed: usize,
    pub outcomes: BTreeMap<String, usize>,
    pub published: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventLine {
    topic: Option<String>,
    key: Option<String>,
    partition: Option<i32>,
    offset: Option<i64>,
    timestamp_ms: Option<i64>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    payload: Option<serde_json::Value>,
    payload_text: Option<String>,
    payload_base64: Option<String>,
    /// What `weir test` checks; `weir invoke` ignores it.
    expect: Option<serde_json::Value>,
}

/// One event of an events file: its line, the record, and its `expect` object if any.
#[derive(Debug, Clone)]
pub struct EventInput {
    pub line: usize,
    pub record: EventRecord,
    pub expect: Option<serde_json::Value>,
}

/// Run the plugin over the events; `Ok(summary)` once every event ran (some may
/// have failed), `Err` when the inputs are unusable.
pub async fn run(opts: &InvokeOptions, out: &mut dyn Write) -> Result<Summary, InvokeError> {
    let manifest_path = opts
        .manifest
        .clone()
        .unwrap_or_else(|| opts.wasm.with_extension("toml"));
    let manifest = Manifest::load(&manifest_path).map_err(|e| InvokeError(e.to_string()))?;
    let events = read_events(
        opts.events.as_deref(),
        &manifest.topics,
        &TopicNamer::prefixed(&opts.prefix),
    )?;

    let temp;
    let storage_dir = match &opts.storage_dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempdir()?;
            temp.path().to_path_buf()
        }
    };
    let backends = Backends::local(&storage_dir).map_err(|e| InvokeError(e.to_string()))?;
    // The sweep below carries out this plugin's deletions within its grants.
    backends.deletions.allow(
        &manifest.name,
        crate::capabilities::Grants::from_manifest(&manifest).storage_prefixes,
    );
    // A kept storage directory may hold deletions scheduled by an earlier run:
    // carry out the ones now due, as a running host would.
    let swept = match &opts.storage_dir {
        None => Default::default(),
        Some(_) => match backends.deletions.store() {
            Some(kept) => kept
                .sweep(crate::capabilities::storage::now_ms())
                .await
                .map_err(|e| InvokeError(format!("cannot sweep scheduled deletions: {e}")))?,
            None => Default::default(),
        },
    };
    let runtime = author_runtime()?;
    let mut plugin = runtime
        .load(&opts.wasm, manifest, backends.clone())
        .await
        .map_err(|e| InvokeError(e.to_string()))?;
    plugin.record_calls(true);

    let io = |e: std::io::Error| InvokeError(format!("cannot write the report: {e}"));
    if !opts.json {
        writeln!(
            out,
            "plugin {} ({}, sha256 {}…), {} event(s)",
            plugin.name(),
            opts.wasm.display(),
            &plugin.content_hash()[..12],
            events.len()
        )
        .map_err(io)?;
        for d in &swept.deleted {
            writeln!(
                out,
                "carried out a scheduled deletion that was due: {} (due {}, by {})",
                d.key,
                rfc3339(d.due_ms),
                d.plugin
            )
            .map_err(io)?;
        }
    }
    let mut summary = Summary::default();
    for (i, (line, event)) in events.iter().enumerate() {
        let report = plugin.handle(event).await;
        summary.events += 1;
        summary.published += report.published.len();
        *summary
            .outcomes
            .entry(report.outcome.label().to_string())
            .or_default() += 1;
        if report.outcome.is_handled() {
            summary.handled += 1;
        } else {
            summary.failed += 1;
        }
        if opts.json {
            let value = serde_json::json!({
                "event": i + 1,
                "line": line,
                "event_coordinates": event.coordinates().to_string(),
                "key": event.key.as_deref().map(String::from_utf8_lossy),
                "report": report,
            });
            writeln!(out, "{value}").map_err(io)?;
        } else {
            print_report(out, i + 1, event, &report).map_err(io)?;
        }
    }

    let pending = backends
        .deletions
        .list()
        .await
        .map_err(|e| InvokeError(format!("cannot read scheduled deletions: {e}")))?;
    if opts.json {
        let value = serde_json::json!({
            "summary": summary,
            "scheduled_deletions": pending,
            "deletions_carried_out": swept.deleted,
        });
        writeln!(out, "{value}").map_err(io)?;
    } else {
        let failures: Vec<String> = summary
            .outcomes
            .iter()
            .filter(|(k, _)| k.as_str() != "handled")
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        writeln!(
            out,
            "\n{} event(s): {} handled, {} failed{}; {} message(s) published",
            summary.events,
            summary.handled,
            summary.failed,
            if failures.is_empty() {
                String::new()
            } else {
                format!(" ({})", failures.join(", "))
            },
            summary.published
        )
        .map_err(io)?;
        if !pending.is_empty() {
            writeln!(out, "scheduled deletions now pending:").map_err(io)?;
            for d in &pending {
                writeln!(
                    out,
                    "  {}  due {}  (by {})",
                    d.key,
                    rfc3339(d.due_ms),
                    d.plugin
                )
                .map_err(io)?;
            }
        }
    }
    Ok(summary)
}

/// The runtime of `weir invoke` and `weir test`: compiled components are kept in
/// `$XDG_CACHE_HOME/weir/compiled` (or `~/.cache/weir/compiled`), so running a
/// plugin again (a Python one is 18 MB of CPython) does not compile it again.
/// Without a usable cache directory it compiles every time. It keeps the 24
/// newest components.
pub(crate) fn author_runtime() -> Result<Runtime, InvokeError> {
    let cache_dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .map(|c| c.join("weir").join("compiled"));
    if let Some(dir) = cache_dir {
        match Runtime::with_compile_cache(dir.clone()) {
            Ok(runtime) => {
                // An author rebuilds often: the cache keeps the newest components only.
                runtime.prune_compile_cache(24);
                return Ok(runtime);
            }
            Err(e) => tracing::debug!("no compile cache in {}: {e}", dir.display()),
        }
    }
    Runtime::new().map_err(|e| InvokeError(format!("cannot start the runtime: {e}")))
}

pub(crate) fn tempdir() -> Result<TempDir, InvokeError> {
    let path = std::env::temp_dir().join(format!(
        "weir-invoke-{}-{}",
        std::process::id(),
        crate::capabilities::storage::now_ms()
    ));
    std::fs::create_dir_all(&path)
        .map_err(|e| InvokeError(format!("cannot create {}: {e}", path.display())))?;
    Ok(TempDir(path))
}

/// A directory removed when dropped.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn print_report(
    out: &mut dyn Write,
    n: usize,
    event: &EventRecord,
    report: &Report,
) -> std::io::Result<()> {
    let key = event
        .key
        .as_deref()
        .map(|k| format!("  key={}", String::from_utf8_lossy(k)))
        .unwrap_or_default();
    let ms = report.duration_us as f64 / 1000.0;
    let verdict = match &report.outcome {
        Outcome::Handled => "handled".to_string(),
        other => format!(
            "{}: {}",
            other.label().to_uppercase(),
            other.reason().unwrap_or("")
        ),
    };
    writeln!(
        out,
        "\nevent {n}  {}{key}  {verdict}  ({ms:.2} ms)",
        event.coordinates()
    )?;
    for call in &report.calls {
        writeln!(out, "    {call}")?;
    }
    for line in &report.output {
        writeln!(out, "    {line}")?;
    }
    for msg in &report.published {
        print_message(out, msg)?;
    }
    Ok(())
}

fn print_message(out: &mut dyn Write, msg: &OutgoingMessage) -> std::io::Result<()> {
    let key = msg
        .key_text()
        .map(|k| format!(" key={k}"))
        .unwrap_or_default();
    writeln!(out, "    published -> {}{key}", msg.topic)?;
    for (k, v) in &msg.headers {
        writeln!(out, "        {k}: {}", String::from_utf8_lossy(v))?;
    }
    writeln!(out, "        {}", String::from_utf8_lossy(&msg.payload))
}

/// Parse an events file (JSON Lines, format above; `None` or `-` is stdin) into
/// records with their line numbers. `topics` are the logical topics accepted (the
/// first is the default); `namer` gives their full names. Every line is parsed
/// before any event runs, so a bad line stops everything.
pub fn read_events(
    path: Option<&Path>,
    topics: &[String],
    namer: &TopicNamer,
) -> Result<Vec<(usize, EventRecord)>, InvokeError> {
    Ok(read_event_inputs(path, topics, namer)?
        .into_iter()
        .map(|e| (e.line, e.record))
        .collect())
}

/// As [`read_events`], keeping each event's `expect` object.
pub fn read_event_inputs(
    path: Option<&Path>,
    topics: &[String],
    namer: &TopicNamer,
) -> Result<Vec<EventInput>, InvokeError> {
    let (name, reader): (String, Box<dyn BufRead>) = match path {
        None => ("<stdin>".into(), Box::new(std::io::stdin().lock())),
        Some(p) if p.as_os_str() == "-" => ("<stdin>".into(), Box::new(std::io::stdin().lock())),
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| {
                InvokeError(format!("cannot read events file {}: {e}", p.display()))
            })?;
            (
                p.display().to_string(),
                Box::new(std::io::BufReader::new(f)),
            )
        }
    };
    parse_event_inputs(&name, reader, topics, namer)
}

/// The events of an events file read from `reader` (`name` in messages).
pub fn parse_event_inputs(
    name: &str,
    reader: impl BufRead,
    topics: &[String],
    namer: &TopicNamer,
) -> Result<Vec<EventInput>, InvokeError> {
    let mut events = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let lineno = i + 1;
        let bad = |why: String| InvokeError(format!("{name}:{lineno}: {why}"));
        let line = line.map_err(|e| bad(format!("cannot read: {e}")))?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let parsed: EventLine =
            serde_json::from_str(trimmed).map_err(|e| bad(format!("invalid event: {e}")))?;
        let payload = match (parsed.payload, parsed.payload_text, parsed.payload_base64) {
            (Some(v), None, None) => serde_json::to_vec(&v).expect("a JSON value serializes"),
            (None, Some(t), None) => t.into_bytes(),
            (None, None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| bad(format!("payload_base64 is not base64: {e}")))?,
            (None, None, None) => {
                return Err(bad(
                    "the event has no payload: set `payload` (JSON), `payload_text` or `payload_base64`"
                        .into(),
                ))
            }
            _ => {
                return Err(bad(
                    "set only one of `payload`, `payload_text`, `payload_base64`".into(),
                ))
            }
        };
        let logical = match parsed.topic.or_else(|| topics.first().cloned()) {
            Some(t) => t,
            None => {
                return Err(bad(
                    "the event names no topic and the plugin consumes none".into()
                ))
            }
        };
        if !topics.contains(&logical) {
            return Err(bad(format!(
                "topic {logical:?} is not one the plugin consumes ({})",
                topics.join(", ")
            )));
        }
        events.push(EventInput {
            line: lineno,
            expect: parsed.expect,
            record: EventRecord {
                topic: namer.full_name(&logical).into(),
                logical_topic: logical.into(),
                partition: parsed.partition.unwrap_or(0),
                offset: parsed.offset.unwrap_or(events.len() as i64),
                timestamp_ms: parsed
                    .timestamp_ms
                    .or_else(|| Some(crate::capabilities::storage::now_ms())),
                key: parsed.key.map(String::into_bytes),
                payload,
                headers: parsed
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, v.into_bytes()))
                    .collect(),
            },
        });
    }
    Ok(events)
}
