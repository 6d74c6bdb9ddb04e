//! OpenTelemetry traces (`[telemetry]`, off by default): one span per attempt at
//! an event (`{plugin} process`, kind consumer: plugin, topic, partition, offset,
//! key, attempt, outcome), a child span per capability call it made
//! (`cache.delete`, `publish.send`...), the parent taken from the record's W3C
//! `traceparent`/`tracestate` headers, and the event's span put into the
//! `traceparent` of what it published, so the next consumer continues the trace.
//! Exported over OTLP/HTTP (protobuf) by a batch processor on its own thread.
//!
//! The spans are made when the attempt is settled, from the call recording the
//! runtime keeps (each call's start and end): nothing is traced inside the wasm
//! call, and with telemetry off nothing is recorded at all.

use crate::config::TelemetryConfig;
use crate::event::EventRecord;
use crate::runtime::{Outcome, Report};
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Span, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The OTLP exporter could not be built from `[telemetry]`.
#[derive(Debug, thiserror::Error)]
#[error("telemetry: cannot build the OTLP exporter: {0}")]
pub struct TelemetryError(String);

/// A handle on the tracer; `Tracing::off()` when telemetry is disabled (then every
/// method is a no-op and the runtime records nothing for it).
#[derive(Clone, Default)]
pub struct Tracing(Option<Arc<Inner>>);

struct Inner {
    provider: SdkTracerProvider,
    tracer: opentelemetry_sdk::trace::SdkTracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    pub fn off() -> Tracing {
        Tracing(None)
    }

    /// The tracer `[telemetry]` (and the standard `OTEL_*` variables) configure.
    pub fn start(config: &TelemetryConfig) -> Result<Tracing, TelemetryError> {
        if !config.enabled {
            return Ok(Tracing::off());
        }
        let mut exporter = opentelemetry_otlp::SpanExporter::builder().with_http();
        if let Some(endpoint) = &config.endpoint {
            // The base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: traces go to /v1/traces.
            exporter =
                exporter.with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')));
        }
        let exporter = exporter
            .with_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| TelemetryError(e.to_string()))?;
        let service = std::env::var("OTEL_SERVICE_NAME")
            .ok()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| config.service_name.clone());
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service)
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .with_attribute(KeyValue::new("host.name", crate::config::hostname()))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("weir");
        tracing::info!(
            endpoint = config
                .endpoint
                .as_deref()
                .unwrap_or("(OTEL_EXPORTER_OTLP_ENDPOINT or http://localhost:4318)"),
            "exporting traces over OTLP/HTTP"
        );
        Ok(Tracing(Some(Arc::new(Inner {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        }))))
    }

    pub fn enabled(&self) -> bool {
        self.0.is_some()
    }

    /// The span of one attempt at `event` (ended now) and its capability calls'
    /// spans; returns the `traceparent` its outputs carry.
    pub fn attempt(
        &self,
        plugin: &str,
        event: &EventRecord,
        report: &Report,
        attempt: u32,
    ) -> Option<String> {
        let inner = self.0.as_ref()?;
        let parent = inner.propagator.extract(&Headers(event));
        let end = SystemTime::now();
        let mut start = end - Duration::from_micros(report.duration_us);
        if let Some(first) = report.call_times.iter().map(|(s, _)| *s).min() {
            start = start.min(first);
        }
        let mut attributes = vec![
            KeyValue::new("messaging.system", "kafka"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("messaging.destination.name", event.topic.to_string()),
            KeyValue::new(
                "messaging.destination.partition.id",
                event.partition.to_string(),
            ),
            KeyValue::new("messaging.kafka.offset", event.offset),
            KeyValue::new("weir.plugin", plugin.to_string()),
            KeyValue::new("weir.attempt", i64::from(attempt)),
            KeyValue::new("weir.outcome", report.outcome.label()),
        ];
        if let Some(key) = event.key.as_deref() {
            attributes.push(KeyValue::new(
                "messaging.kafka.message.key",
                String::from_utf8_lossy(key).into_owned(),
            ));
        }
        let mut span = inner
            .tracer
            .span_builder(format!("{plugin} process"))
            .with_kind(SpanKind::Consumer)
            .with_start_time(start)
            .with_attributes(attributes)
            .start_with_context(&inner.tracer, &parent);
        if let Some(reason) = report.outcome.reason() {
            span.set_status(Status::error(reason.to_string()));
        }
        let context = span.span_context().clone();
        let cx = Context::new().with_remote_span_context(context.clone());
        for (call, (started, ended)) in report.calls.iter().zip(&report.call_times) {
            let mut child = inner
                .tracer
                .span_builder(format!("{}.{}", call.capability, call.op))
                .with_kind(SpanKind::Client)
                .with_start_time(*started)
                .with_attributes([
                    KeyValue::new("weir.capability", call.capability),
                    KeyValue::new("weir.target", call.target.clone()),
                    KeyValue::new("weir.result", call.result.clone()),
                ])
                .start_with_context(&inner.tracer, &cx);
            if ["DENIED:", "INVALID:", "UNAVAILABLE:"]
                .iter()
                .any(|p| call.result.starts_with(p))
            {
                child.set_status(Status::error(call.result.clone()));
            }
            child.end_with_timestamp(*ended);
        }
        span.end_with_timestamp(end);
        matches!(report.outcome, Outcome::Handled).then(|| traceparent(&context))
    }

    /// Send what is buffered (on shutdown).
    pub fn shutdown(&self) {
        if let Some(inner) = &self.0 {
            if let Err(e) = inner.provider.shutdown() {
                tracing::warn!(error = %e, "telemetry: the last spans could not be exported");
            }
        }
    }
}

/// W3C `traceparent` of a span.
pub fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

/// The record's headers, for the propagator.
struct Headers<'a>(&'a EventRecord);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.header(key).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.headers.iter().map(|(k, _)| k.as_str()).collect()
    }
}
