//! The admin API of a running host: health, readiness, metrics, status, and
//! pausing and resuming a plugin under a stream of events.

use crate::kafka_support::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use weir_host::admin::client;

/// One request to the admin API: (status code, body).
async fn http(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    client::call(&format!("127.0.0.1:{port}"), method, path)
        .await
        .map_err(|e| e.to_string())
}

async fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (code, body) = http(port, "GET", path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, value)
}

/// Wait until `GET path` satisfies `ok`.
async fn wait_json(port: u16, path: &str, what: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        if let Ok((code, body)) = http(port, "GET", path).await {
            if let Ok(v) = serde_json::from_str::<Value>(&body) {
                if ok(code, &v) {
                    return v;
                }
            }
            last = format!("{code} {body}");
        }
        assert!(
            Instant::now() < deadline,
            "{path} never showed {what}; last answer: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A POST as a web page on another site sends it to the host
/// (`fetch(url, {method: "POST", mode: "no-cors", body: "x"})`, a "simple"
/// request that needs no preflight): the raw answer.
async fn page_post(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nOrigin: http://evil.example\r\n\
         Content-Type: text/plain\r\nContent-Length: 1\r\nConnection: close\r\n\r\nx"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// `weir <args> --config <the host's weir.toml>`: exit code and stdout + stderr.
async fn weir(files: &HostFiles, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(args)
        .args(["--config", files.config().to_str().unwrap()])
        .output()
        .await
        .expect("run weir");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The value of a metric line `name{labels} value` (labels given exactly).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn health_metrics_status_and_pause_resume_through_the_admin_api() {
    let Some(b) = broker() else { return };
    b.create_topics(&["adm-in", "adm-out", "adm-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "adm", "");
    let port = files.admin_port;
    let host = InProcessHost::start(files.load());

    // Live at once; ready once the plugins consume.
    wait_json(port, "/health/ready", "ready", |code, v| {
        code == 200 && v["status"] == "running"
    })
    .await;
    assert_eq!(http(port, "GET", "/health/live").await.unwrap().0, 200);
    let (code, health) = get_json(port, "/health").await;
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["status"], "Healthy", "{health}");
    assert_eq!(health["checks"]["kafka"]["status"], "Healthy");
    assert_eq!(health["checks"]["cache"]["status"], "Healthy");
    assert_eq!(health["checks"]["plugins"]["data"]["echo"], "running");

    let producer = b.producer();
    for seq in 0..30 {
        produce(
            &producer,
            "adm-in",
            &format!("k{}", seq % 5),
            json!({"seq": seq}),
        )
        .await;
    }
    b.read("adm-out", 30);
    wait_json(port, "/plugins/echo", "30 handled", |_, v| {
        v["stats"]["handled"] == 30
    })
    .await;

    // Pause (`weir pause`, through the API): nothing new is handled while events
    // keep arriving.
    assert_eq!(
        weir(&files, &["pause", "echo"]).await,
        (Some(0), "echo: paused\n".to_string())
    );
    let (_, paused) = get_json(port, "/plugins/echo").await;
    assert_eq!(paused["paused"], true);
    // A web page cannot resume it (issue 20: it could, on a tokenless loopback API).
    let answer = page_post(port, "/plugins/echo/resume").await;
    assert!(
        answer.starts_with("HTTP/1.1 403") && answer.contains("cross-origin"),
        "{answer}"
    );
    assert_eq!(get_json(port, "/plugins/echo").await.1["paused"], true);
    // The source applies the pause on its next poll and shows it per partition;
    // events produced after that are not handled until the resume.
    wait_json(port, "/plugins/echo", "every partition paused", |_, v| {
        v["partitions"]
            .as_array()
            .is_some_and(|ps| ps.len() == 3 && ps.iter().all(|p| p["paused"] == true))
    })
    .await;
    for seq in 30..50 {
        produce(
            &producer,
            "adm-in",
            &format!("k{}", seq % 5),
            json!({"seq": seq}),
        )
        .await;
    }
    // Lag shows the waiting events (librdkafka reports every statistics_interval).
    let status = wait_json(port, "/plugins/echo", "lag 20", |_, v| v["lag"] == 20).await;
    assert_eq!(status["stats"]["handled"], 30, "{status}");
    assert_eq!(status["partitions"].as_array().unwrap().len(), 3);
    let (_, metrics) = http(port, "GET", "/metrics").await.unwrap();
    assert_eq!(
        metric(&metrics, "weir_plugin_paused{plugin=\"echo\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "weir_plugin_state{plugin=\"echo\",state=\"paused\"}"
        ),
        Some(1.0)
    );
    assert_eq!(b.count("adm-out"), 30, "nothing handled while paused");

    // A pause outlives a new manifest that restarts the consumer (more workers).
    let loaded_at = status["loaded_at"].clone();
    let manifest = files.plugins().join("echo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, format!("{text}\n[consumer]\nworkers = 2\n")).unwrap();
    let status = wait_json(port, "/plugins/echo", "the new manifest", |_, v| {
        v["loaded_at"] != loaded_at && !v["partitions"].as_array().unwrap().is_empty()
    })
    .await;
    assert_eq!(status["state"], "paused", "{status}");
    // The new consumer holds its partitions and sees the 20 events waiting.
    wait_json(port, "/plugins/echo", "lag 20 after the restart", |_, v| {
        v["loaded_at"] != loaded_at && v["lag"] == 20
    })
    .await;
    assert_eq!(
        b.count("adm-out"),
        30,
        "still nothing handled after the restart"
    );

    let (code, listing) = weir(&files, &["plugins"]).await;
    assert_eq!(code, Some(0), "{listing}");
    assert!(
        listing.contains("running host (http://127.0.0.1:"),
        "{listing}"
    );
    assert!(
        listing.contains("paused") && listing.contains("lag 20"),
        "{listing}"
    );

    // Resume (the API directly): the waiting events are handled, nothing lost or doubled.
    let (code, resumed) = http(port, "POST", "/plugins/echo/resume").await.unwrap();
    assert_eq!(code, 200, "{resumed}");
    let out = b.read("adm-out", 50);
    let (seen, duplicates) = seqs(&out);
    assert_eq!((seen.len(), duplicates), (50, 0));
    let status = wait_json(port, "/plugins/echo", "50 handled, lag 0", |_, v| {
        v["stats"]["handled"] == 50 && v["lag"] == 0 && v["state"] == "running"
    })
    .await;
    assert_eq!(status["in_flight"], 0);

    let (code, metrics) = http(port, "GET", "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for (series, value) in [
        (
            "weir_events_total{plugin=\"echo\",outcome=\"handled\"}",
            50.0,
        ),
        (
            "weir_events_total{plugin=\"echo\",outcome=\"dead_lettered\"}",
            0.0,
        ),
        ("weir_published_messages_total{plugin=\"echo\"}", 50.0),
        ("weir_plugin_paused{plugin=\"echo\"}", 0.0),
        ("weir_handle_duration_seconds_count{plugin=\"echo\"}", 50.0),
        ("weir_up{phase=\"running\"}", 1.0),
    ] {
        assert_eq!(
            metric(&metrics, series),
            Some(value),
            "{series} in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("weir_consumer_lag{plugin=\"echo\",topic=\"adm-in\",partition=\""),
        "{metrics}"
    );
    every_dashboard_metric_is_exported(&metrics);

    // Unknown plugins are a clear 404, and `weir pause` says so.
    let (code, body) = http(port, "POST", "/plugins/nope/pause").await.unwrap();
    assert_eq!(code, 404);
    assert!(body.contains("no plugin named \\\"nope\\\""), "{body}");
    let (code, text) = weir(&files, &["pause", "nope"]).await;
    assert_eq!(code, Some(1));
    assert!(text.contains("error: no plugin named \"nope\""), "{text}");

    let report = host.stop().await;
    assert_eq!(report.plugins["echo"].handled, 50);
    println!("admin: 50 events, 20 held while paused (lag 20), 50 outputs, 0 duplicates");
}

/// Every metric the Grafana dashboard (`examples/grafana/weir.json`) queries is a
/// family the host declares in `/metrics`.
fn every_dashboard_metric_is_exported(metrics: &str) {
    let path = crate::support::workspace_root().join("examples/grafana/weir.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("weir_") {
                let name: String = rest[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[at + name.len()..];
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");
    for name in &queried {
        // A series name is its family's, plus a type suffix.
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "the dashboard queries {name}, which /metrics does not declare:\n{metrics}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn the_host_is_live_but_not_ready_until_it_reaches_the_broker() {
    // A broker address nobody listens on yet.
    if kafka().is_none() {
        return;
    }
    let port = weir_devkit::free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let files = HostFiles::echo(&bootstrap, "wait", "");
    let admin = files.admin_port;
    let host = InProcessHost::start(files.load());

    wait_json(admin, "/health/ready", "starting", |code, v| {
        code == 503 && v["status"] == "starting"
    })
    .await;
    assert_eq!(http(admin, "GET", "/health/live").await.unwrap().0, 200);
    let (code, health) = get_json(admin, "/health").await;
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["checks"]["kafka"]["status"], "Unhealthy", "{health}");

    let _broker = own_broker_on(port).expect("Kafka is installed");
    wait_json(admin, "/health/ready", "ready", |code, _| code == 200).await;
    host.stop().await;
    assert!(
        http(admin, "GET", "/health/live").await.is_err(),
        "the admin API stops with the host"
    );
    let (code, text) = weir(&files, &["pause", "echo"]).await;
    assert_eq!(code, Some(2), "no host to reach: {text}");
    assert!(text.contains("is the host running?"), "{text}");
}

/// A partition that stops making progress (an event retried again and again)
/// turns `/health` Degraded with the partition named, is logged and counted, and
/// recovers once the event goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn a_stalled_partition_turns_health_degraded_until_it_flows_again() {
    let Some(b) = broker() else { return };
    b.create_topics(&["stall-in", "stall-out", "stall-in.dlq"], 3)
        .await;
    let manifest = |extra: &str| {
        format!(
            "name = \"echo\"\ntopics = [\"in\"]\n\
             [retry]\nattempts = 1000\ninitial_backoff = \"100ms\"\nmax_backoff = \"300ms\"\n\
             [capabilities.cache]\n[capabilities.publish]\ntopics = [\"out\"]\n[config]\n{extra}"
        )
    };
    let files = HostFiles::new(&b.bootstrap(), "stall");
    files.install("echo", &crate::support::wasm("echo"), &manifest(""));
    let text = std::fs::read_to_string(files.config()).unwrap();
    std::fs::write(
        files.config(),
        text.replace(
            "lag_interval = \"1s\"",
            "lag_interval = \"1s\"\nstall_timeout = \"2s\"",
        ),
    )
    .unwrap();
    let producer = b.producer();
    produce(
        &producer,
        "stall-in",
        "A",
        json!({"seq": 0, "mode": "trap"}),
    )
    .await;
    produce(&producer, "stall-in", "A", json!({"seq": 1})).await;
    let host = InProcessHost::start(files.load());
    let port = files.admin_port;

    let health = wait_json(
        port,
        "/health",
        "Degraded for a stalled partition",
        |_, v| v["checks"]["consumption"]["status"] == "Degraded",
    )
    .await;
    let why = health["checks"]["consumption"]["data"]["echo"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("stalled: {}", health["checks"]["consumption"]);
    assert_eq!(health["status"], "Degraded");
    assert!(
        why.starts_with("stall-in/") && why.contains("no progress") && why.contains("offset"),
        "{why}"
    );
    let (_, plugins) = get_json(port, "/plugins").await;
    let stalled: Vec<&Value> = plugins[0]["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["stalled"].is_string())
        .collect();
    assert_eq!(stalled.len(), 1, "{plugins}");
    let (_, metrics) = http(port, "GET", "/metrics").await.unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weir_partition_stalled{") && l.ends_with(" 1")),
        "{metrics}"
    );

    // A fixed version goes in: the event is handled and the partition flows.
    files.install(
        "echo",
        &crate::support::wasm("echo"),
        &manifest("accept_all = \"yes\"\n"),
    );
    let out = b.read("stall-out", 2);
    wait_json(port, "/health", "Healthy again", |_, v| {
        v["checks"]["consumption"]["status"] == "Healthy"
    })
    .await;
    host.stop().await;
    assert_eq!(out.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn the_admin_token_guards_plugins_and_pause_resume_and_weir_sends_it() {
    let Some(broker) = broker() else { return };
    let files = HostFiles::echo(&broker.bootstrap(), "adminauth", "");
    std::fs::write(files.dir.path().join("admin-token"), "s3cret-token\n").unwrap();
    files.write_config(
        &broker.bootstrap(),
        "adminauth",
        "token_file = \"admin-token\"",
    );
    let host = InProcessHost::start(files.load());
    wait_ready(files.admin_port, "the host", String::new).await;
    let addr = format!("127.0.0.1:{}", files.admin_port);

    // Every route with no token, a wrong one and the right one: health and
    // metrics are open by default, the rest needs the token.
    for (method, path, open) in [
        ("GET", "/health/live", true),
        ("GET", "/health/ready", true),
        ("GET", "/health", true),
        ("GET", "/metrics", true),
        ("GET", "/plugins", false),
        ("GET", "/plugins/echo", false),
        ("POST", "/plugins/echo/pause", false),
        ("POST", "/plugins/echo/resume", false),
    ] {
        for token in [None, Some("wrong-token"), Some("s3cret-token")] {
            let (code, body) = client::call_with_token(&addr, method, path, token)
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
            if open || token == Some("s3cret-token") {
                assert_ne!(code, 401, "{method} {path} with {token:?}: {body}");
            } else {
                assert_eq!(code, 401, "{method} {path} with {token:?}: {body}");
                assert!(body.contains("Authorization: Bearer"), "{body}");
            }
        }
    }
    let (_, metrics) = http(files.admin_port, "GET", "/metrics").await.unwrap();
    for route in ["plugins", "control"] {
        assert_eq!(
            metric(
                &metrics,
                &format!("weir_admin_unauthorized_requests_total{{route=\"{route}\"}}")
            ),
            Some(4.0),
            "{metrics}"
        );
    }
    assert!(!metrics.contains("s3cret"));

    // The CLI reads the token from the same config.
    let (code, text) = weir(&files, &["pause", "echo"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("echo: paused"), "{text}");
    let (code, text) = weir(&files, &["resume", "echo"]).await;
    assert_eq!(code, Some(0), "{text}");
    let (code, text) = weir(&files, &["plugins"]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("as reported by the running host"), "{text}");
    // A config with another token is refused, and says what to set.
    std::fs::write(files.dir.path().join("admin-token"), "other\n").unwrap();
    let (code, text) = weir(&files, &["pause", "echo"]).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("needs the admin token"), "{text}");
    host.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn weir_run_refuses_an_open_admin_api_off_loopback_unless_told() {
    let Some(broker) = broker() else { return };
    let files = HostFiles::echo(&broker.bootstrap(), "adminopen", "");
    let mut refused =
        BinaryHost::start_with(&files, "open", &[("WEIR_ADMIN__LISTEN", "0.0.0.0:0")]);
    assert_eq!(refused.wait(), Some(1), "{}", refused.log_text());
    let log = refused.log_text();
    assert!(
        log.contains("reachable from other machines and no admin token is set")
            && log.contains("allow_unauthenticated"),
        "{log}"
    );
    let mut allowed = BinaryHost::start_with(
        &files,
        "allowed",
        &[
            ("WEIR_ADMIN__LISTEN", "0.0.0.0:0"),
            ("WEIR_ADMIN__ALLOW_UNAUTHENTICATED", "true"),
        ],
    );
    allowed.wait_for_log("admin API listening");
    allowed.signal("TERM");
    assert_eq!(allowed.wait(), Some(0), "{}", allowed.log_text());
}

/// The variables Kubernetes gives every pod for a Service named `weir` exposing
/// port 9464 (named `admin`).
const KUBERNETES_SERVICE_ENV: &[(&str, &str)] = &[
    ("WEIR_SERVICE_HOST", "10.96.12.34"),
    ("WEIR_SERVICE_PORT", "9464"),
    ("WEIR_SERVICE_PORT_ADMIN", "9464"),
    ("WEIR_PORT", "tcp://10.96.12.34:9464"),
    ("WEIR_PORT_9464_TCP", "tcp://10.96.12.34:9464"),
    ("WEIR_PORT_9464_TCP_PROTO", "tcp"),
    ("WEIR_PORT_9464_TCP_PORT", "9464"),
    ("WEIR_PORT_9464_TCP_ADDR", "10.96.12.34"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`); `just test` installs it and runs the ignored tests"]
async fn the_host_starts_beside_a_kubernetes_service_named_weir() {
    let Some(broker) = broker() else { return };
    let files = HostFiles::echo(&broker.bootstrap(), "k8s", "");
    let port = weir_devkit::free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut env = KUBERNETES_SERVICE_ENV.to_vec();
    env.push(("WEIR_ADMIN__LISTEN", &listen));
    env.push(("RUST_LOG", "info,weir_host::config=debug"));
    let mut host = BinaryHost::start_with(&files, "k8s", &env);
    wait_ready(port, "the host beside the Service's variables", || {
        host.log_text()
    })
    .await;
    assert!(
        host.log_text().contains("variable=WEIR_PORT_9464_TCP_ADDR")
            && host
                .log_text()
                .contains("ignored: not of the form WEIR_<SECTION>__<KEY>"),
        "{}",
        host.log_text()
    );
    host.signal("TERM");
    assert_eq!(host.wait(), Some(0), "{}", host.log_text());

    // A misspelt key of a known section still stops the host, and says which.
    let mut env = KUBERNETES_SERVICE_ENV.to_vec();
    env.push(("WEIR_KAFKA__BOOTSTRAP_SERVER", "broker:9092"));
    let mut misspelt = BinaryHost::start_with(&files, "misspelt", &env);
    assert_eq!(misspelt.wait(), Some(2), "{}", misspelt.log_text());
    let log = misspelt.log_text();
    assert!(
        log.contains("unknown field: found `bootstrap_server`")
            && log.contains("WEIR_KAFKA__BOOTSTRAP_SERVER"),
        "{log}"
    );
}
