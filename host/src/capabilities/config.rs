//! The `config` capability: the plugin's `[config]` values, read-only.

use super::CallRecord;
use super::Ctx;
use crate::bindings::weir::plugin::config::Host;
use crate::bindings::CapabilityError;

impl Host for Ctx<'_> {
    async fn get(&mut self, key: String) -> Result<Option<String>, CapabilityError> {
        let value = self.grants.config.get(&key).cloned();
        self.record(|| CallRecord {
            capability: "config",
            op: "get",
            target: key,
            result: value
                .as_ref()
                .map_or("not set".into(), |v| format!("{v:?}")),
        });
        Ok(value)
    }

    async fn get_all(&mut self) -> Result<Vec<(String, String)>, CapabilityError> {
        let all: Vec<(String, String)> = self
            .grants
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let n = all.len();
        self.record(|| CallRecord {
            capability: "config",
            op: "get-all",
            target: String::new(),
            result: format!("{n} values"),
        });
        Ok(all)
    }
}
