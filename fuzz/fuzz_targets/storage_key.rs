//! Storage keys and prefixes as plugins ask for them: what is authorized stays
//! inside a granted prefix, holds no `.`/`..` segment and fits the store.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_host::storage_key::{authorize, authorize_prefix, check, MAX_KEY_LEN};

fuzz_target!(|input: (String, Vec<String>)| {
    let (key, prefixes) = input;
    let _ = check(&key);
    if authorize(&key, &prefixes).is_ok() {
        assert!(prefixes.iter().any(|p| key.starts_with(p.as_str())), "{key:?} outside {prefixes:?}");
        assert!(!key.split('/').any(|s| s == ".." || s == "."), "{key:?}");
        assert!(key.len() <= MAX_KEY_LEN);
        assert!(!key.starts_with('/'));
    }
    let _ = authorize_prefix(&key, &prefixes);
});
