//! JavaScript and TypeScript plugins: the toolchain `weir build` runs, where it
//! lives, and the build.
//!
//! The toolchain is componentize-js (JavaScript → component, on the StarlingMonkey
//! engine) and TypeScript, pinned by `templates/js/toolchain/package-lock.json`.
//! It is the project's own when its `node_modules` holds componentize-js (after
//! `npm install` with the `package.json` `weir new` writes); otherwise `weir build`
//! installs it once into `~/.cache/weir/js` (`WEIR_JS_TOOLCHAIN` moves it) with
//! `npm ci`. Nothing is installed globally.
//!
//! A build: the WIT package this binary carries goes to `.weir/wit`; for TypeScript,
//! its declarations are generated into `.weir/types` (jco's guest types, so `tsc`
//! checks the handler against the contract) and `tsc` compiles the project into
//! `.weir/js`; for JavaScript the project's modules are copied there. The SDK
//! (`weir.js`) joins them if the project has none, and componentize-js builds
//! `.weir/js/app.js` against the world `batch-handler`.

use super::{on_path, run_tool as run, write_wit, AuthoringError, Lang, Project, WORLD};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The componentize-js release the SDK is tested with.
pub const COMPONENTIZE_JS: &str = "0.23.0";
/// The TypeScript release `weir build` type-checks and compiles with.
pub const TYPESCRIPT: &str = "5.9.3";
/// The WASI shims componentize-js 0.23 imports without declaring them.
const PREVIEW2_SHIM: &str = "0.25.0";

/// The toolchain's `package.json` and its lock, as `npm ci` installs them.
const TOOLCHAIN_PACKAGE: &str = include_str!("../../templates/js/toolchain/package.json");
const TOOLCHAIN_LOCK: &str = include_str!("../../templates/js/toolchain/package-lock.json");
/// Writes the WIT package's TypeScript declarations (run with node).
const WIT_TYPES_SCRIPT: &str = include_str!("../../templates/js/wit-types.mjs");

/// The JavaScript SDK, and its type declarations.
pub const SDK_JS: &str = include_str!("../../../plugins/sdk-js/weir.js");
pub const SDK_DTS: &str = include_str!("../../../plugins/sdk-js/weir.d.ts");

/// WASI features the component does without: the host links no `wasi:http`.
const DISABLED_FEATURES: &[&str] = &["http", "fetch-event"];

/// The `devDependencies` a project's `package.json` pins (what `weir build` uses
/// once `npm install` put them in the project's `node_modules`).
pub fn dev_dependencies() -> String {
    format!(
        "{{\n    \"@bytecodealliance/componentize-js\": \"{COMPONENTIZE_JS}\",\n    \
         \"@bytecodealliance/preview2-shim\": \"{PREVIEW2_SHIM}\",\n    \
         \"typescript\": \"{TYPESCRIPT}\"\n  }}"
    )
}

/// Where the tools are: the directory whose `node_modules` holds them.
#[derive(Debug)]
struct Toolchain {
    node: PathBuf,
    root: PathBuf,
}

impl Toolchain {
    fn componentize_js(&self) -> PathBuf {
        self.root
            .join("node_modules/@bytecodealliance/componentize-js/src/cli.js")
    }

    fn tsc(&self) -> PathBuf {
        self.root.join("node_modules/typescript/bin/tsc")
    }

    fn has(&self, lang: Lang) -> bool {
        self.componentize_js().is_file() && (lang != Lang::TypeScript || self.tsc().is_file())
    }
}

/// The install hint for Node.js and npm.
const NODE_HINT: &str =
    "install Node.js 20 or newer with npm (Debian: `apt-get install nodejs npm`; \
     elsewhere https://nodejs.org), or point WEIR_NODE at a node binary, then build again";

/// `WEIR_NODE`, or `node` on `PATH`.
fn find_node() -> Result<PathBuf, AuthoringError> {
    if let Some(p) = std::env::var_os("WEIR_NODE") {
        return Ok(PathBuf::from(p));
    }
    on_path("node").ok_or_else(|| {
        AuthoringError(format!(
            "Node.js is not installed (no `node` on PATH): JavaScript and TypeScript plugins are \
             built with componentize-js, which runs on it. {NODE_HINT}"
        ))
    })
}

/// The shared toolchain's directory: `WEIR_JS_TOOLCHAIN`, or `~/.cache/weir/js`.
fn shared_toolchain_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WEIR_JS_TOOLCHAIN") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    Some(Path::new(&home).join(".cache/weir/js"))
}

/// The file that records which toolchain `npm ci` installed.
const STAMP: &str = ".weir-toolchain.json";

