//! The resources a data plane currently holds, as received from the control plane and validated.
//!
//! Routes and clusters (one or more per route, so thousands) are held encoded: a decoded
//! `pb::Route` is ~700 bytes inline plus a dozen small allocations, its encoding ~100 bytes. They
//! are decoded again only when a compile needs them (the changed ones) and for the admin dump.
//! Listeners and Secrets are few, read on most compiles, and stay decoded.

use prost::Message;
use sluice_proto::config as pb;
use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::marker::PhantomData;
use std::sync::Arc;

/// Every accepted resource by name. An unchanged route or cluster keeps its [`Held`]
/// allocation across updates, so compilation can be memoised by its identity.
#[derive(Clone, Default, Debug)]
pub struct Resources {
    pub listeners: BTreeMap<String, Arc<pb::Listener>>,
    pub routes: HeldMap<pb::Route>,
    pub clusters: HeldMap<pb::Cluster>,
    pub secrets: BTreeMap<String, Arc<pb::Secret>>,
}

impl Resources {
    /// Adds a plain HTTP listener (tests, benchmarks and tools build resource sets this way).
    pub fn add_http_listener(&mut self, name: &str, port: u16) -> &mut Self {
        let listener = pb::Listener {
            name: name.into(),
            port: u32::from(port),
            protocol: pb::Protocol::Http as i32,
            ..Default::default()
        };
        self.listeners.insert(name.into(), Arc::new(listener));
        self
    }

    /// Adds a round-robin HTTP/1.1 cluster over `endpoints` (address, port).
    pub fn add_cluster(&mut self, name: &str, endpoints: &[(&str, u16)]) -> &mut Self {
        let cluster = pb::Cluster {
            name: name.into(),
            endpoints: endpoints
                .iter()
                .map(|(address, port)| pb::Endpoint {
                    address: (*address).into(),
                    port: u32::from(*port),
                    weight: 1,
                })
                .collect(),
            ..Default::default()
        };
        self.clusters.insert(name.into(), cluster);
        self
    }
}

/// One held resource: its name, version and encoded message in a single exact-size allocation
/// (never a slice of the received response, which would pin the whole response). Clones share
/// the allocation, so the compiler memo and the admin dump cost a pointer each.
pub struct Held<T> {
    /// name, then version, then the encoded message.
    data: Arc<[u8]>,
    name_len: u32,
    version_len: u32,
    kind: PhantomData<fn() -> T>,
}

impl<T> Clone for Held<T> {
    fn clone(&self) -> Self {
        Held {
            data: self.data.clone(),
            name_len: self.name_len,
            version_len: self.version_len,
            kind: PhantomData,
        }
    }
}

impl<T> Held<T> {
    /// None when the name or version is longer than 4 GiB (a resource that large is refused
    /// long before this by the message size limit).
    pub fn new(name: &str, version: &str, encoded: &[u8]) -> Option<Self> {
        let name_len = u32::try_from(name.len()).ok()?;
        let version_len = u32::try_from(version.len()).ok()?;
        let mut data = Vec::with_capacity(name.len() + version.len() + encoded.len());
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(version.as_bytes());
        data.extend_from_slice(encoded);
        Some(Held {
            data: data.into(),
            name_len,
            version_len,
            kind: PhantomData,
        })
    }

    pub fn name(&self) -> &str {
        // Built from a &str: always UTF-8.
        std::str::from_utf8(&self.data[..self.name_len as usize]).unwrap_or_default()
    }

    pub fn version(&self) -> &str {
        let start = self.name_len as usize;
        std::str::from_utf8(&self.data[start..start + self.version_len as usize])
            .unwrap_or_default()
    }

    /// The message as received.
    pub fn encoded(&self) -> &[u8] {
        &self.data[(self.name_len + self.version_len) as usize..]
    }

