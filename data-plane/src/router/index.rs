//! The lookup structure of one port: host index (exact map, wildcard-suffix map, any-host), and per
//! host a path table (exact-path map, segment trie of prefixes, regex list). Lookup visits only the
//! entries along the request's host and path, so its cost does not grow with the route count.

use super::host::{HostPattern, wildcard_specificity, wildcard_suffixes};
use super::matcher::{PathMatcher, RequestView};
use super::route::CompiledRoute;
use crate::fast_map::FastMap;
use std::cmp::Ordering;
use std::sync::Arc;

/// One (route, match) pair reachable under one host pattern.
#[derive(Debug, Clone)]
pub struct Entry {
    pub route: Arc<CompiledRoute>,
    pub match_idx: usize,
    /// Path/method/header/query precedence from [`super::matcher::CompiledMatch::rank`].
    rank: u64,
    /// Hostnames of the listeners this entry is reached through (listener isolation).
    via: Arc<[HostPattern]>,
}

/// Precedence key except the final name tie-break; larger wins.
type Key = (i32, u16, u64);

impl Entry {
    fn key(&self, host_specificity: u16) -> Key {
        (self.route.priority, host_specificity, self.rank)
    }
}

/// Whether `entry` with `key` beats the current best; equal keys fall to the smaller creation
/// order (the older route), then the smaller name.
fn beats(key: Key, entry: &Entry, best: &Option<(Key, &Entry)>) -> bool {
    match best {
        None => true,
        Some((k, e)) => match key.cmp(k) {
            Ordering::Greater => true,
            Ordering::Less => false,
            Ordering::Equal => {
                (entry.route.creation_order, &*entry.route.name)
                    < (e.route.creation_order, &*e.route.name)
            }
        },
    }
}

#[derive(Debug, Default)]
struct TrieNode {
    /// Prefix entries whose (normalised) prefix ends at this node.
    prefixes: Vec<Entry>,
    /// Boxed: most nodes are leaves (one route's own prefix), and an empty list and map
    /// inline made every node of a 10,000-route trie 96 bytes instead of 32.
    branch: Option<Box<TrieBranch>>,
}

#[derive(Debug, Default)]
struct TrieBranch {
    /// Regex entries whose literal leading directory ends at this node: only paths under it
    /// can match, so a regex is only tried for requests walking through here.
    regexes: Vec<Entry>,
    children: FastMap<Box<str>, TrieNode>,
}

impl TrieNode {
    fn node_mut(&mut self, dir: &str) -> &mut TrieNode {
        let mut node = self;
        for seg in segments(dir) {
            node = node.branch_mut().children.entry(seg.into()).or_default();
        }
        node
    }

    fn branch_mut(&mut self) -> &mut TrieBranch {
        self.branch.get_or_insert_with(Box::default)
    }

    fn regexes(&self) -> &[Entry] {
        self.branch.as_ref().map_or(&[], |b| &b.regexes)
    }

    fn child(&self, segment: &str) -> Option<&TrieNode> {
        self.branch.as_ref()?.children.get(segment)
    }
}

/// Pushes with no slack for the first entry: most paths hold one, and a first push would
/// reserve room for four (120 bytes wasted per route at 10,000 routes of distinct paths).
/// Later pushes grow as usual (amortised).
fn push_exact(entries: &mut Vec<Entry>, entry: Entry) {
    if entries.capacity() == 0 {
        entries.reserve_exact(1);
    }
    entries.push(entry);
}

/// Exact paths, and a segment trie of prefixes and regexes, for one host pattern.
#[derive(Debug, Default)]
pub struct PathTable {
    exact: FastMap<Box<str>, Vec<Entry>>,
    trie: TrieNode,
}

impl PathTable {
    fn insert(&mut self, entry: Entry) {
        match &entry.route.matches[entry.match_idx].path {
            PathMatcher::Exact(p) => push_exact(self.exact.entry(p.clone()).or_default(), entry),
            PathMatcher::Regex(_) => {
                let dir = entry.route.matches[entry.match_idx].regex_dir();
                push_exact(&mut self.trie.node_mut(dir).branch_mut().regexes, entry);
            }
            PathMatcher::Prefix(p) => push_exact(&mut self.trie.node_mut(p).prefixes, entry),
        }
    }

    /// Calls `f` with every entry whose path matches `path`.
    fn visit<'a>(&'a self, path: &str, mut f: impl FnMut(&'a Entry)) {
        if let Some(v) = self.exact.get(path) {
            v.iter().for_each(&mut f);
        }
        let mut node = &self.trie;
        let regexes = |node: &'a TrieNode, f: &mut dyn FnMut(&'a Entry)| {
            for e in node.regexes() {
                if let PathMatcher::Regex(r) = &e.route.matches[e.match_idx].path
                    && r.is_match(path)
                {
                    f(e);
                }
            }
        };
        regexes(node, &mut f);
        if !path.starts_with('/') {
            return;
        }
        node.prefixes.iter().for_each(&mut f);
        for seg in segments(path) {
            match node.child(seg) {
                Some(child) => node = child,
                None => break,
            }
            node.prefixes.iter().for_each(&mut f);
            regexes(node, &mut f);
        }
    }
}

