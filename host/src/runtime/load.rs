//! Load-time checks: is this file a component, and does it fit the
//! `weir:plugin/handler` world? Every failure names the file and what to do.

use crate::bindings::{CAPABILITY_INTERFACES, PACKAGE, PACKAGE_VERSION};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use wasmtime::component::{types::ComponentItem, Component};
use wasmtime::Engine;

/// What kind of load failure this is (shown in status, used by tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadErrorKind {
    /// The file is missing or unreadable.
    Missing,
    /// Not a WebAssembly component (empty, truncated, a core module, another format).
    NotAComponent,
    /// Valid WebAssembly that does not compile (truncated or corrupt sections).
    Compile,
    /// The component does not fit the `weir:plugin/handler` world.
    WrongWorld,
    /// Instantiation failed (for example a start function trapped).
    Instantiate,
    /// The plugin's `init` returned an error or trapped.
    Init,
    /// The manifest is missing or invalid.
    Manifest,
}

/// A plugin that could not be loaded.
#[derive(Debug, Clone)]
pub struct LoadError {
    pub file: PathBuf,
    pub kind: LoadErrorKind,
    pub reason: String,
}

impl LoadError {
    pub fn new(file: &Path, kind: LoadErrorKind, reason: impl Into<String>) -> Self {
        LoadError {
            file: file.to_path_buf(),
            kind,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot load plugin {}: {}",
            self.file.display(),
            self.reason
        )
    }
}

impl std::error::Error for LoadError {}

/// Read the file and check that it is a component before handing it to the compiler,
/// so the common mistakes get a precise message.
pub(crate) fn read_component_bytes(path: &Path) -> Result<Vec<u8>, LoadError> {
    let bytes = crate::plugin_dir::read_plugin_file(path, crate::plugin_dir::MAX_COMPONENT_FILE)
        .map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::NotFound {
                "the file does not exist".to_string()
            } else {
                format!("cannot read it: {e}")
            };
            LoadError::new(path, LoadErrorKind::Missing, what)
        })?;
    let not_component = |why: &str| LoadError::new(path, LoadErrorKind::NotAComponent, why);
    if bytes.is_empty() {
        return Err(not_component(
            "the file is empty (a copy still in progress?): write it elsewhere and rename it into place",
        ));
    }
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(not_component(
            "not a WebAssembly file (no \\0asm header): build the plugin with `cargo build --target wasm32-wasip2`",
        ));
    }
    // Bytes 4..8: version and layer. Core modules are version 1, layer 0;
    // components have layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(not_component(
            "a core WebAssembly module, not a component: build for wasm32-wasip2 (which emits a component), \
             or wrap it with `wasm-tools component new`",
        ));
    }
    Ok(bytes)
}

/// Check imports and exports against the `weir:plugin/handler` world, naming every
/// unexpected import and every missing export.
pub(crate) fn check_world(
    path: &Path,
    engine: &Engine,
    component: &Component,
) -> Result<(), LoadError> {
    let ty = component.component_type();
    let mut problems = Vec::new();
    for (name, _) in ty.imports(engine) {
        if name.starts_with("wasi:") {
            continue; // WASI 0.2 is provided; the linker reports versions it lacks
        }
        let ours = name
            .strip_prefix(PACKAGE)
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|rest| rest.split_once('@'))
            .is_some_and(|(iface, version)| {
                CAPABILITY_INTERFACES.contains(&iface) && same_minor(version, PACKAGE_VERSION)
            });
        if !ours {
            problems.push(format!("it imports `{name}`, which Weir does not provide"));
        }
    }
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_string(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();
    if !exports
        .iter()
        .any(|(name, is_func)| name == "handle" && *is_func)
    {
        let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
        problems.push(format!(
            "it does not export a `handle` function (its exports: {})",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(LoadError::new(
        path,
        LoadErrorKind::WrongWorld,
        format!(
            "{}; build it against the world {PACKAGE}/handler@{PACKAGE_VERSION} (Weir provides {} and WASI 0.2)",
            problems.join("; "),
            CAPABILITY_INTERFACES
                .iter()
                .filter(|i| **i != "types")
                .map(|i| format!("{PACKAGE}/{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    ))
}

/// `0.1.x` is compatible with `0.1.y`.
fn same_minor(a: &str, b: &str) -> bool {
    let minor = |v: &str| v.rsplit_once('.').map(|(head, _)| head.to_string());
    minor(a).is_some() && minor(a) == minor(b)
}

/// SHA-256 of the component's bytes, hex.
pub(crate) fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An error and its causes on one line.
pub(crate) fn chain(err: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts
        .join(": ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// ` (in a <- b <- c)`: the innermost guest functions of a trap, when known.
pub(crate) fn guest_frames(err: &wasmtime::Error) -> String {
    let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>() else {
        return String::new();
    };
    let names: Vec<String> = bt
        .frames()
        .iter()
        .filter_map(|f| f.func_name().map(short_fn_name))
        .filter(|n| {
            !n.starts_with("__") && !n.contains("panic") && !n.contains("rust_begin_unwind")
        })
        .take(3)
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (in {})", names.join(" <- "))
    }
}

fn short_fn_name(name: &str) -> String {
    // Drop the hash suffix of demangled Rust names (`foo::bar::h1234abcd`).
    match name.rsplit_once("::h") {
        Some((head, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            head.to_string()
        }
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(same_minor("0.1.0", "0.1.0"));
        assert!(same_minor("0.1.3", "0.1.0"));
        assert!(!same_minor("0.2.0", "0.1.0"));
    }

    #[test]
    fn bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            p
        };
        let kind = |p: &Path| read_component_bytes(p).unwrap_err().kind;
        assert_eq!(kind(&dir.path().join("nope.wasm")), LoadErrorKind::Missing);
        assert_eq!(
            kind(&write("empty.wasm", b"")),
            LoadErrorKind::NotAComponent
        );
        assert_eq!(
            kind(&write("text.wasm", b"hello world")),
            LoadErrorKind::NotAComponent
        );
        let core = read_component_bytes(&write("core.wasm", b"\0asm\x01\0\0\0")).unwrap_err();
        assert!(core.reason.contains("core WebAssembly module"), "{core}");
        assert!(read_component_bytes(&write("c.wasm", b"\0asm\x0d\0\x01\0")).is_ok());
    }
}