    /// Whether `other` is this very allocation (the same accepted resource, not merely equal).
    pub fn same(&self, other: &Held<T>) -> bool {
        Arc::ptr_eq(&self.data, &other.data)
    }
}

impl<T: Message + Default> Held<T> {
    /// Decodes the message. It decoded when it was accepted, so this fails only on a bug.
    pub fn decode(&self) -> Result<T, String> {
        T::decode(self.encoded())
            .map_err(|e| format!("{}: held resource no longer decodes: {e}", self.name()))
    }
}

impl<T> std::fmt::Debug for Held<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Held")
            .field("name", &self.name())
            .field("version", &self.version())
            .field("encoded_len", &self.encoded().len())
            .finish()
    }
}

// Ordered and looked up by name only (`Borrow<str>` must agree with `Ord`).
impl<T> PartialEq for Held<T> {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}
impl<T> Eq for Held<T> {}
impl<T> PartialOrd for Held<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Held<T> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.name().cmp(other.name())
    }
}
impl<T> Borrow<str> for Held<T> {
    fn borrow(&self) -> &str {
        self.name()
    }
}

/// Held resources of one type by name (the name lives in each entry, not in a separate key).
pub struct HeldMap<T> {
    entries: BTreeSet<Held<T>>,
}

impl<T> Default for HeldMap<T> {
    fn default() -> Self {
        HeldMap {
            entries: BTreeSet::new(),
        }
    }
}

impl<T> Clone for HeldMap<T> {
    fn clone(&self) -> Self {
        HeldMap {
            entries: self.entries.clone(),
        }
    }
}

impl<T> std::fmt::Debug for HeldMap<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(&self.entries).finish()
    }
}

impl<T> HeldMap<T> {
    /// Adds or replaces the entry of `held`'s name.
    pub fn put(&mut self, held: Held<T>) {
        self.entries.replace(held);
    }

    pub fn held(&self, name: &str) -> Option<&Held<T>> {
        self.entries.get(name)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.entries.contains(name)
    }

    /// Removes `name`; whether it was held.
    pub fn remove(&mut self, name: &str) -> bool {
        self.entries.remove(name)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every entry in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Held<T>> {
        self.entries.iter()
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(Held::name)
    }
}

impl<T: Message + Default> HeldMap<T> {
    /// Encodes and holds `resource` under `name` with an empty version (tests and tools build
    /// resource sets this way; the xDS client holds what it received with [`HeldMap::put`]).
    pub fn insert(&mut self, name: String, resource: impl Borrow<T>) {
        let encoded = resource.borrow().encode_to_vec();
        if let Some(held) = Held::new(&name, "", &encoded) {
            self.put(held);
        }
    }

    /// The decoded resource named `name` (None: not held, or it no longer decodes, logged).
    pub fn get(&self, name: &str) -> Option<T> {
        let held = self.held(name)?;
        held.decode()
            .map_err(|error| tracing::error!(%error, "held resource skipped"))
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_entries_keep_name_version_and_message_in_one_allocation() {
        let route = pb::Route {
            name: "default/api".into(),
            priority: 3,
            ..Default::default()
        };
        let held =
            Held::<pb::Route>::new("default/api", "v7", &route.encode_to_vec()).expect("small");
        assert_eq!(held.name(), "default/api");
        assert_eq!(held.version(), "v7");
        assert_eq!(held.decode(), Ok(route.clone()));

        let mut map = HeldMap::default();
        map.put(held.clone());
        assert!(map.held("default/api").is_some_and(|h| h.same(&held)));
        // A replacement with the same content is a new resource (a new identity).
        map.insert("default/api".into(), &route);
        assert!(map.held("default/api").is_some_and(|h| !h.same(&held)));
        assert_eq!(map.get("default/api"), Some(route));
        assert_eq!(map.len(), 1);
        assert!(map.remove("default/api"));
        assert!(!map.remove("default/api"));
        assert!(map.is_empty());
    }
}
