//! The file provider: manifests from a directory tree, watched for changes.
//!
//! The last good configuration keeps serving: a document that fails to parse keeps its object's
//! previous version, and a file that is not YAML at all keeps everything it defined.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::manifest::parse_object;
use super::{Diagnostic, ProviderError, ProviderEvent};
use crate::model::{Object, ObjectKey};

/// While a save is unfinished (written, not yet closed), wait for this much quiet before reading.
const QUIET: Duration = Duration::from_millis(5);
/// A file rewritten continuously must still be picked up eventually.
const MAX_COALESCE: Duration = Duration::from_millis(100);

/// What one file yielded, plus what the provider needs to keep last good versions.
#[derive(Debug, Default)]
struct ParsedFile {
    objects: Vec<Object>,
    diagnostics: Vec<Diagnostic>,
    /// Documents that named an object but failed: that object keeps its last good version.
    failed: Vec<ObjectKey>,
    /// A document (or the whole file) could not be attributed to an object, so an object missing
    /// from this parse may only be broken, not removed: delete nothing from this file.
    keep_unlisted: bool,
}

/// Parses a multi-document YAML file (or a JSON file: one object or an array of objects). Empty
/// documents are skipped, `kind: List` is expanded, and every bad document is reported and
/// skipped while the others are still returned.
pub fn parse_manifests(file: &Path, text: &str) -> (Vec<Object>, Vec<Diagnostic>) {
    let parsed = parse_file(file, text);
    (parsed.objects, parsed.diagnostics)
}

fn is_json(file: &Path) -> bool {
    file.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

fn parse_file(file: &Path, text: &str) -> ParsedFile {
    let mut out = ParsedFile::default();
    let docs = if is_json(file) {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => items,
            Ok(Value::Null) => Vec::new(),
            Ok(v) => vec![v],
            Err(e) => return malformed(file, format!("not valid JSON: {e}")),
        }
    } else {
        let mut options = serde_saphyr::Options::default();
        // YAML 1.1 booleans (`on`, `yes`) are a classic trap: only true/false are booleans.
        options.strict_booleans = true;
        options.with_snippet = false;
        match serde_saphyr::from_multiple_with_options::<Value>(text, options) {
            Ok(docs) => docs,
            Err(e) => {
                return malformed(
                    file,
                    format!("not valid YAML: {}", one_line(&e.to_string())),
                );
            }
        }
    };
    let mut seen: BTreeMap<ObjectKey, usize> = BTreeMap::new();
    let mut index = 0;
    for doc in docs {
        expand_lists(doc, &mut |doc| {
            index += 1;
            parse_document(file, index, doc, &mut out, &mut seen);
        });
    }
    out
}

fn malformed(file: &Path, message: String) -> ParsedFile {
    ParsedFile {
        diagnostics: vec![Diagnostic {
            file: file.to_owned(),
            object: None,
            message,
        }],
        keep_unlisted: true,
        ..ParsedFile::default()
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `kubectl get -o yaml` produces `kind: List` with `items`; treat its items as documents.
fn expand_lists(doc: Value, f: &mut dyn FnMut(Value)) {
    match doc {
        Value::Null => {}
        Value::Object(mut map)
            if map
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k == "List")
                && map.get("items").is_some_and(Value::is_array) =>
        {
            if let Some(Value::Array(items)) = map.remove("items") {
                for item in items {
                    expand_lists(item, f);
                }
            }
        }
        doc => f(doc),
    }
}

fn parse_document(
    file: &Path,
    index: usize,
    doc: Value,
    out: &mut ParsedFile,
    seen: &mut BTreeMap<ObjectKey, usize>,
) {
    let object = match parse_object(doc) {
        Ok(object) => object,
        Err(e) => {
            let message = match &e.key {
                Some(_) => e.message,
                None => format!("document {index}: {}", e.message),
            };
            if e.ambiguous {
                out.keep_unlisted = true;
            } else if let Some(key) = &e.key {
                out.failed.push(key.clone());
            }
            out.diagnostics.push(Diagnostic {
                file: file.to_owned(),
                object: e.key.map(|k| k.to_string()),
                message,
            });
            return;
        }
    };
    let key = object.key();
    if let Some(previous) = seen.insert(key.clone(), index) {
        out.diagnostics.push(Diagnostic {
            file: file.to_owned(),
            object: Some(key.to_string()),
            message: format!(
                "defined twice in this file (documents {previous} and {index}); the later one wins"
            ),
        });
        out.objects.retain(|o| o.key() != key);
    }
    out.objects.push(object);
}

fn is_manifest(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "yaml" | "yml" | "json"))
}

fn is_hidden_name(name: &std::ffi::OsStr) -> bool {
    name.to_string_lossy().starts_with('.')
}

