//! `weir new <name> --lang rust|python|js|ts`: a plugin project from the templates this
//! binary carries, with the SDK and the WIT package it builds against.

use super::{AuthoringError, Lang, WIT_FILES};
use std::path::{Path, PathBuf};

const MANIFEST: &str = include_str!("../../templates/manifest.toml");
const EVENTS: &str = include_str!("../../templates/events.jsonl");
const GITIGNORE: &str = include_str!("../../templates/gitignore");
const RUST_CARGO: &str = include_str!("../../templates/rust/Cargo.toml");
const RUST_LIB: &str = include_str!("../../templates/rust/lib.rs");
const RUST_SDK_CARGO: &str = include_str!("../../templates/rust/sdk-Cargo.toml");
const RUST_SDK_LIB: &str = include_str!("../../../plugins/sdk/src/lib.rs");
const PYTHON_APP: &str = include_str!("../../templates/python/app.py");
pub(crate) const PYTHON_SDK: &str = include_str!("../../../plugins/sdk-python/weir.py");
const JS_APP: &str = include_str!("../../templates/js/app.js");
const JS_PACKAGE: &str = include_str!("../../templates/js/package.json");
const TS_APP: &str = include_str!("../../templates/ts/app.ts");
const TS_CONFIG: &str = include_str!("../../templates/ts/tsconfig.json");

/// The wit-bindgen the Rust SDK is built with (a unit test keeps it equal to the
/// workspace's).
pub const WIT_BINDGEN: &str = "0.61";

/// What `weir new` wrote.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
}

/// Create the project `name` in `dir` (which must not exist, or be empty).
pub fn create(name: &str, lang: Lang, dir: &Path) -> Result<Created, AuthoringError> {
    check_name(name)?;
    if dir.exists() {
        let empty = std::fs::read_dir(dir)
            .map_err(|e| AuthoringError::io("read", dir, e))?
            .next()
            .is_none();
        if !empty {
            return Err(AuthoringError(format!(
                "{} already exists and is not empty: choose another --dir, or remove it",
                dir.display()
            )));
        }
    }
    let (memory, timeout) = match lang {
        // CPython starts with about 20 MiB of linear memory and is slower to warm.
        Lang::Rust => ("32 MiB", "2s"),
        Lang::Python => ("96 MiB", "5s"),
        // StarlingMonkey (SpiderMonkey) starts with about 9 MiB; its garbage is
        // collected at heap thresholds, so a batch of events peaks near 80 MiB.
        Lang::JavaScript | Lang::TypeScript => ("128 MiB", "5s"),
    };
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{memory}}", memory)
            .replace("{{timeout}}", timeout)
            .replace("{{version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{wit_bindgen}}", WIT_BINDGEN)
            .replace("{{toolchain}}", &super::js::dev_dependencies())
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (format!("{name}.toml").into(), fill(MANIFEST)),
        ("events.jsonl".into(), fill(EVENTS)),
        (".gitignore".into(), GITIGNORE.to_string()),
    ];
    match lang {
        Lang::Rust => {
            files.push(("Cargo.toml".into(), fill(RUST_CARGO)));
            files.push(("src/lib.rs".into(), fill(RUST_LIB)));
        }
        Lang::Python => files.push(("app.py".into(), fill(PYTHON_APP))),
        Lang::JavaScript => {
            files.push(("app.js".into(), fill(JS_APP)));
            files.push(("package.json".into(), fill(JS_PACKAGE)));
        }
        Lang::TypeScript => {
            files.push(("app.ts".into(), fill(TS_APP)));
            files.push(("tsconfig.json".into(), TS_CONFIG.to_string()));
            files.push(("package.json".into(), fill(JS_PACKAGE)));
        }
    }
    files.extend(sdk_files(lang));
    let written = write_files(dir, files)?;
    Ok(Created {
        dir: dir.to_path_buf(),
        files: written,
    })
}

