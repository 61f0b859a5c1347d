#!/usr/bin/env bash
# Whole-proxy throughput of the sluice data plane beside nginx, haproxy and a bare hyper proxy,
# with the shared harness (../shared/bench): same origins, same pinning (proxy on CPU 1, load
# and origins on CPU 0), one worker thread each, interleaved rounds, ratios from one run.
#
#   integration-tests/proxy-bench.sh                 # h1 suite, 3 rounds
#   SUITES="h1 h1-4k h2c https h2 tls-handshake" ROUNDS=5 integration-tests/proxy-bench.sh
#
# SLUICE names another sluice binary to measure (default: this checkout's release build).
# Writes the tables to stdout and to $RUN_DIR/results/sluice-<stamp>/summary.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
source "$BENCH/lib.sh"
source "$ROOT/integration-tests/bench-config.sh"
SUITES="${SUITES:-h1}"
P_SLUICE=8085 P_SLUICE_TLS=8445 P_SLUICE_XDS=18085 P_SLUICE_ADMIN=9985

"$BENCH/setup.sh" >/dev/null
[[ -x "$HYPER_BIN" ]] || "$BENCH/build.sh" hyper
(cd "$ROOT" && cargo build --release --quiet)
SLUICE=${SLUICE:-$ROOT/target/release/sluice}

CONF="$RUN_DIR/sluice-conf"

cleanup() { "$BENCH/stack.sh" down || true; }
trap cleanup EXIT INT TERM
"$BENCH/stack.sh" up origins direct nginx haproxy hyper
# Needs the harness's certificate, which stack.sh generates.
write_bench_config "$CONF" "$P_SLUICE" "$P_SLUICE_TLS"

# The control plane is idle during the run; it sits with the load generator.
start_pinned sluice-cp "$LOADGEN_CPUS" "$SLUICE" control-plane --config "$CONF" --listen "127.0.0.1:$P_SLUICE_XDS"
RUST_LOG=warn start_pinned sluice "$SUT_CPUS" "$SLUICE" --worker-threads 1 data-plane --gateway default/bench \
  --xds "http://127.0.0.1:$P_SLUICE_XDS" --bind 127.0.0.1 --admin "127.0.0.1:$P_SLUICE_ADMIN"
for _ in $(seq 1 100); do
  curl -fsS "127.0.0.1:$P_SLUICE_ADMIN/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "127.0.0.1:$P_SLUICE/" >/dev/null
curl -fsSk "https://127.0.0.1:$P_SLUICE_TLS/" >/dev/null

STAMP="$(date +%Y%m%dT%H%M%S)"
OUT="$RUN_DIR/results/sluice-$STAMP"
mkdir -p "$OUT"
for s in $SUITES; do
  case "$s" in
    h1) mode=h1 path=/ targets=(direct=127.0.0.1:$P_DIRECT@direct nginx=127.0.0.1:$P_NGINX@nginx-proxy haproxy=127.0.0.1:$P_HAPROXY@haproxy) ;;
    h1-4k) mode=h1 path=/4k targets=(direct=127.0.0.1:$P_DIRECT@direct nginx=127.0.0.1:$P_NGINX@nginx-proxy haproxy=127.0.0.1:$P_HAPROXY@haproxy) ;;
    h2c) mode=h2c path=/ targets=(direct=127.0.0.1:$P_DIRECT_H2C@direct nginx=127.0.0.1:$P_NGINX_H2C@nginx-proxy haproxy=127.0.0.1:$P_HAPROXY@haproxy) ;;
    https|h2|tls-handshake)
      mode=$s path=/ targets=(direct=127.0.0.1:$P_DIRECT_TLS@direct nginx=127.0.0.1:$P_NGINX_TLS@nginx-proxy haproxy=127.0.0.1:$P_HAPROXY_TLS@haproxy) ;;
    *) echo "unknown suite $s" >&2; continue ;;
  esac
  if [[ $mode == https || $mode == h2 || $mode == tls-handshake ]]; then
    targets+=(hyper-proxy=127.0.0.1:$P_HYPER_TLS@hyper-proxy sluice=127.0.0.1:$P_SLUICE_TLS@sluice)
  else
    targets+=(hyper-proxy=127.0.0.1:$P_HYPER@hyper-proxy sluice=127.0.0.1:$P_SLUICE@sluice)
  fi
  MODE=$mode REQ_PATH=$path OUT="$OUT" "$BENCH/proxy-compare.sh" -T "$s: sluice vs anchors" "${targets[@]}" | tee -a "$OUT/summary.md"
done
echo "raw results: $OUT"
