//! `just bench`: Weir side by side with the consumer a team would write by hand,
//! in one run, on one broker, over the same pre-produced events.
//!
//! 1. A local broker (Apache Kafka, one KRaft node) and N keyed 1 KiB events on a
//!    3-partition topic (a `TrackDeletedEvent` padded to 1 KiB, which all three
//!    plugins accept).
//! 2. Throughput, each run in its own consumer group over the same events:
//!    - (a) a native rdkafka at-least-once consumer: consume, store, commit;
//!    - (b) `weir run` with the `noop` plugin;
//!    - (c) a native rdkafka consume → produce → commit loop: each record
//!      republished with its key, an offset stored only once the outputs before it
//!      are acknowledged (delivery reports), never stalling on a batch;
//!    - (d) `weir run` with `echo` (republishes each event, JSON parsed and
//!      re-encoded);
//!    - (e) `weir run` with `track-deletions` (memory cache, local storage: a
//!      cache delete and a scheduled deletion per event, recorded on the schedule
//!      topic);
//!    - (t) (d) with `delivery = "exactly-once"`: outputs and offsets in one
//!      Kafka transaction every 100 ms; beside (k), the same republish in Kafka
//!      Streams with `processing.guarantee = exactly_once_v2` (the JVM anchor
//!      of exactly-once; (j) is the at-least-once one);
//!    - (g) (d) on three `weir run` hosts in one group, started together, with
//!      the fatal producer errors they logged, beside (d') = (d) again. Each of
//!      the two runs on a fresh broker loaded the same way (this broker slows
//!      down as it holds more, so a run after others is not comparable), in
//!      `--pairs N` alternating pairs (3; 1 with `--quick`), medians reported.
//!    - (p), only with `--only p`: three plain idempotent rdkafka producers
//!      writing at once, with the fatal errors they got (to tell the broker's
//!      behaviour under several producers from Weir's); (q), only with `--only
//!      q`: three of (c)'s native loops in one group (the same shape as (g)).
//!
//!    Every figure is read the same way, by an observer polling the group's
//!    committed offsets: the rate between 10 % and 90 % committed (steady state;
//!    start-up and tail excluded), plus the wall time from start to all committed.
//! 3. The warm cost of one call into the plugin (`noop`) for 100 B, 1 KiB and
//!    16 KiB events, one at a time and through `handle-batch`; and of
//!    `track-deletions` in Rust beside the same plugin in Python and in
//!    TypeScript (`--only y`; a row when `weir build plugins/track-deletions-py`
//!    or `-ts` has built it), with each component's size and first compile; and
//!    for Python, JavaScript and TypeScript the time from an empty directory to a
//!    handled event (`weir new` → `weir build` → `weir invoke`).
//! 4. RSS: `weir run` idle with one plugin, per additional plugin, and the
//!    highest RSS during (d).
//! 5. Latency from produce to output for (d) at half its measured rate: p50, p99;
//!    and for (t) at half its rate (read `read_committed`).
//!
//! `--quick` (CI) runs it with 50 000 events. The figures are printed as a
//! Markdown table; docs/benchmarks.md records them.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use weir_devkit::DevBroker;
use weir_host::capabilities::Backends;
use weir_host::event::EventRecord;

const PARTITIONS: i32 = 3;
const KEYS: usize = 10_000;
const PAYLOAD: usize = 1024;

struct Plan {
    events: usize,
    /// Only these runs (`--only bd`), for profiling one of them.
    only: Option<String>,
    latency_seconds: u64,
    extra_plugins: usize,
    calls: usize,
    /// (d') and (g) pairs, each run on a fresh broker; the medians are reported.
    pairs: usize,
}

