//! Plugin authoring: `weir new`, `weir build`, `weir test` and `weir wit`.
//!
//! A plugin project is a directory holding the plugin's manifest (`<name>.toml`),
//! its sources (a Cargo crate, a Python `app.py`, or a JavaScript `app.js` or
//! TypeScript `app.ts` with `package.json`), and `events.jsonl`, the
//! sample events with their expectations. `weir build` leaves `<name>.wasm` beside
//! the manifest, so the directory's two files are what an operator deploys.

pub mod build;
pub mod expect;
pub mod js;
pub mod new;
pub mod plugin_test;

use crate::manifest::Manifest;
use std::fmt;
use std::path::{Path, PathBuf};

/// The WIT package this `weir` hosts: the contract plugins are built against.
pub const WIT_FILES: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    (
        "capabilities.wit",
        include_str!("../../../wit/capabilities.wit"),
    ),
];

/// The world plugins export (the handler plus `handle-batch`).
pub const WORLD: &str = "batch-handler";

/// Write the WIT package into `dir` (created if needed); returns the files written.
pub fn write_wit(dir: &Path) -> Result<Vec<PathBuf>, AuthoringError> {
    std::fs::create_dir_all(dir).map_err(|e| AuthoringError::io("create", dir, e))?;
    WIT_FILES
        .iter()
        .map(|(name, text)| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| AuthoringError::io("write", &path, e))?;
            Ok(path)
        })
        .collect()
}

/// The first file named `name` in a `PATH` directory.
pub(crate) fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Run a build tool in `dir`; its messages go to this process's stderr (and its
/// stdout, unless `cmd` redirects it), and a failure says to read them.
pub(crate) fn run_tool(
    mut cmd: std::process::Command,
    what: &str,
    dir: &Path,
) -> Result<(), AuthoringError> {
    let status = cmd
        .stderr(std::process::Stdio::inherit())
        .status()
        .map_err(|e| AuthoringError(format!("cannot run {what}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(AuthoringError(format!(
            "{what} failed ({status}) in {}: see its messages above",
            dir.display()
        )))
    }
}

/// A failure of `weir new`, `build` or `test` that stops it, with what to do.
#[derive(Debug)]
pub struct AuthoringError(pub String);

impl AuthoringError {
    pub fn io(what: &str, path: &Path, e: std::io::Error) -> Self {
        AuthoringError(format!("cannot {what} {}: {e}", path.display()))
    }
}

impl fmt::Display for AuthoringError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AuthoringError {}

/// The language a plugin project is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    #[value(name = "js", alias = "javascript")]
    JavaScript,
    #[value(name = "ts", alias = "typescript")]
    TypeScript,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Python => "python",
            Lang::JavaScript => "javascript",
            Lang::TypeScript => "typescript",
        })
    }
}

/// A plugin project directory, as `weir build` and `weir test` find it.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    /// `None` for a built component tested on its own (`weir test --plugin`).
    pub lang: Option<Lang>,
    pub manifest_path: PathBuf,
    pub manifest: Manifest,
}

impl Project {
    /// Find the project in `dir`: its language (a `Cargo.toml`, an `app.py`, an
    /// `app.ts` or an `app.js`) and its manifest (the one `.toml` file that is not
    /// Cargo's, Python's or the host's).
    pub fn open(dir: &Path) -> Result<Project, AuthoringError> {
        if !dir.is_dir() {
            return Err(AuthoringError(format!(
                "{} is not a directory: give a plugin project's directory (one `weir new` made)",
                dir.display()
            )));
        }
        let lang = if dir.join("Cargo.toml").is_file() {
            Lang::Rust
        } else if dir.join("app.py").is_file() {
            Lang::Python
        } else if dir.join("app.ts").is_file() {
            Lang::TypeScript
        } else if dir.join("app.js").is_file() {
            Lang::JavaScript
        } else {
            return Err(AuthoringError(format!(
                "{} holds no Cargo.toml (Rust), app.py (Python), app.ts (TypeScript) or app.js \
                 (JavaScript): is it a plugin project? `weir new <name> --lang rust|python|js|ts` \
                 makes one",
                dir.display()
            )));
        };
        let manifest_path = find_manifest(dir)?;
        let manifest = Manifest::load(&manifest_path).map_err(|e| AuthoringError(e.to_string()))?;
        Ok(Project {
            dir: dir.to_path_buf(),
            lang: Some(lang),
            manifest_path,
            manifest,
        })
    }

    /// A built component with its manifest beside it (`<name>.wasm`, `<name>.toml`),
    /// without its sources.
    pub fn component(wasm: &Path) -> Result<Project, AuthoringError> {
        let manifest_path = wasm.with_extension("toml");
        let manifest = Manifest::load(&manifest_path).map_err(|e| AuthoringError(e.to_string()))?;
        Ok(Project {
            dir: wasm.parent().unwrap_or(Path::new(".")).to_path_buf(),
            lang: None,
            manifest_path,
            manifest,
        })
    }

    /// The language, for messages.
    pub fn lang_name(&self) -> String {
        self.lang.map_or("component".into(), |l| l.to_string())
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// Where `weir build` leaves the component: `<name>.wasm` beside the manifest.
    pub fn wasm_path(&self) -> PathBuf {
        self.manifest_path.with_extension("wasm")
    }

    /// The default events file.
    pub fn events_path(&self) -> PathBuf {
        self.dir.join("events.jsonl")
    }

    /// The newest modification time among the sources `weir build` reads.
    pub fn sources_modified(&self) -> Option<std::time::SystemTime> {
        let mut newest = None;
        let mut visit = |p: &Path| {
            if let Ok(t) = std::fs::metadata(p).and_then(|m| m.modified()) {
                newest = newest.max(Some(t));
            }
        };
        visit(&self.manifest_path);
        match self.lang? {
            Lang::Rust => {
                visit(&self.dir.join("Cargo.toml"));
                walk(&self.dir.join("src"), &mut |p| visit(p));
            }
            Lang::Python => visit_sources(&self.dir, &["py"], &mut visit),
            Lang::JavaScript | Lang::TypeScript => {
                visit(&self.dir.join("package.json"));
                visit(&self.dir.join("tsconfig.json"));
                visit_sources(&self.dir, &["js", "mjs", "ts", "mts"], &mut visit);
            }
        }
        newest
    }
}

/// The files in `dir` (not below it) with one of these extensions.
fn visit_sources(dir: &Path, extensions: &[&str], visit: &mut dyn FnMut(&Path)) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            if path
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| extensions.contains(&x))
            {
                visit(&path);
            }
        }
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, f);
            } else {
                f(&p);
            }
        }
    }
}

/// Files named `*.toml` that are not a plugin manifest.
const NOT_MANIFESTS: &[&str] = &["Cargo.toml", "pyproject.toml", "weir.toml", "Cargo.lock"];

fn find_manifest(dir: &Path) -> Result<PathBuf, AuthoringError> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| AuthoringError::io("read", dir, e))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "toml")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !NOT_MANIFESTS.contains(&n))
        })
        .collect();
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(AuthoringError(format!(
            "no plugin manifest (<name>.toml) in {}: the project needs one beside its sources",
            dir.display()
        ))),
        _ => Err(AuthoringError(format!(
            "several .toml files in {} could be the plugin's manifest ({}): keep one <name>.toml",
            dir.display(),
            found
                .iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
