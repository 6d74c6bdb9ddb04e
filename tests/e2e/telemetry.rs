//! Traces over OTLP, received by a real OTLP/HTTP receiver started here: an event
//! carrying a W3C `traceparent` goes through two plugins (echo publishes, `other`
//! consumes what it published), and the spans link up: the caller's span → echo's
//! attempt (with its capability calls as children) → other's attempt.

use crate::kafka_support::*;
use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Spans received, with their service name.
type Received = Arc<Mutex<Vec<(String, Span)>>>;

/// An OTLP/HTTP receiver (protobuf) on a free port.
async fn receiver() -> (u16, Received) {
    let received: Received = Default::default();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref())
                        .map(|v| format!("{:?}", v.value))
                        .unwrap_or_default();
                    for scope in resource.scope_spans {
                        for span in scope.spans {
                            sink.lock().unwrap().push((service.clone(), span));
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| a.value.as_ref())
        .map(|v| format!("{:?}", v.value))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_trace_continues_through_two_plugins_and_their_capability_calls() {
    let Some(broker) = broker() else { return };
    let (otlp_port, received) = receiver().await;
    let b = &broker;
    b.create_topics(&["tr-in", "tr-out", "tr-out2"], 3).await;
    let files = HostFiles::echo(&b.bootstrap(), "tr", "");
    files.install_echo_as("other", "out", "out2");
    files.write_config(
        &b.bootstrap(),
        "tr",
        &format!(
            "[telemetry]\nenabled = true\nendpoint = \"http://127.0.0.1:{otlp_port}\"\nservice_name = \"weir-test\""
        ),
    );
    let host = InProcessHost::start(files.load());
    wait_ready(files.admin_port, "the host", String::new).await;

    // The producing service's span: trace 4bf9..., span 00f0...
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "traceparent",
            value: Some(format!("00-{trace_id}-{caller_span}-01").as_bytes()),
        })
        .insert(Header {
            key: "tracestate",
            value: Some("vendor=1".as_bytes()),
        });
    let payload = serde_json::json!({"seq": 1, "mode": "ok"}).to_string();
    b.producer()
        .send(
            FutureRecord::to("tr-in")
                .key("k1")
                .payload(&payload)
                .headers(headers),
            Duration::from_secs(30),
        )
        .await
        .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    let out2 = b.read("tr-out2", 1);
    assert_eq!(out2.len(), 1);
    // Stopping flushes the spans still buffered.
    host.stop().await;

    let deadline = Instant::now() + PATIENCE;
    let spans = loop {
        let spans = received.lock().unwrap().clone();
        let of = |name: &str| spans.iter().any(|(_, s)| s.name == name);
        if of("echo process") && of("other process") {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "the receiver never got both attempts: {:?}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let find = |name: &str| {
        spans
            .iter()
            .map(|(_, s)| s)
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no span {name}"))
            .clone()
    };
    let echo = find("echo process");
    let other = find("other process");
    assert!(spans
        .iter()
        .all(|(service, _)| service.contains("weir-test")));

    // The caller → echo's attempt.
    assert_eq!(hex(&echo.trace_id), trace_id);
    assert_eq!(hex(&echo.parent_span_id), caller_span);
    assert_eq!(echo.trace_state, "vendor=1");
    assert_eq!(
        attribute(&echo, "weir.plugin").as_deref(),
        Some("Some(StringValue(\"echo\"))")
    );
    assert_eq!(
        attribute(&echo, "messaging.destination.name").as_deref(),
        Some("Some(StringValue(\"tr-in\"))")
    );
    // echo's capability calls are its children (beside other's attempt, below).
    let children: Vec<&Span> = spans
        .iter()
        .map(|(_, s)| s)
        .filter(|s| s.parent_span_id == echo.span_id && !s.name.ends_with(" process"))
        .collect();
    assert!(
        children.iter().any(|s| s.name == "publish.send"),
        "echo's children: {:?}",
        children.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    for child in &children {
        assert_eq!(child.trace_id, echo.trace_id);
        assert!(
            child.start_time_unix_nano >= echo.start_time_unix_nano
                && child.end_time_unix_nano <= echo.end_time_unix_nano,
            "{} [{}, {}] outside echo [{}, {}]",
            child.name,
            child.start_time_unix_nano,
            child.end_time_unix_nano,
            echo.start_time_unix_nano,
            echo.end_time_unix_nano
        );
    }
    // echo's output carried its span: other's attempt continues the trace.
    assert_eq!(hex(&other.trace_id), trace_id);
    assert_eq!(other.parent_span_id, echo.span_id);
    let traceparent = out2[0]
        .headers
        .iter()
        .find(|(k, _)| k == "traceparent")
        .map(|(_, v)| v.clone())
        .expect("the output of other carries a traceparent");
    assert_eq!(
        traceparent,
        format!("00-{trace_id}-{}-01", hex(&other.span_id))
    );
    println!(
        "telemetry: {} spans received; caller {caller_span} → echo {} ({} capability spans) → other {}",
        spans.len(),
        hex(&echo.span_id),
        children.len(),
        hex(&other.span_id)
    );
}
