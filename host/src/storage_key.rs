//! Object keys as plugins write them, and the checks that keep a plugin inside
//! its granted prefixes. Keys are refused, never normalised: `a/../b` is an
//! error, not `b`, so what a plugin asked for is always what it got.

/// Keys under this prefix belong to the host (scheduled deletions); no plugin
/// may be granted them.
pub const RESERVED_PREFIX: &str = "_weir/";

/// Longest key accepted, in bytes (S3's limit).
pub const MAX_KEY_LEN: usize = 1024;

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
