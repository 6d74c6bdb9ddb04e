//! The host's config (`weir.toml`, without the environment): a config or a
//! precise error, never a panic; a valid one gives valid names.
#![no_main]
use figment::providers::{Format, Toml};
use figment::Figment;
use libfuzzer_sys::fuzz_target;
use std::path::Path;
use weir_host::config::Config;

fuzz_target!(|text: &str| {
    let figment = Figment::from(Toml::string(text));
    if let Ok(config) = Config::from_figment(figment, Path::new("/nonexistent/weir.toml")) {
        if let Ok(namer) = config.namer() {
            let full = namer.full_name("events");
            let _ = namer.logical_name(&full);
            let _ = config.dlq_topic(&full, "plugin");
        }
        let _ = config.schedule_topic();
        let _ = config.schedule_group();
        let _ = config.group_for("plugin");
        let _ = config.instance_id_for("plugin");
        let _ = config.admin.resolved_token();
    }
});
