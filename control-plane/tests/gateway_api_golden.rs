//! Golden translation tests: the manifests in `golden/gateway_api/<case>.yaml` in, every
//! Gateway's resources and status out, compared with `<case>.golden` (reviewed by eye).
//! `UPDATE_GOLDEN=1 cargo test --test gateway_api_golden` rewrites the expectations.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use sluice_control_plane::model::{Kind, ObjectKey};
use sluice_control_plane::provider::file::parse_manifests;
use sluice_control_plane::translate::gateway_api::translate_gateway;

fn render(yaml_path: &Path) -> String {
    let text = std::fs::read_to_string(yaml_path).expect("case manifest");
    let (objects, diags) = parse_manifests(yaml_path, &text);
    assert!(diags.is_empty(), "{diags:?}");
    let objects: BTreeMap<ObjectKey, _> = objects.into_iter().map(|o| (o.key(), o)).collect();
    let mut out = String::new();
    for key in objects.keys().filter(|k| k.kind == Kind::Gateway) {
        let (translation, _) = translate_gateway(&objects, key);
        writeln!(out, "=== {key}").unwrap();
        let Some(t) = translation else {
            writeln!(out, "not ours: ignored").unwrap();
            continue;
        };
        writeln!(out, "served: {}", t.served).unwrap();
        writeln!(out, "secrets: {:?}", t.secrets).unwrap();
        for l in &t.listeners {
            writeln!(out, "--- listener {}\n{l:#?}", l.name).unwrap();
        }
        for r in &t.routes {
            writeln!(out, "--- route {}\n{r:#?}", r.name).unwrap();
        }
        for c in &t.clusters {
            writeln!(out, "--- cluster {}\n{c:#?}", c.name).unwrap();
        }
        for s in &t.ca_bundles {
            writeln!(out, "--- ca bundle {}\n{s:#?}", s.name).unwrap();
        }
        writeln!(out, "--- status {key}\n{:#?}", t.gateway_status).unwrap();
        for (route, report) in &t.route_parents {
            writeln!(out, "--- status {route}\n{report:#?}").unwrap();
        }
        for (policy, report) in &t.policy_ancestors {
            writeln!(out, "--- status {policy}\n{report:#?}").unwrap();
        }
    }
    out
}

#[test]
fn golden_translations() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/gateway_api");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases in {}", dir.display());
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    for case in cases {
        let actual = render(&case);
        let golden = case.with_extension("golden");
        if update {
            std::fs::write(&golden, &actual).expect("write golden");
            continue;
        }
        let expected = std::fs::read_to_string(&golden).unwrap_or_default();
        if expected != actual {
            stale.push(golden.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "translations differ from {stale:?}; review with UPDATE_GOLDEN=1 and git diff"
    );
}