/// Manifest files under `dir`, hidden entries skipped, directory symlinks followed once.
fn walk(dir: &Path, out: &mut Vec<PathBuf>, visited: &mut HashSet<PathBuf>) {
    // Guards against symlink loops.
    if let Ok(canonical) = dir.canonicalize()
        && !visited.insert(canonical)
    {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if is_hidden_name(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // `metadata` follows symlinks: a linked directory is walked, a linked file read.
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => walk(&path, out, visited),
            Ok(m) if m.is_file() && is_manifest(&path) => out.push(path),
            _ => {}
        }
    }
}

/// Reads every manifest under `dir` (recursively, in sorted path order, hidden files and
/// directories skipped). A key defined in several files resolves to the last one, with a
/// Diagnostic. Objects come back in key order.
pub fn load_dir(dir: &Path) -> (Vec<Object>, Vec<Diagnostic>) {
    let mut state = FileState::new(dir.to_owned());
    let (_, diagnostics) = state.refresh(&BTreeSet::new(), true);
    (state.current.into_values().collect(), diagnostics)
}

/// Per-file last good objects, and what has been sent downstream.
struct FileState {
    root: PathBuf,
    /// `root` canonicalised, to map watcher paths back onto `root`.
    canonical_root: Option<PathBuf>,
    files: BTreeMap<PathBuf, BTreeMap<ObjectKey, Object>>,
    /// Files defining each key; the last one in path order wins.
    definers: BTreeMap<ObjectKey, BTreeSet<PathBuf>>,
    current: BTreeMap<ObjectKey, Object>,
}

impl FileState {
    fn new(root: PathBuf) -> Self {
        let canonical_root = root.canonicalize().ok();
        Self {
            root,
            canonical_root,
            files: BTreeMap::new(),
            definers: BTreeMap::new(),
            current: BTreeMap::new(),
        }
    }

    /// `path` as seen from `root`, or None when it is outside or hidden.
    fn relative<'a>(&self, path: &'a Path) -> Option<&'a Path> {
        path.strip_prefix(&self.root)
            .ok()
            .or_else(|| path.strip_prefix(self.canonical_root.as_ref()?).ok())
    }

    /// Re-reads what `paths` may have changed (everything when `full`), returning the changes to
    /// send and the diagnostics of the files read.
    fn refresh(
        &mut self,
        paths: &BTreeSet<PathBuf>,
        full: bool,
    ) -> (Vec<ProviderEvent>, Vec<Diagnostic>) {
        let mut candidates: BTreeSet<PathBuf> = BTreeSet::new();
        let mut walked = Vec::new();
        let mut visited = HashSet::new();
        if full {
            walk(&self.root, &mut walked, &mut visited);
            candidates.extend(self.files.keys().cloned());
        } else {
            for path in paths {
                let Some(rel) = self.relative(path) else {
                    continue;
                };
                if rel.components().any(|c| is_hidden_name(c.as_os_str())) {
                    continue;
                }
                let path = self.root.join(rel);
                if path.is_dir() {
                    walk(&path, &mut walked, &mut visited);
                }
                // A removed or renamed directory takes its files with it.
                candidates.extend(self.files.keys().filter(|f| f.starts_with(&path)).cloned());
                candidates.insert(path);
            }
        }
        candidates.extend(walked);

        let mut diagnostics = Vec::new();
        let mut touched = BTreeSet::new();
        for file in candidates {
            let parsed = match std::fs::metadata(&file) {
                Ok(m) if m.is_file() && is_manifest(&file) => {
                    match std::fs::read_to_string(&file) {
                        Ok(text) => Some(parse_file(&file, &text)),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                        Err(e) => Some(malformed(&file, format!("cannot read: {e}"))),
                    }
                }
                _ => None,
            };
            if let Some(parsed) = &parsed {
                diagnostics.extend(parsed.diagnostics.iter().cloned());
            }
            touched.extend(self.apply_file(&file, parsed));
        }
        let events = self.resolve(&touched, &mut diagnostics);
        (events, diagnostics)
    }

    /// Records a file's new content (None: gone) and returns the keys it defined before or now.
    fn apply_file(&mut self, file: &Path, parsed: Option<ParsedFile>) -> BTreeSet<ObjectKey> {
        let old = self.files.remove(file).unwrap_or_default();
        let mut new = BTreeMap::new();
        if let Some(parsed) = parsed {
            for key in &parsed.failed {
                if let Some(last_good) = old.get(key) {
                    new.insert(key.clone(), last_good.clone());
                }
            }
            for object in parsed.objects {
                new.insert(object.key(), object);
            }
            if parsed.keep_unlisted {
                for (key, object) in &old {
                    new.entry(key.clone()).or_insert_with(|| object.clone());
                }
            }
        }
        let mut touched: BTreeSet<ObjectKey> = old.keys().cloned().collect();
        for key in old.keys() {
            if let Some(files) = self.definers.get_mut(key) {
                files.remove(file);
            }
        }
        for key in new.keys() {
            self.definers
                .entry(key.clone())
                .or_default()
                .insert(file.to_owned());
            touched.insert(key.clone());
        }
        if !new.is_empty() {
            self.files.insert(file.to_owned(), new);
        }
        touched
    }

    /// Brings `current` in line with the winning definitions of `keys`.
    fn resolve(
        &mut self,
        keys: &BTreeSet<ObjectKey>,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Vec<ProviderEvent> {
        let mut events = Vec::new();
        for key in keys {
            let files = self.definers.get(key).filter(|f| !f.is_empty());
            let winner = files.and_then(|files| {
                let file = files.last()?;
                if files.len() > 1 {
                    let others: Vec<String> = files
                        .iter()
                        .filter(|f| *f != file)
                        .map(|f| f.display().to_string())
                        .collect();
                    diagnostics.push(Diagnostic {
                        file: file.clone(),
                        object: Some(key.to_string()),
                        message: format!(
                            "also defined in {}; this definition wins",
                            others.join(", ")
                        ),
                    });
                }
                self.files.get(file)?.get(key)
            });
            match winner {
                Some(object) => {
                    if self.current.get(key) != Some(object) {
                        self.current.insert(key.clone(), object.clone());
                        events.push(ProviderEvent::Apply(object.clone()));
                    }
                }
                None => {
                    self.definers.remove(key);
                    if self.current.remove(key).is_some() {
                        events.push(ProviderEvent::Delete(key.clone()));
                    }
                }
            }
        }
        events
    }
}

