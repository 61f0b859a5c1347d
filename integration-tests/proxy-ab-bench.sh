#!/usr/bin/env bash
# Whole-proxy A/B: two sluice binaries in the same run (say main and a branch), beside nginx and
# the bare hyper proxy, with the shared harness (../shared/bench): same origins, same pinning, one
# worker thread each, interleaved rounds. Both data planes are fed by one control plane (B's).
#
#   A_BIN=/tmp/sluice-main B_BIN=target/release/sluice integration-tests/proxy-ab-bench.sh
#   B_ARGS=--access-log B_RUST_LOG=warn,access=info ROUNDS=5 ...   # B with access logs on
#
# Only the h1 suite (`/`, HTTP/1.1 keep-alive). Writes $RUN_DIR/results/sluice-ab-<stamp>/summary.md.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
source "$BENCH/lib.sh"
: "${A_BIN:?path of the A binary}" "${B_BIN:?path of the B binary}"
P_A=8085 P_B=8086 P_XDS=18085 P_ADMIN_A=9985 P_ADMIN_B=9986

"$BENCH/setup.sh" >/dev/null
[[ -x "$HYPER_BIN" ]] || "$BENCH/build.sh" hyper
CONF="$RUN_DIR/sluice-ab-conf"
rm -rf "$CONF" && mkdir -p "$CONF"
cleanup() {
  for n in sluice-ab-cp sluice-a sluice-b; do stop_pidfile "$n"; done
  "$BENCH/stack.sh" down || true
}
trap cleanup EXIT INT TERM
"$BENCH/stack.sh" up origins nginx hyper
cat >"$CONF/bench.yaml" <<YAML
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Gateway
metadata: {name: a, namespace: default}
spec:
  service: {httpPort: $P_A}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Gateway
metadata: {name: b, namespace: default}
spec:
  service: {httpPort: $P_B}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {name: origins, namespace: default}
spec:
  gateways: [a, b]
  path: /
  backends:
    - endpoint: http://127.0.0.1:$P_ORIGIN1
    - endpoint: http://127.0.0.1:$P_ORIGIN2
YAML
start_pinned sluice-ab-cp "$LOADGEN_CPUS" "$B_BIN" control-plane --config "$CONF" --listen "127.0.0.1:$P_XDS"
RUST_LOG="${A_RUST_LOG:-warn}" start_pinned sluice-a "$SUT_CPUS" "$A_BIN" --worker-threads 1 data-plane \
  --gateway default/a --xds "http://127.0.0.1:$P_XDS" --bind 127.0.0.1 --admin "127.0.0.1:$P_ADMIN_A" ${A_ARGS:-}
RUST_LOG="${B_RUST_LOG:-warn}" start_pinned sluice-b "$SUT_CPUS" "$B_BIN" --worker-threads 1 data-plane \
  --gateway default/b --xds "http://127.0.0.1:$P_XDS" --bind 127.0.0.1 --admin "127.0.0.1:$P_ADMIN_B" ${B_ARGS:-}
for _ in $(seq 1 100); do
  curl -fsS "127.0.0.1:$P_ADMIN_A/readyz" >/dev/null 2>&1 && curl -fsS "127.0.0.1:$P_ADMIN_B/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "127.0.0.1:$P_A/" >/dev/null
curl -fsS "127.0.0.1:$P_B/" >/dev/null

OUT="$RUN_DIR/results/sluice-ab-$(date +%Y%m%dT%H%M%S)"
mkdir -p "$OUT"
MODE=h1 REQ_PATH=/ OUT="$OUT" "$BENCH/proxy-compare.sh" -T "h1: sluice A vs B" \
  nginx=127.0.0.1:$P_NGINX@nginx-proxy hyper-proxy=127.0.0.1:$P_HYPER@hyper-proxy \
  sluice-a=127.0.0.1:$P_A@sluice-a sluice-b=127.0.0.1:$P_B@sluice-b | tee "$OUT/summary.md"
echo "raw results: $OUT"
