//! The `log` capability: plugin log lines into the host's `tracing` output, tagged
//! with the plugin's name and the event's coordinates.

use super::CallRecord;
use super::Ctx;
use crate::bindings::weir::plugin::log::{Field, Host, Level};
use crate::bindings::CapabilityError;

/// Lines one event may write; later ones are refused (the event is unaffected).
pub const MAX_LINES_PER_EVENT: u32 = 1000;
/// Longest message kept; longer ones are cut.
pub const MAX_MESSAGE_LEN: usize = 8 * 1024;

impl Host for Ctx<'_> {
    async fn write(
        &mut self,
        level: Level,
        message: String,
        fields: Vec<Field>,
    ) -> Result<(), CapabilityError> {
        let effects = self.effects();
        effects.log_lines += 1;
        if effects.log_lines > MAX_LINES_PER_EVENT {
            return Err(CapabilityError::Denied(format!(
                "an event may write at most {MAX_LINES_PER_EVENT} log lines"
            )));
        }
        let mut message = message;
        if message.len() > MAX_MESSAGE_LEN {
            let mut cut = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        let fields: String = fields
            .iter()
            .map(|f| format!("{}={}", f.key, f.value))
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = &self.grants.plugin;
        let event = self.coordinates();
        macro_rules! emit {
            ($lvl:expr) => {
                tracing::event!(target: "weir::plugin", $lvl, plugin = %plugin, event = %event, fields = %fields, "{message}")
            };
        }
        let name = match level {
            Level::Trace => {
                emit!(tracing::Level::TRACE);
                "trace"
            }
            Level::Debug => {
                emit!(tracing::Level::DEBUG);
                "debug"
            }
            Level::Info => {
                emit!(tracing::Level::INFO);
                "info"
            }
            Level::Warn => {
                emit!(tracing::Level::WARN);
                "warn"
            }
            Level::Error => {
                emit!(tracing::Level::ERROR);
                "error"
            }
        };
        self.record(|| CallRecord {
            capability: "log",
            op: name,
            target: format!("{message:?}"),
            result: if fields.is_empty() {
                "written".into()
            } else {
                fields.clone()
            },
        });
        Ok(())
    }
}
