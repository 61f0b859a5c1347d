#!/usr/bin/env bash
# Instructions per proxied request (callgrind: deterministic, unlike CPU time on a shared machine)
# for the sluice data plane or the harness's bare hyper proxy, through the harness's nginx origins.
#
#   WHO=sluice|hyper|nginx MODE=h1|h2c|https|h2|tls-handshake [N=20000] [CACHE_SIM=1] \
#     integration-tests/callgrind-bench.sh
#
#   h1     HTTP/1.1 keep-alive            h2load --h1 -c16 -m1
#   h2c    HTTP/2 prior knowledge, plain  h2load -c16 -m8
#   https  HTTP/1.1 over TLS (ALPN)       h2load --h1 -c16 -m1 https://
#   h2     HTTP/2 over TLS (ALPN h2)      h2load -c16 -m8 https://
#   tls-handshake  a new TLS connection per request (full handshake, as the harness's suite):
#                  wrk -c16 "Connection: close" for DURATION seconds (default 20), N = its count
#
# Needs a release build (SLUICE, default target/release/sluice of this checkout) and the bare
# proxy (`../shared/bench/build.sh hyper`). nginx runs the harness's proxy configuration with
# `master_process off` (its one worker is the process measured). CACHE_SIM=1 also simulates the
# caches and branch predictors and prints misses per request: instruction counts alone hide
# where the time of a request goes when its code and data do not stay in the L1 caches.
# Uses its own ports (PORT_BASE, default 8180: +5 plain, +365 TLS for sluice; +4 and +364 for
# hyper; +3 and +363 for nginx) so it can run beside the timed harness. Prints
# "WHO MODE: total Ir T, per request R"; the callgrind file stays in $CG_DIR for
# `callgrind_annotate`. The origins of the harness are started if they are not running.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BENCH="${BENCH:-$ROOT/../shared/bench}"
source "$BENCH/lib.sh"
source "$ROOT/integration-tests/bench-config.sh"
SLUICE=${SLUICE:-$ROOT/target/release/sluice}
WHO=${WHO:-sluice}
MODE=${MODE:-h1}
N=${N:-20000}
PORT_BASE=${PORT_BASE:-8180}
CG_DIR=${CG_DIR:-/tmp/sluice-callgrind}
mkdir -p "$CG_DIR"
OUTF="$CG_DIR/cg.$WHO.$MODE.out"
rm -f "$OUTF"*

"$BENCH/stack.sh" up origins >/dev/null 2>&1 # also generates the harness certificate

case "$MODE" in
  h1) SCHEME=http H1=--h1 STREAMS=1 ;;
  h2c) SCHEME=http H1= STREAMS=8 ;;
  https) SCHEME=https H1=--h1 STREAMS=1 ;;
  h2) SCHEME=https H1= STREAMS=8 ;;
  tls-handshake) SCHEME=https H1=--h1 STREAMS=1 ;;
  *) echo "unknown MODE $MODE" >&2; exit 2 ;;
esac

CG=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$OUTF")
[[ ${CACHE_SIM:-0} == 1 ]] && CG+=(--cache-sim=yes --branch-sim=yes)
CPPID=
if [[ $WHO == sluice ]]; then
  P=$((PORT_BASE + 5)) PTLS=$((PORT_BASE + 365)) XDS=$((PORT_BASE + 10005)) ADMIN=$((PORT_BASE + 1805))
  CONF="$CG_DIR/sluice-conf"
  # The same configuration as integration-tests/proxy-bench.sh, on this script's ports.
  write_bench_config "$CONF" "$P" "$PTLS"
  "$SLUICE" control-plane --config "$CONF" --listen "127.0.0.1:$XDS" >"$CG_DIR/cp.log" 2>&1 &
  CPPID=$!
  RUST_LOG=warn "${CG[@]}" "$SLUICE" --worker-threads 1 data-plane --gateway default/bench \
    --xds "http://127.0.0.1:$XDS" --bind 127.0.0.1 --admin "127.0.0.1:$ADMIN" >"$CG_DIR/dp.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 600); do curl -fsS "127.0.0.1:$ADMIN/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
