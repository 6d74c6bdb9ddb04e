//! Expectations of `weir test`: what an event's `expect` object says the plugin
//! must do, compared with what it did (the call recording of `weir invoke`).
//!
//! ```json
//! "expect": {
//!   "outcome": "handled",                        // or retry, reject, trap, timeout...
//!   "reason": "not valid JSON",                  // a part of the failure's reason
//!   "cache": {"set": ["seen:u1"], "deleted": ["presigned:u1:t1"]},
//!   "storage": ["schedule-deletion audio/u1/t1.mp3 -> due 2026-12-20T10:00:00.000Z"],
//!   "publish": [{"topic": "jobs", "key": "u1", "json": {"trackId": "t1"}}]
//! }
//! ```
//!
//! Every field but `outcome` is optional, and an absent one is not checked. `cache`
//! lists the keys the event set and deleted (a `delete-prefix` as `prefix*`), in
//! call order. `storage` lists the storage calls as `op key`, optionally with
//! ` -> result` as `weir invoke` prints it. `publish` lists the messages in order;
//! `json` needs only the fields it names (recursively), `payload` is the exact text,
//! `headers` the named headers.

use crate::runtime::{Outcome, Report};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One event's expectations.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default = "handled")]
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<CacheExpect>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<Vec<PublishExpect>>,
}

