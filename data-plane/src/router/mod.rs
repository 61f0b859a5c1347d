//! Request routing, pure logic: compiled routes, the per-port host/path index and match evaluation.

pub mod backend;
pub mod cors;
pub mod header_modifier;
pub mod host;
pub mod index;
pub mod matcher;
pub mod redirect;
pub mod rewrite;
pub mod route;
#[cfg(test)]
mod tests;

pub use host::{HostPattern, NormalizedHost};
pub use index::{Entry, Lookup, PortIndex};
pub use matcher::{PathMatcher, RequestView};
pub use route::{CompiledRoute, RouteAction};

use crate::fast_map::FastMap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What routing needs to know about a Listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerInfo {
    pub name: String,
    pub port: u16,
    pub hostname: HostPattern,
}

/// Routes indexed per port. Cloning shares the per-host tables.
#[derive(Debug, Default, Clone)]
pub struct RouteTable {
    ports: FastMap<u16, PortIndex>,
}

impl RouteTable {
    /// Indexes `routes` from scratch (see [`IndexBuilder`] for incremental updates).
    pub fn build<'a>(
        listeners: &[ListenerInfo],
        routes: impl IntoIterator<Item = &'a Arc<CompiledRoute>>,
    ) -> RouteTable {
        let routes: Vec<_> = routes.into_iter().cloned().collect();
        IndexBuilder::default().build(listeners, &routes)
    }

    pub fn port(&self, port: u16) -> Option<&PortIndex> {
        self.ports.get(&port)
    }
}

/// Where a route is indexed: a port and a host pattern.
type Placement = (u16, HostPattern);

/// A route under one placement, and the hostnames of the listeners it is reached through.
type Member = (Arc<CompiledRoute>, Arc<[HostPattern]>);

/// Builds route tables incrementally: it remembers which routes sit under each (port, host)
/// and, when listeners are unchanged, rebuilds only the tables of hosts whose routes changed.
#[derive(Default)]
pub struct IndexBuilder {
    listeners: Vec<ListenerInfo>,
    routes: HashMap<Arc<str>, Arc<CompiledRoute>>,
    /// Routes per placement, by name, with the hostnames of the listeners they are reached
    /// through there (listener isolation).
    members: HashMap<Placement, BTreeMap<Arc<str>, Member>>,
    table: RouteTable,
}

impl IndexBuilder {
    /// The table for `routes` reachable through `listeners`.
    pub fn build(
        &mut self,
        listeners: &[ListenerInfo],
        routes: &[Arc<CompiledRoute>],
    ) -> RouteTable {
        if listeners != self.listeners.as_slice() {
            // Listener changes are rare and can move every route: rebuild everything.
            *self = IndexBuilder {
                listeners: listeners.to_vec(),
                ..IndexBuilder::default()
            };
            for l in listeners {
                self.table
                    .ports
                    .entry(l.port)
                    .or_default()
                    .add_listener_host(&l.hostname);
            }
        }
        let upserted: Vec<Arc<CompiledRoute>> = routes
            .iter()
            .filter(|r| {
                !self
                    .routes
                    .get(&r.name)
                    .is_some_and(|old| Arc::ptr_eq(old, r))
            })
            .cloned()
            .collect();
        // Every current route is now known, so stale ones exist only if there are more known
        // than current: skip the O(n) set building in the common no-removal case.
        let removed: Vec<Arc<str>> = if self.routes.len() + upserted.len() > routes.len() {
            let current: HashSet<&str> = routes.iter().map(|r| &*r.name).collect();
            self.routes
                .keys()
                .filter(|n| !current.contains(&***n))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        self.update(&upserted, &removed)
    }

    /// Applies a delta under the current listeners: `upserted` routes are (re)placed and
    /// `removed` names dropped; only the host tables they touch are rebuilt.
    pub fn update(&mut self, upserted: &[Arc<CompiledRoute>], removed: &[Arc<str>]) -> RouteTable {
        let listeners = std::mem::take(&mut self.listeners);
        let by_name: HashMap<&str, &ListenerInfo> =
            listeners.iter().map(|l| (l.name.as_str(), l)).collect();
        let mut dirty: HashSet<Placement> = HashSet::new();
        for route in upserted {
            if let Some(old) = self.routes.get(&route.name).cloned() {
                self.unplace(&old, &by_name, &mut dirty);
            }
            for (p, via) in placements(route, &by_name) {
                self.members
                    .entry(p.clone())
                    .or_default()
                    .insert(route.name.clone(), (route.clone(), via.into()));
                dirty.insert(p);
            }
            self.routes.insert(route.name.clone(), route.clone());
        }
        for name in removed {
            if let Some(old) = self.routes.remove(name) {
                self.unplace(&old, &by_name, &mut dirty);
            }
        }
        for placement in dirty {
            let (port, host) = &placement;
            let members = self.members.get(&placement);
            let index = self.table.ports.entry(*port).or_default();
            index.set_table(
                host,
                members
                    .into_iter()
                    .flat_map(|m| m.values())
                    .map(|member| (&member.0, &member.1)),
            );
            if members.is_some_and(BTreeMap::is_empty) {
                self.members.remove(&placement);
            }
        }
        drop(by_name);
        self.listeners = listeners;
        self.table.clone()
    }

    fn unplace(
        &mut self,
        route: &CompiledRoute,
        by_name: &HashMap<&str, &ListenerInfo>,
        dirty: &mut HashSet<Placement>,
    ) {
        for (p, _) in placements(route, by_name) {
            if let Some(m) = self.members.get_mut(&p) {
                m.remove(&route.name);
            }
            dirty.insert(p);
        }
    }
}

/// The (port, host pattern) pairs a route is reachable under: through every listener it names,
/// restricted to the hosts both the route and that listener accept; each with the hostnames of
/// the listeners that lead there.
fn placements(
    route: &CompiledRoute,
    by_name: &HashMap<&str, &ListenerInfo>,
) -> Vec<(Placement, Vec<HostPattern>)> {
    let mut out: BTreeMap<Placement, Vec<HostPattern>> = BTreeMap::new();
    for listener in route.listeners.iter().filter_map(|n| by_name.get(&**n)) {
        let hosts: Vec<HostPattern> = if route.hostnames.is_empty() {
            vec![listener.hostname.clone()]
        } else {
            route
                .hostnames
                .iter()
                .filter_map(|h| h.intersect(&listener.hostname))
                .collect()
        };
        for h in hosts {
            let via = out.entry((listener.port, h)).or_default();
            if !via.contains(&listener.hostname) {
                via.push(listener.hostname.clone());
            }
        }
    }
    out.into_iter().collect()
}
