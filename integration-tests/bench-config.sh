# Sourced by the bench scripts: the sluice configuration they all measure, the harness's
# certificate as a kubernetes.io/tls Secret, a Gateway on HTTP_PORT/HTTPS_PORT and one Route to
# the harness's two nginx origins. Needs ../shared/bench/lib.sh sourced first (RUN_DIR, P_ORIGIN*).
#
#   write_bench_config DIR HTTP_PORT HTTPS_PORT
write_bench_config() {
  local dir=$1 http=$2 https=$3
  indent() { sed 's/^/    /' "$1"; }
  rm -rf "$dir" && mkdir -p "$dir"
  cat >"$dir/bench.yaml" <<YAML
apiVersion: v1
kind: Secret
metadata: {name: bench-cert, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(indent "$RUN_DIR/cert.pem")
  tls.key: |
$(indent "$RUN_DIR/key.pk8.pem")
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  service: {httpPort: $http, httpsPort: $https}
  server:
    tls: [{secretName: bench-cert}]
---
apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {name: origins, namespace: default}
spec:
  gateways: [bench]
  path: /
  backends:
    - endpoint: http://127.0.0.1:$P_ORIGIN1
    - endpoint: http://127.0.0.1:$P_ORIGIN2
YAML
}
