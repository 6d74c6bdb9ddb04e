//! The dashboard page (`GET /` of the admin API) in a real headless browser
//! (Debian's chromium, driven through chromedriver's WebDriver protocol): it shows
//! the plugins once given the admin token, a click on Pause stops that plugin's
//! consumption while another keeps going, Resume continues, nothing is lost.

use crate::kafka_support::*;
use crate::support::required;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// chromedriver and chromium, or `None` (skipped, said) when they are not installed.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, names: &[&str]| {
        std::env::var_os(var).map(PathBuf::from).or_else(|| {
            names
                .iter()
                .map(|n| PathBuf::from("/usr/bin").join(n))
                .find(|p| p.is_file())
        })
    };
    let driver = required(
        find("CHROMEDRIVER", &["chromedriver"]),
        "chromedriver",
        "`just chromium` installs it: apt-get install chromium chromium-driver",
    )?;
    let chromium = required(
        find("CHROMIUM", &["chromium", "chromium-browser"]),
        "chromium",
        "`just chromium` installs it: apt-get install chromium chromium-driver",
    )?;
    Some((driver, chromium))
}

/// A WebDriver session on a chromedriver of our own.
struct Browser {
    driver: Child,
    port: u16,
    session: String,
}

impl Browser {
    async fn start(driver: &PathBuf, chromium: &PathBuf) -> Browser {
        let port = weir_devkit::free_port();
        // Its own process group, so the chromium it starts is stopped with it
        // (killing chromedriver alone left headless chromium running).
        let child = Command::new(driver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let mut browser = Browser {
            driver: child,
            port,
            session: String::new(),
        };
        let deadline = Instant::now() + PATIENCE;
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,700"]
            }
        }}});
        loop {
            match browser.call("POST", "/session", Some(caps.clone())).await {
                Ok(v) if v["sessionId"].is_string() => {
                    browser.session = v["sessionId"].as_str().unwrap().to_string();
                    return browser;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "chromedriver gave no session: {other:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One WebDriver command; its `value`.
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let addr = format!("127.0.0.1:{}", self.port);
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &addr)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        if v["value"]["error"].is_string() {
            return Err(v["value"].to_string());
        }
        Ok(v["value"].clone())
    }

    async fn session(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
            .await
    }

    async fn open(&self, url: &str) {
        self.session("POST", "/url", Some(json!({ "url": url })))
            .await
            .unwrap();
    }

    /// The element `css` selects, if it is there now.
    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .session(
                "POST",
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await
            .ok()?;
        v.as_object()?.values().next()?.as_str().map(String::from)
    }

    /// The text of `css` (the page re-renders every 2 s: found afresh each time).
    async fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css).await?;
        let v = self
            .session("GET", &format!("/element/{id}/text"), None)
            .await
            .ok()?;
        v.as_str().map(String::from)
    }

    async fn wait_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.text(css).await;
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never read {want:?} (last {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn click(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(id) = self.find(css).await {
                let clicked = self
                    .session("POST", &format!("/element/{id}/click"), Some(json!({})))
                    .await;
                if clicked.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "could not click {css}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.expect(css);
        self.session(
            "POST",
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await
        .unwrap();
    }

    /// Run `script` in the page with `args`; its value.
    async fn execute(&self, script: &str, args: Value) -> Value {
        self.session(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Set the value of the input `css` (a datetime-local or number field).
    async fn set_value(&self, css: &str, value: &str) {
        let found = self
            .execute(
                "const e = document.querySelector(arguments[0]); if (!e) return false; e.value = arguments[1]; return true;",
                json!([css, value]),
            )
            .await;
        assert_eq!(found, json!(true), "no {css}");
    }

    /// Wait until the text of `css` contains `want`.
    async fn wait_contains(&self, css: &str, want: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let got = self.text(css).await.unwrap_or_default();
            if got.contains(want) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never contained {want:?} (last {got:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let png = self.session("GET", "/screenshot", None).await.unwrap();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`), chromium and chromedriver (`just chromium`); `just test` installs it and runs the ignored tests"]
async fn the_dashboard_shows_the_plugins_and_pauses_and_resumes_one_with_a_click() {
    let Some(broker) = broker() else { return };
    let Some((driver, chromium)) = browser() else {
        return;
    };
    let b = &broker;
    b.create_topics(&["dash-in", "dash-out", "dash-in2", "dash-out2"], 3)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "dash", "");
    files.install_echo_as("other", "in2", "out2");
    // `other` is exactly-once: the page shows its transactions.
    let other = files.plugins().join("other.toml");
    let manifest = std::fs::read_to_string(&other).unwrap();
    std::fs::write(
        &other,
        format!("{manifest}\n[consumer]\ndelivery = \"exactly-once\"\n"),
    )
    .unwrap();
    std::fs::write(files.dir.path().join("admin-token"), "dash-token\n").unwrap();
    files.write_config(&b.bootstrap(), "dash", "token_file = \"admin-token\"");
    let host = InProcessHost::start(files.load());
    wait_ready(files.admin_port, "the host", String::new).await;

    let browser = Browser::start(&driver, &chromium).await;
    browser
        .open(&format!("http://127.0.0.1:{}/", files.admin_port))
        .await;
    // Without the token the page shows no plugin and says why.
    let deadline = Instant::now() + PATIENCE;
    while !browser
        .text("#message")
        .await
        .is_some_and(|t| t.contains("needs its admin token"))
    {
        assert!(
            Instant::now() < deadline,
            "the page never asked for the token"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(browser.find("tr[data-plugin]").await.is_none());
    browser.type_into("#token", "dash-token").await;
    browser.click("#save-token").await;
    for name in ["echo", "other"] {
        browser
            .wait_text(&format!("tr[data-plugin=\"{name}\"] td.state"), "running")
            .await;
    }

    let producer = b.producer();
    for seq in 0..10 {
        let body = json!({"seq": seq, "mode": "ok"});
        produce(&producer, "dash-in", &format!("k{seq}"), body.clone()).await;
        produce(&producer, "dash-in2", &format!("k{seq}"), body).await;
    }
    b.read("dash-out", 10);
    b.read("dash-out2", 10);

    // Pause echo with a click: it stops, `other` keeps going.
    browser.click("tr[data-plugin=\"echo\"] button").await;
    browser
        .wait_text("tr[data-plugin=\"echo\"] td.state", "paused")
        .await;
    browser
        .wait_text("tr[data-plugin=\"other\"] td.state", "running")
        .await;
    for seq in 10..30 {
        let body = json!({"seq": seq, "mode": "ok"});
        produce(&producer, "dash-in", &format!("k{seq}"), body.clone()).await;
        produce(&producer, "dash-in2", &format!("k{seq}"), body).await;
    }
    assert_eq!(b.read("dash-out2", 30).len(), 30, "other stopped too");
    // Its row says how its outputs are delivered: transactions committed.
    let deadline = Instant::now() + PATIENCE;
    loop {
        let got = browser
            .text("tr[data-plugin=\"other\"] td.delivery")
            .await
            .unwrap_or_default();
        if got.starts_with("exactly-once: ") && !got.starts_with("exactly-once: 0 committed") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "other's delivery never showed its transactions: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A fetch under way when the pause lands may still hand over its record:
    // at most one past the 10 before the pause. (other, on the same events,
    // has handled all 30: echo had the same chance.)
    let handled = b.count("dash-out");
    assert!(handled <= 11, "echo kept handling while paused: {handled}");
    browser
        .wait_text(
            "tr[data-plugin=\"echo\"] td.lag",
            &(30 - handled).to_string(),
        )
        .await;
    assert_eq!(
        b.count("dash-out"),
        handled,
        "echo kept handling while paused"
    );
    let shot = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::support::workspace_root().join("target"))
        .join("dashboard.png");
    browser.screenshot(&shot).await;

    // Resume with a click: the held events are handled, none lost or doubled.
    browser.click("tr[data-plugin=\"echo\"] button").await;
    browser
        .wait_text("tr[data-plugin=\"echo\"] td.state", "running")
        .await;
    let (seen, duplicates) = seqs(&b.read("dash-out", 30));
    assert_eq!((seen.len(), duplicates), (30, 0));
    browser
        .wait_text("tr[data-plugin=\"echo\"] td.lag", "0")
        .await;
    host.stop().await;
    println!(
        "dashboard: echo paused and resumed by clicks while other kept going; 30 + 30 events, 0 lost; screenshot {}",
        shot.display()
    );
}

/// A reverse proxy like nginx's `location /weir/ { proxy_pass http://upstream/;
/// proxy_set_header Host $host; }`: requests under `/weir/` go to the admin API
/// on `upstream` without the prefix, headers (Host included) as they came.
/// Its port.
async fn reverse_proxy(upstream: u16) -> u16 {
    use axum::body::Body;
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let forward = move |request: axum::extract::Request| async move {
        let (parts, body) = request.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let Some(rest) = path.strip_prefix("/weir") else {
            return (axum::http::StatusCode::NOT_FOUND, "not under /weir/").into_response();
        };
        let body = body.collect().await.unwrap().to_bytes();
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", upstream))
            .await
            .unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut out = hyper::Request::builder().method(parts.method).uri(rest);
        for (k, v) in &parts.headers {
            out = out.header(k, v);
        }
        let answer = sender
            .send_request(out.body(Full::new(body)).unwrap())
            .await
            .unwrap();
        let (parts, body) = answer.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        axum::http::Response::from_parts(parts, Body::from(body)).into_response()
    };
    let app = axum::Router::new().fallback(forward);
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A time as a `datetime-local` input holds it, in the browser's own zone.
async fn local_time(browser: &Browser, at: std::time::SystemTime) -> String {
    let ms = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    browser
        .execute(
            "const d = new Date(arguments[0]); const p = (n) => String(n).padStart(2, '0'); \
             return d.getFullYear() + '-' + p(d.getMonth() + 1) + '-' + p(d.getDate()) + 'T' + \
             p(d.getHours()) + ':' + p(d.getMinutes()) + ':' + p(d.getSeconds());",
            json!([ms]),
        )
        .await
        .as_str()
        .unwrap()
        .to_string()
}

/// Wait until `topic` holds at least `n` records.
async fn wait_count(b: &TestBroker, topic: &str, n: i64) {
    let deadline = Instant::now() + PATIENCE;
    while b.count(topic) < n {
        assert!(
            Instant::now() < deadline,
            "{topic} holds {}, not {n}",
            b.count(topic)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Apache Kafka (`just kafka`), chromium and chromedriver (`just chromium`); `just test` installs it and runs the ignored tests"]
async fn the_dashboard_resets_rewinds_changes_workers_replays_a_dead_letter_and_draws_the_charts() {
    let Some(broker) = broker() else { return };
    let Some((driver, chromium)) = browser() else {
        return;
    };
    let b = &broker;
    b.create_topics(&["dops-in", "dops-out", "dops-in.dlq"], 3)
        .await;
    let files = HostFiles::echo(&b.bootstrap(), "dops", "[retry]\nattempts = 1\n");
    std::fs::write(files.dir.path().join("admin-token"), "ops-token\n").unwrap();
    files.write_config(
        &b.bootstrap(),
        "dops",
        "token_file = \"admin-token\"\nhistory_interval = \"1s\"",
    );
    let host = InProcessHost::start(files.load());
    wait_ready(files.admin_port, "the host", String::new).await;
    let producer = b.producer();
    for seq in 0..10 {
        let mode = if seq == 3 { "reject" } else { "ok" };
        produce(
            &producer,
            "dops-in",
            &format!("k{seq}"),
            json!({"seq": seq, "mode": mode}),
        )
        .await;
    }
    wait_count(b, "dops-out", 9).await;
    wait_count(b, "dops-in.dlq", 1).await;

    // Behind a reverse proxy that serves it under /weir/.
    let proxy = reverse_proxy(files.admin_port).await;
    let browser = Browser::start(&driver, &chromium).await;
    browser
        .open(&format!("http://127.0.0.1:{proxy}/weir/"))
        .await;
    browser.type_into("#token", "ops-token").await;
    browser.click("#save-token").await;
    let panel = "section[data-plugin=\"echo\"]";
    browser.wait_text(&format!("{panel} h2"), "echo").await;
    // The group's offsets, per partition.
    browser.click(&format!("{panel} .show-offsets")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "Offsets of group dops-echo")
        .await;
    browser
        .wait_contains(&format!("{panel} .result table.offsets"), "dops-in/2")
        .await;

    // Reset to earliest: a dry run shows the plan, Apply moves it; every
    // event is handled again (the rejected one dead-lettered again).
    browser.click(&format!("{panel} .reset-earliest")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "Would move to earliest")
        .await;
    assert_eq!(b.count("dops-out"), 9, "the plan moves nothing");
    browser.click(&format!("{panel} .result .apply")).await;
    browser
        .wait_contains(
            &format!("{panel} .result"),
            "moved 3 partition(s) to earliest on 1 host(s)",
        )
        .await;
    wait_count(b, "dops-out", 18).await;
    wait_count(b, "dops-in.dlq", 2).await;

    // Rewind to a time: only the events after it are handled again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let since = std::time::SystemTime::now() - Duration::from_millis(500);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for seq in 10..15 {
        produce(
            &producer,
            "dops-in",
            &format!("k{seq}"),
            json!({"seq": seq}),
        )
        .await;
    }
    wait_count(b, "dops-out", 23).await;
    let value = local_time(&browser, since).await;
    browser
        .set_value(&format!("{panel} .rewind-time"), &value)
        .await;
    browser.click(&format!("{panel} .rewind")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "Would move to the time")
        .await;
    browser.click(&format!("{panel} .result .apply")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "moved")
        .await;
    wait_count(b, "dops-out", 28).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        b.count("dops-out"),
        28,
        "only the 5 events after the time again"
    );

    // Explicit offsets: one partition back by one record.
    let (p, high) = b
        .positions("dops-echo", "dops-in", 3)
        .into_iter()
        .enumerate()
        .map(|(p, (_, high))| (p, high))
        .max_by_key(|(_, high)| *high)
        .unwrap();
    browser
        .set_value(
            &format!("{panel} .rewind-offsets"),
            &format!("in/{p}={}", high - 1),
        )
        .await;
    browser.click(&format!("{panel} .rewind-to-offsets")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "1 again")
        .await;
    browser.click(&format!("{panel} .result .apply")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "moved 1 partition(s)")
        .await;
    wait_count(b, "dops-out", 29).await;

    // Workers changed under load: order per key kept, nothing lost.
    let feed = {
        let producer = producer.clone();
        tokio::spawn(async move {
            for chunk in 0..4 {
                let sends = (1000 + chunk * 500..1000 + (chunk + 1) * 500).map(|seq| {
                    let producer = producer.clone();
                    async move {
                        let key = format!("w{}", seq % 50);
                        produce(&producer, "dops-in", &key, json!({"seq": seq})).await
                    }
                });
                futures::future::join_all(sends).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    browser
        .set_value(&format!("{panel} .workers-count"), "3")
        .await;
    browser.click(&format!("{panel} .set-workers")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "3 worker(s) on 1 host(s)")
        .await;
    browser
        .wait_text("tr[data-plugin=\"echo\"] td.workers", "3")
        .await;
    feed.await.unwrap();
    wait_count(b, "dops-out", 29 + 2000).await;
    let out = b.read("dops-out", 2029);
    let loaded: Vec<_> = out
        .iter()
        .filter(|r| r.json()["seq"].as_u64().unwrap() >= 1000)
        .cloned()
        .collect();
    let (seen, duplicates) = seqs(&loaded);
    assert_eq!(
        (seen.len(), duplicates),
        (2000, 0),
        "under load: none lost, none twice"
    );
    assert_key_order(&loaded);

    // Dead letters: listed newest first; one replayed, then not again.
    browser.click(&format!("{panel} .show-letters")).await;
    browser
        .wait_contains(
            &format!("{panel} .letters"),
            "2 newest dead letter(s) of echo",
        )
        .await;
    let oldest = browser
        .execute(
            "const rows = document.querySelectorAll(arguments[0] + ' tr[data-letter]'); return rows[rows.length - 1].dataset.letter;",
            json!([panel]),
        )
        .await;
    let oldest = oldest.as_str().unwrap().to_string();
    assert!(oldest.starts_with("dops-in.dlq/"), "{oldest}");
    let before = b.count("dops-in");
    let row = format!("{panel} tr[data-letter=\"{oldest}\"]");
    browser.click(&format!("{row} .replay-one")).await;
    browser
        .wait_contains(&format!("{panel} .result"), "replayed 1 dead letter(s)")
        .await;
    wait_count(b, "dops-in", before + 1).await;
    browser
        .wait_text(&format!("{row} td.state-of"), "replayed")
        .await;
    browser.click(&format!("{row} .replay-one")).await;
    browser
        .wait_contains(
            &format!("{panel} .result"),
            "1 already replayed before (not sent again)",
        )
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        b.count("dops-in"),
        before + 1,
        "a replayed letter is not sent twice"
    );

    // The charts have their lines; a screenshot of them for the docs.
    let deadline = Instant::now() + PATIENCE;
    while browser
        .find(&format!(
            "{panel} svg.rates polyline[data-series=\"handled\"]"
        ))
        .await
        .is_none()
        || browser
            .find(&format!("{panel} svg.lag polyline"))
            .await
            .is_none()
    {
        assert!(Instant::now() < deadline, "the charts were never drawn");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Tall enough for the table and the panel.
    let _ = browser
        .session(
            "POST",
            "/window/rect",
            Some(json!({"width": 1400, "height": 1150})),
        )
        .await;
    browser.execute("window.scrollTo(0, 0);", json!([])).await;
    // WEIR_SCREENSHOTS=docs refreshes the one the README shows.
    let dir = std::env::var_os("WEIR_SCREENSHOTS")
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR"))
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::support::workspace_root().join("target"));
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join("dashboard-charts.png");
    browser.screenshot(&shot).await;
    host.stop().await;
    println!("dashboard operations behind a reverse proxy, with a token: reset, rewind, workers under load (2000 events, 0 lost), a dead letter replayed once; screenshot {}", shot.display());
}
