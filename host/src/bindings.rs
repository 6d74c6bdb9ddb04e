//! Host bindings generated from the WIT package in `wit/`: the contract is the
//! source of truth, and the capability modules implement the generated traits.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "batch-handler",
    // `batch.begin-event` runs once per event of a batch and never waits: a
    // plain call, without the async machinery (measured as a per-event cost).
    imports: { default: async, "weir:plugin/batch.begin-event": exact },
    exports: { default: async },
});

pub use weir::plugin::types::{CapabilityError, CloudEvent, Header};

/// The WIT package's interfaces as the component model names them, for load-time checks.
pub const PACKAGE: &str = "weir:plugin";
pub const PACKAGE_VERSION: &str = "0.1.0";
pub const CAPABILITY_INTERFACES: &[&str] = &[
    "types", "cache", "storage", "publish", "log", "config", "batch",
];
