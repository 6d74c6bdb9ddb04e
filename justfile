# Weir's tasks. `just` lists them; `just demo` and `just test` are the quick start.

set shell := ["bash", "-euo", "pipefail", "-c"]

target_dir := env_var_or_default("CARGO_TARGET_DIR", justfile_directory() / "target")
wasm_dir := target_dir / "wasm32-wasip2" / "release"
weir := target_dir / "debug" / "weir"

# Example plugins, and the test-only fault plugins the tests also need.
example_plugins := "track-deletions audio-uploaded envelope-router"
test_plugins := "echo faulty rogue"

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

# The demo: run each example plugin over its sample events with `weir invoke`
demo: plugins host
    @echo; echo "=== track-deletions: invalidate cache entries, schedule storage deletions ==="
    {{ weir }} invoke examples/plugins/track-deletions.wasm examples/events/track-deletions.jsonl
    @echo; echo "=== track-deletions: malformed and invalid events are rejected with their reason ==="
    {{ weir }} invoke examples/plugins/track-deletions.wasm examples/events/track-deletions-bad.jsonl \
      || echo "(exit status $? because events failed, as expected)"
    @echo; echo "=== audio-uploaded: record upload metadata, publish a waveform job ==="
    {{ weir }} invoke examples/plugins/audio-uploaded.wasm examples/events/audio-uploaded.jsonl
    @echo; echo "=== envelope-router: envelope domain events, route them by type, keyed by userId ==="
    {{ weir }} invoke examples/plugins/envelope-router.wasm examples/events/item-events.jsonl

# Run every test (unit and end-to-end with real compiled components)
test: plugins
    cargo test -p weir-host

# Formatting and lints, as CI checks them
lint:
    cargo fmt --all -- --check
    cargo clippy -p weir-host --all-targets -- -D warnings
    cargo clippy --target wasm32-wasip2 {{ prepend("-p ", "weir-sdk " + example_plugins + " " + test_plugins) }} -- -D warnings
