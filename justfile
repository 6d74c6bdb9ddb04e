# Weir's tasks. `just` lists them; `just demo` and `just test` are the quick start.

set shell := ["bash", "-euo", "pipefail", "-c"]

target_dir := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")
wasm_dir := target_dir / "wasm32-wasip2" / "release"
weir := target_dir / "debug" / "weir"
kafka_root := env_var("HOME") / ".cache" / "weir" / "kafka"
py := env_var("HOME") / ".cache" / "weir" / "py"
# The componentize-py release the Python SDK is tested with (host/src/authoring/build.rs).
componentize_py := "0.25.1"
# componentize-js and TypeScript for JavaScript and TypeScript plugins (host/templates/js/toolchain).
js_root := env_var_or_default("WEIR_JS_TOOLCHAIN", env_var("HOME") / ".cache" / "weir" / "js")

# Example plugins, and the test-only fault plugins the tests also need.
example_plugins := "track-deletions audio-uploaded envelope-router"
test_plugins := "echo faulty rogue noop plain"

# List the recipes
default:
    @just --list

# Add the wasm32-wasip2 compilation target (one-time, about 30 s)
setup:
    @rustup target list --installed | grep -qx wasm32-wasip2 \
      || { echo "Adding the wasm32-wasip2 target (one-time download, about 30 s)..."; rustup target add wasm32-wasip2; }

# Build every plugin to a wasm32-wasip2 component; copy the examples beside their manifests
plugins: setup
    cargo build --release --target wasm32-wasip2 {{ prepend("-p ", example_plugins + " " + test_plugins) }}
    @for p in {{ example_plugins }}; do cp "{{ wasm_dir }}/${p//-/_}.wasm" "examples/plugins/$p.wasm"; done
    @echo "plugins: $(ls examples/plugins/*.wasm | tr '\n' ' ')"

# Build the `weir` binary (the first build compiles wasmtime: about 15 min on 2 cores)
host:
    @[ -x "{{ weir }}" ] || echo "Building the host; the first build compiles wasmtime and takes about 15 minutes on 2 cores..."
    cargo build -p weir-host

# Install Apache Kafka's broker (jars from Maven Central, tests/devkit/kafka/pom.xml) into ~/.cache/weir/kafka (one-time, about 1 min)
kafka:
    #!/usr/bin/env bash
    set -euo pipefail
    version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' tests/devkit/kafka/pom.xml)
    libs="{{ kafka_root }}/libs"
    [ -f "$libs/kafka_2.13-$version.jar" ] && exit 0
    command -v java >/dev/null || { echo "Kafka needs Java 17 or newer: install a JDK (Debian: apt-get install openjdk-17-jre-headless)."; exit 1; }
    command -v mvn >/dev/null || { echo "Installing Kafka needs Maven: install it (Debian: apt-get install maven)."; exit 1; }
    echo "Installing Apache Kafka $version (the broker's jars and their dependencies, about 45 MB from Maven Central) into {{ kafka_root }}."
    echo "One-time, about 1 minute; the demo, the tests and the bench start brokers from it."
    started=$SECONDS
    rm -rf "$libs.partial"
    mvn -q -B -Dstyle.color=never -f tests/devkit/kafka/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$libs.partial" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g'
    rm -rf "$libs" && mv "$libs.partial" "$libs"
    echo "Apache Kafka $version installed in $((SECONDS - started)) s: $(ls "$libs" | wc -l) jars in $libs"

# Install redis-server from the OS packages, for the Redis cache tests (one-time, about 20 s)
redis:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "${REDIS_SERVER_BIN:-}" ] || command -v redis-server >/dev/null; then
      exit 0
    fi
    echo "Installing redis-server (Debian package; the tests start their own servers on free ports). One-time, about 20 s."
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null \
      && { $sudo apt-get install -y -qq redis-server >/dev/null 2>&1 \
           || { $sudo apt-get update -qq && $sudo apt-get install -y -qq redis-server >/dev/null; }; }; then
      exit 0
    fi
    echo "Could not install redis-server: install it with your package manager (or set REDIS_SERVER_BIN)."
    echo "Without it the Redis tests are skipped with a message (under CI=true they fail)."

