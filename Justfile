# Developer recipes. `just --list` shows them. Plain cargo works too: each recipe is one command.

# Build the `sluice` binary (release).
build:
    cargo build --release

# Profile-guided release build laid out by BOLT, target/pgo/release/sluice: what the image ships
# (about twice a plain release build; needs llvm-19, bolt-19 and h2load, see the script).
build-pgo:
    bash deploy/pgo-build.sh

# Quick start: standalone mode on the shipped examples with demo echo backends.
run:
    cargo run --release -- standalone --demo-backends

# The whole test suite (unit, golden and end-to-end through the real binary).
test:
    cargo test --workspace

# Format check and clippy with warnings as errors.
lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings

# What CI runs.
ci:
    bash .ci/run

# Router lookup micro-benchmark (criterion) at 10 / 1k / 10k routes.
bench-router:
    cargo bench -p sluice-data-plane --bench router

# Config propagation: file change -> data plane serving, at 10 / 1k / 10k routes.
bench-propagation:
    cargo bench --bench propagation

# Whole-proxy throughput against nginx, haproxy and a bare hyper proxy (../shared/bench).
bench-proxy:
    bash integration-tests/proxy-bench.sh

# Regenerate the Goma CRDs under crds/ from the Rust types (a test fails while they are stale).
crds:
    cargo run -- crds --dir crds

# Check manifests without serving them.
validate dir="examples":
    cargo run --release -- validate {{dir}}
