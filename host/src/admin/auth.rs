//! Who may call the admin API. With a token (`[admin] token_file`, or
//! `WEIR_ADMIN__TOKEN`), every route outside the `[admin] open` groups (by default
//! `health` and `metrics`) needs `Authorization: Bearer <token>`; pause and resume
//! always do. A refused request is answered `401` and counted in
//! `weir_admin_unauthorized_requests_total{route}`. Without a token the API is
//! open, which `weir run` accepts only on a loopback address unless
//! `allow_unauthenticated` says otherwise. The token is never logged.

use crate::config::AdminConfig;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The route labels of the refusal counter.
pub type RouteLabels = Vec<(String, String)>;

/// The admin API's access rule (its `Debug` does not show the token).
#[derive(Clone, Default)]
pub struct Auth {
    token: Option<String>,
    open: BTreeSet<String>,
    /// `allow_unauthenticated`: without a token, state-changing requests are
    /// accepted whatever their `Host` (the operator accepted that anyone
    /// reaching the port may send them).
    any_host: bool,
    /// Refused requests per route group.
    pub refused: Family<RouteLabels, Counter>,
    /// When a refusal was last logged, and how many were not logged since.
    quiet: Arc<std::sync::Mutex<(Option<std::time::Instant>, u64)>>,
}

/// At most one refusal log line per this interval (a client hammering the API
/// must not flood the log); the metric counts every one.
const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("open", &self.open)
            .finish()
    }
}

/// Why `[admin]` gives no usable rule.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Token(#[from] crate::config::TokenError),
    #[error("admin.listen = {0:?} is reachable from other machines and no admin token is set: anyone reaching the port could pause plugins. Set admin.token_file (or WEIR_ADMIN__TOKEN), listen on 127.0.0.1, or accept it with admin.allow_unauthenticated = true (WEIR_ADMIN__ALLOW_UNAUTHENTICATED=true)")]
    Exposed(String),
}

impl Auth {
    /// The rule `[admin]` sets; an error when the API would be reachable from other
    /// machines without a token and the operator did not opt out.
    pub fn from_config(admin: &AdminConfig) -> Result<Auth, AuthError> {
        let token = admin.resolved_token()?;
        if token.is_none() && !admin.allow_unauthenticated && !is_loopback(&admin.listen) {
            return Err(AuthError::Exposed(admin.listen.clone()));
        }
        Ok(Auth {
            token,
            open: admin.open.iter().cloned().collect(),
            any_host: admin.allow_unauthenticated,
            refused: Family::default(),
            quiet: Arc::default(),
        })
    }

    /// No token: every route open (tests, tools).
    pub fn open() -> Auth {
        Auth::default()
    }

    /// Count a refused request for `path` under its route group, and log it
    /// unless one was logged within [`REFUSAL_LOG_EVERY`].
    fn count_refusal(&self, path: &str, why: &str) {
        self.refused
            .get_or_create(&vec![("route".to_string(), route_group(path).to_string())])
            .inc();
        let now = std::time::Instant::now();
        let mut quiet = self
            .quiet
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if quiet
            .0
            .is_some_and(|at| now.duration_since(at) < REFUSAL_LOG_EVERY)
        {
            quiet.1 += 1;
            return;
        }
        let suppressed = std::mem::take(&mut quiet.1);
        quiet.0 = Some(now);
        drop(quiet);
        let mut shown: String = path.chars().take(200).collect();
        if shown.len() < path.len() {
            shown.push('…');
        }
        tracing::warn!(
            path = %shown,
            refused_since_last_line = suppressed,
            "admin API request refused: {why}"
        );
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// Whether a request for `path` with this `Authorization` header may pass.
    pub fn allows(&self, path: &str, authorization: Option<&str>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let group = route_group(path);
        if group == "page" || (group != "control" && self.open.contains(group)) {
            return true;
        }
        authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .is_some_and(|given| same(given.trim().as_bytes(), token.as_bytes()))
    }
}

/// The route groups requests are counted by.
pub const ROUTE_GROUPS: &[&str] = &["health", "metrics", "plugins", "control"];

/// The `[admin] open` group a path belongs to; `control` for what changes a
/// plugin (pause, resume, offsets moved, workers).
fn route_group(path: &str) -> &'static str {
    if path == "/" {
        // The dashboard's page: it shows plugins only to who may read them.
        "page"
    } else if path == "/health" || path.starts_with("/health/") {
        "health"
    } else if path == "/metrics" {
        "metrics"
    } else if path.ends_with("/pause")
        || path.ends_with("/resume")
        || path.ends_with("/workers")
        || path.contains("/offsets/")
        || path.ends_with("/dead-letters/replay")
    {
        "control"
    } else {
        "plugins"
    }
}

