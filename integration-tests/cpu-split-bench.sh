#!/usr/bin/env bash
# User and system CPU per request in h1 keep-alive (wrk -c64, 10 s, two interleaved rounds) for nginx,
# the bare hyper proxy and sluice, same pinning as proxy-bench.sh, then system calls per request
# (strace -c over 3 s of load). Needs a release build: cargo build --release (or SLUICE=binary).
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"; BENCH="${BENCH:-$ROOT/../shared/bench}"
source "$BENCH/lib.sh"; source "$ROOT/integration-tests/bench-config.sh"
P_SLUICE=8085 P_SLUICE_TLS=8445 P_SLUICE_XDS=18085 P_SLUICE_ADMIN=9985
"$BENCH/setup.sh" >/dev/null
[[ -x "$HYPER_BIN" ]] || "$BENCH/build.sh" hyper
SLUICE=${SLUICE:-$ROOT/target/release/sluice}; CONF="$RUN_DIR/sluice-conf"
cleanup() { "$BENCH/stack.sh" down || true; }
trap cleanup EXIT INT TERM
"$BENCH/stack.sh" up origins nginx hyper >/dev/null 2>&1
write_bench_config "$CONF" "$P_SLUICE" "$P_SLUICE_TLS"
start_pinned sluice-cp "$LOADGEN_CPUS" "$SLUICE" control-plane --config "$CONF" --listen "127.0.0.1:$P_SLUICE_XDS"
RUST_LOG=warn start_pinned sluice "$SUT_CPUS" "$SLUICE" --worker-threads 1 data-plane --gateway default/bench \
  --xds "http://127.0.0.1:$P_SLUICE_XDS" --bind 127.0.0.1 --admin "127.0.0.1:$P_SLUICE_ADMIN"
for _ in $(seq 1 100); do curl -fsS "127.0.0.1:$P_SLUICE_ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
ut() { local u=0 s=0; for p in "$@"; do read a b < <(awk '{print $14, $15}' /proc/$p/stat 2>/dev/null) || continue; u=$((u+a)); s=$((s+b)); done; echo "$u $s"; }
for round in 1 2; do
for t in nginx-proxy:$P_NGINX hyper-proxy:$P_HYPER sluice:$P_SLUICE; do
  name=${t%%:*}; port=${t##*:}
  pids=$(pid_tree "$(cat $RUN_DIR/$name.pid)")
  nice -n -10 taskset -c 0 wrk -t1 -c64 -d2s http://127.0.0.1:$port/ >/dev/null 2>&1
  read u0 s0 < <(ut $pids)
  out=$(nice -n -10 taskset -c 0 wrk -t1 -c64 -d10s http://127.0.0.1:$port/ 2>&1)
  read u1 s1 < <(ut $pids)
  reqs=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  python3 -c "import sys; n=int(sys.argv[2]); u=int(sys.argv[3]); s=int(sys.argv[4]); print(f'{sys.argv[1]:12s} reqs={n} user={u*1e4/n:.1f}us sys={s*1e4/n:.1f}us total={(u+s)*1e4/n:.1f}us')" $name $reqs $((u1-u0)) $((s1-s0))
done; done
# syscalls per request, 3 s of load each
for t in nginx-proxy:$P_NGINX hyper-proxy:$P_HYPER sluice:$P_SLUICE; do
  name=${t%%:*}; port=${t##*:}
  pid=$(pid_tree "$(cat $RUN_DIR/$name.pid)" | tr ' ' '\n' | tail -1)
  strace -c -f -p $pid -o /tmp/strace.$name.txt & SP=$!
  sleep 0.5
  out=$(taskset -c 0 wrk -t1 -c64 -d3s http://127.0.0.1:$port/ 2>&1)
  kill -INT $SP; sleep 0.5
  echo "== $name $(echo "$out" | grep 'requests in')"; head -14 /tmp/strace.$name.txt
done
