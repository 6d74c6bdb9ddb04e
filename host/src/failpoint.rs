//! Fault injection for the end-to-end tests, in debug builds only (a release
//! build compiles [`hit`] to nothing).
//!
//! `WEIR_FAILPOINTS="fetch:N,worker:N"` makes the fetch thread (`fetch`) or a
//! worker (`worker`) panic on the first N records whose payload is exactly
//! [`TRIGGER`], counted per process. The tests use it to prove that the host
//! restarts a failed stage without losing an event: no record, guest value or
//! request is known to panic the host, so nothing else can show it.

/// The payload that trips a failpoint.
pub const TRIGGER: &[u8] = b"weir-failpoint";

/// Panic here if the failpoint `site` is armed and `payload` trips it.
#[inline]
pub fn hit(site: &str, payload: &[u8]) {
    #[cfg(debug_assertions)]
    armed::hit(site, payload);
    #[cfg(not(debug_assertions))]
    let _ = (site, payload);
}

#[cfg(debug_assertions)]
mod armed {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::OnceLock;

    fn points() -> &'static HashMap<String, AtomicU32> {
        static POINTS: OnceLock<HashMap<String, AtomicU32>> = OnceLock::new();
        POINTS.get_or_init(|| {
            std::env::var("WEIR_FAILPOINTS")
                .unwrap_or_default()
                .split(',')
                .filter_map(|p| {
                    let (site, count) = p.trim().split_once(':')?;
                    Some((site.to_string(), AtomicU32::new(count.parse().ok()?)))
                })
                .collect()
        })
    }

    pub fn hit(site: &str, payload: &[u8]) {
        if payload != super::TRIGGER {
            return;
        }
        let Some(left) = points().get(site) else {
            return;
        };
        if left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            panic!("failpoint {site}: injected panic (WEIR_FAILPOINTS)");
        }
    }
}
