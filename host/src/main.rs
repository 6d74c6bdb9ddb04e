//! The `weir` command.

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weir_host::admin::client;
use weir_host::admin::view::PluginReport;
use weir_host::authoring::{self, Lang, Project};
use weir_host::config::Config;
use weir_host::invoke::{self, InvokeOptions};

/// Events cross threads (read on one, freed on another): mimalloc handles that
/// without glibc's arena lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc commits each arena it reserves (1 GiB) eagerly on Linux, so pages
/// it has freed stay resident: measured, a host that had compiled one plugin
/// held 87 MiB idle and 140 MiB under load, against 38 and 88 MiB with
/// commit on demand, at the same throughput (`docs/benchmarks.md`). The
/// option must be set before the first arena, which the first allocation
/// (before `main`) reserves: so in a constructor, which allocates nothing.
/// `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still decides.
#[used]
#[link_section = ".init_array"]
static ALLOCATOR_OPTIONS: extern "C" fn() = allocator_options;

extern "C" fn allocator_options() {
    // mimalloc's `mi_option_arena_eager_commit` (v2 and v3 alike).
    const ARENA_EAGER_COMMIT: std::ffi::c_int = 4;
    extern "C" {
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: getenv reads the environment without allocating; mi_option_set
    // only stores the value (no arena exists yet, nothing else runs).
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            mi_option_set(ARENA_EAGER_COMMIT, 0);
        }
    }
}

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Hands Kafka events to sandboxed WebAssembly handlers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume the plugins' topics and hand every event to its plugin, until SIGTERM or Ctrl-C.
    ///
    /// On shutdown: stop fetching, let in-flight events finish (up to
    /// shutdown.drain_timeout), commit offsets, exit 0.
    Run {
        /// The host configuration.
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// Log format: `text` or `json`.
        #[arg(long, default_value = "text")]
        log_format: String,
    },
    /// List the plugins: name, content hash, state (running, paused, rolled-back,
    /// rejected and why), loaded-at, topics, lag and in-flight events, as the running
    /// host reports them (admin API, else its status file); without a running host,
    /// each plugin of the directory is loaded and checked.
    Plugins {
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Pause a plugin of the running host: it stops fetching (in-flight events finish,
    /// its consumer stays in the group) until resumed. Through the admin API.
    Pause {
        plugin: String,
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// Resume a paused plugin of the running host. Through the admin API.
    Resume {
        plugin: String,
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// A plugin's offsets in its consumer group: show them, reset them to the
    /// earliest or latest, rewind them to a time or to explicit offsets. Through
    /// the admin API; every host of the group moves the partitions it holds
    /// (their events in flight finish first) and commits the new position.
    Offsets {
        #[command(subcommand)]
        command: OffsetsCommand,
    },
    /// Change how many workers run a plugin, on every host of its group, without
    /// a restart: events in flight finish, keys are routed anew, order per key
    /// holds. Kept until the host restarts or the manifest's own value changes.
    Workers {
        plugin: String,
        /// 1 to 64.
        count: usize,
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
    },
    /// The host configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Dead-letter topics.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Run one plugin over events from a JSON Lines file (or stdin), without a broker.
    ///
    /// Prints each event's outcome, every capability call and every published
    /// message. Exit status: 0 if every event was handled, 1 if any failed,
    /// 2 if the plugin, manifest or events could not be used.
    Invoke {
        /// The plugin component (`<name>.wasm`; its manifest `<name>.toml` sits beside it).
        wasm: PathBuf,
        /// JSON Lines events file; `-` or nothing reads standard input.
        events: Option<PathBuf>,
        /// The manifest, when it is not next to the component.
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// One JSON object per event (and a final summary) instead of text.
        #[arg(long)]
        json: bool,
        /// Topic prefix shown to the plugin (`{prefix}-{topic}`).
        #[arg(long, default_value = "dev")]
        prefix: String,
        /// Keep storage (and scheduled deletions) in this directory instead of a temporary one.
        #[arg(long)]
        storage_dir: Option<PathBuf>,
    },
    /// Start a plugin project: the handler with a worked example, its manifest, sample
    /// events with expectations, and the SDK. Then `weir build` and `weir test` in it.
    New {
        /// The plugin's name (lowercase letters, digits, `-`, `_`).
        name: String,
        /// The language to write it in.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to create it (default: ./<name>); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build the plugin project in DIR to `<name>.wasm` beside its manifest (cargo for
    /// Rust, componentize-py for Python, componentize-js for JavaScript and TypeScript,
    /// with tsc checking TypeScript against the WIT contract first).
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run the project's plugin over its events file and check each event's
    /// `expect` (outcome, cache, storage, publish). No broker needed.
    ///
    /// Exit status: 0 if every expectation held, 1 if any did not, 2 if the project,
    /// plugin or events could not be used.
    Test {
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Events file (default: DIR/events.jsonl).
        #[arg(long)]
        events: Option<PathBuf>,
        /// Write what each event did as its new `expect`.
        #[arg(long)]
        update: bool,
        /// Test this built component (its manifest beside it) instead of DIR's project.
        #[arg(long, conflicts_with = "dir")]
        plugin: Option<PathBuf>,
        /// Topic prefix shown to the plugin (`{prefix}-{topic}`).
        #[arg(long, default_value = "dev")]
        prefix: String,
    },
    /// Replace the SDK of the plugin project in DIR (`weir-sdk/` with its WIT for
    /// Rust, `weir.py` for Python) with the one this binary carries.
    Sdk {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Write the WIT package (the contract plugins are built against) into a directory.
    Wit {
        #[arg(long, default_value = "wit")]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum OffsetsCommand {
    /// Committed offset, earliest, latest and lag of each partition.
    Show {
        plugin: String,
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Move every partition to its earliest or latest offset.
    Reset {
        plugin: String,
        /// `earliest` (handle everything kept again) or `latest` (skip to the end).
        #[arg(long)]
        to: String,
        /// Print what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Move partitions to the first record at or after a time, or to given offsets.
    Rewind {
        plugin: String,
        /// RFC 3339, e.g. 2026-12-03T10:00:00Z.
        #[arg(long, conflicts_with = "offset", required_unless_present = "offset")]
        time: Option<String>,
        /// `topic/partition=offset`; repeat it for more partitions.
        #[arg(long)]
        offset: Vec<String>,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Load the config and every plugin (manifest and component) as `weir run` would,
    /// print the resolved topics, dead-letter topics, consumer groups, grants and
    /// limits, and every problem found. Contacts nothing. Exit status 1 on any problem.
    Check {
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum DlqCommand {
    /// Publish dead letters back to the topics they came from (original key, payload
    /// and headers), so the plugins consume them again.
    Replay {
        #[arg(long, short, default_value = "weir.toml")]
        config: PathBuf,
        /// Only dead letters of this plugin (and, by default, only its dead-letter topics).
        #[arg(long)]
        plugin: Option<String>,
        /// Only those that failed at or after this time (RFC 3339, e.g. 2026-11-25T10:00:00Z).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        since: Option<std::time::SystemTime>,
        /// Only those that failed before this time (RFC 3339).
        #[arg(long, value_parser = humantime::parse_rfc3339_weak)]
        until: Option<std::time::SystemTime>,
        /// Dead-letter topic to read (repeatable); default: every plugin's.
        #[arg(long = "topic")]
        topics: Vec<String>,
        /// Show what would be replayed; publish nothing.
        #[arg(long)]
        dry_run: bool,
        /// Send letters an earlier replay sent already (marked on `[dlq] replayed_topic`).
        #[arg(long)]
        again: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One runtime for every command (most are async underneath).
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match cli.command {
        Command::Run { config, log_format } => run(&rt, &config, &log_format),
        Command::Plugins { config, json } => plugins(&rt, &config, json),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => config_check(&rt, &config),
        Command::Offsets { command } => offsets(&rt, command),
        Command::Workers {
            plugin,
            count,
            config,
        } => {
            let path = format!("/plugins/{}/workers?count={count}", client::encode(&plugin));
            operate(&rt, &config, "POST", &path, false, |v| {
                let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
                for h in &hosts {
                    match (&h["workers"], &h["error"]) {
                        (w, _) if w.is_object() => println!(
                            "{}: {} → {} worker(s){}",
                            h["host"].as_str().unwrap_or("?"),
                            w["from"],
                            w["to"],
                            match w["rewound"].as_u64() {
                                Some(n) if n > 0 =>
                                    format!(" ({n} unfinished event(s) read again)"),
                                _ => String::new(),
                            }
                        ),
                        (_, e) => println!(
                            "{}: {}",
                            h["host"].as_str().unwrap_or("?"),
                            e.as_str().unwrap_or("no answer")
                        ),
                    }
                }
                println!("{plugin}: {count} worker(s) on {} host(s)", hosts.len());
            })
        }
        Command::Pause { plugin, config } => set_paused(&rt, &config, &plugin, "pause"),
        Command::Resume { plugin, config } => set_paused(&rt, &config, &plugin, "resume"),
        Command::Dlq {
            command:
                DlqCommand::Replay {
                    config,
                    plugin,
                    since,
                    until,
                    topics,
                    dry_run,
                    again,
                },
        } => dlq_replay(
            &rt,
            &config,
            weir_host::dlq::ReplayFilter {
                plugin,
                since,
                until,
                topics,
                dry_run,
                letters: Default::default(),
                again,
            },
        ),
        Command::New { name, lang, dir } => new(&name, lang, dir),
        Command::Build { dir } => build(&dir),
        Command::Test {
            dir,
            events,
            update,
            plugin,
            prefix,
        } => test(
            &rt,
            &dir,
            plugin,
            authoring::plugin_test::TestOptions {
                events,
                update,
                prefix,
            },
        ),
        Command::Sdk { dir } => {
            print_written(Project::open(&dir).and_then(|p| authoring::new::refresh_sdk(&p)))
        }
        Command::Wit { out } => print_written(authoring::write_wit(&out)),
        Command::Invoke {
            wasm,
            events,
            manifest,
            json,
            prefix,
            storage_dir,
        } => invoke(
            &rt,
            InvokeOptions {
                wasm,
                events,
                manifest,
                json,
                prefix,
                storage_dir,
            },
        ),
    }
}

type Rt = tokio::runtime::Runtime;

/// `weir run`.
fn run(rt: &Rt, config: &std::path::Path, log_format: &str) -> ExitCode {
    init_logging("info", log_format);
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Installed before anything starts: a SIGTERM during start-up stops the
    // host cleanly instead of killing it.
    let signal = {
        let _inside = rt.enter();
        shutdown_signal()
    };
    match rt.block_on(weir_host::run::run(config, signal)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `weir plugins`.
fn plugins(rt: &Rt, config: &std::path::Path, json: bool) -> ExitCode {
    init_logging("error", "text");
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match rt.block_on(list_plugins(&config)) {
        Ok((source, list)) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&list).expect("status serializes")
                );
            } else {
                println!("{source}");
                for p in &list {
                    print_plugin(p);
                }
            }
            if list.iter().any(|p| p.status.state == "rejected") {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `weir config check`.
fn config_check(rt: &Rt, config: &std::path::Path) -> ExitCode {
    init_logging("error", "text");
    let report = rt.block_on(weir_host::config_check::check(config));
    print!("{}", report.text);
    if report.problems.is_empty() {
        println!("\nno problems found");
        ExitCode::SUCCESS
    } else {
        println!("\n{} problem(s):", report.problems.len());
        for p in &report.problems {
            println!("  {p}");
        }
        ExitCode::from(1)
    }
}

/// `weir dlq replay`.
fn dlq_replay(rt: &Rt, config: &std::path::Path, filter: weir_host::dlq::ReplayFilter) -> ExitCode {
    init_logging("warn", "text");
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let dry_run = filter.dry_run;
    match rt.block_on(weir_host::dlq::replay(&config, &filter)) {
        Ok(r) => {
            println!(
                "{} {} of {} dead letter(s) ({} skipped: by the filters, already replayed ({}; --again sends them), or not to be sent back, see the log)",
                if dry_run { "would replay" } else { "replayed" },
                r.replayed,
                r.read,
                r.skipped,
                r.already_replayed
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `weir new`.
fn new(name: &str, lang: Lang, dir: Option<PathBuf>) -> ExitCode {
    let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
    match authoring::new::create(name, lang, &dir) {
        Ok(created) => {
            println!(
                "created the {lang} plugin {name} in {}:",
                created.dir.display()
            );
            for f in &created.files {
                println!("  {}", f.display());
            }
            println!(
                "next: weir build {0} && weir test {0}",
                created.dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `weir build`.
fn build(dir: &std::path::Path) -> ExitCode {
    let built = Project::open(dir).and_then(|p| {
        eprintln!(
            "building {} ({}) in {}",
            p.name(),
            p.lang_name(),
            dir.display()
        );
        authoring::build::build(&p)
    });
    match built {
        Ok(b) => {
            println!(
                "built {} ({:.1} MB) in {:.1} s",
                b.wasm.display(),
                b.bytes as f64 / 1e6,
                b.took.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `weir test`.
fn test(
    rt: &Rt,
    dir: &std::path::Path,
    plugin: Option<PathBuf>,
    opts: authoring::plugin_test::TestOptions,
) -> ExitCode {
    init_logging("warn", "text");
    let mut stdout = std::io::stdout().lock();
    let project = match &plugin {
        Some(wasm) => Project::component(wasm),
        None => Project::open(dir),
    };
    let result = project
        .map(|project| rt.block_on(authoring::plugin_test::run(&project, &opts, &mut stdout)));
    match result.and_then(|r| r) {
        Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `weir invoke`.
fn invoke(rt: &Rt, opts: InvokeOptions) -> ExitCode {
    // Plugin log lines are part of the report; the log shows only problems
    // unless RUST_LOG asks for more.
    init_logging("warn", "text");
    let mut stdout = std::io::stdout().lock();
    match rt.block_on(invoke::run(&opts, &mut stdout)) {
        Ok(summary) if summary.failed == 0 => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The files a command wrote, one per line; or why it could not (exit status 2).
fn print_written(written: Result<Vec<PathBuf>, authoring::AuthoringError>) -> ExitCode {
    match written {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Why `weir plugins` could not list the plugins.
#[derive(Debug, thiserror::Error)]
enum ListError {
    #[error(transparent)]
    Token(#[from] weir_host::config::TokenError),
    #[error("the admin API at {0} refused the request: set the host's admin token in this config ([admin] token_file, or WEIR_ADMIN__TOKEN)")]
    Refused(String),
    #[error("unexpected answer from {addr}/plugins: {source}")]
    Answer {
        addr: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Status(#[from] weir_host::status::StatusError),
}

/// The plugins as the running host's admin API reports them (live counters, lag,
/// pause), else as `status::plugin_status` finds them; and a line saying which.
async fn list_plugins(config: &Config) -> Result<(String, Vec<PluginReport>), ListError> {
    if let Ok(addr) = client::address(config) {
        let token = config.admin.resolved_token()?;
        let answer = client::call_with_token(&addr, "GET", "/plugins", token.as_deref()).await;
        if let Ok((401, _)) = answer {
            return Err(ListError::Refused(addr));
        }
        if let Ok((200, body)) = answer {
            let list = serde_json::from_str(&body).map_err(|source| ListError::Answer {
                addr: addr.clone(),
                source,
            })?;
            return Ok((
                format!("as reported by the running host (http://{addr})"),
                list,
            ));
        }
    }
    let (source, list) = weir_host::status::plugin_status(config).await?;
    let list = list
        .into_iter()
        .map(|status| PluginReport {
            paused: status.state == "paused",
            in_flight: 0,
            workers: 0,
            group: None,
            partitions: vec![],
            lag: 0,
            backends: Default::default(),
            last_error: None,
            status,
        })
        .collect();
    Ok((source, list))
}

fn print_plugin(p: &PluginReport) {
    let s = &p.status;
    let tripped: Vec<String> = p
        .backends
        .iter()
        .filter(|(_, state)| **state != weir_host::capabilities::breaker::BreakerState::Closed)
        .map(|(backend, state)| format!("  {backend} breaker {}", state.as_str()))
        .collect();
    let live = if p.partitions.is_empty() {
        String::new()
    } else {
        format!(
            "  lag {}  in-flight {}  partitions {}",
            p.lag,
            p.in_flight,
            p.partitions.len()
        )
    };
    println!(
        "{:<24} {:<12} sha256 {}  loaded {}  topics {}{live}{}",
        s.name,
        s.state,
        s.sha256.as_deref().map_or("-", |h| &h[..12.min(h.len())]),
        s.loaded_at.as_deref().unwrap_or("-"),
        s.topics.join(","),
        tripped.concat()
    );
    if let Some(reason) = &s.reason {
        println!("{:<24} {reason}", "");
    }
}

/// `weir pause` / `weir resume`: exit 0 with the plugin's new state, 1 if the host
/// refused (unknown plugin), 2 if it cannot be reached.
fn set_paused(rt: &Rt, config: &std::path::Path, plugin: &str, action: &str) -> ExitCode {
    let path = format!("/plugins/{plugin}/{action}");
    operate(rt, config, "POST", &path, false, |v| {
        println!("{plugin}: {}", v["state"].as_str().unwrap_or_default());
    })
}

fn offsets(rt: &Rt, command: OffsetsCommand) -> ExitCode {
    let query = |dry_run: bool| if dry_run { "&dry_run=true" } else { "" };
    match command {
        OffsetsCommand::Show {
            plugin,
            config,
            json,
        } => {
            let path = format!("/plugins/{}/offsets", client::encode(&plugin));
            operate(rt, &config, "GET", &path, json, print_offsets)
        }
        OffsetsCommand::Reset {
            plugin,
            to,
            dry_run,
            config,
            json,
        } => {
            let path = format!(
                "/plugins/{}/offsets/reset?to={}{}",
                client::encode(&plugin),
                client::encode(&to),
                query(dry_run)
            );
            operate(rt, &config, "POST", &path, json, print_offsets)
        }
        OffsetsCommand::Rewind {
            plugin,
            time,
            offset,
            dry_run,
            config,
            json,
        } => {
            let what = match time {
                Some(t) => format!("time={}", client::encode(&t)),
                None => format!("offsets={}", client::encode(&offset.join(","))),
            };
            let path = format!(
                "/plugins/{}/offsets/rewind?{what}{}",
                client::encode(&plugin),
                query(dry_run)
            );
            operate(rt, &config, "POST", &path, json, print_offsets)
        }
    }
}

/// A plugin's offsets (shown, or as planned and moved) as a table.
fn print_offsets(v: &serde_json::Value) {
    let planned = v.get("target").is_some();
    if planned {
        println!(
            "{} (group {}): {} {}",
            v["plugin"].as_str().unwrap_or(""),
            v["group"].as_str().unwrap_or(""),
            if v["dry_run"] == true {
                "would move to"
            } else {
                "moved to"
            },
            v["target"].as_str().unwrap_or("")
        );
        println!(
            "{:<40} {:>12} {:>12} {:>10}",
            "partition", "committed", "to", "moves"
        );
    } else {
        println!(
            "{} (group {})",
            v["plugin"].as_str().unwrap_or(""),
            v["group"].as_str().unwrap_or("")
        );
        println!(
            "{:<40} {:>12} {:>12} {:>12} {:>10}",
            "partition", "committed", "earliest", "latest", "lag"
        );
    }
    let num = |x: &serde_json::Value| x.as_i64().map_or("-".to_string(), |n| n.to_string());
    for p in v["partitions"].as_array().into_iter().flatten() {
        let name = format!("{}/{}", p["topic"].as_str().unwrap_or(""), p["partition"]);
        if planned {
            let moves = p["moves"].as_i64().unwrap_or(0);
            println!(
                "{name:<40} {:>12} {:>12} {:>10}",
                num(&p["committed"]),
                num(&p["to"]),
                match moves {
                    0 => "stays".to_string(),
                    m if m < 0 => format!("{} again", -m),
                    m => format!("{m} skipped"),
                }
            );
        } else {
            println!(
                "{name:<40} {:>12} {:>12} {:>12} {:>10}",
                num(&p["committed"]),
                num(&p["earliest"]),
                num(&p["latest"]),
                num(&p["lag"])
            );
        }
    }
    for h in v["hosts"].as_array().into_iter().flatten() {
        let moved = h["seek"]["moved"].as_array().map_or(0, Vec::len);
        let dropped = h["seek"]["dropped"].as_u64().unwrap_or(0);
        let error = h["error"]
            .as_str()
            .or_else(|| h["seek"]["error"].as_str())
            .map(|e| format!("; {e}"))
            .unwrap_or_default();
        println!(
            "host {}: moved {moved} partition(s){}{error}",
            h["host"].as_str().unwrap_or("?"),
            if dropped > 0 {
                format!(", {dropped} unfinished event(s) dropped")
            } else {
                String::new()
            }
        );
    }
    if let Some(outside) = v["committed_outside_the_group"].as_array() {
        println!(
            "committed from outside the group (no host holds them): {} partition(s)",
            outside.len()
        );
    }
}

/// A call to the admin API with the config's token: print its answer with
/// `print` (or as JSON); exit 0 on success, 1 if the host refused, 2 if it
/// cannot be reached.
fn operate(
    rt: &Rt,
    config: &std::path::Path,
    method: &str,
    path: &str,
    json: bool,
    print: impl FnOnce(&serde_json::Value),
) -> ExitCode {
    init_logging("error", "text");
    let config = match load_config(config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (addr, token) = match client::address(&config)
        .map_err(|e| e.to_string())
        .and_then(|a| {
            config
                .admin
                .resolved_token()
                .map(|t| (a, t))
                .map_err(|e| e.to_string())
        }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // The hosts wait for their events in flight before they move anything.
    let timeout = config.shutdown.drain_timeout
        + config.admin.control_timeout
        + std::time::Duration::from_secs(20);
    match rt.block_on(client::call_for(
        &addr,
        method,
        path,
        token.as_deref(),
        timeout,
    )) {
        Ok((code, body)) => {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if code == 200 {
                if json {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or(body));
                } else {
                    print(&v);
                }
                return ExitCode::SUCCESS;
            }
            if json && v.is_object() {
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            eprintln!(
                "error: {}",
                v["error"].as_str().map(str::to_string).unwrap_or(body)
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The host configuration, or exit status 2 after saying what is wrong with it.
fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    weir_host::config::Config::load(path).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}

fn init_logging(default: &str, format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Completes on SIGTERM or Ctrl-C; the handlers are installed when this is called
/// (inside the runtime), not when the future is first polled.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("install the SIGTERM handler");
    #[cfg(unix)]
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .expect("install the SIGINT handler");
    async move {
        #[cfg(unix)]
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