# Install the moto S3 server (PyPI) into ~/.cache/weir/py, for the S3 storage tests (one-time, about 30 s)
s3:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "${MOTO_SERVER_BIN:-}" ] || [ -x "{{ py }}/bin/moto_server" ] || command -v moto_server >/dev/null; then
      exit 0
    fi
    echo "Installing the moto S3 server (PyPI) into {{ py }} for the S3 storage tests. One-time, about 30 s."
    [ -x "{{ py }}/bin/pip" ] || python3 -m venv "{{ py }}"
    "{{ py }}/bin/pip" install -q 'moto[server]'

# Install chromium and chromedriver from the OS packages, for the dashboard's browser test (one-time, about 1 min)
chromium:
    #!/usr/bin/env bash
    set -euo pipefail
    if [ -n "${CHROMEDRIVER:-}" ] || { [ -x /usr/bin/chromedriver ] && [ -x /usr/bin/chromium ]; }; then
      exit 0
    fi
    echo "Installing chromium and chromium-driver (Debian packages) for the dashboard's browser test. One-time, about 1 min."
    sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
    if command -v apt-get >/dev/null \
      && { $sudo apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 \
           || { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium chromium-driver >/dev/null; }; }; then
      exit 0
    fi
    echo "Could not install chromium: install chromium and its chromedriver (or set CHROMEDRIVER and CHROMIUM)."

