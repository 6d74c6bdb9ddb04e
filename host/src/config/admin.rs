//! `[admin]`: the admin API, its token and what is open without it.

use super::*;

/// `[admin]`: the HTTP API for health checks, metrics, status and pause/resume.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub enabled: bool,
    /// `host:port` to listen on.
    pub listen: String,
    /// A file holding the bearer token that `/plugins` and pause/resume require
    /// (the file's first line). Relative to the config file.
    pub token_file: Option<PathBuf>,
    /// The token itself, for `WEIR_ADMIN__TOKEN`; prefer `token_file` in files.
    pub token: Option<Secret>,
    /// The route groups anyone may call even with a token set: `health`
    /// (`/health/*`), `metrics`, `plugins` (reading `/plugins`). Pause and resume
    /// always need the token when there is one.
    pub open: Vec<String>,
    /// Listen on a non-loopback address without a token. Anyone who reaches the
    /// port can then pause plugins: off by default, and `weir run` refuses.
    pub allow_unauthenticated: bool,
    /// The topic (named like the plugins' topics, `[topics] template`) that
    /// carries operators' requests to every host of the environment (offsets
    /// moved, workers changed) and their answers. One partition; created
    /// with `[topics] create`.
    pub control_topic: String,
    /// How long an operator's request waits for the hosts, beyond
    /// `shutdown.drain_timeout` (the events in flight they wait for).
    #[serde(with = "humantime_serde")]
    pub control_timeout: Duration,
    /// How often the dashboard's history samples each plugin, and how far
    /// back it goes (kept in memory: `history_length / history_interval`
    /// samples per plugin).
    #[serde(with = "humantime_serde")]
    pub history_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub history_length: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
            token_file: None,
            token: None,
            open: vec!["health".into(), "metrics".into()],
            allow_unauthenticated: false,
            control_topic: "weir-control".into(),
            control_timeout: Duration::from_secs(15),
            history_interval: Duration::from_secs(5),
            history_length: Duration::from_secs(3600),
        }
    }
}

/// The route groups `[admin] open` may name.
pub const ADMIN_ROUTE_GROUPS: &[&str] = &["health", "metrics", "plugins"];

/// Why the admin token cannot be had. Never holds the token itself.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("admin.token and admin.token_file are both set: keep one (token_file for files, WEIR_ADMIN__TOKEN for the environment)")]
    Both,
    #[error("admin.token_file {}: cannot be read: {source}", file.display())]
    Unreadable {
        file: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("admin.token_file {} is empty", .0.display())]
    EmptyFile(std::path::PathBuf),
    #[error("admin.token is empty")]
    Empty,
}

impl AdminConfig {
    /// The bearer token, read from `token_file` or `token`; `None` when neither is set.
    pub fn resolved_token(&self) -> Result<Option<String>, TokenError> {
        match (&self.token_file, &self.token) {
            (Some(_), Some(_)) => Err(TokenError::Both),
            (Some(file), None) => {
                let text = read_small_file(file).map_err(|source| TokenError::Unreadable {
                    file: file.clone(),
                    source,
                })?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.is_empty() {
                    return Err(TokenError::EmptyFile(file.clone()));
                }
                Ok(Some(token))
            }
            (None, Some(token)) if token.0.trim().is_empty() => Err(TokenError::Empty),
            (None, Some(token)) => Ok(Some(token.0.trim().to_string())),
            (None, None) => Ok(None),
        }
    }
}

/// The admin token's variable, read as written (never parsed as a number).
pub const TOKEN_VARIABLE: &str = "WEIR_ADMIN__TOKEN";

/// A value that is never printed (`Debug` shows `***`).
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}