fn main() -> Result<(), String> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,weir::plugin=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let mut plan = if quick {
        Plan {
            events: 50_000,
            latency_seconds: 2,
            extra_plugins: 3,
            calls: 20_000,
            only: None,
            pairs: 1,
        }
    } else {
        Plan {
            events: 1_000_000,
            latency_seconds: 10,
            extra_plugins: 10,
            calls: 200_000,
            only: None,
            pairs: 3,
        }
    };
    if let Some(n) = arg("--events").and_then(|v| v.parse().ok()) {
        plan.events = n;
    }
    plan.only = arg("--only");
    if let Some(n) = arg("--pairs").and_then(|v| v.parse().ok()) {
        plan.pairs = n;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::env::set_current_dir(&root).map_err(|e| e.to_string())?;
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    let bench = Bench {
        wasm_dir: Path::new(&target).join("wasm32-wasip2/release"),
        weir: std::env::var("WEIR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|_| Path::new(&target).join("dist/weir")),
        work: std::env::temp_dir().join(format!("weir-bench-{}", std::process::id())),
    };
    if !bench.weir.is_file() {
        return Err(format!(
            "{} not found: `just bench` builds it (cargo build --profile dist -p weir-host --bin weir)",
            bench.weir.display()
        ));
    }
    let result = bench.run(&plan, &arg);
    if plan.only.is_none() {
        let _ = std::fs::remove_dir_all(&bench.work);
    }
    result
}

struct Bench {
    wasm_dir: PathBuf,
    weir: PathBuf,
    work: PathBuf,
}

/// (d') and (g) pairs on fresh brokers.
#[derive(Default)]
struct ScaleOut {
    one: Vec<Rate>,
    three: Vec<Rate>,
    ratios: Vec<f64>,
    rss: u64,
    errors: usize,
}

impl ScaleOut {
    fn median(rates: &[Rate]) -> Rate {
        let mut sorted = rates.to_vec();
        sorted.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
        sorted[sorted.len() / 2]
    }

    fn ratios(&self) -> String {
        self.ratios
            .iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// What one language's `track-deletions` costs: µs per event one at a time and
/// batched, the component's size and its first compile.
struct LanguageCost {
    language: &'static str,
    one: f64,
    batched: f64,
    bytes: u64,
    compile: Duration,
}

/// A throughput figure: steady rate and wall time.
#[derive(Clone, Copy)]
struct Rate {
    per_second: f64,
    wall: Duration,
}

impl Bench {
    fn run(&self, plan: &Plan, arg: &dyn Fn(&str) -> Option<String>) -> Result<(), String> {
        let n = plan.events;
        let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
        // The in-process runs need no broker.
        let in_process = |only: &str| only.chars().all(|c| matches!(c, 'w' | 'y'));
        if let Some(only) = plan.only.as_deref().filter(|o| in_process(o)) {
            for run in only.chars() {
                self.in_process_run(&rt, run, plan.calls)?;
            }
            return Ok(());
        }
        let (broker, producing) = self.loaded_broker(&rt, "broker", n)?;
        let bootstrap = broker.bootstrap();
        let produce_rate = n as f64 / producing.as_secs_f64();

        if let Some(only) = &plan.only {
            let _broker = broker;
            // Profiling: just these runs, their figures, and where their logs are.
            for run in only.chars() {
                if in_process(&run.to_string()) {
                    self.in_process_run(&rt, run, plan.calls)?;
                    continue;
                }
                if run == 'l' || run == 'm' {
                    // (l): (d)'s latency; (m): (t)'s (exactly-once).
                    let rate = arg("--rate")
                        .and_then(|r| r.parse().ok())
                        .unwrap_or(20_000.0);
                    let seconds = Duration::from_secs(plan.latency_seconds);
                    let (p50, p99, sent) = self.latency(&bootstrap, rate, seconds, run == 'm')?;
                    println!(
                        "({run}) {rate:.0}/s, {sent} events: p50 {:.1} ms, p99 {:.1} ms",
                        p50.as_secs_f64() * 1e3,
                        p99.as_secs_f64() * 1e3
                    );
                    continue;
                }
                if run == 'p' {
                    let started = Instant::now();
                    let (failed, fatal) = three_producers(&bootstrap, "bench-out-p", n)?;
                    println!(
                        "(p) 3 plain idempotent producers × {n} events at once: {:.0} events/s in all, {failed} deliveries failed, fatal errors: {fatal:?}",
                        3.0 * n as f64 / started.elapsed().as_secs_f64()
                    );
                    continue;
                }
                if run == 'q' {
                    let (rate, errors) =
                        self.native_loops(&bootstrap, "bench-q", n, Some("bench-out-q"), 3);
                    println!(
                        "(q) 3 native consume → produce → commit loops in one group: {:.0} events/s; errors: {errors:?}",
                        rate.map(|r| r.per_second).unwrap_or(0.0)
                    );
                    continue;
                }
                if run == 'g' {
                    let s = self.scale_out(&rt, n, plan.pairs)?;
                    let (one, three) = (ScaleOut::median(&s.one), ScaleOut::median(&s.three));
                    println!(
                        "(g) median {:.0} events/s, 3 hosts, {} fatal producer errors logged; (d') on an equally fresh broker median {:.0} events/s: g/d' = {:.2} (pairs: {}); logs under {}",
                        three.per_second,
                        s.errors,
                        one.per_second,
                        three.per_second / one.per_second,
                        s.ratios(),
                        self.work.display()
                    );
                    continue;
                }
                let (rate, rss) = self.throughput(&bootstrap, run, n)?;
                println!(
                    "({run}) {:.0} events/s ({:.2} s), highest RSS {:.1} MiB; logs under {}",
                    rate.per_second,
                    rate.wall.as_secs_f64(),
                    rss as f64 / 1024.0,
                    self.work.display()
                );
            }
            return Ok(());
        }
        let mut rates = Vec::new();
        let mut d_rss = 0;
        for run in ['a', 'b', 'c', 'd', 'e'] {
            eprintln!("({run})...");
            let (rate, rss) = self.throughput(&bootstrap, run, n)?;
            if run == 'd' {
                d_rss = rss;
            }
            rates.push(rate);
        }
        let [a, b, c, d, e] = rates[..] else {
            unreachable!("five runs")
        };
        eprintln!("(t)...");
        let (t, _) = self.throughput(&bootstrap, 't', n)?;
        let jvm = |run: char| match jvm_republish_dir(&self.weir) {
            Some(_) => {
                eprintln!("({run})...");
                self.throughput(&bootstrap, run, n).map(Some)
            }
            None => {
                eprintln!("({run}) skipped: examples/jvm-republish is not built (`just bench` builds it; it needs Maven)");
                Ok(None)
            }
        };
        let j = jvm('j')?;
        let k = jvm('k')?;
        eprintln!("(g), and (d) again, each on a fresh broker...");
        let scale = self.scale_out(&rt, n, plan.pairs)?;
        let (d1, g, g_rss, g_errors) = (
            ScaleOut::median(&scale.one),
            ScaleOut::median(&scale.three),
            scale.rss,
            scale.errors,
        );
        eprintln!("warm calls...");
        let calls = rt.block_on(self.warm_calls(plan.calls))?;
        let languages = rt.block_on(self.language_calls(plan.calls / 10))?;
        eprintln!("idle RSS...");
        let (idle, per_plugin) = self.idle_rss(&bootstrap, plan.extra_plugins)?;
        // At half (d)'s rate, as asked; and at a quarter, since on a small machine
        // the stream's own producer and reader take CPU the throughput run did not
        // need (the figures say which rate the host kept up with).
        let mut latencies = Vec::new();
        for share in [2.0, 4.0] {
            let rate = d.per_second / share;
            eprintln!("latency at {rate:.0} events/s...");
            let seconds = Duration::from_secs(plan.latency_seconds);
            latencies.push((
                "d",
                share,
                rate,
                self.latency(&bootstrap, rate, seconds, false)?,
            ));
        }
        // (t) at half its own rate (at most (d)'s: on a short run, offsets
        // committed every 100 ms make its measured rate coarse).
        let rate = t.per_second.min(d.per_second) / 2.0;
        eprintln!("latency of (t) at {rate:.0} events/s...");
        let seconds = Duration::from_secs(plan.latency_seconds);
        latencies.push((
            "t",
            2.0,
            rate,
            self.latency(&bootstrap, rate, seconds, true)?,
        ));

        let mib = |kib: u64| kib as f64 / 1024.0;
        let fmt_rate = |r: Rate| {
            format!(
                "{:.0} events/s ({:.2} s start to all committed)",
                r.per_second,
                r.wall.as_secs_f64()
            )
        };
        println!(
            "\n{n} events of {PAYLOAD} B, {KEYS} keys, {PARTITIONS} partitions; producer alone: {produce_rate:.0} events/s\n"
        );
        println!("| run | throughput | ratio |\n| --- | --- | --- |");
        println!(
            "| (a) native consumer, consume + commit | {} | |",
            fmt_rate(a)
        );
        println!(
            "| (b) weir + noop | {} | b/a = {:.2} |",
            fmt_rate(b),
            b.per_second / a.per_second
        );
        println!(
            "| (c) native consume → produce → commit | {} | |",
            fmt_rate(c)
        );
        println!(
            "| (d) weir + echo | {} | d/c = {:.2} |",
            fmt_rate(d),
            d.per_second / c.per_second
        );
        println!(
            "| (e) weir + track-deletions | {} | e/a = {:.2} |",
            fmt_rate(e),
            e.per_second / a.per_second
        );
        if let Some((j, j_rss)) = j {
            println!(
                "| (j) JVM consume → republish → commit (kafka-clients 4.1.1, flush + commit every 100 ms; highest RSS {:.0} MiB) | {} | d/j = {:.2} |",
                mib(j_rss),
                fmt_rate(j),
                d.per_second / j.per_second
            );
        }
        println!(
            "| (t) weir + echo, delivery = \"exactly-once\" (a transaction every 100 ms) | {} | t/d = {:.2} |",
            fmt_rate(t),
            t.per_second / d.per_second
        );
        if let Some((k, k_rss)) = k {
            println!(
                "| (k) Kafka Streams 4.1.1 republish, exactly_once_v2, commit every 100 ms (highest RSS {:.0} MiB) | {} | t/k = {:.2} |",
                mib(k_rss),
                fmt_rate(k),
                t.per_second / k.per_second
            );
        }
        println!(
            "| (d') weir + echo, on a fresh broker | {} | |",
            fmt_rate(d1)
        );
        println!(
            "| (g) 3 × weir + echo in one group, started together, on a fresh broker | {} | g/d' = {:.2} (each pair: {}) |",
            fmt_rate(g),
            g.per_second / d1.per_second,
            scale.ratios()
        );
        println!("\n| figure | value |\n| --- | --- |");
        println!("| fatal producer errors logged by the 3 hosts of (g) | {g_errors} |");
        println!(
            "| RSS, highest of one host during (g) | {:.1} MiB |",
            mib(g_rss)
        );
        for (size, one, batched) in &calls {
            println!(
                "| warm call, noop, {size} B event | {:.2} µs one at a time; {:.2} µs per event through handle-batch (128 per call) |",
                one, batched
            );
        }
        for l in &languages {
            println!(
                "| warm call, track-deletions in {} (cache delete + scheduled deletion), 1 KiB event | {:.2} µs one at a time; {:.2} µs per event through handle-batch; component {:.1} MB, first compile {:.2} s |",
                l.language, l.one, l.batched, l.bytes as f64 / 1e6, l.compile.as_secs_f64()
            );
        }
        println!(
            "| RSS, weir run idle with one plugin | {:.1} MiB |",
            mib(idle)
        );
        println!(
            "| RSS per additional plugin (its consumer included) | {:.1} MiB |",
            mib(per_plugin)
        );
        println!("| RSS, highest during (d) | {:.1} MiB |", mib(d_rss));
        for (run, share, rate, (p50, p99, sent)) in latencies {
            println!(
                "| latency produce → output, ({run}) at 1/{share} of its rate: {rate:.0} events/s ({sent} events after a 3 s warm-up) | p50 {:.1} ms, p99 {:.1} ms |",
                p50.as_secs_f64() * 1000.0,
                p99.as_secs_f64() * 1000.0
            );
        }
        Ok(())
    }

    /// A broker of its own (in `work/{name}`), its topics, and `n` events on
    /// `bench-in`.
    fn loaded_broker(
        &self,
        rt: &tokio::runtime::Runtime,
        name: &str,
        n: usize,
    ) -> Result<(DevBroker, Duration), String> {
        let kafka =
            weir_devkit::find_kafka().ok_or("Apache Kafka is not installed: `just kafka`")?;
        // A fresh broker each time: no data of an earlier run under this name.
        let dir = self.work.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        let broker = DevBroker::start(&kafka, &dir)?;
        let bootstrap = broker.bootstrap();
        rt.block_on(weir_devkit::create_topics(
            &bootstrap,
            &[
                "bench-in",
                "bench-out-c",
                "bench-out-d",
                "bench-out-g",
                "bench-out-p",
                "bench-out-q",
                "bench-in.dlq",
                "bench-out-j",
                "bench-out-t",
                "bench-out-k",
                "bench-lat-in",
                "bench-lat-out",
                "bench-lat-in.dlq",
                "bench-latt-in",
                "bench-latt-out",
                "bench-latt-in.dlq",
                "bench-idle",
                "bench-idle.dlq",
            ],
            PARTITIONS,
        ))?;
        // The schedule topic as a host would create it: compacted.
        rt.block_on(weir_devkit::create_topics_with(
            &bootstrap,
            &["bench-weir-schedule"],
            PARTITIONS,
            &[("cleanup.policy", "compact")],
        ))?;
        eprintln!("producing {n} events of {PAYLOAD} bytes over {KEYS} keys...");
        let started = Instant::now();
        produce_events(&bootstrap, "bench-in", n)?;
        Ok((broker, started.elapsed()))
    }

    /// (d) and (g), each on a fresh broker loaded the same way: this broker
    /// slows down as it holds more (records, producers, groups), so a run
    /// after others is not comparable. `pairs` times, alternating; the median of
    /// (d') and of (g), each pair's g/d', (g)'s highest RSS of one host, and the
    /// fatal producer errors (g)'s hosts logged.
    fn scale_out(
        &self,
        rt: &tokio::runtime::Runtime,
        n: usize,
        pairs: usize,
    ) -> Result<ScaleOut, String> {
        let mut out = ScaleOut::default();
        for _ in 0..pairs.max(1) {
            let (broker, _) = self.loaded_broker(rt, "broker-d1", n)?;
            let (one, _) = self.throughput(&broker.bootstrap(), 'd', n)?;
            drop(broker);
            let (broker, _) = self.loaded_broker(rt, "broker-g", n)?;
            let (three, rss, errors) = self.three_hosts(&broker.bootstrap(), n)?;
            drop(broker);
            out.ratios.push(three.per_second / one.per_second);
            out.one.push(one);
            out.three.push(three);
            out.rss = out.rss.max(rss);
            out.errors += errors;
        }
        Ok(out)
    }

    /// Put plugin `name` (the component `{wasm}.wasm`) with `manifest` into the
    /// plugin directory of the host in `dir`.
    fn install(&self, dir: &Path, name: &str, wasm: &str, manifest: &str) -> Result<(), String> {
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).map_err(|e| e.to_string())?;
        std::fs::copy(
            self.wasm_dir.join(format!("{wasm}.wasm")),
            plugins.join(format!("{name}.wasm")),
        )
        .map_err(|e| format!("{wasm}.wasm: {e} (`just plugins` builds it)"))?;
        std::fs::write(plugins.join(format!("{name}.toml")), manifest).map_err(|e| e.to_string())
    }

    /// The component `{wasm}.wasm` loaded in this process with `manifest`
    /// (in-memory cache, storage in a scratch directory).
    async fn load(
        &self,
        runtime: &weir_host::runtime::Runtime,
        wasm: &str,
        manifest: &str,
    ) -> Result<weir_host::runtime::Plugin, String> {
        let manifest =
            weir_host::manifest::Manifest::parse(manifest, Path::new(&format!("{wasm}.toml")))
                .map_err(|e| e.to_string())?;
        let backends = Backends::local(&self.work.join(format!("in-process-{wasm}")))
            .map_err(|e| e.to_string())?;
        runtime
            .load(
                &self.wasm_dir.join(format!("{wasm}.wasm")),
                manifest,
                backends,
            )
            .await
            .map_err(|e| e.to_string())
    }

    /// One throughput run by its letter: its rate and (for weir) highest RSS.
    fn throughput(&self, bootstrap: &str, run: char, n: usize) -> Result<(Rate, u64), String> {
        match run {
            'a' => Ok((self.native(bootstrap, "bench-a", n, None)?, 0)),
            'b' => self.weir_run(bootstrap, "noop", "noop", "bench-b", n, ""),
            'c' => Ok((self.native(bootstrap, "bench-c", n, Some("bench-out-c"))?, 0)),
            'd' => self.weir_run(
                bootstrap,
                "echo",
                "echo",
                "bench-d",
                n,
                "[capabilities.publish]\ntopics = [\"out-d\"]\n[config]\noutput = \"out-d\"\n",
            ),
            'e' => self.weir_run(
                bootstrap,
                "track-deletions",
                "track_deletions",
                "bench-e",
                n,
                "[capabilities.cache]\nnamespace = \"novatune\"\n[capabilities.storage]\nprefixes = [\"audio/\", \"waveforms/\"]\n",
            ),
            't' => self.weir_run(
                bootstrap,
                "echo",
                "echo",
                "bench-t",
                n,
                "delivery = \"exactly-once\"\n[capabilities.publish]\ntopics = [\"out-t\"]\n[config]\noutput = \"out-t\"\n",
            ),
            'j' => self.jvm_app(bootstrap, "Republish", "bench-j", "bench-out-j", n),
            'k' => self.jvm_app(bootstrap, "StreamsRepublish", "bench-k", "bench-out-k", n),
            other => Err(format!("no run ({other}): use a to e, t, j, k, or g")),
        }
    }

    /// (a) and (c): a hand-written at-least-once loop in this process.
    fn native(
        &self,
        bootstrap: &str,
        group: &str,
        n: usize,
        republish_to: Option<&str>,
    ) -> Result<Rate, String> {
        let (rate, errors) = self.native_loops(bootstrap, group, n, republish_to, 1);
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => rate,
        }
    }

    /// `loops` native loops in one group, each on a thread of its own (with its
    /// own consumer and producer): the group's rate, and what each loop failed with.
    fn native_loops(
        &self,
        bootstrap: &str,
        group: &str,
        n: usize,
        republish_to: Option<&str>,
        loops: usize,
    ) -> (Result<Rate, String>, Vec<String>) {
        let observer = Observer::start(bootstrap, group, "bench-in", n);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..loops)
            .map(|_| {
                let loop_stop = stop.clone();
                let (b, g) = (bootstrap.to_string(), group.to_string());
                let out = republish_to.map(str::to_string);
                std::thread::spawn(move || native_loop(&b, &g, out.as_deref(), &loop_stop))
            })
            .collect();
        let rate = observer.wait();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let errors = workers
            .into_iter()
            .filter_map(|w| match w.join() {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e),
                Err(_) => Some("the native loop panicked".into()),
            })
            .collect();
        (rate, errors)
    }

    /// (j) and (k): the JVM anchors of `examples/jvm-republish`, built by `just
    /// bench` into `$CARGO_TARGET_DIR/jvm-republish`: `Republish` (kafka-clients:
    /// consume → republish → flush → commit every 100 ms) or `StreamsRepublish`
    /// (Kafka Streams, exactly_once_v2), reading `bench-in` in `group` and
    /// writing `output`; its rate and highest RSS (KiB).
    fn jvm_app(
        &self,
        bootstrap: &str,
        class: &str,
        group: &str,
        output: &str,
        n: usize,
    ) -> Result<(Rate, u64), String> {
        let built = jvm_republish_dir(&self.weir)
            .ok_or("examples/jvm-republish is not built (`just bench` builds it with Maven)")?;
        let log = self.work.join(format!("{group}.log"));
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let observer = Observer::start(bootstrap, group, "bench-in", n);
        let mut child = Command::new(std::env::var_os("JAVA").unwrap_or_else(|| "java".into()))
            .arg("-cp")
            .arg(format!(
                "{}:{}/lib/*",
                built.join("jvm-republish-1.jar").display(),
                built.display()
            ))
            .arg(format!("dev.weir.bench.{class}"))
            .args([bootstrap, "bench-in", output, group])
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start java: {e}"))?;
        let mut rss = 0;
        let rate = loop {
            rss = rss.max(rss_of(child.id()));
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "the JVM loop exited ({status}); log: {}",
                    log.display()
                ));
            }
            if let Some(rate) = observer.poll() {
                break rate;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let _ = child.kill();
        let _ = child.wait();
        Ok((rate?, rss))
    }

    /// (b), (d), (e): `weir run` as an operator runs it; its rate and highest RSS (KiB).
    fn weir_run(
        &self,
        bootstrap: &str,
        plugin: &str,
        wasm: &str,
        group: &str,
        n: usize,
        manifest_extra: &str,
    ) -> Result<(Rate, u64), String> {
        self.weir_hosts(bootstrap, plugin, wasm, group, n, manifest_extra, 1)
            .map(|(rate, rss, _)| (rate, rss))
    }

    /// `hosts` `weir run` processes in one group, started together: the group's
    /// rate, the highest RSS of one host (KiB), and the fatal producer errors the
    /// hosts logged.
    #[allow(clippy::too_many_arguments)]
    fn weir_hosts(
        &self,
        bootstrap: &str,
        plugin: &str,
        wasm: &str,
        group: &str,
        n: usize,
        manifest_extra: &str,
        hosts: usize,
    ) -> Result<(Rate, u64, usize), String> {
        let manifest = format!(
            "name = \"{plugin}\"\ntopics = [\"in\"]\n[consumer]\ngroup = \"{group}\"\n{}{manifest_extra}",
            std::env::var("BENCH_CONSUMER").unwrap_or_default()
        );
        let dirs: Vec<PathBuf> = (0..hosts)
            .map(|i| match hosts {
                1 => self.work.join(group),
                _ => self.work.join(format!("{group}-{}", i + 1)),
            })
            .collect();
        for dir in &dirs {
            self.install(dir, plugin, wasm, &manifest)?;
        }
        let observer = Observer::start(bootstrap, group, "bench-in", n);
        let mut running = Vec::new();
        for dir in &dirs {
            running.push(WeirProcess::start(&self.weir, dir, bootstrap, "")?);
        }
        let mut rss = 0;
        let rate = loop {
            for host in &mut running {
                rss = rss.max(host.rss_kib());
                if let Some(status) = host.exited() {
                    return Err(format!(
                        "weir exited ({status}); log: {}",
                        host.log.display()
                    ));
                }
            }
            if let Some(rate) = observer.poll() {
                break rate;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let mut producer_errors = 0;
        for host in &mut running {
            host.stop()?;
            let log = std::fs::read_to_string(&host.log).unwrap_or_default();
            producer_errors += log
                .lines()
                .filter(|l| l.contains("failed fatally") || l.contains("OutOfOrderSequence"))
                .count();
        }
        Ok((rate?, rss, producer_errors))
    }

    /// (g): (d)'s plugin on three hosts in one group, started together.
    fn three_hosts(&self, bootstrap: &str, n: usize) -> Result<(Rate, u64, usize), String> {
        // Each run in a group of its own (`--only ggg` repeats it).
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let run = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let group = match run {
            0 => "bench-g".to_string(),
            n => format!("bench-g{n}"),
        };
        self.weir_hosts(
            bootstrap,
            "echo",
            "echo",
            &group,
            n,
            "[capabilities.publish]\ntopics = [\"out-g\"]\n[config]\noutput = \"out-g\"\n",
            3,
        )
    }

    /// `--only w` (warm calls into noop) or `--only y` (track-deletions per language).
    fn in_process_run(
        &self,
        rt: &tokio::runtime::Runtime,
        run: char,
        calls: usize,
    ) -> Result<(), String> {
        if run == 'w' {
            for (size, one, batched) in rt.block_on(self.warm_calls(calls))? {
                println!("(w) {size} B: {one:.2} µs one at a time, {batched:.2} µs batched");
            }
            println!(
                "(w) new instance + first event: {:.1} µs",
                rt.block_on(self.cold_call())?
            );
        } else {
            for l in rt.block_on(self.language_calls(calls / 10))? {
                println!(
                    "(y) track-deletions in {}: {:.2} µs one at a time, {:.2} µs batched; component {:.1} MB, first compile {:.2} s",
                    l.language,
                    l.one,
                    l.batched,
                    l.bytes as f64 / 1e6,
                    l.compile.as_secs_f64()
                );
            }
            for lang in ["python", "js", "ts"] {
                match self.new_to_handled(lang) {
                    Ok((built, handled)) => println!(
                        "(y) {lang}: weir new → weir build → an event handled (weir invoke): {:.1} s (built after {:.1} s)",
                        handled.as_secs_f64(),
                        built.as_secs_f64()
                    ),
                    Err(e) => println!("(y) {lang}: from an empty directory skipped: {e}"),
                }
            }
        }
        Ok(())
    }

    /// Warm cost of one call into `noop`: (size, µs one at a time, µs per event batched).
    async fn warm_calls(&self, calls: usize) -> Result<Vec<(usize, f64, f64)>, String> {
        let runtime = weir_host::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let mut plugin = self
            .load(&runtime, "noop", "name = \"noop\"\ntopics = [\"in\"]\n")
            .await?;
        let mut out = Vec::new();
        for size in [100, 1024, 16 * 1024] {
            let events: Vec<EventRecord> = (0..128)
                .map(|i| {
                    let mut e = EventRecord::for_test("bench-in", 0, i);
                    e.logical_topic = "in".into();
                    e.key = Some(format!("k{i}").into_bytes());
                    e.payload = vec![b'x'; size];
                    e.headers = vec![("correlation-id".into(), b"c-1".to_vec())];
                    e
                })
                .collect();
            let (one, batched) = time_calls(&mut plugin, &events, calls, "noop").await?;
            out.push((size, one, batched));
        }
        Ok(out)
    }

    /// `track-deletions` in Rust and, when `weir build plugins/track-deletions-py`
    /// (`-ts`) has built it, in Python (TypeScript), on the same 1 KiB events (a
    /// cache delete and a scheduled deletion each).
    async fn language_calls(&self, calls: usize) -> Result<Vec<LanguageCost>, String> {
        let runtime = weir_host::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let mut components = vec![(
            "Rust",
            self.wasm_dir.join("track_deletions.wasm"),
            Path::new("examples/plugins/track-deletions.toml").to_path_buf(),
        )];
        for (language, dir) in [("Python", "py"), ("TypeScript", "ts")] {
            let wasm = PathBuf::from(format!(
                "plugins/track-deletions-{dir}/track-deletions.wasm"
            ));
            if wasm.is_file() {
                let manifest = wasm.with_extension("toml");
                components.push((language, wasm, manifest));
            } else {
                eprintln!(
                    "(y) track-deletions in {language} skipped: {} is not built",
                    wasm.display()
                );
            }
        }
        let events: Vec<EventRecord> = (0..128)
            .map(|i| {
                let key = format!("user-{i}");
                let mut e = EventRecord::for_test("bench-in", 0, i as i64);
                e.logical_topic = "track-deletions".into();
                e.payload = event_body(i, &key, "");
                e.key = Some(key.into_bytes());
                e
            })
            .collect();
        let mut out = Vec::new();
        for (language, wasm, manifest) in components {
            let manifest =
                weir_host::manifest::Manifest::load(&manifest).map_err(|e| e.to_string())?;
            // The schedule as under `weir run`: records sent with the event's
            // outputs, not written to the store on every call.
            let mut backends = Backends::local(&self.work.join(format!("languages-{language}")))
                .map_err(|e| e.to_string())?;
            backends.deletions = weir_host::capabilities::schedule::DeletionSchedule::in_topic();
            let bytes = std::fs::metadata(&wasm).map_err(|e| e.to_string())?.len();
            // No compile cache here: this is the compile a host does the first time.
            let started = Instant::now();
            let mut plugin = runtime
                .load(&wasm, manifest, backends)
                .await
                .map_err(|e| e.to_string())?;
            let compile = started.elapsed();
            let what = format!("track-deletions in {language}");
            let (one, batched) = time_calls(&mut plugin, &events, calls, &what).await?;
            out.push(LanguageCost {
                language,
                one,
                batched,
                bytes,
                compile,
            });
        }
        Ok(out)
    }

    /// `weir new` → `weir build` → `weir invoke` on the template's first event, in
    /// an empty directory: (built after, handled after).
    fn new_to_handled(&self, lang: &str) -> Result<(Duration, Duration), String> {
        let work = self.work.join(format!("new-{lang}"));
        let _ = std::fs::remove_dir_all(&work);
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let run = |args: &[&str]| -> Result<(), String> {
            let out = Command::new(&self.weir)
                .args(args)
                .current_dir(&work)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                Err(format!(
                    "`weir {}` failed: {}",
                    args.join(" "),
                    err.lines().last().unwrap_or("")
                ))
            }
        };
        let started = Instant::now();
        run(&["new", "viewed", "--lang", lang])?;
        run(&["build", "viewed"])?;
        let built = started.elapsed();
        let first = work.join("first.jsonl");
        let line = r#"{"key": "user-1", "payload": {"userId": "user-1", "itemId": "item-9"}}"#;
        std::fs::write(&first, format!("{line}\n")).map_err(|e| e.to_string())?;
        run(&["invoke", "viewed/viewed.wasm", "first.jsonl"])?;
        Ok((built, started.elapsed()))
    }

    /// A new instance of `echo` (instantiation and `init`) and its first event, µs.
    async fn cold_call(&self) -> Result<f64, String> {
        let runtime = weir_host::runtime::Runtime::new().map_err(|e| e.to_string())?;
        let manifest =
            "name = \"echo\"\ntopics = [\"in\"]\n[capabilities.publish]\ntopics = [\"out\"]\n";
        let plugin = self.load(&runtime, "echo", manifest).await?;
        let template = plugin.template();
        let mut event = EventRecord::for_test("bench-in", 0, 0);
        event.payload = event_body(0, "user-0", "");
        let rounds = 200;
        let started = Instant::now();
        for _ in 0..rounds {
            let mut fresh = template.instance();
            let report = fresh.handle(&event).await;
            if !report.outcome.is_handled() {
                return Err(format!("echo: {:?}", report.outcome));
            }
        }
        Ok(started.elapsed().as_secs_f64() * 1e6 / rounds as f64)
    }

    /// RSS (KiB) of `weir run` idle with one plugin, and per additional plugin.
    fn idle_rss(&self, bootstrap: &str, extra: usize) -> Result<(u64, u64), String> {
        let measure = |count: usize| -> Result<u64, String> {
            let dir = self.work.join(format!("idle-{count}"));
            for i in 0..count {
                let name = format!("idle{i}");
                let manifest = format!("name = \"{name}\"\ntopics = [\"idle\"]\n");
                self.install(&dir, &name, "noop", &manifest)?;
            }
            // Its own schedule topic: (e)'s scheduled deletions are not its state.
            let extra = "[storage]\nschedule_topic = \"idle-schedule\"\n";
            let mut host = WeirProcess::start(&self.weir, &dir, bootstrap, extra)?;
            host.wait_for_log("weir is running", Duration::from_secs(60))?;
            std::thread::sleep(Duration::from_secs(3));
            let rss = host.rss_kib();
            host.stop()?;
            Ok(rss)
        };
        let one = measure(1)?;
        let many = measure(1 + extra)?;
        Ok((one, many.saturating_sub(one) / extra as u64))
    }

    /// Produce to (d)'s echo at `rate` for `duration`; p50 and p99 from produce
    /// to the output read back, and how many events were sent.
    /// `exactly_once`: (t)'s echo instead, on topics of its own, read back
    /// `read_committed` (an output is seen once its transaction commits).
    fn latency(
        &self,
        bootstrap: &str,
        rate: f64,
        duration: Duration,
        exactly_once: bool,
    ) -> Result<(Duration, Duration, usize), String> {
        let (name, delivery) = match exactly_once {
            false => ("lat", "at-least-once"),
            true => ("latt", "exactly-once"),
        };
        let dir = self.work.join(format!("latency-{name}"));
        self.install(
            &dir,
            "echo",
            "echo",
            &format!(
                "name = \"echo\"\ntopics = [\"{name}-in\"]\n[consumer]\ngroup = \"bench-{name}\"\n\
                 delivery = \"{delivery}\"\n[capabilities.publish]\ntopics = [\"{name}-out\"]\n\
                 [config]\noutput = \"{name}-out\"\n"
            ),
        )?;
        let mut host = WeirProcess::start(&self.weir, &dir, bootstrap, "")?;
        host.wait_for_log("partitions assigned", Duration::from_secs(60))?;

        let reader: BaseConsumer = client(bootstrap)
            .set("group.id", format!("bench-{name}-reader"))
            .set("fetch.wait.max.ms", "5")
            .set("auto.offset.reset", "earliest")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| e.to_string())?;
        reader
            .subscribe(&[&format!("bench-{name}-out")])
            .map_err(|e| e.to_string())?;
        let b = bootstrap.to_string();
        let input = format!("bench-{name}-in");
        let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let sent = count.clone();
        let epoch = Instant::now();
        let producer = std::thread::spawn(move || {
            paced_produce(
                &b,
                &input,
                rate,
                duration + Duration::from_secs(3),
                epoch,
                &sent,
            )
        });
        // The first seconds (the host's and the producers' start) are not counted.
        let warmup = Duration::from_secs(3);
        let mut latencies = Vec::new();
        let deadline = Instant::now() + warmup + duration + Duration::from_secs(30);
        let mut last = Instant::now();
        while Instant::now() < deadline {
            if let Some(Ok(m)) = reader.poll(Duration::from_millis(20)) {
                let now = epoch.elapsed().as_micros() as u64;
                last = Instant::now();
                if let Some(at) = sent_us(m.payload().unwrap_or_default()) {
                    if at >= warmup.as_micros() as u64 {
                        latencies.push(Duration::from_micros(now.saturating_sub(at)));
                    }
                }
            }
            if producer.is_finished() && last.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
        producer.join().map_err(|_| "the producer panicked")??;
        host.stop()?;
        let sent = latencies.len();
        if latencies.is_empty() {
            return Err("no output came back".into());
        }
        latencies.sort();
        let pct =
            |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
        Ok((pct(0.50), pct(0.99), sent))
    }
}