# Install componentize-py (builds Python plugins) and kubernetes-validate (checks examples/kubernetes) from PyPI into ~/.cache/weir/py (one-time, about 30 s)
python:
    #!/usr/bin/env bash
    set -euo pipefail
    want=()
    if [ -z "${COMPONENTIZE_PY:-}" ] && [ ! -x "{{ py }}/bin/componentize-py" ] && ! command -v componentize-py >/dev/null; then
      want+=("componentize-py=={{ componentize_py }}")
    fi
    if [ ! -x "{{ py }}/bin/kubernetes-validate" ] && ! command -v kubernetes-validate >/dev/null; then
      want+=("kubernetes-validate==1.37.0")
    fi
    [ ${#want[@]} -eq 0 ] && exit 0
    echo "Installing ${want[*]} (PyPI) into {{ py }}: Python plugins and the Kubernetes manifests' check. One-time, about 30 s."
    [ -x "{{ py }}/bin/pip" ] || python3 -m venv "{{ py }}"
    "{{ py }}/bin/pip" install -q "${want[@]}" pyyaml

# Install componentize-js and TypeScript (npm, pinned by host/templates/js/toolchain) into ~/.cache/weir/js, for JavaScript and TypeScript plugins (one-time, about 30 s and 400 MB)
js:
    #!/usr/bin/env bash
    set -euo pipefail
    dir="{{ js_root }}"
    src=host/templates/js/toolchain
    # `weir build` installs the same way when the stamp is missing or differs.
    if cmp -s "$src/package.json" "$dir/.weir-toolchain.json" \
      && [ -f "$dir/node_modules/@bytecodealliance/componentize-js/src/cli.js" ]; then
      exit 0
    fi
    command -v npm >/dev/null || { echo "JavaScript and TypeScript plugins need Node.js 20+ with npm: install them (Debian: apt-get install nodejs npm)."; exit 1; }
    echo "Installing componentize-js and TypeScript (npm registry, about 400 MB) into $dir for JavaScript and TypeScript plugins. One-time, about 30 s."
    mkdir -p "$dir"
    rm -f "$dir/.weir-toolchain.json"
    cp "$src/package.json" "$src/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp "$src/package.json" "$dir/.weir-toolchain.json"

# Run Apache Kafka (one KRaft node) in the foreground on 127.0.0.1:9092, for `just run` (Ctrl-C stops it; its data stays in target/broker-up)
broker-up: kafka
    cargo run -q -p weir-devkit --bin dev-kafka -- --port 9092 --dir {{ target_dir }}/broker-up

# Run the host on examples/weir.toml (a broker must listen on 127.0.0.1:9092: `just broker-up`)
run: plugins host
    {{ weir }} run --config examples/weir.toml

# The demo: a local broker, the example plugins, the sample events, and what the host did
demo: plugins
    #!/usr/bin/env bash
    set -euo pipefail
    [ -n "${WEIR_KAFKA__BOOTSTRAP_SERVERS:-}" ] || "{{ just_executable() }}" kafka
    if [ -x "{{ target_dir }}/debug/examples/demo" ]; then
      cargo build -q -p weir-host --example demo
    else
      echo "Building the demo; the first build compiles wasmtime and librdkafka: about 15 minutes on 2 cores (cargo shows its progress)..."
      cargo build -p weir-host --example demo
    fi
    "{{ target_dir }}/debug/examples/demo"

# Each example plugin over its sample events with `weir invoke`: no broker needed
invoke-demo: plugins host
    @echo; echo "=== track-deletions: invalidate cache entries, schedule storage deletions ==="
    {{ weir }} invoke examples/plugins/track-deletions.wasm examples/events/track-deletions.jsonl
    @echo; echo "=== track-deletions: malformed and invalid events are rejected with their reason ==="
    {{ weir }} invoke examples/plugins/track-deletions.wasm examples/events/track-deletions-bad.jsonl \
      || echo "(exit status $? because events failed, as expected)"
    @echo; echo "=== audio-uploaded: record upload metadata, publish a waveform job ==="
    {{ weir }} invoke examples/plugins/audio-uploaded.wasm examples/events/audio-uploaded.jsonl
    @echo; echo "=== envelope-router: envelope domain events, route them by type, keyed by userId ==="
    {{ weir }} invoke examples/plugins/envelope-router.wasm examples/events/item-events.jsonl

# Run every test: unit, and end-to-end with real components, the real binary and a real broker
test: plugins kafka redis s3 python js chromium
    cargo test -p weir-host -- --include-ignored --skip compose:: --skip container::

# Benchmarks: Weir beside a hand-written rdkafka consumer on one broker (first build: about 20 min; a run: a few minutes)
bench *args: plugins kafka
    cargo build -q --profile dist -p weir-host --bin weir --example bench
    @# (j), the JVM anchor (skipped without Maven).
    @if command -v mvn >/dev/null; then mvn -q -B -Dstyle.color=never -f examples/jvm-republish/pom.xml package -Dweir.build.dir="{{ target_dir }}/jvm-republish" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g' \
      || echo "(examples/jvm-republish did not build: the bench's (j) row is skipped)"; else echo "(mvn not found: the bench's (j) row is skipped)"; fi
    @# The Python track-deletions, for the per-language row (skipped without componentize-py).
    @{{ target_dir }}/dist/weir build plugins/track-deletions-py >/dev/null 2>&1 \
      || echo "(componentize-py not found: the bench's Python row is skipped; \`just python\` installs it)"
    @# The TypeScript track-deletions, likewise (skipped without Node.js).
    @{{ target_dir }}/dist/weir build plugins/track-deletions-ts >/dev/null 2>&1 \
      || echo "(Node.js not found: the bench's TypeScript row is skipped; \`just js\` installs its toolchain)"
    {{ target_dir }}/dist/examples/bench {{ args }}

# The crash soak: 100 000 events through echo, the host SIGKILLed at 5 random moments (a few minutes)
soak events="100000" kills="5": plugins kafka
    SOAK_EVENTS={{ events }} SOAK_KILLS={{ kills }} cargo test -p weir-host --test e2e soak -- --include-ignored --nocapture

# Exactly-once under SIGKILL: 100 000 keyed events through echo with delivery = "exactly-once", the host SIGKILLed at 5 random moments and a second host joining; a read_committed reader counts missing and duplicate outputs; then the same run at-least-once for contrast (a few minutes; `just test` runs 20 000 events)
exactly-once events="100000" kills="5": plugins kafka
    EOS_EVENTS={{ events }} EOS_KILLS={{ kills }} cargo test -p weir-host --test e2e exactly_once:: -- --include-ignored --nocapture --test-threads 1

# Broker faults on a three-node Kafka cluster: 100 000 keyed events through echo, two leaders SIGKILLed, a rolling restart (a few minutes; `just test` runs 20 000 events)
broker-faults events="100000": plugins kafka
    WEIR_FAULT_EVENTS={{ events }} cargo test -p weir-host --test e2e broker_faults -- --include-ignored --nocapture

# The container image weir:dev without a Docker engine (examples/container/build-image.sh): an OCI layout
# built with umoci on a debootstrap base (cached), and a docker-archive for `docker load` (first time: the dist build, about 15 min)
image: plugins
    cargo build -q --profile dist -p weir-host --bin weir
    bash examples/container/build-image.sh "{{ target_dir }}"

# Load the image into Docker as weir:dev (needs a Docker engine; examples/container/Dockerfile builds the same image with `docker build`)
image-docker: image
    docker load -i "{{ target_dir }}/image/weir-dev.tar"

# The images compose.yaml builds: weir:dev, and Redis and S3 on the same base (first time a few minutes); Kafka is the official apache/kafka image
compose-images: image-docker
    #!/usr/bin/env bash
    set -euo pipefail
    ctx="{{ target_dir }}/compose-context"
    rm -rf "$ctx" && mkdir -p "$ctx"
    cp examples/compose/* "$ctx/"
    # The Dockerfiles' base: the rootfs `just image` made with debootstrap.
    docker image inspect weir-base:bookworm >/dev/null 2>&1 \
      || tar -C "$HOME/.cache/weir/image/rootfs-bookworm" -c . | docker import - weir-base:bookworm >/dev/null
    mkdir -p "$ctx/wheels"
    for svc in redis:weir-redis s3:weir-s3; do
      name=${svc%%:*} tag=${svc##*:}:dev
      if ! docker image inspect "$tag" >/dev/null 2>&1; then
        if [ "$name" = s3 ]; then
          # Wheels for the image's Python (3.11, like Debian bookworm's), fetched here.
          python3 -m pip download -q -d "$ctx/wheels" --python-version 3.11 --only-binary=:all: 'moto[server]'
        fi
        # Host networking for the build: apt and pip reach their registries as this machine does.
        docker build -q --network host -t "$tag" -f "$ctx/Dockerfile.$name" "$ctx" 2>"$ctx/$name.log" >/dev/null \
          || { cat "$ctx/$name.log"; exit 1; }
      fi
      echo "image $tag: $(docker image inspect "$tag" --format '{{{{.Size}}') bytes"
    done

# compose.yaml for real: 3 hosts, a broker, Redis and S3 in containers; one host killed, one stopped mid-stream
compose-test: compose-images
    TEST_COMPOSE=1 cargo test -p weir-host --test e2e compose -- --ignored --nocapture

# The image checked (entrypoint, user, port, size) and run under bubblewrap against a local broker: events handled, clean stop on SIGTERM
image-test: image kafka
    @command -v bwrap >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"; $sudo apt-get install -y -qq bubblewrap >/dev/null; }
    TEST_OCI="{{ target_dir }}/image/oci" cargo test -p weir-host --test e2e container:: -- --ignored --nocapture

# Formatting, lints and known advisories, as CI checks them
lint: audit
    cargo fmt --all -- --check
    cargo clippy -p weir-host -p weir-devkit --all-targets -- -D warnings
    cargo clippy --target wasm32-wasip2 {{ prepend("-p ", "weir-sdk " + example_plugins + " " + test_plugins) }} -- -D warnings

# The dependencies (Cargo.lock, fuzz/Cargo.lock) against the RustSec advisories in ../shared/advisory-db, offline (cargo-audit: one-time install, about 4 min)
audit:
    #!/usr/bin/env bash
    set -euo pipefail
    db="${ADVISORY_DB:-{{ justfile_directory() }}/../shared/advisory-db}"
    [ -d "$db/crates" ] || { echo "no advisory database at $db (set ADVISORY_DB to a RustSec advisory-db checkout)"; exit 1; }
    command -v cargo-audit >/dev/null || { echo "Installing cargo-audit (crates.io; one-time, about 4 minutes)..."; cargo install -q cargo-audit --locked; }
    # cargo-audit reads the database as a git repository: a snapshot without
    # one is copied and made one (outside the clone).
    if [ ! -d "$db/.git" ]; then
      copy="$HOME/.cache/weir/advisory-db"
      if [ ! -d "$copy/.git" ] || [ -n "$(diff -rq -x .git "$db" "$copy" 2>/dev/null | head -1)" ]; then
        rm -rf "$copy" && mkdir -p "$copy" && cp -r "$db"/. "$copy"/ && chmod -R u+w "$copy"
        git -C "$copy" init -q && git -C "$copy" add -A && git -C "$copy" -c user.name=weir -c user.email=weir@localhost commit -qm snapshot
      fi
      db="$copy"
    fi
    for lock in Cargo.lock fuzz/Cargo.lock; do
      echo "cargo audit: $lock against $db"
      cargo audit --db "$db" --no-fetch --stale --deny warnings --file "$lock"
    done

# Fuzz what Weir reads from others (manifests, config, events files, expectations, records, storage keys): each target for `seconds` (cargo-fuzz with libFuzzer, on the nightly toolchain; first build about 15 min)
fuzz seconds="120":
    #!/usr/bin/env bash
    set -euo pipefail
    rustup run nightly rustc --version >/dev/null 2>&1 || { echo "cargo fuzz needs the nightly toolchain: rustup toolchain install nightly"; exit 1; }
    command -v cargo-fuzz >/dev/null || { echo "Installing cargo-fuzz (crates.io; one-time, about 2 minutes)..."; cargo install -q cargo-fuzz --locked; }
    # Its own target directory: the fuzzer's instrumentation rebuilds everything.
    export CARGO_TARGET_DIR="$HOME/.cache/weir/fuzz-target"
    corpus="$HOME/.cache/weir/fuzz-corpus"
    # Seeds: the repository's own manifests, configs and events files.
    mkdir -p "$corpus"/{manifest,config,events_file,expectations,record,storage_key}
    cp examples/plugins/*.toml "$corpus/manifest/"
    cp examples/weir.toml "$corpus/config/weir.toml"; cp examples/container/weir.toml "$corpus/config/container.toml"
    for f in examples/events/*.jsonl host/templates/events.jsonl; do cp "$f" "$corpus/events_file/$(echo "$f" | tr / _)"; done
    cd fuzz
    echo "Building the fuzz targets (the first time compiles the host with coverage instrumentation, about 15 minutes)..."
    cargo +nightly fuzz build -s none --dev
    for t in $(cargo +nightly fuzz list); do
      log="$CARGO_TARGET_DIR/fuzz-$t.log"
      status=0
      cargo +nightly fuzz run -s none --dev "$t" "$corpus/$t" -- \
        -max_total_time={{ seconds }} -max_len=65536 -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 >"$log" 2>&1 || status=$?
      runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
      if [ "$status" != 0 ]; then
        grep -E 'panicked|ERROR|SUMMARY|Test unit written|Failing input' "$log" | head -20
        echo "fuzz $t: FAILED after ${runs:-?} runs (the input is in fuzz/artifacts/$t; full log $log)"
        exit 1
      fi
      echo "fuzz $t: ${runs:-?} runs in {{ seconds }} s, no failure (corpus: $(ls "$corpus/$t" | wc -l) inputs)"
    done
