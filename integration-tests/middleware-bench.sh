#!/usr/bin/env bash
# Per-request cost of route middlewares: one sluice data plane serves a bare route and a route
# with basicAuth + rateLimit + responseHeaders (the issue's mix) on two ports; wrk drives each in
# interleaved rounds (one run, same origins and pinning as proxy-bench.sh) and the data plane's
# own CPU time per request is compared.
#
#   integration-tests/middleware-bench.sh           # 3 rounds of 10 s each
#   ROUNDS=5 DURATION=15 integration-tests/middleware-bench.sh
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
source "$BENCH/lib.sh"
ROUNDS="${ROUNDS:-3}" DURATION="${DURATION:-10}" WARMUP="${WARMUP:-2}" CONNS="${CONNS:-64}"
P_BARE=8086 P_MW=8087 P_XDS=18086 P_ADMIN=9986

"$BENCH/setup.sh" >/dev/null
(cd "$ROOT" && cargo build --release --quiet)
SLUICE="$ROOT/target/release/sluice"
CONF="$RUN_DIR/sluice-mw-conf"
rm -rf "$CONF" && mkdir -p "$CONF"
cleanup() { "$BENCH/stack.sh" down || true; }
trap cleanup EXIT INT TERM
"$BENCH/stack.sh" up origins

# bcrypt hash of "bench-password" (cost 10): the verified-credential cache is part of what is measured.
HASH="$(python3 -c 'import bcrypt' 2>/dev/null || pip install -q bcrypt >/dev/null; python3 -c 'import bcrypt; print(bcrypt.hashpw(b"bench-password", bcrypt.gensalt(10)).decode())')"
cat >"$CONF/bench.yaml" <<YAML
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Gateway
metadata: {name: bare, namespace: default}
spec: {service: {httpPort: $P_BARE}}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Gateway
metadata: {name: mw, namespace: default}
spec: {service: {httpPort: $P_MW}}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {name: bare, namespace: default}
spec:
  gateways: [bare]
  path: /
  backends: [{endpoint: "http://127.0.0.1:$P_ORIGIN1"}, {endpoint: "http://127.0.0.1:$P_ORIGIN2"}]
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {name: mw, namespace: default}
spec:
  gateways: [mw]
  path: /
  backends: [{endpoint: "http://127.0.0.1:$P_ORIGIN1"}, {endpoint: "http://127.0.0.1:$P_ORIGIN2"}]
  middlewares: [auth, limit, headers]
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Middleware
metadata: {name: auth, namespace: default}
spec:
  type: basicAuth
  rule: {users: [{username: bench, password: '$HASH'}]}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Middleware
metadata: {name: limit, namespace: default}
spec:
  type: rateLimit
  rule: {unit: second, requestsPerUnit: 100000000, burst: 100000000}
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Middleware
metadata: {name: headers, namespace: default}
spec:
  type: responseHeaders
  rule: {setHeaders: {X-Frame-Options: DENY, X-Content-Type-Options: nosniff}}
YAML

start_pinned sluice-mw-cp "$LOADGEN_CPUS" "$SLUICE" control-plane --config "$CONF" --listen "127.0.0.1:$P_XDS"
# One data plane serving both gateways' ports is not possible (a pod serves one gateway), so each
# gateway gets its own data plane, both pinned to the system-under-test CPU.
RUST_LOG=warn start_pinned sluice-bare "$SUT_CPUS" "$SLUICE" --worker-threads 1 data-plane --gateway default/bare \
  --xds "http://127.0.0.1:$P_XDS" --bind 127.0.0.1 --admin "127.0.0.1:$P_ADMIN"
RUST_LOG=warn start_pinned sluice-mw "$SUT_CPUS" "$SLUICE" --worker-threads 1 data-plane --gateway default/mw \
  --xds "http://127.0.0.1:$P_XDS" --bind 127.0.0.1 --admin "127.0.0.1:$((P_ADMIN + 1))"
AUTH="Authorization: Basic $(printf bench:bench-password | base64)"
for _ in $(seq 1 100); do
  curl -fsS "127.0.0.1:$P_BARE/" >/dev/null 2>&1 && curl -fsS -H "$AUTH" "127.0.0.1:$P_MW/" >/dev/null 2>&1 && break
  sleep 0.2
done
[[ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$P_MW/")" == 401 ]] || { echo "middleware route does not ask for credentials" >&2; exit 1; }
curl -fsS -H "$AUTH" "127.0.0.1:$P_MW/" >/dev/null

HZ="$(getconf CLK_TCK)"
LG="nice -n ${BENCH_NICE:-0} taskset -c $LOADGEN_CPUS"
run() { # name port header...
  local name="$1" port="$2"; shift 2
  local pids c0 c1 res
  pids="$(pid_tree "$(cat "$RUN_DIR/sluice-$name.pid")")"
  $LG wrk -t1 -c"$CONNS" -d"${WARMUP}s" "$@" "http://127.0.0.1:$port/" >/dev/null 2>&1 || true
  c0="$(cpu_ticks $pids)"
  res="$($LG wrk -t1 -c"$CONNS" -d"${DURATION}s" --timeout 5s "$@" -s "$BENCH/wrk-report.lua" "http://127.0.0.1:$port/" 2>&1 | sed -n 's/^RESULT_JSON //p')"
  c1="$(cpu_ticks $pids)"
  python3 - "$name" "$res" "$c0" "$c1" "$HZ" <<'PY'
import json, sys
name, res, c0, c1, hz = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
reqs = res["requests"]
bad = res["non2xx"] + res["err_connect"] + res["err_read"] + res["err_write"] + res["err_timeout"]
us = (c1 - c0) / hz * 1e6 / max(reqs, 1)
print(json.dumps({"name": name, "requests": reqs, "rps": reqs / (res["duration_us"] / 1e6), "cpu_us_per_req": us, "bad": bad}))
PY
}
echo "| round | bare µs/req | middlewares µs/req | ratio | bare req/s | middlewares req/s |"
echo "|---|---|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  if (( r % 2 )); then a="$(run bare $P_BARE)"; b="$(run mw $P_MW -H "$AUTH")"
  else b="$(run mw $P_MW -H "$AUTH")"; a="$(run bare $P_BARE)"; fi
  python3 - "$r" "$a" "$b" <<'PY'
import json, sys
r, a, b = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
assert a["bad"] == 0 and b["bad"] == 0, (a, b)
print(f"| {r} | {a['cpu_us_per_req']:.1f} | {b['cpu_us_per_req']:.1f} | {b['cpu_us_per_req']/a['cpu_us_per_req']:.2f} | {a['rps']:.0f} | {b['rps']:.0f} |")
PY
done