/// Path segments after the leading `/`; "" and "/" have none.
fn segments(path: &str) -> impl Iterator<Item = &str> {
    let rest = path.strip_prefix('/').unwrap_or(path);
    (!rest.is_empty())
        .then(|| rest.split('/'))
        .into_iter()
        .flatten()
}

/// All routes reachable from one port. Tables are shared (`Arc`) between snapshots so an
/// update rebuilds only the tables of the hosts it touches.
#[derive(Debug, Default, Clone)]
pub struct PortIndex {
    exact: FastMap<Arc<str>, Arc<PathTable>>,
    wildcard: FastMap<Arc<str>, Arc<PathTable>>,
    any: Option<Arc<PathTable>>,
    /// The distinct hostnames of the listeners on this port. With more than one, a request is
    /// served only by routes of the most specific listener matching its host (Gateway API
    /// listener isolation).
    listener_hosts: Vec<HostPattern>,
}

/// Outcome of a lookup.
pub enum Lookup<'a> {
    Matched(&'a Entry),
    /// The best route does not accept the method: 405 with its `Allow`.
    MethodNotAllowed(&'a CompiledRoute),
    NotFound,
}

impl PortIndex {
    /// Records the hostname of a listener on this port.
    pub fn add_listener_host(&mut self, host: &HostPattern) {
        if !self.listener_hosts.contains(host) {
            self.listener_hosts.push(host.clone());
        }
    }

    /// The hostname of the most specific listener accepting `host` when listeners with
    /// different hostnames share this port; None when there is nothing to isolate.
    fn isolating_listener(&self, host: &str) -> Option<&HostPattern> {
        if self.listener_hosts.len() < 2 {
            return None;
        }
        self.listener_hosts
            .iter()
            .filter(|l| l.matches(host))
            .max_by_key(|l| l.specificity())
    }

    /// Replaces the table of one host pattern with one built from `routes` (None when empty),
    /// each with the hostnames of the listeners it is reached through.
    pub fn set_table<'a>(
        &mut self,
        host: &HostPattern,
        routes: impl IntoIterator<Item = (&'a Arc<CompiledRoute>, &'a Arc<[HostPattern]>)>,
    ) {
        let mut table = PathTable::default();
        let mut empty = true;
        for (route, via) in routes {
            for (match_idx, m) in route.matches.iter().enumerate() {
                empty = false;
                table.insert(Entry {
                    route: route.clone(),
                    match_idx,
                    rank: m.rank(),
                    via: via.clone(),
                });
            }
        }
        let table = (!empty).then(|| Arc::new(table));
        match (host, table) {
            (HostPattern::Any, t) => self.any = t,
            (HostPattern::Exact(h), Some(t)) => {
                self.exact.insert(Arc::from(&**h), t);
            }
            (HostPattern::Exact(h), None) => {
                self.exact.remove(&**h);
            }
            (HostPattern::Wildcard(s), Some(t)) => {
                self.wildcard.insert(Arc::from(&**s), t);
            }
            (HostPattern::Wildcard(s), None) => {
                self.wildcard.remove(&**s);
            }
        }
    }

    /// Finds the best route for a request (precedence: priority, host specificity, path, method,
    /// header count, query count, name).
    pub fn lookup(&self, req: &RequestView<'_>) -> Lookup<'_> {
        let mut best = Best {
            found: None,
            listener: self.isolating_listener(req.host),
        };
        if let Some(t) = self.exact.get(req.host) {
            t.visit(req.path, |e| best.consider(e, u16::MAX, req));
        }
        if !self.wildcard.is_empty() {
            for suffix in wildcard_suffixes(req.host) {
                if let Some(t) = self.wildcard.get(suffix) {
                    let spec = wildcard_specificity(suffix);
                    t.visit(req.path, |e| best.consider(e, spec, req));
                }
            }
        }
        if let Some(t) = &self.any {
            t.visit(req.path, |e| best.consider(e, 0, req));
        }
        // `allowed_methods` is authoritative: the best route decides, and a method it does not
        // allow is refused rather than handed to a less specific route (no method bypass).
        match best.found {
            Some((_, e)) if e.route.allows(req.method) => Lookup::Matched(e),
            Some((_, e)) => Lookup::MethodNotAllowed(&e.route),
            None => Lookup::NotFound,
        }
    }
}

/// The best candidate so far.
struct Best<'a> {
    found: Option<(Key, &'a Entry)>,
    /// Only entries reached through a listener with this hostname may serve the request.
    listener: Option<&'a HostPattern>,
}

impl<'a> Best<'a> {
    fn consider(&mut self, entry: &'a Entry, host_spec: u16, req: &RequestView<'_>) {
        let key = entry.key(host_spec);
        // Cheap key comparison first: header/query evaluation only for entries that could win.
        if !beats(key, entry, &self.found) {
            return;
        }
        if self.listener.is_some_and(|l| !entry.via.contains(l)) {
            return;
        }
        if entry.route.matches[entry.match_idx].matches_rest(req) {
            self.found = Some((key, entry));
        }
    }
}
