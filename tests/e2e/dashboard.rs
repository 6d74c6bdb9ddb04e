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
