//! A client for a running host's admin API: `weir plugins`, `weir pause`,
//! `weir resume`, `weir offsets`, `weir workers`, the demo and the tests.

use crate::config::Config;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use std::time::Duration;

/// Why a call to the admin API got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the admin API is disabled ([admin] enabled = false)")]
    Disabled,
    #[error("admin.listen {0:?} is not ip:port")]
    Listen(String),
    #[error("the admin API at {0} did not answer within {1} s")]
    Timeout(String, u64),
    #[error("no admin API at {addr} (is the host running?): {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin API at {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("admin request: {0}")]
    Request(#[from] hyper::http::Error),
}

/// How long a call may take, connecting included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The address to reach the admin API of the host configured by `config`: its
/// `admin.listen`, with an unspecified IP (`0.0.0.0`, `[::]`) replaced by loopback.
pub fn address(config: &Config) -> Result<String, ClientError> {
    if !config.admin.enabled {
        return Err(ClientError::Disabled);
    }
    let mut addr: std::net::SocketAddr = config
        .admin
        .listen
        .parse()
        .map_err(|_| ClientError::Listen(config.admin.listen.clone()))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    Ok(addr.to_string())
}

/// `method path` on the admin API at `addr`: the status code and the body.
pub async fn call(addr: &str, method: &str, path: &str) -> Result<(u16, String), ClientError> {
    call_with_token(addr, method, path, None).await
}

/// [`call`] with `Authorization: Bearer <token>` when there is a token (the one of
/// the config: `config.admin.resolved_token()`).
pub async fn call_with_token(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), ClientError> {
    call_for(addr, method, path, token, TIMEOUT).await
}

/// [`call_with_token`], waiting up to `timeout` (a request the hosts carry
/// out, like moving offsets, waits for their events in flight).
pub async fn call_for(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), ClientError> {
    tokio::time::timeout(timeout, request(addr, method, path, token))
        .await
        .map_err(|_| ClientError::Timeout(addr.to_string(), timeout.as_secs()))?
}

/// A query string value, percent-encoded.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, String), ClientError> {
    let http_error = |source| ClientError::Http {
        addr: addr.to_string(),
        source,
    };
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| ClientError::Connect {
            addr: addr.to_string(),
            source,
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_error)?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr)
        .header(super::auth::REQUEST_HEADER, "1");
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request.body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await.map_err(http_error)?;
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(http_error)?
        .to_bytes();
    Ok((code, String::from_utf8_lossy(&body).into_owned()))
}
