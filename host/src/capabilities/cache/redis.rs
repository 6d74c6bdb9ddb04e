//! The Redis cache backend (`[cache] backend = "redis"`).
//!
//! One multiplexed connection per host, through redis-rs's `ConnectionManager`,
//! which reconnects by itself after the server goes away. The connection is made
//! lazily: the host starts while Redis is down, and until Redis answers every call
//! is `unavailable` (so the event is retried, never lost). Every call has a
//! deadline (`cache.timeout`), because a host call is not interrupted by the
//! plugin's own `limits.timeout`.
//!
//! Values are plain Redis strings (`GET`/`SET ... PX`), so keys written by other
//! services (e.g. .NET's `IDistributedCache` under the same prefix) can be deleted,
//! and a key holding another type is an `invalid` call, not an outage.

use super::{CacheBackend, CacheError, CacheResult};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, FromRedisValue, RedisError};
use std::time::Duration;

/// Keys fetched per `SCAN` round trip (and deleted per `UNLINK`) in `delete_prefix`.
const SCAN_BATCH: usize = 500;

pub struct RedisCache {
    conn: ConnectionManager,
    timeout: Duration,
    /// `redis 127.0.0.1:6379/0`: the address without credentials.
    target: String,
}

/// Why a Redis backend could not be set up (nothing was contacted).
#[derive(Debug, thiserror::Error)]
pub enum RedisSetupError {
    /// Why the URL is not usable (the URL itself, with its password, is not repeated).
    #[error("{0}")]
    Url(String),
    #[error("cannot set up the {target} connection: {source}")]
    Manager {
        target: String,
        source: redis::RedisError,
    },
}

impl RedisCache {
    /// A backend for `url`. Nothing is contacted yet: the first call connects.
    /// Must be called inside a tokio runtime (the manager runs a task on it).
    pub fn connect(url: &str, timeout: Duration) -> Result<RedisCache, RedisSetupError> {
        let client = redis::Client::open(url)
            .map_err(|e| RedisSetupError::Url(crate::config::redis_url_error(url, &e)))?;
        let info = client.get_connection_info();
        let target = format!("redis {}/{}", info.addr(), info.redis_settings().db());
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            // Reconnecting is retried on the next call; the event-level retry
            // (with its backoff) paces the attempts, so keep each one short.
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|source| {
            RedisSetupError::Manager {
                target: target.clone(),
                source,
            }
        })?;
        Ok(RedisCache {
            conn,
            timeout,
            target,
        })
    }

    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> CacheResult<T> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.classify(&e)),
            Err(_) => Err(CacheError::Unavailable(format!(
                "{} did not answer within cache.timeout = {}",
                self.target,
                humantime::format_duration(self.timeout)
            ))),
        }
    }

    fn classify(&self, e: &RedisError) -> CacheError {
        if e.code() == Some("WRONGTYPE") {
            CacheError::Invalid(format!(
                "{}: the key holds a value that is not a string: {e}",
                self.target
            ))
        } else {
            CacheError::Unavailable(format!("{}: {e}", self.target))
        }
    }
}

/// A URL error without echoing the URL (it may hold a password).
/// `prefix` as a `SCAN MATCH` pattern: glob characters escaped, then `*`.
fn match_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[async_trait]
impl CacheBackend for RedisCache {
    async fn get(&self, key: &str) -> CacheResult<Option<Vec<u8>>> {
        self.run(redis::cmd("GET").arg(key)).await
    }

    async fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> CacheResult<()> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key).arg(value);
        if let Some(ttl) = ttl {
            // PX 0 is an error in Redis; the shortest expiry is 1 ms.
            cmd.arg("PX")
                .arg(ttl.as_millis().clamp(1, u64::MAX as u128) as u64);
        }
        self.run::<()>(&cmd).await
    }

    async fn delete(&self, key: &str) -> CacheResult<bool> {
        let removed: u64 = self.run(redis::cmd("DEL").arg(key)).await?;
        Ok(removed > 0)
    }

    /// `SCAN` for the prefix, `UNLINK` each batch. Not atomic: a key written under
    /// the prefix while this runs may survive, as with any invalidation by pattern.
    async fn delete_prefix(&self, prefix: &str) -> CacheResult<u64> {
        let pattern = match_pattern(prefix);
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .run(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_BATCH),
                )
                .await?;
            if !keys.is_empty() {
                removed += self.run::<u64>(redis::cmd("UNLINK").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    fn describe(&self) -> String {
        self.target.clone()
    }

    async fn ping(&self) -> CacheResult<()> {
        self.run::<String>(&redis::cmd("PING")).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_characters_in_prefixes_are_escaped() {
        assert_eq!(match_pattern("ns:presigned:"), "ns:presigned:*");
        assert_eq!(match_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