fn handled() -> String {
    "handled".into()
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheExpect {
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub deleted: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PublishExpect {
    pub topic: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

/// The outcome names an expectation may use, and the host's labels they match.
const OUTCOMES: &[(&str, &[&str])] = &[
    ("handled", &["handled"]),
    ("retry", &["retry"]),
    ("reject", &["reject", "rejected"]),
    ("trap", &["trap", "trapped"]),
    ("timeout", &["timeout", "timed out"]),
    ("out-of-memory", &["out-of-memory", "out of memory"]),
    ("unavailable", &["unavailable"]),
];

/// The expectation name of an outcome.
pub fn outcome_name(outcome: &Outcome) -> &'static str {
    let label = outcome.label();
    OUTCOMES
        .iter()
        .find(|(_, labels)| labels.contains(&label))
        .map_or(label, |(name, _)| name)
}

/// Why an `expect` value is not an expectation.
#[derive(Debug, thiserror::Error)]
pub enum ExpectError {
    #[error("`expect` is not understood: {0} (fields: outcome, reason, cache, storage, publish)")]
    NotUnderstood(serde_json::Error),
    #[error("`expect.outcome` {0:?} is not an outcome: use one of {names}", names = OUTCOMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "))]
    Outcome(String),
}

impl Expect {
    /// Parse the `expect` value of an event line; the error names the problem.
    pub fn parse(value: &Value) -> Result<Expect, ExpectError> {
        let expect: Expect =
            serde_json::from_value(value.clone()).map_err(ExpectError::NotUnderstood)?;
        if !OUTCOMES
            .iter()
            .any(|(_, names)| names.contains(&expect.outcome.as_str()))
        {
            return Err(ExpectError::Outcome(expect.outcome));
        }
        Ok(expect)
    }

    /// The expectations that describe what happened: `weir test --update` writes them.
    /// A failed event keeps only its outcome (its reason's text is the plugin's).
    pub fn observed(report: &Report) -> Expect {
        let outcome = outcome_name(&report.outcome).to_string();
        if !report.outcome.is_handled() {
            return Expect {
                outcome,
                ..Default::default()
            };
        }
        Expect {
            outcome,
            reason: None,
            cache: Some(observed_cache(report)),
            storage: Some(observed_storage(report)),
            publish: Some(
                report
                    .published
                    .iter()
                    .map(|m| PublishExpect {
                        topic: m.topic.clone(),
                        key: m.key_text(),
                        json: serde_json::from_slice(&m.payload).ok(),
                        payload: match serde_json::from_slice::<Value>(&m.payload) {
                            Ok(_) => None,
                            Err(_) => Some(String::from_utf8_lossy(&m.payload).into_owned()),
                        },
                        headers: (!m.headers.is_empty()).then(|| {
                            m.headers
                                .iter()
                                .map(|(k, v)| (k.clone(), String::from_utf8_lossy(v).into_owned()))
                                .collect()
                        }),
                    })
                    .collect(),
            ),
        }
    }

    /// Every way `report` differs from the expectations, each naming its field:
    /// empty when the event passes.
    pub fn check(&self, report: &Report) -> Vec<Mismatch> {
        let mut out = Vec::new();
        let got = outcome_name(&report.outcome);
        let wanted = OUTCOMES
            .iter()
            .find(|(_, names)| names.contains(&self.outcome.as_str()))
            .map_or(self.outcome.as_str(), |(n, _)| n);
        if got != wanted {
            out.push(Mismatch::new(
                "outcome",
                json!(wanted),
                match report.outcome.reason() {
                    Some(r) => json!(format!("{got}: {r}")),
                    None => json!(got),
                },
            ));
        }
        if let Some(part) = &self.reason {
            let reason = report.outcome.reason().unwrap_or("");
            if !reason.contains(part.as_str()) {
                out.push(Mismatch::new(
                    "reason",
                    json!(format!("… {part} …")),
                    json!(reason),
                ));
            }
        }
        if let Some(cache) = &self.cache {
            let seen = observed_cache(report);
            if cache.set != seen.set {
                out.push(Mismatch::new(
                    "cache.set",
                    json!(cache.set),
                    json!(seen.set),
                ));
            }
            if cache.deleted != seen.deleted {
                out.push(Mismatch::new(
                    "cache.deleted",
                    json!(cache.deleted),
                    json!(seen.deleted),
                ));
            }
        }
        if let Some(storage) = &self.storage {
            let seen = observed_storage(report);
            let len = storage.len().max(seen.len());
            for i in 0..len {
                match (storage.get(i), seen.get(i)) {
                    (Some(want), Some(got)) if storage_call_matches(want, got) => {}
                    (want, got) => out.push(Mismatch::new(
                        &format!("storage[{i}]"),
                        want.map_or(Value::Null, |w| json!(w)),
                        got.map_or(Value::Null, |g| json!(g)),
                    )),
                }
            }
        }
        if let Some(publish) = &self.publish {
            let seen = &report.published;
            if publish.len() != seen.len() {
                out.push(Mismatch::new(
                    "publish",
                    json!(format!("{} message(s)", publish.len())),
                    json!(format!(
                        "{} message(s){}",
                        seen.len(),
                        if seen.is_empty() {
                            String::new()
                        } else {
                            format!(
                                " to {}",
                                seen.iter()
                                    .map(|m| m.topic.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }
                    )),
                ));
            }
            for (i, (want, got)) in publish.iter().zip(seen).enumerate() {
                let at = |field: &str| format!("publish[{i}].{field}");
                if want.topic != got.topic {
                    out.push(Mismatch::new(
                        &at("topic"),
                        json!(want.topic),
                        json!(got.topic),
                    ));
                }
                if want.key.is_some() && want.key != got.key_text() {
                    out.push(Mismatch::new(
                        &at("key"),
                        json!(want.key),
                        json!(got.key_text()),
                    ));
                }
                if let Some(text) = &want.payload {
                    let got_text = String::from_utf8_lossy(&got.payload);
                    if *text != got_text {
                        out.push(Mismatch::new(&at("payload"), json!(text), json!(got_text)));
                    }
                }
                if let Some(want_json) = &want.json {
                    match serde_json::from_slice::<Value>(&got.payload) {
                        Ok(got_json) => json_subset(&at("json"), want_json, &got_json, &mut out),
                        Err(e) => out.push(Mismatch::new(
                            &at("json"),
                            want_json.clone(),
                            json!(format!(
                                "a payload that is not JSON ({e}): {}",
                                String::from_utf8_lossy(&got.payload)
                            )),
                        )),
                    }
                }
                for (name, value) in want.headers.iter().flatten() {
                    let got_value = got
                        .headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| String::from_utf8_lossy(v).into_owned());
                    if got_value.as_deref() != Some(value.as_str()) {
                        out.push(Mismatch::new(
                            &at(&format!("headers.{name}")),
                            json!(value),
                            json!(got_value),
                        ));
                    }
                }
            }
        }
        out
    }
}

/// One difference: the field (`publish[0].json.firstTime`), what was expected and what came.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    pub field: String,
    pub expected: Value,
    pub got: Value,
}

impl Mismatch {
    fn new(field: &str, expected: Value, got: Value) -> Mismatch {
        Mismatch {
            field: field.to_string(),
            expected,
            got,
        }
    }
}

/// A failed capability call's recorded result starts with the error kind in capitals.
fn failed(result: &str) -> bool {
    ["DENIED:", "INVALID:", "UNAVAILABLE:"]
        .iter()
        .any(|p| result.starts_with(p))
}

fn observed_cache(report: &Report) -> CacheExpect {
    let mut seen = CacheExpect::default();
    for call in report.calls.iter().filter(|c| c.capability == "cache") {
        if failed(&call.result) {
            continue;
        }
        match call.op {
            "set" => seen.set.push(call.target.clone()),
            "delete" => seen.deleted.push(call.target.clone()),
            "delete-prefix" => seen.deleted.push(format!("{}*", call.target)),
            _ => {}
        }
    }
    seen
}

fn observed_storage(report: &Report) -> Vec<String> {
    report
        .calls
        .iter()
        .filter(|c| c.capability == "storage")
        .map(|c| format!("{} {} -> {}", c.op, c.target, c.result))
        .collect()
}

/// `op key` matches any result; `op key -> result` must match whole.
fn storage_call_matches(want: &str, got: &str) -> bool {
    if want.contains(" -> ") {
        want == got
    } else {
        got.split(" -> ").next() == Some(want)
    }
}

/// Every field `want` names must be in `got` with an equal value (objects
/// recursively; arrays and scalars exactly).
fn json_subset(at: &str, want: &Value, got: &Value, out: &mut Vec<Mismatch>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let path = format!("{at}.{k}");
                match g.get(k) {
                    Some(gv) => json_subset(&path, wv, gv, out),
                    None => out.push(Mismatch::new(&path, wv.clone(), json!("(absent)"))),
                }
            }
        }
        _ if want == got => {}
        _ => out.push(Mismatch::new(at, want.clone(), got.clone())),
    }
}