/// The project's own toolchain, or the shared one (installed now if it is not).
fn toolchain(project_dir: &Path, lang: Lang) -> Result<Toolchain, AuthoringError> {
    let node = find_node()?;
    let own = Toolchain {
        node: node.clone(),
        root: project_dir.to_path_buf(),
    };
    if own.has(lang) {
        return Ok(own);
    }
    let dir = shared_toolchain_dir().ok_or_else(|| {
        AuthoringError(
            "neither the project's node_modules nor HOME: set WEIR_JS_TOOLCHAIN to a directory \
             for the JavaScript toolchain, or run `npm install` in the project"
                .into(),
        )
    })?;
    install_shared(&dir)?;
    Ok(Toolchain { node, root: dir })
}

/// `npm ci` the pinned toolchain into `dir`, once; a lock keeps two builds from
/// installing at the same time.
fn install_shared(dir: &Path) -> Result<(), AuthoringError> {
    std::fs::create_dir_all(dir).map_err(|e| AuthoringError::io("create", dir, e))?;
    let lock_path = dir.join(".weir-toolchain.lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|e| AuthoringError::io("create", &lock_path, e))?;
    lock.lock()
        .map_err(|e| AuthoringError::io("lock", &lock_path, e))?;
    if ready_in(dir) {
        return Ok(());
    }
    let npm = on_path("npm").ok_or_else(|| {
        AuthoringError(format!(
            "npm is not installed (no `npm` on PATH): `weir build` installs componentize-js and \
             TypeScript with it. {NODE_HINT}"
        ))
    })?;
    eprintln!(
        "installing the JavaScript toolchain (componentize-js {COMPONENTIZE_JS}, TypeScript \
         {TYPESCRIPT}: about 400 MB from the npm registry) into {}; one-time, about 30 s",
        dir.display()
    );
    let _ = std::fs::remove_file(dir.join(STAMP));
    for (name, text) in [
        ("package.json", TOOLCHAIN_PACKAGE),
        ("package-lock.json", TOOLCHAIN_LOCK),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| AuthoringError::io("write", &path, e))?;
    }
    let status = Command::new(&npm)
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .map_err(|e| AuthoringError(format!("cannot run {}: {e}", npm.display())))?;
    if !status.success() {
        return Err(AuthoringError(format!(
            "`npm ci` failed ({status}) in {}: see its messages above (is the npm registry \
             reachable? `npm ping` tells)",
            dir.display()
        )));
    }
    let stamp = dir.join(STAMP);
    std::fs::write(&stamp, TOOLCHAIN_PACKAGE).map_err(|e| AuthoringError::io("write", &stamp, e))
}

fn ready_in(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join(STAMP)).is_ok_and(|s| s == TOOLCHAIN_PACKAGE)
        && dir
            .join("node_modules/@bytecodealliance/componentize-js/src/cli.js")
            .is_file()
}

/// Build a JavaScript or TypeScript project into `wasm`.
pub fn build(project: &Project, lang: Lang, wasm: &Path) -> Result<(), AuthoringError> {
    // The tools run in the project's directory: every path they get is absolute.
    let dir = std::path::absolute(&project.dir)
        .map_err(|e| AuthoringError::io("resolve", &project.dir, e))?;
    let tools = toolchain(&dir, lang)?;
    let weir_dir = dir.join(".weir");
    let wit = weir_dir.join("wit");
    write_wit(&wit)?;
    let out = weir_dir.join("js");
    // Nothing left from an earlier build: a module deleted from the project must
    // not linger in the component.
    if out.exists() {
        std::fs::remove_dir_all(&out).map_err(|e| AuthoringError::io("clear", &out, e))?;
    }
    std::fs::create_dir_all(&out).map_err(|e| AuthoringError::io("create", &out, e))?;
    match lang {
        Lang::TypeScript => compile_typescript(&dir, &tools, &weir_dir)?,
        _ => copy_modules(&dir, &out)?,
    }
    if !out.join("weir.js").is_file() {
        let own = dir.join("weir.js");
        let sdk = if own.is_file() {
            std::fs::read_to_string(&own).map_err(|e| AuthoringError::io("read", &own, e))?
        } else {
            SDK_JS.to_string()
        };
        let path = out.join("weir.js");
        std::fs::write(&path, sdk).map_err(|e| AuthoringError::io("write", &path, e))?;
    }
    let entry = out.join("app.js");
    if !entry.is_file() {
        return Err(AuthoringError(format!(
            "{} was not produced: the project's handler must be app.{} in {}",
            entry.display(),
            if lang == Lang::TypeScript { "ts" } else { "js" },
            dir.display()
        )));
    }
    let target = std::path::absolute(wasm).map_err(|e| AuthoringError::io("resolve", wasm, e))?;
    let mut cmd = Command::new(&tools.node);
    cmd.arg(tools.componentize_js())
        .arg(&entry)
        .arg("--wit")
        .arg(&wit)
        .args(["--world-name", WORLD, "--disable"])
        .args(DISABLED_FEATURES)
        .arg("--out")
        .arg(&target)
        .current_dir(&dir);
    run(cmd, "componentize-js", &dir)
}

