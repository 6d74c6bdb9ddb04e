//! `weir build [DIR]`: the project's build for its language, leaving
//! `<name>.wasm` beside `<name>.toml`.
//!
//! - Rust: `cargo build --release --target wasm32-wasip2`, then the component is
//!   copied from wherever Cargo put it (its target directory may be shared).
//! - Python: `componentize-py` against the WIT package this binary carries (written
//!   to `.weir/wit`), world `batch-handler`, module `app`.
//! - JavaScript and TypeScript: componentize-js on `app.js` (TypeScript compiled by
//!   `tsc` first), against the same WIT (see `js`).

use super::{on_path, run_tool, write_wit, AuthoringError, Lang, Project, WORLD};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The componentize-py release the Python SDK is tested with.
pub const COMPONENTIZE_PY: &str = "0.25.1";

/// What a build produced.
#[derive(Debug)]
pub struct Built {
    pub wasm: PathBuf,
    pub bytes: u64,
    pub took: Duration,
}

/// Build the project. The tools' own output goes to this process's stderr.
pub fn build(project: &Project) -> Result<Built, AuthoringError> {
    let started = Instant::now();
    let wasm = project.wasm_path();
    match project.lang {
        Some(Lang::Rust) => build_rust(project, &wasm)?,
        Some(Lang::Python) => build_python(project, &wasm)?,
        Some(lang @ (Lang::JavaScript | Lang::TypeScript)) => {
            super::js::build(project, lang, &wasm)?
        }
        None => {
            return Err(AuthoringError(format!(
                "{} has no sources to build",
                project.dir.display()
            )))
        }
    }
    let bytes = std::fs::metadata(&wasm)
        .map_err(|e| AuthoringError::io("read", &wasm, e))?
        .len();
    Ok(Built {
        wasm,
        bytes,
        took: started.elapsed(),
    })
}

fn build_rust(project: &Project, wasm: &Path) -> Result<(), AuthoringError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    if let Some(missing) = missing_wasm_target() {
        return Err(AuthoringError(missing));
    }
    let mut child = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(&project.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            AuthoringError(format!(
                "cannot run cargo ({e}): install Rust from https://rustup.rs, then \
                 `rustup target add wasm32-wasip2`"
            ))
        })?;
    // Cargo names every file it produced; the component is the cdylib's `.wasm`.
    let stdout = child.stdout.take().expect("piped");
    let mut component = None;
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let is_cdylib = msg["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        if let Some(files) = msg["filenames"].as_array() {
            component = files
                .iter()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".wasm"))
                .map(PathBuf::from)
                .or(component);
        }
    }
    let status = child
        .wait()
        .map_err(|e| AuthoringError(format!("cargo did not finish: {e}")))?;
    if !status.success() {
        return Err(AuthoringError(format!(
            "cargo build failed ({status}) in {}: see its messages above",
            project.dir.display()
        )));
    }
    let component = component.ok_or_else(|| {
        AuthoringError(format!(
            "cargo built no .wasm library in {}: Cargo.toml needs `[lib] crate-type = [\"cdylib\"]`",
            project.dir.display()
        ))
    })?;
    std::fs::copy(&component, wasm)
        .map_err(|e| AuthoringError::io("copy the component to", wasm, e))?;
    Ok(())
}

/// Why the wasm32-wasip2 target is missing, and how to add it; `None` when it is
/// there (or when rustup is not what manages this toolchain, so cargo will say).
fn missing_wasm_target() -> Option<String> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let installed = String::from_utf8_lossy(&out.stdout);
    if installed.lines().any(|l| l.trim() == "wasm32-wasip2") {
        None
    } else {
        Some(
            "the Rust target wasm32-wasip2 is not installed: run `rustup target add wasm32-wasip2` \
             (a one-time download of about 30 s), then build again"
                .to_string(),
        )
    }
}

fn build_python(project: &Project, wasm: &Path) -> Result<(), AuthoringError> {
    let tool = find_componentize_py(&project.dir).ok_or_else(|| {
        AuthoringError(format!(
            "componentize-py is not installed: it builds Python plugins. Install it with \
             `python3 -m pip install componentize-py=={COMPONENTIZE_PY}` (in a virtualenv if your \
             Python is managed; about 20 MB), or point COMPONENTIZE_PY at it, then build again"
        ))
    })?;
    let wit = project.dir.join(".weir").join("wit");
    write_wit(&wit)?;
    // The project's own weir.py (`weir new` writes one) wins; without one, the SDK
    // this binary carries is put on the module path.
    let mut paths = vec!["."];
    if !project.dir.join("weir.py").is_file() {
        let sdk = project.dir.join(".weir").join("python");
        std::fs::create_dir_all(&sdk).map_err(|e| AuthoringError::io("create", &sdk, e))?;
        let file = sdk.join("weir.py");
        std::fs::write(&file, super::new::PYTHON_SDK)
            .map_err(|e| AuthoringError::io("write", &file, e))?;
        paths.push(".weir/python");
    }
    // componentize-py runs in the project directory: paths relative to it.
    let out = std::path::absolute(wasm).map_err(|e| AuthoringError::io("resolve", wasm, e))?;
    let mut cmd = Command::new(&tool);
    cmd.args(["-d", ".weir/wit", "-w", WORLD, "componentize"])
        .args(paths.iter().flat_map(|p| ["-p", p]))
        .args(["app", "-o"])
        .arg(&out)
        // Its Python traceback says what is wrong; its own Rust backtrace would bury it.
        .env("RUST_BACKTRACE", "0")
        .current_dir(&project.dir);
    run_tool(cmd, "componentize-py", &project.dir)
}

/// `COMPONENTIZE_PY`, the project's own virtualenv, `PATH`, then the virtualenv
/// `just` installs (`~/.cache/weir/py`).
pub fn find_componentize_py(project_dir: &Path) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("COMPONENTIZE_PY") {
        return Some(PathBuf::from(p));
    }
    let local = project_dir.join(".venv/bin/componentize-py");
    if local.is_file() {
        return Some(local);
    }
    if let Some(on_path) = on_path("componentize-py") {
        return Some(on_path);
    }
    let home = std::env::var_os("HOME")?;
    let cached = Path::new(&home).join(".cache/weir/py/bin/componentize-py");
    cached.is_file().then_some(cached)
}

#[cfg(test)]
mod tests {
    #[test]
    fn just_installs_the_componentize_py_the_hint_names() {
        let justfile = include_str!("../../../justfile");
        assert!(
            justfile.contains(&format!(
                "componentize_py := \"{}\"",
                super::COMPONENTIZE_PY
            )),
            "the justfile's componentize_py differs from build.rs's {}",
            super::COMPONENTIZE_PY
        );
    }
}
