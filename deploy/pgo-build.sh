#!/usr/bin/env bash
# Profile-guided release build of `sluice`, in two steps, each trained by the same load:
#   1. PGO: an instrumented build serves the training load, and the release build is compiled
#      with the profile it wrote (hot code laid out together, branches and indirect calls ordered
#      by what traffic does, inlining where it pays).
#   2. BOLT: that binary, linked with its relocations, is instrumented by llvm-bolt, serves the
#      training load again, and is rewritten with the second profile: hot functions packed
#      together and cold blocks moved out of them across the whole binary, which the compiler
#      cannot do one crate at a time. Fewer instruction-cache misses and taken branches per
#      request. Debug info is dropped (symbols stay, so backtraces name functions).
# Output: target/pgo/release/sluice.
#
#   deploy/pgo-build.sh            (also `just build-pgo`; the image builds this way)
#
# The training load is not the benchmarks': `sluice standalone --demo-backends` on a copy of the
# shipped examples plus a TLS Gateway, driven by h2load over several routes in every mode the data
# plane serves (HTTP/1.1 keep-alive, h2c, HTTPS, HTTP/2 over TLS, a new TLS connection per
# request, local answers). Code it does not reach is optimized as cold, so a mode left out here
# gets slower, not faster.
#
# Needs curl, h2load (nghttp2-client) and openssl, and LLVM tools that read rustc's output:
# rustc 1.95 (LLVM 22) writes raw profile format 10, which Debian bookworm's llvm-19 reads
# (`apt-get install llvm-19 bolt-19`; its llvm-14 does not). LLVM_PROFDATA and LLVM_BOLT override
# the search. Two release builds in their own target directories (the flags differ from
# target/release's): about twice a cold build, plus two minutes of training and rewriting.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PROFDATA=${LLVM_PROFDATA:-$(ls /usr/lib/llvm-*/bin/llvm-profdata 2>/dev/null | sort -V | tail -1)}
[[ -x $PROFDATA ]] || { echo "no llvm-profdata: apt-get install llvm-19, or set LLVM_PROFDATA" >&2; exit 1; }
BOLT=${LLVM_BOLT:-$(ls /usr/lib/llvm-*/bin/llvm-bolt 2>/dev/null | sort -V | tail -1)}
[[ -x $BOLT ]] || { echo "no llvm-bolt: apt-get install bolt-19, or set LLVM_BOLT" >&2; exit 1; }
GEN_DIR=${GEN_DIR:-$ROOT/target/pgo-gen}
USE_DIR=${USE_DIR:-$ROOT/target/pgo}
PROFILES=${PROFILES:-$GEN_DIR/profiles}
rm -rf "$PROFILES"/*.profraw "$PROFILES"/merged.profdata "$PROFILES"/bolt*.fdata
mkdir -p "$PROFILES"

WORK=$(mktemp -d)
cleanup() {
  [[ -n ${PID:-} ]] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
# The training configuration: the shipped examples plus a TLS Gateway, and a request body.
CONF=$WORK/config
mkdir "$CONF"
cp examples/*.yaml "$CONF/"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=secure.example.com" -addext "subjectAltName=DNS:secure.example.com,IP:127.0.0.1" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
indent() { sed 's/^/    /' "$1"; }
cat >"$CONF/training-tls.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: training-cert, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(indent "$WORK/cert.pem")
  tls.key: |
$(indent "$WORK/key.pem")
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Gateway
metadata: {name: secure, namespace: default}
spec:
  service: {httpPort: 8093, httpsPort: 8493}
  server:
    tls: [{secretName: training-cert}]
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {name: secure, namespace: default}
spec:
  gateways: [secure]
  path: /
  backends:
    - endpoint: http://127.0.0.1:9108
    - endpoint: http://127.0.0.1:9109
YAML
head -c 2048 /dev/zero | tr '\0' 'a' >"$WORK/body"

# A load that did not reach the gateway (connections refused, TLS failed) would leave its mode
# out of the profile: stop instead. Non-2xx answers are expected (a 503 route, a redirect).
load() {
  local out
  out=$(h2load "$@")
  grep -q " 0 errored, 0 timeout" <<<"$out" || {
    echo "training load did not reach the gateway: h2load $*" >&2
    grep -E "^requests|status codes" <<<"$out" >&2
    exit 1
  }
}

# Serves the training load with the sluice binary $1 (which writes its profile when it exits).
train() {
  "$1" standalone --config "$CONF" --demo-backends >"$WORK/standalone.log" 2>&1 &
  PID=$!
  local ready=
  for _ in $(seq 1 300); do
    if curl -fsS -o /dev/null -H 'Host: api.example.com' 127.0.0.1:8080/users 2>/dev/null &&
      curl -fsS -o /dev/null 127.0.0.1:8093/ 2>/dev/null &&
      curl -fsSk -o /dev/null https://127.0.0.1:8493/ 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.2
  done
  [[ -n $ready ]] || { cat "$WORK/standalone.log" >&2; echo "standalone did not become ready" >&2; exit 1; }
  # HTTP/1.1 keep-alive over four routes (two of them split and rewritten), and local answers.
  load --h1 -n 60000 -c 16 -H 'Host: api.example.com' http://127.0.0.1:8080/users
  load --h1 -n 30000 -c 16 -H 'Host: api.example.com' http://127.0.0.1:8080/api/orders
  load --h1 -n 10000 -c 8 -H 'Host: api.example.com' -H 'X-Canary: true' http://127.0.0.1:8080/api/orders
  load --h1 -n 20000 -c 16 -H 'Host: www.example.com' http://127.0.0.1:8080/docs
  load --h1 -n 20000 -c 16 http://127.0.0.1:8081/
  load --h1 -n 10000 -c 8 -H 'Host: store.example.com' http://127.0.0.1:8082/items
  load --h1 -n 5000 -c 8 http://127.0.0.1:8080/legacy
  load --h1 -n 5000 -c 8 -H 'Host: store.example.com' http://127.0.0.1:8082/old/x
  load --h1 -n 5000 -c 8 -H 'Host: api.example.com' -d "$WORK/body" http://127.0.0.1:8080/users
  # HTTP/2 without TLS (prior knowledge), multiplexed.
  load -n 40000 -c 16 -m 8 -H 'Host: api.example.com' http://127.0.0.1:8080/users
  load -n 10000 -c 8 -m 8 http://127.0.0.1:8081/
  # HTTPS: HTTP/1.1 and HTTP/2 by ALPN, then a new connection (full handshake) per request.
  load --h1 -n 40000 -c 16 https://127.0.0.1:8493/
  load -n 40000 -c 16 -m 8 https://127.0.0.1:8493/
  for _ in $(seq 1 20); do load --h1 -n 200 -c 200 https://127.0.0.1:8493/; done
  kill -INT "$PID"
  wait "$PID" || true
  PID=
}

echo "== PGO: instrumented build"
RUSTFLAGS="-Cprofile-generate=$PROFILES" cargo build --release --locked --target-dir "$GEN_DIR" --bin sluice
echo "== PGO: training"
train "$GEN_DIR/release/sluice"
ls "$PROFILES"/*.profraw >/dev/null
echo "== PGO: merge ($PROFDATA)"
"$PROFDATA" merge -o "$PROFILES/merged.profdata" "$PROFILES"

# Linked with its relocations (--emit-relocs): BOLT needs them to move functions.
echo "== PGO: optimized build"
RUSTFLAGS="-Cprofile-use=$PROFILES/merged.profdata -Clink-arg=-Wl,--emit-relocs" \
  cargo build --release --locked --target-dir "$USE_DIR" --bin sluice

# Cargo's file is a hard link to its own artifact: BOLT writes a new file in its place.
PGO_BIN=$USE_DIR/release/sluice-pgo
cp "$USE_DIR/release/sluice" "$PGO_BIN"
rm "$USE_DIR/release/sluice"
echo "== BOLT: instrument ($BOLT)"
"$BOLT" "$PGO_BIN" -instrument -instrumentation-file="$PROFILES/bolt.fdata" \
  -o "$WORK/sluice-bolt-instrumented" >"$WORK/bolt.log" 2>&1 ||
  { cat "$WORK/bolt.log" >&2; exit 1; }
echo "== BOLT: training"
train "$WORK/sluice-bolt-instrumented"
"$BOLT" "$PGO_BIN" -o "$USE_DIR/release/sluice" -data="$PROFILES/bolt.fdata" \
  -reorder-blocks=ext-tsp -reorder-functions=cdsort -split-functions -split-all-cold -split-eh \
  -icf=1 -use-gnu-stack -dyno-stats >"$WORK/bolt.log" 2>&1 ||
  { cat "$WORK/bolt.log" >&2; exit 1; }
# Its estimate of what the layout changed on the training load.
grep -E "^ +[0-9]+ : (taken branches|executed unconditional branches) \(" "$WORK/bolt.log" || true
echo "built $USE_DIR/release/sluice"
