//! `weir test [DIR]`: the project's plugin over its events file, each event
//! checked against its `expect` object (see [`super::expect`]). No broker: the
//! capabilities are the in-memory cache and a temporary storage directory, as
//! under `weir invoke`; the cache and storage carry over from one event to the next.

use super::expect::{to_value, Expect, Mismatch};
use super::{AuthoringError, Project};
use crate::capabilities::Backends;
use crate::invoke::{author_runtime, read_event_inputs, tempdir};
use crate::topics::TopicNamer;
use std::io::Write;
use std::path::PathBuf;

/// What `weir test` was asked to do.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Default: the project's `events.jsonl`.
    pub events: Option<PathBuf>,
    /// Write what each event did as its new `expect`.
    pub update: bool,
    /// Topic prefix shown to the plugin.
    pub prefix: String,
}

/// The tally `weir test` ends with.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TestSummary {
    pub passed: usize,
    pub failed: usize,
    /// Events without an `expect` object: run, not checked.
    pub unchecked: usize,
    /// Mean time in the plugin per event, in microseconds.
    pub mean_us: u64,
}

/// Run the project's plugin over its events. `Ok` once every event ran (some may
/// have failed their expectations); `Err` when the inputs are unusable.
pub async fn run(
    project: &Project,
    opts: &TestOptions,
    out: &mut dyn Write,
) -> Result<TestSummary, AuthoringError> {
    let wasm = project.wasm_path();
    let wasm_modified = std::fs::metadata(&wasm)
        .and_then(|m| m.modified())
        .map_err(|_| {
            AuthoringError(format!(
                "{} is not built yet: run `weir build {}` first",
                wasm.display(),
                project.dir.display()
            ))
        })?;
    let events_path = opts.events.clone().unwrap_or_else(|| project.events_path());
    let events = read_event_inputs(
        Some(&events_path),
        &project.manifest.topics,
        &TopicNamer::prefixed(&opts.prefix),
    )
    .map_err(|e| AuthoringError(e.0))?;
    // Parse every expectation before anything runs.
    let mut expects = Vec::with_capacity(events.len());
    for e in &events {
        expects.push(match &e.expect {
            None => None,
            Some(v) => Some(Expect::parse(v).map_err(|why| {
                AuthoringError(format!("{}:{}: {why}", events_path.display(), e.line))
            })?),
        });
    }

    let io = |e: std::io::Error| AuthoringError(format!("cannot write the report: {e}"));
    if project
        .sources_modified()
        .is_some_and(|sources| sources > wasm_modified)
    {
        writeln!(
            out,
            "warning: {} is older than the project's sources: `weir build` to test the current code",
            wasm.display()
        )
        .map_err(io)?;
    }

    let storage = tempdir().map_err(|e| AuthoringError(e.0))?;
    let backends = Backends::local(storage.path()).map_err(|e| AuthoringError(e.to_string()))?;
    let runtime = author_runtime().map_err(|e| AuthoringError(e.0))?;
    let mut plugin = runtime
        .load(&wasm, project.manifest.clone(), backends)
        .await
        .map_err(|e| AuthoringError(e.to_string()))?;
    plugin.record_calls(true);
    writeln!(
        out,
        "{} ({}, sha256 {}…): {} event(s) from {}",
        project.name(),
        project.lang_name(),
        &plugin.content_hash()[..12],
        events.len(),
        events_path.display()
    )
    .map_err(io)?;

    let mut summary = TestSummary::default();
    let mut observed = Vec::with_capacity(events.len());
    let mut total_us = 0;
    for (i, (event, expect)) in events.iter().zip(&expects).enumerate() {
        let report = plugin.handle(&event.record).await;
        total_us += report.duration_us;
        let label = super::expect::outcome_name(&report.outcome);
        let took = format!("{:.2} ms", report.duration_us as f64 / 1000.0);
        let head = |mark: &str| {
            format!(
                "  {mark:<5} event {:<3} line {:<4} {label:<8} {took}",
                i + 1,
                event.line
            )
        };
        match expect {
            None => {
                summary.unchecked += 1;
                writeln!(out, "{}  (no expectations)", head("-")).map_err(io)?;
            }
            Some(expect) => {
                let mismatches = expect.check(&report);
                if mismatches.is_empty() {
                    summary.passed += 1;
                    writeln!(out, "{}", head("ok")).map_err(io)?;
                } else {
                    summary.failed += 1;
                    writeln!(out, "{}", head("FAIL")).map_err(io)?;
                    print_mismatches(out, &mismatches).map_err(io)?;
                    if !report.calls.is_empty() {
                        writeln!(out, "          what the plugin did:").map_err(io)?;
                        for call in &report.calls {
                            writeln!(out, "            {call}").map_err(io)?;
                        }
                    }
                }
            }
        }
        for line in &report.output {
            writeln!(out, "          {line}").map_err(io)?;
        }
        observed.push(Expect::observed(&report));
    }
    summary.mean_us = total_us / events.len().max(1) as u64;

    writeln!(
        out,
        "\n{} passed, {} failed, {} without expectations; {:.2} ms per event in the plugin",
        summary.passed,
        summary.failed,
        summary.unchecked,
        summary.mean_us as f64 / 1000.0
    )
    .map_err(io)?;
    if opts.update {
        let lines: Vec<usize> = events.iter().map(|e| e.line).collect();
        update_file(&events_path, &lines, &observed)?;
        writeln!(
            out,
            "updated the expectations of {} event(s) in {}",
            observed.len(),
            events_path.display()
        )
        .map_err(io)?;
    }
    Ok(summary)
}

