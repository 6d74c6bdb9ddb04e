//! Several events in one call (`handle-batch`): each outcome stands alone, what an
//! event published stays its own, a trap fails only the event it happened in, and
//! a component built for the plain `handler` world keeps working.

use crate::support::{event, wasm, TestHost};
use weir_host::event::EventRecord;
use weir_host::runtime::{Outcome, Report};

const ECHO: &str = "name = \"echo\"\ntopics = [\"in\"]\n\
    [capabilities.cache]\n[capabilities.publish]\ntopics = [\"out\"]\n";

/// Events on `in`, one key each, with these JSON bodies.
fn events(bodies: &[&str]) -> Vec<EventRecord> {
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let key = format!("k{i}");
            event("in", i as i64, Some(&key), body.as_bytes())
        })
        .collect()
}

fn outcome(report: &Option<Report>) -> Option<&str> {
    report.as_ref().map(|r| r.outcome.label())
}

#[tokio::test]
async fn each_event_of_a_batch_has_its_own_outcome_and_its_own_outputs() {
    let host = TestHost::new();
    let mut echo = host.load_with(&wasm("echo"), ECHO).await;
    assert!(echo.handles_batches(), "the SDK exports handle-batch");
    let batch = events(&[
        r#"{"seq": 0}"#,
        r#"{"seq": 1, "mode": "reject"}"#,
        r#"{"seq": 2}"#,
        "not json",
    ]);
    let refs: Vec<&EventRecord> = batch.iter().collect();
    let reports = echo.handle_batch(&refs).await;
    let outcomes: Vec<Option<&str>> = reports.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [
            Some("handled"),
            Some("rejected"),
            Some("handled"),
            Some("rejected")
        ]
    );
    for (i, report) in reports.iter().enumerate() {
        let report = report.as_ref().unwrap();
        let published: Vec<serde_json::Value> = report
            .published
            .iter()
            .map(|m| serde_json::from_slice(&m.payload).unwrap())
            .collect();
        match i {
            0 | 2 => {
                assert_eq!(published.len(), 1, "event {i}: {published:?}");
                assert_eq!(published[0]["seq"], i, "its own output");
                assert_eq!(published[0]["offset"], i);
                assert_eq!(report.published[0].key_text(), Some(format!("k{i}")));
            }
            _ => assert!(published.is_empty(), "a failed event publishes nothing"),
        }
    }
}

#[tokio::test]
async fn a_trap_in_a_batch_fails_that_event_and_the_others_are_handed_again() {
    let host = TestHost::new();
    let mut echo = host.load_with(&wasm("echo"), ECHO).await;
    let batch = events(&[
        r#"{"seq": 0}"#,
        r#"{"seq": 1, "mode": "trap"}"#,
        r#"{"seq": 2}"#,
    ]);
    let refs: Vec<&EventRecord> = batch.iter().collect();
    let reports = echo.handle_batch(&refs).await;
    let trapped = reports[1]
        .as_ref()
        .expect("the trapping event has its outcome");
    assert!(
        matches!(&trapped.outcome, Outcome::Trap(why) if why.contains("asked to trap")),
        "{:?}",
        trapped.outcome
    );
    assert!(
        reports[0].is_none() && reports[2].is_none(),
        "the others did not complete: {reports:?}"
    );
    // Handed again one at a time (as the workers do), on a fresh instance.
    for i in [0, 2] {
        assert_eq!(echo.handle(&batch[i]).await.outcome, Outcome::Handled);
    }
}

#[tokio::test]
async fn a_component_for_the_plain_handler_world_is_handled_one_event_per_call() {
    let host = TestHost::new();
    let mut plain = host
        .load_with(
            &wasm("plain"),
            "name = \"plain\"\ntopics = [\"in\"]\n[capabilities.publish]\ntopics = [\"out\"]\n",
        )
        .await;
    assert!(!plain.handles_batches());
    let mut batch = events(&["a", "reject", "c"]);
    batch[1].payload = b"reject".to_vec();
    let refs: Vec<&EventRecord> = batch.iter().collect();
    let reports = plain.handle_batch(&refs).await;
    let outcomes: Vec<Option<&str>> = reports.iter().map(outcome).collect();
    assert_eq!(
        outcomes,
        [Some("handled"), Some("rejected"), Some("handled")]
    );
    let payloads: Vec<String> = reports
        .iter()
        .flat_map(|r| &r.as_ref().unwrap().published)
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    assert_eq!(payloads, ["0", "2"]);
}