/// Equal bytes, in a time that does not depend on where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The header every state-changing request must carry when the API has no
/// token (`weir pause`/`resume` and the dashboard send it). A web page cannot
/// add it to a cross-origin request without a CORS preflight, which this API
/// never grants.
pub const REQUEST_HEADER: &str = "x-weir-request";

/// Why a state-changing request looks forged by a web page (cross-site request
/// forgery, DNS rebinding), if it does: an `Origin` that is not the API's own
/// `Host`; and, without a token, a missing [`REQUEST_HEADER`] or (unless
/// `any_host`) a `Host` that is not a loopback name. Reads (`GET`, `HEAD`) are
/// not checked.
pub fn forged(
    method: &axum::http::Method,
    headers: &axum::http::HeaderMap,
    has_token: bool,
    any_host: bool,
) -> Option<String> {
    use axum::http::Method;
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let authority = origin.split_once("://").map_or("", |(_, rest)| rest);
        if host.is_none_or(|h| !h.eq_ignore_ascii_case(authority)) {
            return Some(format!(
                "cross-origin request refused: Origin {:?} is not this API's host {:?}",
                bounded(origin),
                bounded(host.unwrap_or(""))
            ));
        }
    }
    if has_token {
        // The bearer token itself is the proof: a page cannot know it, nor send
        // `Authorization` cross-origin without a preflight.
        return None;
    }
    if !any_host && !host.is_some_and(is_loopback) {
        return Some(format!(
            "refused: without an admin token, state-changing requests are accepted only for a \
             loopback Host (localhost, 127.0.0.1, [::1]), not {:?}; set an admin token to use \
             another name",
            bounded(host.unwrap_or(""))
        ));
    }
    if !headers.contains_key(REQUEST_HEADER) {
        return Some(
            "refused: without an admin token, state-changing requests need the header \
             `X-Weir-Request: 1` (weir pause/resume and the dashboard send it), so that no web \
             page can send them"
                .to_string(),
        );
    }
    None
}

/// At most 100 characters of a header value, for an error message.
fn bounded(value: &str) -> String {
    value.chars().take(100).collect()
}

