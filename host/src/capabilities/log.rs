//! The `log` capability: plugin log lines into the host's `tracing` output, tagged
//! with the plugin's name and the event's coordinates.

use super::CallRecord;
use super::Ctx;
use crate::bindings::weir::plugin::log::{Field, Host, Level};
use crate::bindings::CapabilityError;

/// Lines one event may write; later ones are refused (the event is unaffected).
pub const MAX_LINES_PER_EVENT: u32 = 1000;
/// Longest message kept, and longest fields (all of a line's together); longer
/// ones are cut.
pub const MAX_MESSAGE_LEN: usize = 8 * 1024;

/// `text` cut to [`MAX_MESSAGE_LEN`] bytes on a character boundary, marked `…`.
fn cut(mut text: String) -> String {
    if text.len() > MAX_MESSAGE_LEN {
        let mut end = MAX_MESSAGE_LEN;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

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
        let message = cut(message);
        let mut joined = String::new();
        for f in &fields {
            if joined.len() > MAX_MESSAGE_LEN {
                break;
            }
            if !joined.is_empty() {
                joined.push(' ');
            }
            joined.push_str(&f.key);
            joined.push('=');
            joined.push_str(&f.value);
        }
        let fields = cut(joined);
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