fn log_diagnostics(diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        tracing::warn!(
            file = %d.file.display(),
            object = d.object.as_deref().unwrap_or("-"),
            "{}",
            d.message
        );
    }
}

/// Paths touched by a burst of watcher events.
#[derive(Default)]
struct Changes {
    paths: BTreeSet<PathBuf>,
    full: bool,
    /// Paths written to but not yet closed: a save still in progress.
    unfinished: BTreeSet<PathBuf>,
}

impl Changes {
    fn add(&mut self, event: notify::Result<notify::Event>) {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RenameMode};
        match event {
            Ok(event) => {
                // Opening or reading (our own reads included) changes nothing; a close after
                // writing is the end of a save.
                if let EventKind::Access(kind) = event.kind
                    && !matches!(kind, AccessKind::Close(AccessMode::Write))
                {
                    return;
                }
                if event.need_rescan() {
                    self.full = true;
                }
                // A write is finished once closed, renamed into place or removed; until then
                // the file may be half written.
                let finished = matches!(
                    event.kind,
                    EventKind::Access(_)
                        | EventKind::Remove(_)
                        | EventKind::Create(CreateKind::Folder)
                        | EventKind::Modify(ModifyKind::Name(
                            RenameMode::To | RenameMode::From | RenameMode::Both
                        ))
                );
                for path in event.paths {
                    // Kubernetes ConfigMap volumes swap a hidden `..data` symlink: rescan.
                    if path
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(".."))
                    {
                        self.full = true;
                    }
                    if finished {
                        self.unfinished.remove(&path);
                    } else {
                        self.unfinished.insert(path.clone());
                    }
                    self.paths.insert(path);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; rescanning the directory");
                self.full = true;
            }
        }
    }
}

/// Watches a directory of manifests. See [`FileProvider::run`].
pub struct FileProvider {
    dir: PathBuf,
}

