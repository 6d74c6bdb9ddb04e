//! `[dlq]`, `[shutdown]`, `[breaker]`, `[telemetry]`: how the host behaves around the plugins.

use super::*;

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP. Off by default.
/// The standard variables apply too: `OTEL_EXPORTER_OTLP_ENDPOINT` (when
/// `endpoint` is not set), `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub enabled: bool,
    /// The collector's OTLP/HTTP base URL (`http://otel-collector:4318`); spans go
    /// to `{endpoint}/v1/traces`.
    pub endpoint: Option<String>,
    /// `service.name` of the spans (`OTEL_SERVICE_NAME` wins).
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            enabled: false,
            endpoint: None,
            service_name: "weir".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Dead-letter topic template: `{topic}` is the full name of the failed event's
    /// topic, `{plugin}` the plugin, plus the `[topics]` variables. Seed 003's shared
    /// topic: `template = "{prefix}-dlq-events"`.
    pub template: String,
    /// The compacted topic (named like the plugins' topics) that marks dead
    /// letters already replayed, so a second replay does not send them again.
    pub replayed_topic: String,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            template: "{topic}.dlq".into(),
            replayed_topic: "weir-dlq-replayed".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight events may take to finish on SIGTERM / Ctrl-C (or on a
    /// partition revoke) before the host stops waiting for them.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// `[breaker]`: a circuit breaker in front of each capability backend (the
/// cache, the object store). After `failures` failed calls in a row the backend
/// is left alone for `open_for`: calls fail at once as `unavailable` (events are
/// retried, never lost). Then up to `probes` calls go through: one success
/// closes the breaker, a failure opens it again.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker; `0`: no breaker.
    pub failures: u32,
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Calls let through at a time while half-open.
    pub probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            open_for: Duration::from_secs(10),
            probes: 1,
        }
    }
}
