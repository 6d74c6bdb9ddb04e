//! The admin API of a running host: health, readiness, metrics, status, and
//! pausing and resuming a plugin under a stream of events.

use crate::kafka_support::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One HTTP/1.1 request to the admin API: (status code, body).
fn http(port: u16, method: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    // The API answers with a length or, for larger bodies, chunked: undo that.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((code, body))
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

fn get_json(port: u16, path: &str) -> (u16, Value) {
    let (code, body) = http(port, "GET", path).unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, value)
}

/// Wait until `GET path` satisfies `ok`.
async fn wait_json(port: u16, path: &str, what: &str, ok: impl Fn(u16, &Value) -> bool) -> Value {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    loop {
        if let Ok((code, body)) = http(port, "GET", path) {
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

/// The value of a metric line `name{labels} value` (labels given exactly).
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    assert_eq!(http(port, "GET", "/health/live").unwrap().0, 200);
    let (code, health) = get_json(port, "/health");
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

    // Pause: nothing new is handled while events keep arriving.
    let (code, paused) = {
        let (code, body) = http(port, "POST", "/plugins/echo/pause").unwrap();
        (code, serde_json::from_str::<Value>(&body).unwrap())
    };
    assert_eq!(code, 200);
    assert_eq!(paused["state"], "paused");
    assert_eq!(paused["paused"], true);
    // The source applies the pause on its next poll (within 100 ms); events
    // produced after this are not handled until the resume.
    tokio::time::sleep(Duration::from_millis(500)).await;
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
    let (_, metrics) = http(port, "GET", "/metrics").unwrap();
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        b.count("adm-out"),
        30,
        "still nothing handled after the restart"
    );

    // Resume: the waiting events are handled, nothing lost or doubled.
    let (code, _) = http(port, "POST", "/plugins/echo/resume").unwrap();
    assert_eq!(code, 200);
    let out = b.read("adm-out", 50);
    let (seen, duplicates) = seqs(&out);
    assert_eq!((seen.len(), duplicates), (50, 0));
    let status = wait_json(port, "/plugins/echo", "50 handled, lag 0", |_, v| {
        v["stats"]["handled"] == 50 && v["lag"] == 0 && v["state"] == "running"
    })
    .await;
    assert_eq!(status["in_flight"], 0);

    let (code, metrics) = http(port, "GET", "/metrics").unwrap();
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

    // Unknown plugins are a clear 404.
    let (code, body) = http(port, "POST", "/plugins/nope/pause").unwrap();
    assert_eq!(code, 404);
    assert!(body.contains("no plugin named \\\"nope\\\""), "{body}");

    let report = host.stop().await;
    assert_eq!(report.plugins["echo"].handled, 50);
    println!("admin: 50 events, 20 held while paused (lag 20), 50 outputs, 0 duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_is_live_but_not_ready_until_it_reaches_the_broker() {
    // A broker address nobody listens on yet.
    let Some(binary) = nisshi() else { return };
    let port = weir_host::devbroker::free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let files = HostFiles::echo(&bootstrap, "wait", "");
    let admin = files.admin_port;
    let host = InProcessHost::start(files.load());

    wait_json(admin, "/health/ready", "starting", |code, v| {
        code == 503 && v["status"] == "starting"
    })
    .await;
    assert_eq!(http(admin, "GET", "/health/live").unwrap().0, 200);
    let (code, health) = get_json(admin, "/health");
    assert_eq!(code, 503, "{health}");
    assert_eq!(health["checks"]["kafka"]["status"], "Unhealthy", "{health}");

    let dir = tempfile::tempdir().unwrap();
    let _broker = weir_host::devbroker::DevBroker::start_on(
        &binary,
        &dir.path().join("broker"),
        weir_host::devbroker::BrokerStorage::Memory,
        port,
    )
    .unwrap();
    wait_json(admin, "/health/ready", "ready", |code, _| code == 200).await;
    host.stop().await;
    assert!(
        http(admin, "GET", "/health/live").is_err(),
        "the admin API stops with the host"
    );
}
