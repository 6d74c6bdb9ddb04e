//! Object keys as plugins write them, and the checks that keep a plugin inside
//! its granted prefixes. Keys are refused, never normalised: `a/../b` is an
//! error, not `b`, so what a plugin asked for is always what it got.

/// Keys under this prefix belong to the host (scheduled deletions); no plugin
/// may be granted them.
pub const RESERVED_PREFIX: &str = "_weir/";

/// Longest key accepted, in bytes once encoded for the store (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;
/// Longest segment accepted, in bytes once encoded (a file name's limit on the
/// local backend; the same everywhere, so `weir invoke` and S3 agree).
pub const MAX_SEGMENT_LEN: usize = 255;

/// Check that `key` is a plain relative `/`-separated path. The reason names the
/// offending part.
pub fn check(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!(
            "the key is {} bytes long; the limit is {MAX_KEY_LEN}",
            key.len()
        ));
    }
    if key.starts_with('/') {
        return Err(format!(
            "{key:?} is an absolute path; keys are relative (`audio/a.mp3`)"
        ));
    }
    if key.contains('\\') {
        return Err(format!(
            "{key:?} contains a backslash; separate segments with `/`"
        ));
    }
    if let Some(c) = key.chars().find(|c| c.is_control()) {
        return Err(format!("{key:?} contains the control character {c:?}"));
    }
    for segment in key.split('/') {
        match segment {
            "" => {
                return Err(format!(
                    "{key:?} has an empty segment (`//` or a trailing `/`)"
                ))
            }
            "." | ".." => {
                return Err(format!(
                    "{key:?} contains a `{segment}` segment; path traversal is refused"
                ))
            }
            _ => {}
        }
    }
    // Bounds on the key as the store sees it (percent-encoded): past them the
    // backend would refuse it, and that must not count as the backend failing.
    let encoded = object_store::path::Path::from(key);
    let encoded = encoded.as_ref();
    if encoded.len() > MAX_KEY_LEN {
        return Err(format!(
            "the key is {} bytes long once encoded for the store; the limit is {MAX_KEY_LEN}",
            encoded.len()
        ));
    }
    if let Some(long) = encoded.split('/').find(|s| s.len() > MAX_SEGMENT_LEN) {
        return Err(format!(
            "a segment of the key is {} bytes long once encoded; the limit is {MAX_SEGMENT_LEN}",
            long.len()
        ));
    }
    Ok(())
}

/// Check `key` and that it lies under one of `prefixes` (each ending in `/`).
/// `Err(Denied)` when it is valid but outside them.
pub fn authorize(key: &str, prefixes: &[String]) -> Result<(), KeyError> {
    check(key).map_err(KeyError::Invalid)?;
    if prefixes.iter().any(|p| key.starts_with(p.as_str())) {
        Ok(())
    } else if prefixes.is_empty() {
        Err(KeyError::Denied(format!(
            "{key:?}: no storage prefix is granted"
        )))
    } else {
        Err(KeyError::Denied(format!(
            "{key:?} is outside the granted prefixes ({})",
            prefixes.join(", ")
        )))
    }
}

/// Like [`authorize`] for a listing prefix, which may end with `/` and must lie
/// within (or be) a granted prefix.
pub fn authorize_prefix(prefix: &str, prefixes: &[String]) -> Result<(), KeyError> {
    let trimmed = prefix.strip_suffix('/').unwrap_or(prefix);
    check(trimmed).map_err(KeyError::Invalid)?;
    if prefixes.iter().any(|p| prefix.starts_with(p.as_str())) {
        Ok(())
    } else {
        Err(KeyError::Denied(format!(
            "listing {prefix:?} reaches outside the granted prefixes ({})",
            prefixes.join(", ")
        )))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Invalid(String),
    Denied(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted() -> Vec<String> {
        vec!["audio/".into(), "waveforms/".into()]
    }

    #[test]
    fn traversal_and_absolute_paths_are_invalid() {
        for key in [
            "../x",
            "audio/../secret",
            "audio/./a",
            "/etc/passwd",
            "audio//a",
            "audio\\..\\a",
            "audio/a\0",
            "",
            "audio/",
        ] {
            assert!(
                matches!(authorize(key, &granted()), Err(KeyError::Invalid(_))),
                "{key:?}"
            );
        }
    }

    /// Issue 20: keys the backend refuses counted as backend failures and
    /// could open the storage breaker for every plugin.
    #[test]
    fn keys_past_the_stores_bounds_are_invalid() {
        assert!(check(&format!("audio/{}", "a".repeat(255))).is_ok());
        let e = check(&format!("audio/{}", "a".repeat(256))).unwrap_err();
        assert!(e.contains("segment") && e.contains("255"), "{e}");
        // 606 raw bytes, over 1024 once each `%` is encoded.
        let e = check(&format!("audio/{}", "%a".repeat(300))).unwrap_err();
        assert!(e.contains("once encoded") && e.contains("1024"), "{e}");
    }

    #[test]
    fn keys_outside_the_grant_are_denied() {
        assert!(matches!(
            authorize("audiobooks/a", &granted()),
            Err(KeyError::Denied(_))
        ));
        assert!(matches!(
            authorize("_weir/scheduled/x", &granted()),
            Err(KeyError::Denied(_))
        ));
        assert!(matches!(authorize("a", &[]), Err(KeyError::Denied(_))));
        assert_eq!(authorize("audio/u1/t1.mp3", &granted()), Ok(()));
    }

    #[test]
    fn listing_prefixes() {
        assert_eq!(authorize_prefix("audio/", &granted()), Ok(()));
        assert_eq!(authorize_prefix("audio/u1", &granted()), Ok(()));
        assert!(matches!(
            authorize_prefix("aud", &granted()),
            Err(KeyError::Denied(_))
        ));
        assert!(matches!(
            authorize_prefix("audio/../", &granted()),
            Err(KeyError::Invalid(_))
        ));
    }
}
