//! Apache Kafka for the demo, the bench and the tests: a single KRaft node
//! (broker and controller in one process) or a three-node cluster, on free
//! loopback ports, its data in a directory of the caller's.
//!
//! The broker's jars come from Maven Central: `just kafka` resolves
//! `tests/devkit/kafka/pom.xml` into `~/.cache/weir/kafka/libs` (see
//! `tests/devkit/kafka/README.md`). Each node runs as `java -cp LIBS/* kafka.Kafka`
//! after `kafka.tools.StorageTool format`; it is ready once it has logged its start
//! and answered a metadata request. Dropping a [`DevBroker`] or [`DevCluster`]
//! kills its processes; its data stays in the caller's directory.

use crate::process::DevProcess;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The Kafka release the devkit runs (kept equal to `tests/devkit/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.1.1";

/// The log4j2 configuration written beside each node's `server.properties`.
const LOG4J2: &str = include_str!("../kafka/log4j2.properties");

/// What runs a broker: a Java 17+ `java` and the folder of Kafka's jars.
#[derive(Debug, Clone)]
pub struct KafkaInstall {
    pub java: PathBuf,
    pub libs: PathBuf,
}

/// Where Kafka is looked for: the jars in `$WEIR_KAFKA_LIBS`, else
/// `~/.cache/weir/kafka/libs` (where `just kafka` puts them); `java` from
/// `$JAVA_HOME/bin`, else the `PATH`. `None` when either is missing.
pub fn find_kafka() -> Option<KafkaInstall> {
    let libs = match std::env::var_os("WEIR_KAFKA_LIBS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/weir/kafka/libs"),
    };
    let has_broker = std::fs::read_dir(&libs).ok()?.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.starts_with("kafka_2.13-") && name.ends_with(".jar")
    });
    if !has_broker {
        return None;
    }
    let java = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|j| j.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join("java"))
                .find(|j| j.is_file())
        })?;
    Some(KafkaInstall { java, libs })
}

/// A free TCP port on 127.0.0.1, never one this process handed out before: the
/// kernel may offer a port again once its probe socket is closed, and two
/// listeners of one broker (or two services of one test) on the same port fail
/// at start.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Hold every probe open until a new port turns up, so the kernel cannot
    // offer the same one twice in this loop.
    let mut probes = Vec::new();
    loop {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = probe
            .local_addr()
            .expect("an ephemeral port's address")
            .port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
        probes.push(probe);
    }
}

/// One KRaft node's place in its cluster.
#[derive(Debug, Clone)]
struct NodeSpec {
    id: u32,
    port: u16,
    controller_port: u16,
}

/// The settings every node of a cluster of `nodes.len()` shares, for `me`.
fn server_properties(me: &NodeSpec, nodes: &[NodeSpec], data: &Path) -> String {
    let voters: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}@127.0.0.1:{}", n.id, n.controller_port))
        .collect();
    let replicas = nodes.len();
    let min_isr = if replicas >= 3 { 2 } else { 1 };
    format!(
        "process.roles=broker,controller\n\
         node.id={id}\n\
         controller.quorum.voters={voters}\n\
         listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
         advertised.listeners=PLAINTEXT://127.0.0.1:{port}\n\
         controller.listener.names=CONTROLLER\n\
         listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
         inter.broker.listener.name=PLAINTEXT\n\
         log.dirs={data}\n\
         num.partitions=1\n\
         default.replication.factor={replicas}\n\
         min.insync.replicas={min_isr}\n\
         offsets.topic.replication.factor={replicas}\n\
         offsets.topic.num.partitions=10\n\
         transaction.state.log.replication.factor={replicas}\n\
         transaction.state.log.min.isr={min_isr}\n\
         transaction.state.log.num.partitions=10\n\
         share.coordinator.state.topic.replication.factor={replicas}\n\
         share.coordinator.state.topic.min.isr={min_isr}\n\
         # A group forms as soon as its first member joins (the default waits 3 s).\n\
         group.initial.rebalance.delay.ms=0\n\
         # Tests kill hosts: the new consumer protocol's sessions may be as short as the classic ones.\n\
         group.consumer.min.session.timeout.ms=6000\n\
         group.consumer.session.timeout.ms=10000\n\
         # The compaction test waits for the cleaner: look for work every second.\n\
         log.cleaner.backoff.ms=1000\n\
         # A test restarts nodes: do not wait 5 minutes to move leaders back.\n\
         leader.imbalance.check.interval.seconds=10\n",
        id = me.id,
        voters = voters.join(","),
        port = me.port,
        cport = me.controller_port,
        data = data.display(),
    )
}

/// The JVM's options: `$WEIR_KAFKA_JVM_OPTS`, else a heap fit for a 2-core,
/// shared machine.
fn jvm_options() -> Vec<String> {
    match std::env::var("WEIR_KAFKA_JVM_OPTS") {
        Ok(opts) if !opts.trim().is_empty() => {
            opts.split_whitespace().map(str::to_string).collect()
        }
        _ => [
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
        ]
        .map(str::to_string)
        .to_vec(),
    }
}

/// A `java` command on Kafka's class path with the node's logging config.
fn java(install: &KafkaInstall, dir: &Path, main: &str) -> Command {
    let mut c = Command::new(&install.java);
    c.args(jvm_options())
        .arg(format!(
            "-Dlog4j2.configurationFile={}",
            dir.join("log4j2.properties").display()
        ))
        .arg("-cp")
        .arg(format!("{}/*", install.libs.display()))
        .arg(main)
        // The host's settings are not the broker's.
        .env_remove("RUST_LOG")
        .env_remove("KAFKA_OPTS");
    c
}

/// A new cluster id (22 characters of URL-safe base64, as Kafka's own).
/// (Random enough for a dev broker: a fresh `RandomState` per 10 characters.)
fn cluster_id() -> String {
    use std::collections::hash_map::RandomState;
    use std::hash::{BuildHasher, Hasher};
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut id = String::new();
    while id.len() < 22 {
        let mut h = RandomState::new().build_hasher();
        h.write_usize(id.len());
        let mut bits = h.finish();
        for _ in 0..10 {
            if id.len() == 22 {
                break;
            }
            let c = ALPHABET[(bits & 63) as usize] as char;
            // Like Kafka's own ids, never one that begins with '-'.
            if !(id.is_empty() && c == '-') {
                id.push(c);
            }
            bits >>= 6;
        }
    }
    id
}

/// The cluster id kept in `workdir/cluster-id`, created there the first time: a
/// broker started again on the same directory (`just broker-up`) keeps its data.
fn cluster_id_in(workdir: &Path) -> Result<String, String> {
    let file = workdir.join("cluster-id");
    if let Ok(id) = std::fs::read_to_string(&file) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let id = cluster_id();
    std::fs::create_dir_all(workdir)
        .and_then(|_| std::fs::write(&file, &id))
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    Ok(id)
}

/// One running KRaft node.
struct Node {
    spec: NodeSpec,
    process: DevProcess,
}

impl Node {
    /// Write the node's config into `dir`, format its storage and start it.
    fn start(
        install: &KafkaInstall,
        dir: &Path,
        me: &NodeSpec,
        nodes: &[NodeSpec],
        cluster: &str,
    ) -> Result<Node, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let props = dir.join("server.properties");
        let data = dir.join("data");
        std::fs::write(&props, server_properties(me, nodes, &data))
            .and_then(|_| std::fs::write(dir.join("log4j2.properties"), LOG4J2))
            .map_err(|e| format!("cannot write the broker's config in {}: {e}", dir.display()))?;
        let format = java(install, dir, "kafka.tools.StorageTool")
            .args(["format", "--ignore-formatted"])
            // `--cluster-id=ID`: an id may begin with '-', which the tool would
            // otherwise read as an option.
            .arg(format!("--cluster-id={cluster}"))
            .arg("-c")
            .arg(&props)
            .current_dir(dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", install.java.display()))?;
        if !format.status.success() {
            return Err(format!(
                "formatting the broker's storage in {} failed: {}{}",
                data.display(),
                String::from_utf8_lossy(&format.stdout),
                String::from_utf8_lossy(&format.stderr)
            ));
        }
        let (install, props_path, port) = (install.clone(), props.clone(), me.port);
        let dir_for_command = dir.to_path_buf();
        let command = move || {
            let mut c = java(&install, &dir_for_command, "kafka.Kafka");
            c.arg(&props_path);
            c
        };
        let process = DevProcess::start(
            "the Kafka broker",
            dir,
            "broker.log",
            command,
            Box::new(move |log| log.contains("Kafka Server started") && answers_metadata(port)),
            Duration::from_secs(90),
        )?;
        Ok(Node {
            spec: me.clone(),
            process,
        })
    }
}

/// Whether a broker on `port` answers a metadata request.
fn answers_metadata(port: u16) -> bool {
    broker_count(&format!("127.0.0.1:{port}"), Duration::from_secs(2)).is_some_and(|n| n > 0)
}

/// A client for metadata requests to `bootstrap`, silent while brokers come and go.
fn metadata_client(bootstrap: &str) -> Result<rdkafka::consumer::BaseConsumer, String> {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
        .create()
        .map_err(|e| e.to_string())
}

/// How many brokers the cluster behind `bootstrap` lists.
fn broker_count(bootstrap: &str, timeout: Duration) -> Option<usize> {
    use rdkafka::consumer::Consumer;
    let md = metadata_client(bootstrap)
        .ok()?
        .fetch_metadata(None, timeout)
        .ok()?;
    Some(md.brokers().len())
}

/// Have the broker create its transaction coordinator's topic now: an idempotent
/// producer's first send asks it for a producer id, and on a new broker that
/// first answer is "coordinator load in progress" (librdkafka warns and
/// retries). Better here than in the first test's or the demo's output.
fn warm_up(bootstrap: &str) -> Result<(), String> {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let producer: BaseProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Emerg)
        .create()
        .map_err(|e| e.to_string())?;
    producer
        .send(BaseRecord::<(), [u8]>::to("weir-devkit-warm-up").payload(b"1"))
        .map_err(|(e, _)| format!("warming up the broker: {e}"))?;
    producer
        .flush(Duration::from_secs(60))
        .map_err(|e| format!("warming up the broker: {e}"))
}

/// A single-node Kafka (broker and controller in one process).
pub struct DevBroker {
    node: Node,
}

impl DevBroker {
    /// Start a broker with its config, data and log in `workdir` (created if
    /// needed), on free ports. A directory that held a broker before keeps its
    /// data (the same cluster id); a fresh broker needs a fresh directory.
    pub fn start(install: &KafkaInstall, workdir: &Path) -> Result<DevBroker, String> {
        Self::start_on(install, workdir, free_port())
    }

    /// Start a broker listening on `port` (to bring one up where a host already looks).
    pub fn start_on(
        install: &KafkaInstall,
        workdir: &Path,
        port: u16,
    ) -> Result<DevBroker, String> {
        let spec = NodeSpec {
            id: 1,
            port,
            controller_port: free_port(),
        };
        let node = Node::start(
            install,
            workdir,
            &spec,
            std::slice::from_ref(&spec),
            &cluster_id_in(workdir)?,
        )?;
        warm_up(&format!("127.0.0.1:{port}"))?;
        Ok(DevBroker { node })
    }

    /// `127.0.0.1:PORT`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.node.spec.port)
    }

    pub fn port(&self) -> u16 {
        self.node.spec.port
    }

    /// The broker's log.
    pub fn log(&self) -> &Path {
        self.node.process.log()
    }

    /// Kill the broker (SIGKILL, as a crash would) and start it again on the same
    /// ports and data.
    pub fn restart(&mut self) -> Result<(), String> {
        self.node.process.restart()
    }

    /// Kill the broker (SIGKILL). Its data stays; [`DevBroker::start_again`] brings it back.
    pub fn stop(&mut self) {
        self.node.process.stop();
    }

    /// Start a stopped broker again on its ports and data.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.node.process.start_again()
    }
}

/// A three-node KRaft cluster (each node a broker and a voter), replication
/// factor 3 and `min.insync.replicas = 2` for every topic, the internal ones too.
pub struct DevCluster {
    nodes: Vec<Node>,
}

impl DevCluster {
    /// Start three nodes under `workdir` (`node-1`, `node-2`, `node-3`) and wait
    /// until the cluster lists all three.
    pub fn start(install: &KafkaInstall, workdir: &Path) -> Result<DevCluster, String> {
        let specs: Vec<NodeSpec> = (1..=3)
            .map(|id| NodeSpec {
                id,
                port: free_port(),
                controller_port: free_port(),
            })
            .collect();
        let cluster = cluster_id();
        // A node's start waits for a controller quorum, which needs two of the
        // three: start them side by side.
        let nodes: Vec<Result<Node, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = specs
                .iter()
                .map(|spec| {
                    let (specs, cluster) = (&specs, &cluster);
                    let dir = workdir.join(format!("node-{}", spec.id));
                    scope.spawn(move || Node::start(install, &dir, spec, specs, cluster))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a node's start panicked".into()))
                })
                .collect()
        });
        let nodes = nodes.into_iter().collect::<Result<Vec<_>, _>>()?;
        let cluster = DevCluster { nodes };
        cluster.wait_for_brokers(3, Duration::from_secs(60))?;
        warm_up(&cluster.bootstrap())?;
        Ok(cluster)
    }

    /// All three nodes' listeners.
    pub fn bootstrap(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.spec.port))
            .collect();
        hosts.join(",")
    }

    /// The node ids, 1 to 3.
    pub fn ids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.spec.id).collect()
    }

    fn node(&mut self, id: u32) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.spec.id == id)
            .unwrap_or_else(|| panic!("no node {id} in the cluster"))
    }

    /// Kill node `id` (SIGKILL). Its data stays.
    pub fn kill(&mut self, id: u32) {
        self.node(id).process.stop();
    }

    /// Start node `id` again on its ports and data, and wait until it answers.
    pub fn start_node(&mut self, id: u32) -> Result<(), String> {
        self.node(id).process.start_again()
    }

    /// Kill node `id` and start it again.
    pub fn restart(&mut self, id: u32) -> Result<(), String> {
        self.node(id).process.restart()
    }

    /// Stop node `id` as an operator would (SIGTERM: a controlled shutdown
    /// that moves its leaderships first), then start it again on its data.
    pub fn restart_gracefully(&mut self, id: u32) -> Result<(), String> {
        let node = self.node(id);
        node.process.terminate(Duration::from_secs(60));
        node.process.start_again()
    }

    /// The node leading `topic`'s partition `partition`, from the cluster's metadata.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<u32> {
        use rdkafka::consumer::Consumer;
        let md = metadata_client(&self.bootstrap())
            .ok()?
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()?;
        let leader = md
            .topics()
            .first()?
            .partitions()
            .iter()
            .find(|p| p.id() == partition)?
            .leader();
        u32::try_from(leader).ok()
    }

    /// Wait until every partition of `topics` has all its replicas in sync (a
    /// restarted node has caught up), so the next node may go.
    pub fn wait_in_sync(&self, topics: &[&str], patience: Duration) -> Result<(), String> {
        use rdkafka::consumer::Consumer;
        let consumer = metadata_client(&self.bootstrap())?;
        let deadline = Instant::now() + patience;
        loop {
            let mut behind = Vec::new();
            for topic in topics {
                match consumer.fetch_metadata(Some(topic), Duration::from_secs(2)) {
                    Ok(md) => {
                        for t in md.topics() {
                            for p in t.partitions() {
                                if p.isr().len() < p.replicas().len() || p.leader() < 0 {
                                    behind.push(format!("{}[{}]", t.name(), p.id()));
                                }
                            }
                        }
                    }
                    Err(e) => behind.push(format!("{topic} ({e})")),
                }
            }
            if behind.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "replicas still out of sync after {} s: {}",
                    patience.as_secs(),
                    behind.join(", ")
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Wait until the cluster's metadata lists `n` brokers.
    pub fn wait_for_brokers(&self, n: usize, patience: Duration) -> Result<(), String> {
        let deadline = Instant::now() + patience;
        loop {
            let seen = broker_count(&self.bootstrap(), Duration::from_secs(2)).unwrap_or(0);
            if seen >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the cluster listed {seen} brokers of {n} after {} s",
                    patience.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