/// `localhost`, `127.0.0.1`, `[::1]`, with or without a port: an
/// `admin.listen` address or a request's `Host`.
fn is_loopback(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The middleware: pass, or `401` with `WWW-Authenticate: Bearer`, counted;
/// `403` for a state-changing request that looks forged by a web page.
pub async fn layer(State(auth): State<Arc<Auth>>, request: Request, next: Next) -> Response {
    let path = request.uri().path().to_string();
    if let Some(why) = forged(
        request.method(),
        request.headers(),
        auth.has_token(),
        auth.any_host,
    ) {
        auth.count_refusal(&path, &why);
        return (
            StatusCode::FORBIDDEN,
            Json(serde_json::json!({ "error": why })),
        )
            .into_response();
    }
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if auth.allows(&path, authorization) {
        return next.run(request).await;
    }
    auth.count_refusal(&path, "missing or wrong bearer token");
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        Json(serde_json::json!({
            "error": "this route needs the admin token: send `Authorization: Bearer <token>` \
                      (weir pause/resume/plugins send the one of their config)"
        })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(token: Option<&str>, open: &[&str], listen: &str) -> Result<Auth, AuthError> {
        Auth::from_config(&AdminConfig {
            listen: listen.into(),
            token: token.map(|t| crate::config::Secret(t.into())),
            open: open.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    }

    /// Issue 20: every refused request logged a line, so a client hammering the
    /// API could fill the log. One line per 10 s, with the count since.
    #[test]
    fn refusals_are_counted_every_time_and_logged_once_per_interval() {
        let a = auth(Some("s3cret"), &[], "127.0.0.1:1").unwrap();
        for _ in 0..100 {
            a.count_refusal("/plugins", "no token");
        }
        let quiet = a.quiet.lock().unwrap();
        assert!(quiet.0.is_some(), "the first refusal was logged");
        assert_eq!(quiet.1, 99, "the other 99 wait for the next line");
        drop(quiet);
        let series = vec![("route".to_string(), "plugins".to_string())];
        assert_eq!(a.refused.get_or_create(&series).get(), 100);
    }

    #[test]
    fn without_a_token_only_loopback_is_accepted() {
        assert!(auth(None, &[], "127.0.0.1:9464").is_ok());
        assert!(auth(None, &[], "localhost:9464").is_ok());
        let err = auth(None, &[], "0.0.0.0:9464").unwrap_err().to_string();
        assert!(err.contains("allow_unauthenticated"), "{err}");
        assert!(auth(Some("t"), &[], "0.0.0.0:9464").is_ok());
    }

    #[test]
    fn routes_need_the_token_unless_open_and_control_always_does() {
        let a = auth(
            Some("s3cret"),
            &["health", "metrics", "plugins"],
            "127.0.0.1:1",
        )
        .unwrap();
        assert!(a.allows("/health/ready", None));
        assert!(a.allows("/metrics", None));
        assert!(a.allows("/plugins", None));
        assert!(!a.allows("/plugins/echo/pause", None));
        assert!(!a.allows("/plugins/echo/pause", Some("Bearer wrong")));
        assert!(!a.allows("/plugins/echo/pause", Some("s3cret")));
        assert!(a.allows("/plugins/echo/resume", Some("Bearer s3cret")));
        let closed = auth(Some("s3cret"), &[], "127.0.0.1:1").unwrap();
        assert!(!closed.allows("/metrics", None));
        assert!(closed.allows("/metrics", Some("Bearer s3cret")));
    }

    fn request(pairs: &[(&str, &str)]) -> axum::http::HeaderMap {
        let mut h = axum::http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    /// Issue 20: a web page's `fetch(..., {mode: 'no-cors'})` paused a plugin.
    #[test]
    fn state_changing_requests_a_web_page_could_forge_are_refused() {
        use axum::http::Method;
        let post = Method::POST;
        let ours = [("host", "127.0.0.1:9464"), ("x-weir-request", "1")];
        assert_eq!(forged(&post, &request(&ours), false, false), None);
        assert_eq!(
            forged(
                &Method::GET,
                &request(&[("host", "evil.example")]),
                false,
                false
            ),
            None
        );
        // The attack: a simple cross-origin POST.
        let page = [
            ("host", "127.0.0.1:9464"),
            ("origin", "http://evil.example"),
            ("content-type", "text/plain"),
        ];
        assert!(forged(&post, &request(&page), false, false)
            .unwrap()
            .contains("cross-origin"));
        assert!(
            forged(&post, &request(&page), true, false).is_some(),
            "a token does not excuse a foreign Origin"
        );
        // Same origin (the dashboard), with the header.
        let dashboard = [
            ("host", "localhost:9464"),
            ("origin", "http://localhost:9464"),
            ("x-weir-request", "1"),
        ];
        assert_eq!(forged(&post, &request(&dashboard), false, false), None);
        // No Origin (an old browser, a form), no header: refused without a token.
        let form = [("host", "127.0.0.1:9464")];
        assert!(forged(&post, &request(&form), false, false)
            .unwrap()
            .contains("X-Weir-Request"));
        assert_eq!(forged(&post, &request(&form), true, false), None);
        // DNS rebinding: a page's own name resolved to 127.0.0.1.
        let rebound = [("host", "evil.example:9464"), ("x-weir-request", "1")];
        assert!(forged(&post, &request(&rebound), false, false)
            .unwrap()
            .contains("loopback Host"));
        assert!(forged(
            &post,
            &request(&[("host", "[::1]:9464"), ("x-weir-request", "1")]),
            false,
            false
        )
        .is_none());
        // allow_unauthenticated on another address: any Host, the header still needed.
        assert_eq!(forged(&post, &request(&rebound), false, true), None);
        assert!(forged(&post, &request(&[("host", "10.0.0.5:9464")]), false, true).is_some());
    }

    #[test]
    fn the_token_is_not_in_debug_output() {
        let a = auth(Some("s3cret"), &[], "127.0.0.1:1").unwrap();
        let config = AdminConfig {
            token: Some(crate::config::Secret("s3cret".into())),
            ..Default::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
        assert!(!format!("{a:?}").contains("s3cret"));
        assert!(a.has_token());
    }
}