/// The SDK of `lang` as this binary carries it, relative to a project's directory:
/// `weir-sdk/` (with the WIT package) for Rust, `weir.py` for Python, `weir.js`
/// with its declarations `weir.d.ts` for JavaScript and TypeScript.
fn sdk_files(lang: Lang) -> Vec<(PathBuf, String)> {
    match lang {
        Lang::Rust => {
            let cargo = RUST_SDK_CARGO
                .replace("{{version}}", env!("CARGO_PKG_VERSION"))
                .replace("{{wit_bindgen}}", WIT_BINDGEN);
            let mut files = vec![
                ("weir-sdk/Cargo.toml".into(), cargo),
                ("weir-sdk/src/lib.rs".into(), RUST_SDK_LIB.to_string()),
            ];
            for (file, text) in WIT_FILES {
                files.push((Path::new("weir-sdk/wit").join(file), text.to_string()));
            }
            files
        }
        Lang::Python => vec![("weir.py".into(), PYTHON_SDK.to_string())],
        Lang::JavaScript | Lang::TypeScript => vec![
            ("weir.js".into(), super::js::SDK_JS.to_string()),
            ("weir.d.ts".into(), super::js::SDK_DTS.to_string()),
        ],
    }
}

/// `weir sdk [DIR]`: replace the project's SDK (and, for Rust, its WIT) with the
/// ones this binary carries, to build against this host's contract.
pub fn refresh_sdk(project: &super::Project) -> Result<Vec<PathBuf>, AuthoringError> {
    let lang = project.lang.ok_or_else(|| {
        AuthoringError(format!(
            "{} has no sources: no SDK to refresh",
            project.dir.display()
        ))
    })?;
    write_files(&project.dir, sdk_files(lang))
}

fn write_files(dir: &Path, files: Vec<(PathBuf, String)>) -> Result<Vec<PathBuf>, AuthoringError> {
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| AuthoringError::io("create", parent, e))?;
        }
        std::fs::write(&path, text).map_err(|e| AuthoringError::io("write", &path, e))?;
        written.push(path);
    }
    Ok(written)
}

/// A plugin name: what the manifest accepts, and a valid crate name.
fn check_name(name: &str) -> Result<(), AuthoringError> {
    let ok = name.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && name.len() <= 64;
    if ok {
        Ok(())
    } else {
        Err(AuthoringError(format!(
            "{name:?} is not a usable plugin name: use lowercase letters, digits, `-` and `_`, \
             starting with a letter (at most 64 characters), e.g. `track-deletions`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_wit_bindgen_is_the_workspaces() {
        let workspace = include_str!("../../../Cargo.toml");
        let line = workspace
            .lines()
            .find(|l| l.starts_with("wit-bindgen"))
            .expect("the workspace names wit-bindgen");
        assert!(
            line.contains(&format!("\"{WIT_BINDGEN}\"")),
            "the workspace has `{line}`, `weir new` writes wit-bindgen {WIT_BINDGEN}"
        );
    }

    #[test]
    fn the_sdk_reads_its_wit_from_its_own_folder() {
        // `weir new` writes the WIT into `weir-sdk/wit`, where the SDK looks.
        assert!(RUST_SDK_LIB.contains("path: \"wit\""));
    }

    #[test]
    fn names_are_checked_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("weir-new-{}", std::process::id()));
        let err = create("Bad Name", Lang::Rust, &dir).unwrap_err();
        assert!(err.0.contains("not a usable plugin name"), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn a_project_is_written_with_every_placeholder_filled() {
        let dir = std::env::temp_dir().join(format!("weir-new-ok-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for lang in [Lang::Rust, Lang::Python, Lang::JavaScript, Lang::TypeScript] {
            let created = create("my-plugin", lang, &dir).unwrap();
            for f in &created.files {
                let text = std::fs::read_to_string(f).unwrap();
                assert!(!text.contains("{{"), "{} keeps a placeholder", f.display());
            }
            let project = super::super::Project::open(&dir).unwrap();
            assert_eq!(project.lang, Some(lang));
            assert_eq!(project.name(), "my-plugin");
            // `weir sdk` puts back an SDK file an author broke.
            let sdk = match lang {
                Lang::Rust => dir.join("weir-sdk/src/lib.rs"),
                Lang::Python => dir.join("weir.py"),
                Lang::JavaScript | Lang::TypeScript => dir.join("weir.js"),
            };
            std::fs::write(&sdk, "broken").unwrap();
            refresh_sdk(&project).unwrap();
            assert_ne!(std::fs::read_to_string(&sdk).unwrap(), "broken");
            let again = create("my-plugin", lang, &dir).unwrap_err();
            assert!(again.0.contains("not empty"), "{again}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
