//! Test-only plugin that does nothing with its events: the lower bound of what a
//! plugin costs (`just bench` measures the host with it).

use weir_sdk::{Event, Handler};

struct Noop;

impl Handler for Noop {
    fn handle(_event: Event) -> weir_sdk::Result {
        Ok(())
    }
}

weir_sdk::export!(Noop);