elif [[ $WHO == nginx ]]; then
  P=$((PORT_BASE + 3)) PTLS=$((PORT_BASE + 363)) PH2C=$((PORT_BASE + 13))
  mkdir -p "$CG_DIR/nginx.tmp"
  sed -e "s|@RUN@|$CG_DIR|g; s|@O1@|$P_ORIGIN1|g; s|@O2@|$P_ORIGIN2|g; s|@P@|$P|g" \
    -e "s|@PTLS@|$PTLS|g; s|@PH2C@|$PH2C|g; s|@CERT@|$RUN_DIR/cert.pem|g; s|@KEY@|$RUN_DIR/key.pem|g" \
    -e "s|master_process on;|master_process off;|; s|nginx-proxy.tmp|nginx.tmp|g" \
    "$BENCH/conf/nginx-proxy.conf.tmpl" >"$CG_DIR/nginx.conf"
  "${CG[@]}" nginx -p "$CG_DIR" -e "$CG_DIR/nginx.error.log" -c "$CG_DIR/nginx.conf" >"$CG_DIR/dp.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 150); do curl -fsS -o /dev/null "127.0.0.1:$P/" 2>/dev/null && break; sleep 0.2; done
else
  P=$((PORT_BASE + 4)) PTLS=$((PORT_BASE + 364))
  HB_THREADS=1 "${CG[@]}" "$HYPER_BIN" proxy "127.0.0.1:$P" "127.0.0.1:$P_ORIGIN1,127.0.0.1:$P_ORIGIN2" \
    "127.0.0.1:$PTLS" "$RUN_DIR/cert.pem" "$RUN_DIR/key.pk8.pem" >"$CG_DIR/dp.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 150); do curl -fsS -o /dev/null "127.0.0.1:$P/" 2>/dev/null && break; sleep 0.2; done
fi
stop() {
  kill "$PID" 2>/dev/null || true
  [[ -n $CPPID ]] && kill "$CPPID" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap stop EXIT

PORT=$P
[[ $SCHEME == https ]] && PORT=$PTLS
URL="$SCHEME://127.0.0.1:$PORT/"
# Warm-up: connections, upstream pools, TLS session state.
h2load $H1 -n 2000 -c 16 -m "$STREAMS" "$URL" >/dev/null
callgrind_control -i on "$PID" >/dev/null
if [[ $MODE == tls-handshake ]]; then
  RESULT=$(wrk -t1 -c16 -d"${DURATION:-20}s" -H "Connection: close" "$URL")
  grep -E "requests in|Non-2xx|errors" <<<"$RESULT" || true
  ! grep -qE "Non-2xx|Socket errors" <<<"$RESULT" || { echo "not every request succeeded" >&2; exit 1; }
  N=$(awk '/requests in/ {print $1}' <<<"$RESULT")
else
  RESULT=$(h2load $H1 -n "$N" -c 16 -m "$STREAMS" "$URL")
  grep -E "^requests:|status codes" <<<"$RESULT"
  grep -q "$N succeeded" <<<"$RESULT" || { echo "not every request succeeded" >&2; exit 1; }
fi
callgrind_control -d "$PID" >/dev/null
stop
trap - EXIT
F=$(ls -t "$OUTF"* | grep -v "^$OUTF$" | head -1 || true)
F=${F:-$OUTF}
# awk reads everything: an early exit would fail the pipe (SIGPIPE) under pipefail.
TOTAL=$(callgrind_annotate "$F" 2>/dev/null | awk '/PROGRAM TOTALS/ && !t {gsub(",", "", $1); t = $1} END {print t}')
echo "$WHO $MODE: total Ir $TOTAL, per request $((TOTAL / N)) ($F)"
if [[ ${CACHE_SIM:-0} == 1 ]]; then
  # Events in callgrind's order: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw Bc Bcm Bi Bim.
  callgrind_annotate "$F" 2>/dev/null | awk -v n="$N" -v who="$WHO $MODE" '
    /PROGRAM TOTALS/ && !done { gsub(",", ""); k = 0
      for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+$/) v[++k] = $i
      printf "%s per request: L1i misses %d, L1d misses %d (read %d, write %d), mispredicted branches %d (conditional %d, indirect %d)\n",
        who, v[4] / n, (v[5] + v[6]) / n, v[5] / n, v[6] / n, (v[11] + v[13]) / n, v[11] / n, v[13] / n
      done = 1 }'
fi
