//! Test-only plugin built straight against the plain `weir:plugin/handler` world
//! with wit-bindgen, as a component from another toolchain would be (no SDK, no
//! `handle-batch`): the host must keep handling it one event per call. Each event
//! is republished to `out` with its offset as the payload.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "handler",
});

use weir::plugin::publish::{send, Message};

struct Plain;

impl Guest for Plain {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), HandleError> {
        if event.payload == b"reject" {
            return Err(HandleError::Reject("asked to reject".into()));
        }
        send(&Message {
            topic: "out".into(),
            key: event.key.clone(),
            payload: event.offset.to_string().into_bytes(),
            headers: vec![],
        })
        .map_err(|e| HandleError::Reject(format!("{e:?}")))
    }
}

export!(Plain);