impl FileProvider {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Sends the initial scan as one batch ending with [`ProviderEvent::Synced`], then a batch per
    /// burst of changes. Returns when the receiver is dropped.
    pub async fn run(
        self,
        tx: mpsc::UnboundedSender<Vec<ProviderEvent>>,
    ) -> Result<(), ProviderError> {
        let root = self.dir;
        // Watch before the first scan so nothing written during it is missed.
        let (fs_tx, mut fs_rx) = mpsc::unbounded_channel();
        let watch_root = root.clone();
        // A recursive watch walks the tree: blocking work. The watcher lives as long as `run`.
        let _watcher = tokio::task::spawn_blocking(move || {
            let root = watch_root;
            let meta = std::fs::metadata(&root).map_err(|source| ProviderError::Io {
                path: root.clone(),
                source,
            })?;
            if !meta.is_dir() {
                return Err(ProviderError::NotADirectory(root));
            }
            let watch_error = |source| ProviderError::Watch {
                path: root.clone(),
                source,
            };
            let mut watcher = notify::recommended_watcher(move |event| {
                let _ = fs_tx.send(event);
            })
            .map_err(watch_error)?;
            watcher
                .watch(&root, RecursiveMode::Recursive)
                .map_err(watch_error)?;
            Ok(watcher)
        })
        .await??;

        let mut state = FileState::new(root);
        let mut changes = Changes {
            full: true,
            ..Changes::default()
        };
        let mut initial = true;
        loop {
            // File reads and YAML parsing are blocking work.
            let (events, diagnostics, returned) = tokio::task::spawn_blocking(move || {
                let (events, diagnostics) = state.refresh(&changes.paths, changes.full);
                (events, diagnostics, state)
            })
            .await?;
            state = returned;
            log_diagnostics(&diagnostics);
            let mut events = events;
            if initial {
                events.push(ProviderEvent::Synced);
                initial = false;
            }
            if !events.is_empty() && tx.send(events).is_err() {
                return Ok(());
            }

            changes = Changes::default();
            // Access events alone (our own reads among them) change nothing: keep waiting.
            while changes.paths.is_empty() && !changes.full {
                let first = tokio::select! {
                    _ = tx.closed() => return Ok(()),
                    event = fs_rx.recv() => event,
                };
                let Some(first) = first else { return Ok(()) };
                changes.add(first);
                // Take what is already queued; wait for quiet only while a save is unfinished
                // (a complete save is read at once, so a change costs no fixed delay).
                let cap = Instant::now() + MAX_COALESCE;
                loop {
                    while let Ok(event) = fs_rx.try_recv() {
                        changes.add(event);
                    }
                    if changes.unfinished.is_empty() || Instant::now() >= cap {
                        break;
                    }
                    match tokio::time::timeout(QUIET, fs_rx.recv()).await {
                        Ok(Some(event)) => changes.add(event),
                        Ok(None) | Err(_) => break,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Kind, goma};
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ROUTE_API: &str = "apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata:
  name: api
spec:
  gateways: [gateway]
  path: /
  target: http://127.0.0.1:9000
";

    fn route_yaml(name: &str, target: &str) -> String {
        format!(
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata:\n  name: {name}\nspec:\n  gateways: [gateway]\n  path: /{name}\n  target: {target}\n"
        )
    }

    fn parse(file: &str, text: &str) -> (Vec<Object>, Vec<Diagnostic>) {
        parse_manifests(Path::new(file), text)
    }

    fn keys(objects: &[Object]) -> Vec<String> {
        objects.iter().map(|o| o.key().to_string()).collect()
    }

    fn route_target(object: &Object) -> Option<String> {
        match object {
            Object::GomaRoute(r) => r.spec.target.clone(),
            _ => None,
        }
    }

    #[test]
    fn parses_the_seed_route_examples_as_multiple_documents() {
        let text = include_str!("../../tests/fixtures/goma-seed-routes.yaml");
        let (objects, diags) = parse("routes.yaml", text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            keys(&objects),
            [
                "Route default/api",
                "Route default/api-lb",
                "Route default/maintenance"
            ]
        );
        let Object::GomaRoute(lb) = &objects[1] else {
            panic!("not a route")
        };
        assert_eq!(
            lb.metadata.namespace, "default",
            "namespace defaults to default"
        );
        assert_eq!(lb.spec.backends.len(), 3);
        assert_eq!(lb.spec.backends[0].weight, Some(80));
        assert_eq!(
            lb.spec.backends[2].matches[0].operator,
            goma::MatchOperator::Equals
        );
        assert_eq!(
            lb.spec
                .health_check
                .as_ref()
                .map(|h| h.healthy_statuses.clone()),
            Some(vec![200, 204])
        );
        assert!(lb.spec.enabled, "enabled defaults to true");
        assert!(
            lb.spec.security.forward_host_headers,
            "forwardHostHeaders defaults to true"
        );
        let Object::GomaRoute(m) = &objects[2] else {
            panic!("not a route")
        };
        let maintenance = m.spec.maintenance.as_ref().expect("maintenance");
        assert_eq!((maintenance.enabled, maintenance.status), (true, 503));
    }

    #[test]
    fn parses_every_seed_gateway_field() {
        let text = include_str!("../../tests/fixtures/goma-seed-gateways.yaml");
        let (objects, diags) = parse("gw.yaml", text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            keys(&objects),
            [
                "Gateway default/gateway",
                "Secret default/cloudflare-credentials"
            ]
        );
        let Object::GomaGateway(gw) = &objects[0] else {
            panic!("not a gateway")
        };
        let s = &gw.spec;
        assert_eq!(s.service.http_port, 80);
        assert_eq!(s.service.service_type, goma::ServiceType::LoadBalancer);
        assert_eq!(
            s.service.ip_families,
            [goma::IpFamily::IPv4, goma::IpFamily::IPv6]
        );
        assert_eq!(s.server.tls.len(), 2);
        assert_eq!(s.server.log_level, Some(goma::LogLevel::Info));
        assert_eq!(
            s.auto_scaling
                .as_ref()
                .and_then(|a| a.target_cpu_utilization_percentage),
            Some(70)
        );
        let acme = s
            .cert_manager
            .as_ref()
            .and_then(|c| c.acme.as_ref())
            .expect("acme");
        assert_eq!(acme.challenge_type, Some(goma::ChallengeType::Dns01));
        let git = s
            .providers
            .as_ref()
            .and_then(|p| p.git.as_ref())
            .expect("git");
        assert_eq!(
            git.auth.as_ref().map(|a| a.auth_type),
            Some(goma::GitAuthType::Token)
        );
    }

    #[test]
    fn gateway_defaults_ports_when_service_is_absent() {
        let (objects, diags) = parse(
            "gw.yaml",
            "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata: {name: gw}\nspec: {}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        let Object::GomaGateway(gw) = &objects[0] else {
            panic!("not a gateway")
        };
        assert_eq!(
            (gw.spec.service.http_port, gw.spec.service.https_port),
            (8080, 8443)
        );
    }

    #[test]
    fn unknown_kind_is_reported_and_the_rest_kept() {
        let text = format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: x}}\n---\n{ROUTE_API}");
        let (objects, diags) = parse("m.yaml", &text);
        assert_eq!(keys(&objects), ["Route default/api"]);
        assert_eq!(diags.len(), 1);
        assert_eq!(
            diags[0].to_string(),
            "m.yaml: document 1: unknown kind Pod (apiVersion v1); ignored"
        );
    }

    #[test]
    fn typo_in_a_spec_field_names_the_field() {
        let text = ROUTE_API.replace("target:", "tagret:");
        let (objects, diags) = parse("r.yaml", &text);
        assert!(objects.is_empty());
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].object.as_deref(), Some("Route default/api"));
        assert!(
            diags[0]
                .message
                .starts_with("spec.tagret: unknown field `tagret`"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn bad_enum_value_names_the_field_and_the_allowed_values() {
        let text = "apiVersion: gateway.jkaninda.dev/v1alpha1
kind: Route
metadata: {name: api, namespace: shop}
spec:
  gateways: [gateway]
  path: /
  backends:
    - endpoint: http://a
    - endpoint: http://b
      match:
        - {source: header, name: X-Canary, operator: equal, value: 'true'}
";
        let (objects, diags) = parse("r.yaml", text);
        assert!(objects.is_empty());
        let d = diags[0].to_string();
        assert!(
            d.starts_with("r.yaml: Route shop/api: spec.backends[1].match[0].operator: unknown variant `equal`"),
            "{d}"
        );
        assert!(d.contains("`not_equals`"), "{d}");
    }

    #[test]
    fn invalid_values_name_the_field() {
        let text = ROUTE_API.replace(
            "  target: http://127.0.0.1:9000\n",
            "  backends:\n    - endpoint: http://a\n      weight: -1\n",
        );
        let (_, diags) = parse("r.yaml", &text);
        assert!(
            diags[0]
                .message
                .starts_with("spec.backends[0].weight: invalid value: integer `-1`"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn yaml_1_1_booleans_are_not_booleans() {
        let text = ROUTE_API.replace("path: /", "path: /\n  enabled: yes");
        let (objects, diags) = parse("r.yaml", &text);
        assert!(objects.is_empty());
        assert!(
            diags[0]
                .message
                .starts_with("spec.enabled: invalid type: string \"yes\""),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn missing_identity_fields_are_reported() {
        let text = "kind: Route\nmetadata: {name: a}\n---\napiVersion: v1\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Service\nmetadata: {}\n---\n- 1\n";
        let (objects, diags) = parse("m.yaml", text);
        assert!(objects.is_empty());
        let messages: Vec<String> = diags.iter().map(|d| d.message.clone()).collect();
        assert_eq!(
            messages,
            [
                "document 1: missing apiVersion",
                "document 2: missing kind",
                "document 3: Service: missing metadata.name",
                "document 4: expected a manifest (a mapping), found a list",
            ]
        );
    }

    #[test]
    fn invalid_names_are_rejected() {
        let (objects, diags) = parse("m.yaml", &ROUTE_API.replace("name: api", "name: API/x"));
        assert!(objects.is_empty());
        assert!(
            diags[0]
                .message
                .starts_with("metadata.name: \"API/x\" is not a valid name"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn empty_documents_and_files_are_skipped() {
        assert_eq!(parse("e.yaml", ""), (vec![], vec![]));
        let (objects, diags) = parse("e.yaml", &format!("---\n# nothing\n---\n{ROUTE_API}---\n"));
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(objects.len(), 1);
    }

    #[test]
    fn kubernetes_metadata_and_status_are_ignored() {
        let text = ROUTE_API.replace(
            "  name: api\n",
            "  name: api\n  uid: 1234\n  resourceVersion: \"7\"\n  generation: 3\n  creationTimestamp: 2026-01-01T00:00:00Z\n  managedFields: [{manager: kubectl}]\n",
        ) + "status:\n  ready: true\n";
        let (objects, diags) = parse("r.yaml", &text);
        assert!(diags.is_empty(), "{diags:?}");
        let Object::GomaRoute(r) = &objects[0] else {
            panic!("not a route")
        };
        assert_eq!(r.metadata.generation, Some(3));
    }

    #[test]
    fn json_files_and_lists_are_read() {
        let text = r#"[{"apiVersion":"gateway.jkaninda.dev/v1alpha1","kind":"Middleware","metadata":{"name":"auth","namespace":"ns"},"spec":{"type":"basicAuth","paths":["/"],"rule":{"users":["a:b"]}}},
            {"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"ns","labels":{"env":"prod"}}}]}]"#;
        let (objects, diags) = parse("m.json", text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(keys(&objects), ["Middleware ns/auth", "Namespace ns"]);
        let Object::GomaMiddleware(m) = &objects[0] else {
            panic!("not a middleware")
        };
        assert_eq!(
            m.spec.middleware_type,
            goma::MiddlewareType::Basic,
            "aliases fold into the type"
        );
        assert_eq!(
            objects[1].labels().get("env").map(String::as_str),
            Some("prod")
        );
        let (_, diags) = parse("m.json", "{not json");
        assert!(
            diags[0].message.starts_with("not valid JSON"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn gateway_api_and_core_kinds_are_typed() {
        let text = "apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice, namespace: ignored}
spec: {controllerName: sluice.dev/gateway}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: infra}
spec: {gatewayClassName: sluice, listeners: [{name: http, port: 80, protocol: HTTP}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec: {}
---
apiVersion: v1
kind: Service
metadata: {name: echo, labels: {app: echo}}
spec: {ports: [{port: 80, targetPort: http}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: echo-1}
addressType: IPv4
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ca}
data: {ca.crt: pem}
";
        let (objects, diags) = parse("m.yaml", text);
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            keys(&objects),
            [
                "GatewayClass sluice",
                "Gateway.gateway.networking.k8s.io infra/gw",
                "HTTPRoute default/r",
                "Service default/echo",
                "EndpointSlice default/echo-1",
                "ConfigMap default/ca",
            ]
        );
        let Object::Api(route) = &objects[2] else {
            panic!("not typed")
        };
        let crate::model::gateway_api::ApiObject::HttpRoute(route) = &**route else {
            panic!("not an HTTPRoute")
        };
        assert_eq!(route.spec.rules.len(), 1, "the CRD's default rule");
        assert_eq!(
            objects[3].labels().get("app").map(String::as_str),
            Some("echo")
        );
        let Object::Other { key, body, .. } = &objects[5] else {
            panic!("not other")
        };
        assert_eq!(key.kind, Kind::ConfigMap);
        assert_eq!(
            body.pointer("/data/ca.crt"),
            Some(&Value::String("pem".into()))
        );
    }

    #[test]
    fn malformed_gateway_api_objects_name_the_field() {
        let (objects, diags) = parse(
            "m.yaml",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {gatewayClassName: c, listeners: [{name: a, port: x, protocol: HTTP}]}\n",
        );
        assert!(objects.is_empty());
        assert!(
            diags[0].to_string().contains(
                "Gateway.gateway.networking.k8s.io default/gw: spec.listeners[0].port: invalid type"
            ),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn malformed_yaml_is_one_diagnostic() {
        let (objects, diags) = parse("bad.yaml", "kind: [unclosed\n  - x: : :\n");
        assert!(objects.is_empty());
        assert_eq!(diags.len(), 1);
        assert!(
            diags[0].message.starts_with("not valid YAML"),
            "{}",
            diags[0]
        );
        assert!(parse_file(Path::new("bad.yaml"), "kind: [unclosed").keep_unlisted);
    }

    #[test]
    fn duplicate_in_one_file_keeps_the_later() {
        let text = format!(
            "{}---\n{}",
            route_yaml("a", "http://one"),
            route_yaml("a", "http://two")
        );
        let (objects, diags) = parse("d.yaml", &text);
        assert_eq!(objects.len(), 1);
        assert_eq!(route_target(&objects[0]).as_deref(), Some("http://two"));
        assert!(diags[0].message.contains("defined twice"), "{}", diags[0]);
    }

    // ------------------------------------------------------------------ directory state

    static COUNTER: AtomicUsize = AtomicUsize::new(0);

    /// A unique directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "sluice-file-provider-{}-{name}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).expect("create temp dir");
            Self(dir)
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.0.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("create dir");
            }
            // Write then rename, as careful tools do, so the watcher never sees a torn file.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text).expect("write");
            std::fs::rename(&tmp, &path).expect("rename");
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn changed(state: &mut FileState, paths: &[&Path]) -> (Vec<ProviderEvent>, Vec<Diagnostic>) {
        let set = paths.iter().map(|p| p.to_path_buf()).collect();
        state.refresh(&set, false)
    }

    fn summary(events: &[ProviderEvent]) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                ProviderEvent::Apply(o) => format!("apply {}", o.key()),
                ProviderEvent::Delete(k) => format!("delete {k}"),
                ProviderEvent::Synced => "synced".to_owned(),
            })
            .collect()
    }

    #[test]
    fn load_dir_walks_sorted_skips_hidden_and_resolves_duplicates() {
        let dir = TempDir::new("load");
        dir.write("a.yaml", &route_yaml("x", "http://from-a"));
        dir.write(
            "sub/b.yml",
            &format!(
                "{}---\n{}",
                route_yaml("x", "http://from-b"),
                route_yaml("y", "http://y")
            ),
        );
        dir.write(".hidden.yaml", &route_yaml("hidden", "http://h"));
        dir.write(".git/c.yaml", &route_yaml("git", "http://g"));
        dir.write("notes.txt", "not a manifest");
        let (objects, diags) = load_dir(&dir.0);
        assert_eq!(keys(&objects), ["Route default/x", "Route default/y"]);
        assert_eq!(
            route_target(&objects[0]).as_deref(),
            Some("http://from-b"),
            "the later path wins"
        );
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0]
                .to_string()
                .contains("Route default/x: also defined in"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn last_good_versions_survive_bad_edits() {
        let dir = TempDir::new("state");
        let file = dir.0.join("routes.yaml");
        dir.write(
            "routes.yaml",
            &format!(
                "{}---\n{}",
                route_yaml("a", "http://a1"),
                route_yaml("b", "http://b1")
            ),
        );
        let mut state = FileState::new(dir.0.clone());
        let (events, _) = state.refresh(&BTreeSet::new(), true);
        assert_eq!(
            summary(&events),
            ["apply Route default/a", "apply Route default/b"]
        );

        // `a` breaks, `b` changes: `a` keeps its last good version, `b` is applied.
        let broken_a = route_yaml("a", "http://a2").replace("target", "tagret");
        std::fs::write(
            &file,
            format!("{broken_a}---\n{}", route_yaml("b", "http://b2")),
        )
        .expect("write");
        let (events, diags) = changed(&mut state, &[&file]);
        assert_eq!(summary(&events), ["apply Route default/b"]);
        assert!(
            diags[0]
                .to_string()
                .contains("Route default/a: spec.tagret"),
            "{diags:?}"
        );
        assert_eq!(
            state
                .current
                .values()
                .filter_map(route_target)
                .collect::<Vec<_>>(),
            ["http://a1", "http://b2"]
        );

        // Not YAML at all: everything stays.
        std::fs::write(&file, "a: [\n").expect("write");
        let (events, diags) = changed(&mut state, &[&file]);
        assert!(events.is_empty(), "{:?}", summary(&events));
        assert!(diags[0].message.starts_with("not valid YAML"));

        // A document without a name cannot be matched to an object: delete nothing.
        std::fs::write(
            &file,
            format!(
                "{}---\napiVersion: v1\nkind: Service\nmetadata: {{}}\n",
                route_yaml("b", "http://b2")
            ),
        )
        .expect("write");
        let (events, _) = changed(&mut state, &[&file]);
        assert!(events.is_empty(), "{:?}", summary(&events));

        // Removed from a valid file: deleted.
        std::fs::write(&file, route_yaml("b", "http://b2")).expect("write");
        let (events, _) = changed(&mut state, &[&file]);
        assert_eq!(summary(&events), ["delete Route default/a"]);

        std::fs::remove_file(&file).expect("remove");
        let (events, _) = changed(&mut state, &[&file]);
        assert_eq!(summary(&events), ["delete Route default/b"]);
    }

    #[test]
    fn a_new_directory_is_walked_and_hidden_paths_ignored() {
        let dir = TempDir::new("newdir");
        let mut state = FileState::new(dir.0.clone());
        state.refresh(&BTreeSet::new(), true);
        dir.write("a/b/r.yaml", &route_yaml("r", "http://r"));
        // The watcher may report only the directory, created before its own watch existed.
        let (events, _) = changed(&mut state, &[&dir.0.join("a")]);
        assert_eq!(summary(&events), ["apply Route default/r"]);
        dir.write(".cache/x.yaml", &route_yaml("x", "http://x"));
        let (events, _) = changed(
            &mut state,
            &[&dir.0.join(".cache"), &dir.0.join(".cache/x.yaml")],
        );
        assert!(events.is_empty(), "{:?}", summary(&events));
        // Removing the directory removes what its files defined.
        std::fs::remove_dir_all(dir.0.join("a")).expect("remove");
        let (events, _) = changed(&mut state, &[&dir.0.join("a")]);
        assert_eq!(summary(&events), ["delete Route default/r"]);
    }

    #[test]
    fn a_duplicate_definition_outlives_the_other_file() {
        let dir = TempDir::new("dup");
        dir.write("1.yaml", &route_yaml("x", "http://one"));
        dir.write("2.yaml", &route_yaml("x", "http://two"));
        let mut state = FileState::new(dir.0.clone());
        let (_, diags) = state.refresh(&BTreeSet::new(), true);
        assert_eq!(diags.len(), 1);
        let second = dir.0.join("2.yaml");
        std::fs::remove_file(&second).expect("remove");
        let (events, _) = changed(&mut state, &[&second]);
        assert_eq!(summary(&events), ["apply Route default/x"]);
        assert_eq!(
            state
                .current
                .values()
                .filter_map(route_target)
                .collect::<Vec<_>>(),
            ["http://one"]
        );
        let first = dir.0.join("1.yaml");
        std::fs::remove_file(&first).expect("remove");
        let (events, _) = changed(&mut state, &[&first]);
        assert_eq!(summary(&events), ["delete Route default/x"]);
    }

    // ------------------------------------------------------------------ the watcher

    /// Everything the provider has said, replayed into a map.
    #[derive(Default)]
    struct Mirror {
        objects: BTreeMap<ObjectKey, Object>,
        log: Vec<String>,
        synced: bool,
    }

    impl Mirror {
        fn apply(&mut self, batch: Vec<ProviderEvent>) {
            self.log.extend(summary(&batch));
            for event in batch {
                match event {
                    ProviderEvent::Apply(o) => {
                        self.objects.insert(o.key(), o);
                    }
                    ProviderEvent::Delete(k) => {
                        self.objects.remove(&k);
                    }
                    ProviderEvent::Synced => self.synced = true,
                }
            }
        }

        fn target(&self, name: &str) -> Option<String> {
            self.objects
                .get(&ObjectKey::new(Kind::GomaRoute, "default", name))
                .and_then(route_target)
        }

        /// Applies batches until `done` holds; fails after a generous deadline.
        async fn until(
            &mut self,
            rx: &mut mpsc::UnboundedReceiver<Vec<ProviderEvent>>,
            what: &str,
            done: impl Fn(&Mirror) -> bool,
        ) {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !done(self) {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(batch)) => self.apply(batch),
                    Ok(None) => panic!(
                        "provider stopped while waiting for {what}; log {:?}",
                        self.log
                    ),
                    Err(_) => panic!("timed out waiting for {what}; log {:?}", self.log),
                }
            }
        }
    }

    #[tokio::test]
    async fn watches_the_directory_and_keeps_last_good_config() {
        let dir = TempDir::new("watch");
        dir.write(
            "routes.yaml",
            &format!(
                "{}---\n{}",
                route_yaml("a", "http://a1"),
                route_yaml("b", "http://b1")
            ),
        );
        dir.write("other.yaml", &route_yaml("c", "http://c1"));
        let (tx, mut rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(FileProvider::new(dir.0.clone()).run(tx));

        // Initial scan: one batch, Synced last.
        let first = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("initial batch")
            .expect("open");
        assert_eq!(
            summary(&first),
            [
                "apply Route default/a",
                "apply Route default/b",
                "apply Route default/c",
                "synced"
            ]
        );
        let mut m = Mirror::default();
        m.apply(first);

        // Edit: Apply.
        dir.write(
            "routes.yaml",
            &format!(
                "{}---\n{}",
                route_yaml("a", "http://a2"),
                route_yaml("b", "http://b1")
            ),
        );
        m.until(&mut rx, "edit of a", |m| {
            m.target("a").as_deref() == Some("http://a2")
        })
        .await;

        // Invalid edit of `a` and removal of `b` from the same file; then a valid change elsewhere
        // to know the provider has seen both.
        let broken_a = route_yaml("a", "http://a3").replace("target", "tagret");
        dir.write("routes.yaml", &broken_a);
        m.until(&mut rx, "removal of b", |m| m.target("b").is_none())
            .await;
        dir.write("other.yaml", &route_yaml("c", "http://c2"));
        m.until(&mut rx, "edit of c", |m| {
            m.target("c").as_deref() == Some("http://c2")
        })
        .await;
        assert_eq!(
            m.target("a").as_deref(),
            Some("http://a2"),
            "last good a keeps serving"
        );
        assert!(
            !m.log.contains(&"delete Route default/a".to_owned()),
            "{:?}",
            m.log
        );

        // Malformed YAML keeps everything.
        dir.write("routes.yaml", "a: [\n");
        dir.write("other.yaml", &route_yaml("c", "http://c3"));
        m.until(&mut rx, "edit of c", |m| {
            m.target("c").as_deref() == Some("http://c3")
        })
        .await;
        assert_eq!(m.target("a").as_deref(), Some("http://a2"));

        // A new file in a new subdirectory.
        dir.write("team/new/d.yaml", &route_yaml("d", "http://d1"));
        m.until(&mut rx, "new file d", |m| m.target("d").is_some())
            .await;

        // Deleting files deletes their objects; deleting a directory deletes its files' objects.
        std::fs::remove_file(dir.0.join("routes.yaml")).expect("remove");
        m.until(&mut rx, "deletion of a", |m| m.target("a").is_none())
            .await;
        std::fs::remove_dir_all(dir.0.join("team")).expect("remove dir");
        m.until(&mut rx, "deletion of d", |m| m.target("d").is_none())
            .await;
        assert_eq!(
            m.objects
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["Route default/c"]
        );

        // Dropping the receiver stops the provider.
        drop(rx);
        dir.write("other.yaml", &route_yaml("c", "http://c4"));
        let result = tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("provider stops")
            .expect("join");
        assert!(result.is_ok(), "{result:?}");
    }

    #[tokio::test]
    async fn a_missing_directory_is_an_error() {
        let dir = std::env::temp_dir().join(format!(
            "sluice-file-provider-{}-missing",
            std::process::id()
        ));
        let (tx, _rx) = mpsc::unbounded_channel();
        let err = FileProvider::new(dir)
            .run(tx)
            .await
            .expect_err("missing dir");
        assert!(matches!(err, ProviderError::Io { .. }), "{err}");
    }
}