/// The declarations of the WIT package into `.weir/types`, then `tsc -p .`.
fn compile_typescript(
    dir: &Path,
    tools: &Toolchain,
    weir_dir: &Path,
) -> Result<(), AuthoringError> {
    let script = weir_dir.join("wit-types.mjs");
    std::fs::write(&script, WIT_TYPES_SCRIPT)
        .map_err(|e| AuthoringError::io("write", &script, e))?;
    let types = weir_dir.join("types");
    if types.exists() {
        std::fs::remove_dir_all(&types).map_err(|e| AuthoringError::io("clear", &types, e))?;
    }
    let mut gen = Command::new(&tools.node);
    gen.arg(&script)
        .arg(&tools.root)
        .arg(weir_dir.join("wit"))
        .arg(&types)
        .current_dir(dir)
        .stdout(Stdio::null());
    run(gen, "the WIT type generator (jco)", dir)?;
    if !dir.join("tsconfig.json").is_file() {
        return Err(AuthoringError(format!(
            "no tsconfig.json in {}: `weir new <name> --lang ts` writes one (outDir \".weir/js\")",
            dir.display()
        )));
    }
    // The project's own weir.d.ts wins; without one, tsconfig's `rootDirs` finds the
    // one this binary carries in .weir/sdk.
    if !dir.join("weir.d.ts").is_file() {
        let sdk = weir_dir.join("sdk");
        std::fs::create_dir_all(&sdk).map_err(|e| AuthoringError::io("create", &sdk, e))?;
        let path = sdk.join("weir.d.ts");
        std::fs::write(&path, SDK_DTS).map_err(|e| AuthoringError::io("write", &path, e))?;
    }
    let mut tsc = Command::new(&tools.node);
    tsc.arg(tools.tsc())
        .args(["-p", ".", "--pretty", "false"])
        .current_dir(dir);
    run(tsc, "tsc (the TypeScript compiler)", dir)
}

/// The project's JavaScript modules (its top directory) into `out`.
fn copy_modules(dir: &Path, out: &Path) -> Result<(), AuthoringError> {
    let entries = std::fs::read_dir(dir).map_err(|e| AuthoringError::io("read", dir, e))?;
    for e in entries.flatten() {
        let path = e.path();
        let module = path
            .extension()
            .and_then(|x| x.to_str())
            .is_some_and(|x| matches!(x, "js" | "mjs" | "json"))
            && path.file_name().is_some_and(|n| {
                n != "package.json" && n != "package-lock.json" && n != "tsconfig.json"
            });
        if module && path.is_file() {
            let to = out.join(e.file_name());
            std::fs::copy(&path, &to).map_err(|e| AuthoringError::io("copy", &path, e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_toolchain_pins_what_the_constants_name() {
        let package: serde_json::Value = serde_json::from_str(TOOLCHAIN_PACKAGE).unwrap();
        let deps = &package["dependencies"];
        assert_eq!(deps["@bytecodealliance/componentize-js"], COMPONENTIZE_JS);
        assert_eq!(deps["typescript"], TYPESCRIPT);
        assert_eq!(deps["@bytecodealliance/preview2-shim"], PREVIEW2_SHIM);
        let lock: serde_json::Value = serde_json::from_str(TOOLCHAIN_LOCK).unwrap();
        assert_eq!(lock["packages"][""]["dependencies"], *deps);
        let pinned: serde_json::Value =
            serde_json::from_str(&dev_dependencies()).expect("devDependencies are JSON");
        assert_eq!(pinned, *deps);
    }

    #[test]
    fn the_sdk_declares_what_it_exports() {
        for name in [
            "exportHandler",
            "Retry",
            "Reject",
            "Denied",
            "Invalid",
            "Unavailable",
            "cache",
            "storage",
            "publish",
            "log",
            "config",
            "Event",
        ] {
            assert!(
                SDK_JS.contains(&format!("export class {name} "))
                    || SDK_JS.contains(&format!("export const {name} "))
                    || SDK_JS.contains(&format!("export function {name}(")),
                "weir.js does not export {name}"
            );
            assert!(SDK_DTS.contains(name), "weir.d.ts does not declare {name}");
        }
    }
}
