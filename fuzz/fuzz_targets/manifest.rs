//! A plugin manifest: any text is a manifest or a precise error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use weir_host::manifest::Manifest;

fuzz_target!(|text: &str| {
    if let Ok(m) = Manifest::parse(text, Path::new("fuzz.toml")) {
        let _ = m.cache_namespace();
        let _ = m.config_strings();
        for t in &m.topics {
            assert!(weir_host::manifest::check_topic(t).is_ok(), "{t:?} accepted");
        }
    }
});
