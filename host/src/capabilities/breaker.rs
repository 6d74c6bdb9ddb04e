//! A circuit breaker in front of a capability backend (the cache, the object
//! store), shared by every plugin of the host.
//!
//! **Closed**: calls go through; `failures` backend failures in a row open it.
//! **Open**: for `open_for`, calls fail at once as `unavailable` (the event is
//! retried, so nothing is lost) without touching the backend: a backend that is
//! down is not hammered, and events do not each wait out a timeout.
//! **Half-open**: then up to `probes` calls at a time go through; one success
//! closes the breaker, a failure opens it again for another `open_for`.
//!
//! Only backend failures count (`unavailable`); a denied or invalid call says
//! nothing about the backend's health.

use crate::bindings::CapabilityError;
use crate::config::BreakerConfig;
use serde::Serialize;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// The state of one breaker, for `/health`, `/plugins` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// What a breaker reports.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BreakerStatus {
    pub backend: &'static str,
    pub state: BreakerState,
    /// Backend failures in a row.
    pub failures: u32,
    /// When it last opened (RFC 3339), if it ever did.
    pub opened_at: Option<String>,
    pub last_error: Option<String>,
    /// Times it opened, and calls it failed fast, since the host started.
    pub opened_total: u64,
    pub rejected_total: u64,
}

struct Inner {
    failures: u32,
    /// Set while open or half-open: until when calls are refused.
    open_until: Option<Instant>,
    opened_at: Option<SystemTime>,
    probes_in_flight: u32,
    last_error: Option<String>,
}

pub struct Breaker {
    backend: &'static str,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    opened_total: AtomicU64,
    rejected_total: AtomicU64,
}

/// A call let through; `probe` when the breaker is half-open.
struct Permit {
    probe: bool,
}

impl Breaker {
    pub fn new(backend: &'static str, config: BreakerConfig) -> Self {
        Breaker {
            backend,
            config,
            inner: Mutex::new(Inner {
                failures: 0,
                open_until: None,
                opened_at: None,
                probes_in_flight: 0,
                last_error: None,
            }),
            opened_total: AtomicU64::new(0),
            rejected_total: AtomicU64::new(0),
        }
    }

    /// Run `call` unless the breaker is open; count how it went.
    pub async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, CapabilityError>>,
    ) -> Result<T, CapabilityError> {
        let permit = self.admit(Instant::now())?;
        let result = call.await;
        let failure = match &result {
            Err(CapabilityError::Unavailable(why)) => Some(why.as_str()),
            _ => None,
        };
        self.settle(permit, failure, Instant::now());
        result
    }

    fn admit(&self, now: Instant) -> Result<Permit, CapabilityError> {
        if self.config.failures == 0 {
            return Ok(Permit { probe: false });
        }
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match inner.open_until {
            None => Ok(Permit { probe: false }),
            Some(until) if now >= until && inner.probes_in_flight < self.config.probes => {
                inner.probes_in_flight += 1;
                Ok(Permit { probe: true })
            }
            Some(until) => {
                self.rejected_total.fetch_add(1, Ordering::Relaxed);
                let wait = until.saturating_duration_since(now);
                Err(CapabilityError::Unavailable(format!(
                    "the {} backend's circuit breaker is open after {} failures in a row (last: {}); calls fail at once {}",
                    self.backend,
                    inner.failures,
                    inner.last_error.as_deref().unwrap_or("unknown"),
                    if wait.is_zero() {
                        "while a probe call is in flight".to_string()
                    } else {
                        format!("for {} more, then a probe call is let through", humantime::format_duration(round_ms(wait)))
                    }
                )))
            }
        }
    }

    fn settle(&self, permit: Permit, failure: Option<&str>, now: Instant) {
        if self.config.failures == 0 {
            return;
        }
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if permit.probe {
            inner.probes_in_flight = inner.probes_in_flight.saturating_sub(1);
        }
        match failure {
            None => {
                if inner.open_until.is_some() {
                    tracing::info!(
                        backend = self.backend,
                        "circuit breaker closed: a probe call succeeded"
                    );
                }
                inner.failures = 0;
                inner.open_until = None;
            }
            Some(why) => {
                inner.failures = inner.failures.saturating_add(1);
                inner.last_error = Some(why.to_string());
                let reopen = permit.probe && inner.open_until.is_some();
                let trip = inner.open_until.is_none() && inner.failures >= self.config.failures;
                if reopen || trip {
                    inner.open_until = Some(now + self.config.open_for);
                    inner.opened_at = Some(SystemTime::now());
                    self.opened_total.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        backend = self.backend,
                        failures = inner.failures,
                        open_for = %humantime::format_duration(self.config.open_for),
                        last_error = why,
                        "circuit breaker open: calls fail at once as unavailable (events are retried)"
                    );
                }
            }
        }
    }

    /// Which backend it guards: "cache" or "storage".
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    pub fn state(&self) -> BreakerState {
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match inner.open_until {
            None => BreakerState::Closed,
            Some(until) if Instant::now() >= until => BreakerState::HalfOpen,
            Some(_) => BreakerState::Open,
        }
    }

    pub fn status(&self) -> BreakerStatus {
        let state = self.state();
        let inner = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        BreakerStatus {
            backend: self.backend,
            state,
            failures: inner.failures,
            opened_at: inner
                .opened_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            last_error: inner.last_error.clone(),
            opened_total: self.opened_total.load(Ordering::Relaxed),
            rejected_total: self.rejected_total.load(Ordering::Relaxed),
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(failures: u32) -> Breaker {
        Breaker::new(
            "storage",
            BreakerConfig {
                failures,
                open_for: Duration::from_secs(10),
                probes: 1,
            },
        )
    }

    fn fail(b: &Breaker, now: Instant) -> Result<(), CapabilityError> {
        let p = b.admit(now)?;
        b.settle(p, Some("connection refused"), now);
        Ok(())
    }

    #[test]
    fn opens_after_failures_in_a_row_then_a_probe_closes_it() {
        let b = breaker(3);
        let t0 = Instant::now();
        for _ in 0..2 {
            fail(&b, t0).unwrap();
        }
        // A success in between resets the count.
        let p = b.admit(t0).unwrap();
        b.settle(p, None, t0);
        for _ in 0..3 {
            fail(&b, t0).unwrap();
        }
        assert_eq!(b.state(), BreakerState::Open);
        let Err(CapabilityError::Unavailable(why)) = b.admit(t0 + Duration::from_secs(1)) else {
            panic!("an open breaker lets a call through");
        };
        assert!(
            why.contains("circuit breaker is open after 3 failures"),
            "{why}"
        );
        assert!(why.contains("connection refused"), "{why}");

        // After open_for: one probe at a time.
        let later = t0 + Duration::from_secs(11);
        let probe = b.admit(later).unwrap();
        assert!(
            b.admit(later).is_err(),
            "a second probe while one is in flight"
        );
        // The probe fails: open again for another open_for.
        b.settle(probe, Some("still down"), later);
        assert!(b.admit(later + Duration::from_secs(5)).is_err());
        let probe = b.admit(later + Duration::from_secs(11)).unwrap();
        b.settle(probe, None, later + Duration::from_secs(11));
        assert_eq!(b.state(), BreakerState::Closed);
        let s = b.status();
        assert_eq!((s.opened_total, s.failures), (2, 0));
        assert_eq!(s.rejected_total, 3);
    }

    #[test]
    fn zero_failures_means_no_breaker() {
        let b = breaker(0);
        let t0 = Instant::now();
        for _ in 0..100 {
            fail(&b, t0).unwrap();
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