/// The `"sent_us":N` stamp of a latency event (found, not parsed: the reader
/// must keep up with the stream on a shared machine).
fn sent_us(payload: &[u8]) -> Option<u64> {
    let tag = b"\"sent_us\":";
    let at = payload.windows(tag.len()).position(|w| w == tag)? + tag.len();
    let digits = payload[at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    std::str::from_utf8(&payload[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// A padded `TrackDeletedEvent` (schema 2): every bench plugin accepts it.
fn event_body(i: usize, key: &str, extra: &str) -> Vec<u8> {
    let head = format!(
        r#"{{"SchemaVersion":2,"TrackId":"t{i}","UserId":"{key}","ObjectKey":"audio/{key}/t{i}.mp3","FileSizeBytes":1,"DeletedAt":"2026-11-20T10:00:00Z","ScheduledDeletionAt":"2026-12-20T10:00:00Z","CorrelationId":"c{i}","Timestamp":"2026-11-20T10:00:00Z","seq":{i}{extra},"pad":""#
    );
    let mut body = head.into_bytes();
    let pad = PAYLOAD.saturating_sub(body.len() + 2);
    body.extend(std::iter::repeat_n(b'x', pad));
    body.extend_from_slice(b"\"}");
    body
}

/// µs per event of `plugin` over `events` (warmed up first): `calls` calls one
/// event at a time, then as many events through `handle-batch`, all of them at once.
async fn time_calls(
    plugin: &mut weir_host::runtime::Plugin,
    events: &[EventRecord],
    calls: usize,
    what: &str,
) -> Result<(f64, f64), String> {
    for e in events {
        plugin.handle(e).await; // warm up
    }
    let started = Instant::now();
    for i in 0..calls {
        let report = plugin.handle(&events[i % events.len()]).await;
        if !report.outcome.is_handled() {
            return Err(format!("{what}: {:?}", report.outcome));
        }
    }
    let one = started.elapsed().as_secs_f64() * 1e6 / calls as f64;
    let refs: Vec<&EventRecord> = events.iter().collect();
    let rounds = (calls / refs.len()).max(1);
    let started = Instant::now();
    for _ in 0..rounds {
        let reports = plugin.handle_batch(&refs).await;
        if let Some(failed) = reports
            .iter()
            .find(|r| !r.as_ref().is_some_and(|r| r.outcome.is_handled()))
        {
            return Err(format!(
                "{what}: a batch event was not handled: {:?}",
                failed.as_ref().map(|r| &r.outcome)
            ));
        }
    }
    let batched = started.elapsed().as_secs_f64() * 1e6 / (rounds * refs.len()) as f64;
    Ok((one, batched))
}

/// Produce `n` keyed events as fast as the broker takes them.
fn produce_events(bootstrap: &str, topic: &str, n: usize) -> Result<(), String> {
    let (failed, _) = produce_counted(bootstrap, topic, n)?;
    if failed > 0 {
        return Err(format!("{failed} events could not be produced"));
    }
    Ok(())
}

/// (p): three plain idempotent rdkafka producers (linger 5 ms, as Weir's) writing
/// `n` events each to one topic at once, as three hosts' outputs do: the
/// deliveries that failed, and the fatal errors (librdkafka's `fatal_error`).
fn three_producers(bootstrap: &str, topic: &str, n: usize) -> Result<(u64, Vec<String>), String> {
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (b, t) = (bootstrap.to_string(), topic.to_string());
            std::thread::spawn(move || produce_counted(&b, &t, n))
        })
        .collect();
    let mut failed = 0;
    let mut fatal = Vec::new();
    for t in threads {
        let (f, e) = t.join().map_err(|_| "a producer thread panicked")??;
        failed += f;
        fatal.extend(e);
    }
    Ok((failed, fatal))
}

/// Produce `n` events; the deliveries that failed and the producer's fatal error.
fn produce_counted(
    bootstrap: &str,
    topic: &str,
    n: usize,
) -> Result<(u64, Option<String>), String> {
    let producer: ThreadedProducer<Counter> = client(bootstrap)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("queue.buffering.max.messages", "500000")
        .create_with_context(Counter::default())
        .map_err(|e| e.to_string())?;
    for i in 0..n {
        let key = format!("user-{}", i % KEYS);
        let body = event_body(i, &key, "");
        let mut record = BaseRecord::to(topic).key(&key).payload(&body);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, back)) => {
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    let fatal = producer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"));
    if fatal.is_none() {
        producer
            .flush(Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
    }
    let failed = producer
        .context()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    Ok((failed, fatal))
}

/// Produce at `rate` events/s for `duration`, each stamped with when it was sent.
fn paced_produce(
    bootstrap: &str,
    topic: &str,
    rate: f64,
    duration: Duration,
    epoch: Instant,
    count: &std::sync::atomic::AtomicUsize,
) -> Result<usize, String> {
    let producer: ThreadedProducer<Counter> = client(bootstrap)
        .set("linger.ms", "1")
        .set("enable.idempotence", "true")
        .create_with_context(Counter::default())
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut sent = 0usize;
    while started.elapsed() < duration {
        let due = (started.elapsed().as_secs_f64() * rate) as usize;
        while sent < due {
            let key = format!("user-{}", sent % KEYS);
            let at = epoch.elapsed().as_micros();
            let body = event_body(sent, &key, &format!(",\"sent_us\":{at}"));
            let _ = producer.send(BaseRecord::to(topic).key(&key).payload(&body));
            sent += 1;
        }
        count.store(sent, std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_micros(500));
    }
    producer
        .flush(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    Ok(sent)
}

#[derive(Default)]
struct Counter {
    failed: std::sync::atomic::AtomicU64,
}

impl ClientContext for Counter {}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Delivery reports of the native republishing loop: (partition, offset) of the
/// input record whose output was acknowledged.
struct Acks {
    tx: std::sync::Mutex<mpsc::Sender<(i32, i64, bool)>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<(i32, i64)>;
    fn delivery(&self, result: &DeliveryResult<'_>, input: Box<(i32, i64)>) {
        let _ = self
            .tx
            .lock()
            .unwrap()
            .send((input.0, input.1, result.is_ok()));
    }
}

/// The loop a team would write with rust-rdkafka: poll, (republish,) store the
/// offset once everything before it is done, auto-commit every 100 ms.
fn native_loop(
    bootstrap: &str,
    group: &str,
    republish_to: Option<&str>,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<(), String> {
    let consumer: BaseConsumer = client(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "100")
        .set("auto.offset.reset", "earliest")
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .subscribe(&["bench-in"])
        .map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::channel();
    let producer: Option<ThreadedProducer<Acks>> = match republish_to {
        None => None,
        Some(_) => Some(
            client(bootstrap)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .create_with_context(Acks {
                    tx: std::sync::Mutex::new(tx),
                })
                .map_err(|e| e.to_string())?,
        ),
    };
    // Per partition, the offsets read and whether their output was acknowledged.
    let mut pending: BTreeMap<i32, VecDeque<(i64, bool)>> = BTreeMap::new();
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(m)) => match (&producer, republish_to) {
                (Some(p), Some(out)) => {
                    pending
                        .entry(m.partition())
                        .or_default()
                        .push_back((m.offset(), false));
                    let mut record =
                        BaseRecord::with_opaque_to(out, Box::new((m.partition(), m.offset())))
                            .payload(m.payload().unwrap_or_default());
                    if let Some(k) = m.key() {
                        record = record.key(k);
                    }
                    loop {
                        match p.send(record) {
                            Ok(()) => break,
                            Err((_, back)) => {
                                record = back;
                                p.poll(Duration::from_millis(1));
                            }
                        }
                    }
                }
                _ => {
                    consumer
                        .store_offset(m.topic(), m.partition(), m.offset())
                        .map_err(|e| e.to_string())?;
                }
            },
        }
        // Acknowledged outputs: store each partition's finished prefix.
        let mut acked = false;
        while let Ok((partition, offset, ok)) = rx.try_recv() {
            if !ok {
                return Err(format!("output of {partition}@{offset} not delivered"));
            }
            if let Some(q) = pending.get_mut(&partition) {
                if let Some(slot) = q.iter_mut().find(|(o, _)| *o == offset) {
                    slot.1 = true;
                    acked = true;
                }
            }
        }
        if acked {
            for (partition, q) in pending.iter_mut() {
                let mut last = None;
                while q.front().is_some_and(|(_, done)| *done) {
                    last = q.pop_front().map(|(o, _)| o);
                }
                if let Some(last) = last {
                    match consumer.store_offset("bench-in", *partition, last) {
                        // The partition moved to another member of the group (a
                        // rebalance, with several loops): its new owner reads
                        // from the last commit.
                        Err(rdkafka::error::KafkaError::StoreOffset(
                            rdkafka::types::RDKafkaErrorCode::State,
                        )) => {}
                        other => other.map_err(|e| e.to_string())?,
                    }
                }
            }
        }
    }
    Ok(())
}

/// Polls a group's committed offsets; the time at 10 %, 90 % and 100 %.
struct Observer {
    rx: mpsc::Receiver<Result<Rate, String>>,
}

impl Observer {
    fn start(bootstrap: &str, group: &str, topic: &str, n: usize) -> Observer {
        let (tx, rx) = mpsc::channel();
        let (b, g, t) = (bootstrap.to_string(), group.to_string(), topic.to_string());
        std::thread::spawn(move || {
            let _ = tx.send(observe(&b, &g, &t, n));
        });
        Observer { rx }
    }

    fn poll(&self) -> Option<Result<Rate, String>> {
        self.rx.try_recv().ok()
    }

    fn wait(self) -> Result<Rate, String> {
        self.rx
            .recv()
            .unwrap_or_else(|_| Err("the observer stopped".into()))
    }
}

fn observe(bootstrap: &str, group: &str, topic: &str, n: usize) -> Result<Rate, String> {
    let probe: BaseConsumer = client(bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let started = Instant::now();
    let (mut t10, mut t90) = (None, None);
    let (mut c10, mut c90) = (0, 0);
    loop {
        let committed: usize = probe
            .committed_offsets(tpl.clone(), Duration::from_secs(5))
            .map(|c| {
                c.elements()
                    .iter()
                    .map(|e| match e.offset() {
                        Offset::Offset(o) => o as usize,
                        _ => 0,
                    })
                    .sum()
            })
            .unwrap_or(0);
        let now = started.elapsed();
        if t10.is_none() && committed >= n / 10 {
            (t10, c10) = (Some(now), committed);
        }
        if t90.is_none() && committed >= n * 9 / 10 {
            (t90, c90) = (Some(now), committed);
        }
        if committed >= n {
            let (t10, t90) = (t10.unwrap_or_default(), t90.unwrap_or(now));
            let span = (t90.saturating_sub(t10)).as_secs_f64();
            let per_second = if span > 0.0 {
                (c90 - c10) as f64 / span
            } else {
                n as f64 / now.as_secs_f64()
            };
            return Ok(Rate {
                per_second,
                wall: now,
            });
        }
        if now > Duration::from_secs(900) {
            return Err(format!(
                "group {group}: only {committed} of {n} committed after 900 s"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `weir run` in its own directory, its log in `weir.log` there.
/// A process's resident set (KiB), 0 once it is gone.
fn rss_of(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Where `just bench` built examples/jvm-republish, beside the `weir` it runs
/// (`$CARGO_TARGET_DIR/jvm-republish`), if it did.
fn jvm_republish_dir(weir: &Path) -> Option<PathBuf> {
    let dir = weir.parent()?.parent()?.join("jvm-republish");
    dir.join("jvm-republish-1.jar").is_file().then_some(dir)
}

struct WeirProcess {
    child: Child,
    log: PathBuf,
}

impl WeirProcess {
    fn start(weir: &Path, dir: &Path, bootstrap: &str, extra: &str) -> Result<WeirProcess, String> {
        std::fs::write(
            dir.join("weir.toml"),
            format!(
                "[kafka]\nbootstrap_servers = \"{bootstrap}\"\n\
                 [topics]\nprefix = \"bench\"\n[admin]\nenabled = false\n{extra}{}",
                std::env::var("BENCH_WEIR_TOML").unwrap_or_default()
            ),
        )
        .map_err(|e| e.to_string())?;
        let log = dir.join("weir.log");
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let child = Command::new(weir)
            .args(["run", "--config"])
            .arg(dir.join("weir.toml"))
            // As an operator at this rate would: the plugins' per-event info lines off.
            .env(
                "RUST_LOG",
                std::env::var("BENCH_RUST_LOG").unwrap_or_else(|_| "info,weir::plugin=warn".into()),
            )
            .env(
                "HOSTNAME",
                format!(
                    "bench-{}",
                    dir.file_name().unwrap_or_default().to_string_lossy()
                ),
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(|e| e.to_string())?)
            .stderr(out)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", weir.display()))?;
        Ok(WeirProcess { child, log })
    }

    fn rss_kib(&self) -> u64 {
        rss_of(self.child.id())
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    fn wait_for_log(&mut self, needle: &str, patience: Duration) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.contains(needle) {
                return Ok(());
            }
            if let Some(status) = self.exited() {
                return Err(format!("weir exited ({status}): {text}"));
            }
            if Instant::now() > deadline {
                return Err(format!("{needle:?} never logged: {text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, and wait for the drain.
    fn stop(&mut self) -> Result<(), String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.exited().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return Err(format!("weir did not stop; log: {}", self.log.display()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
