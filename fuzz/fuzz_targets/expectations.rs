//! An expectation (`"expect"` in an events file): parsed or refused, and what
//! parses can be written back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use weir_host::authoring::expect::{to_value, Expect};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(expect) = Expect::parse(&value) {
            let _ = to_value(&expect);
        }
    }
});