fn print_mismatches(out: &mut dyn Write, mismatches: &[Mismatch]) -> std::io::Result<()> {
    for m in mismatches {
        writeln!(out, "          {}:", m.field)?;
        writeln!(out, "            expected {}", m.expected)?;
        writeln!(out, "            got      {}", m.got)?;
    }
    Ok(())
}

/// Rewrite the events file with each event's `expect` replaced by what it did;
/// comments, blank lines and the other fields (in their order) stay.
fn update_file(path: &PathBuf, lines: &[usize], observed: &[Expect]) -> Result<(), AuthoringError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthoringError::io("read", path, e))?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut next = lines.iter().zip(observed).peekable();
    for (i, line) in text.lines().enumerate() {
        match next.peek() {
            Some((&at, expect)) if at == i + 1 => {
                let mut object: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(line.trim())
                        .map_err(|e| AuthoringError(format!("{}:{at}: {e}", path.display())))?;
                object.insert("expect".into(), to_value(expect));
                out.push_str(&one_line(&object));
                next.next();
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    let tmp = path.with_extension("jsonl.tmp");
    std::fs::write(&tmp, out).map_err(|e| AuthoringError::io("write", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| AuthoringError::io("replace", path, e))
}

/// JSON on one line, spaced as people write it: `{"key": "u1", "payload": {...}}`.
fn one_line(value: &impl serde::Serialize) -> String {
    struct Spaced;
    fn separator<W: ?Sized + Write>(w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    impl serde_json::ser::Formatter for Spaced {
        fn begin_array_value<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            separator(w, first)
        }
        fn begin_object_key<W: ?Sized + Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            separator(w, first)
        }
        fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> std::io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Spaced);
    value.serialize(&mut ser).expect("JSON serializes");
    String::from_utf8(out).expect("JSON is UTF-8")
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_written_as_people_write_them() {
        let v = serde_json::json!({"key": "u1", "payload": {"a": [1, 2], "b": {}}, "expect": {"outcome": "handled"}});
        assert_eq!(
            super::one_line(&v),
            r#"{"key": "u1", "payload": {"a": [1, 2], "b": {}}, "expect": {"outcome": "handled"}}"#
        );
    }
}