/// The expectations as the JSON object an events line carries (`--update`).
pub fn to_value(expect: &Expect) -> Value {
    serde_json::to_value(expect).unwrap_or_else(|_| Value::Object(Map::new()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{CallRecord, OutgoingMessage};

    fn report(outcome: Outcome, calls: Vec<CallRecord>, published: Vec<OutgoingMessage>) -> Report {
        Report {
            outcome,
            published,
            schedule: vec![],
            calls,
            call_times: vec![],
            output: vec![],
            duration_us: 0,
        }
    }

    fn call(capability: &'static str, op: &'static str, target: &str, result: &str) -> CallRecord {
        CallRecord {
            capability,
            op,
            target: target.into(),
            result: result.into(),
        }
    }

    fn message(topic: &str, key: &str, payload: &str) -> OutgoingMessage {
        OutgoingMessage {
            topic: topic.into(),
            key: Some(key.as_bytes().to_vec()),
            payload: payload.as_bytes().to_vec(),
            headers: vec![],
        }
    }

    #[test]
    fn what_was_observed_passes_its_own_check() {
        let r = report(
            Outcome::Handled,
            vec![
                call("cache", "get", "k", "miss"),
                call("cache", "set", "k", "stored (1 bytes)"),
                call("cache", "delete", "old", "absent"),
                call("cache", "set", "denied", "DENIED: no"),
                call("storage", "schedule-deletion", "audio/a", "due after 1day"),
            ],
            vec![message("out", "u1", r#"{"a":1,"b":{"c":2}}"#)],
        );
        let observed = Expect::observed(&r);
        assert_eq!(observed.cache.as_ref().unwrap().set, vec!["k"]);
        assert_eq!(observed.cache.as_ref().unwrap().deleted, vec!["old"]);
        assert!(observed.check(&r).is_empty());
        let reparsed = Expect::parse(&to_value(&observed)).unwrap();
        assert_eq!(reparsed, observed);
    }

    #[test]
    fn a_difference_names_its_field() {
        let r = report(
            Outcome::Handled,
            vec![call("storage", "put", "a/b", "stored (3 bytes)")],
            vec![message("out", "u1", r#"{"a":1,"b":{"c":2}}"#)],
        );
        let expect = Expect::parse(&json!({
            "outcome": "handled",
            "storage": ["put a/b", "delete a/c"],
            "publish": [{"topic": "out", "key": "u2", "json": {"b": {"c": 3}, "d": true}}]
        }))
        .unwrap();
        let fields: Vec<String> = expect.check(&r).into_iter().map(|m| m.field).collect();
        assert_eq!(
            fields,
            vec![
                "storage[1]",
                "publish[0].key",
                "publish[0].json.b.c",
                "publish[0].json.d"
            ]
        );
    }

    #[test]
    fn outcomes_have_short_names_and_the_hosts_labels() {
        let r = report(
            Outcome::Reject("payload is not valid JSON".into()),
            vec![],
            vec![],
        );
        for name in ["reject", "rejected"] {
            let e = Expect::parse(&json!({"outcome": name, "reason": "not valid"})).unwrap();
            assert!(e.check(&r).is_empty(), "{name}");
        }
        let e = Expect::parse(&json!({"outcome": "handled"})).unwrap();
        let m = e.check(&r);
        assert_eq!(m[0].field, "outcome");
        assert_eq!(m[0].got, json!("reject: payload is not valid JSON"));
        let bad = Expect::parse(&json!({"outcome": "fine"}))
            .unwrap_err()
            .to_string();
        assert!(bad.contains("handled, retry, reject"), "{bad}");
        let unknown = Expect::parse(&json!({"outcom": "handled"}))
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("outcom"), "{unknown}");
    }
}
