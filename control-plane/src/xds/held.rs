//! What a data-plane client holds of one type, by name, sharing the view's resources: an entry
//! is the `Arc<Encoded>` that was sent (8 bytes per entry), not a copy of its name and version,
//! so a connected pod costs the control plane almost nothing per resource.

use crate::resource::Encoded;
use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// A resource keyed by its name.
#[derive(Clone, Debug)]
struct ByName(Arc<Encoded>);

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for ByName {}

impl Hash for ByName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.as_str().hash(state);
    }
}

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

/// Resources of one type by name, each the version the client holds.
#[derive(Clone, Debug, Default)]
pub struct HeldSet(HashSet<ByName>);

impl HeldSet {
    pub fn get(&self, name: &str) -> Option<&Arc<Encoded>> {
        self.0.get(name).map(|e| &e.0)
    }

    /// The version held of `name`.
    pub fn version(&self, name: &str) -> Option<&str> {
        self.get(name).map(|r| r.version.as_str())
    }

    /// Records `resource` as held, replacing what was held under its name.
    pub fn insert(&mut self, resource: Arc<Encoded>) {
        self.0.replace(ByName(resource));
    }

    pub fn remove(&mut self, name: &str) -> bool {
        self.0.remove(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|e| keep(&e.0.name));
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Encoded>> {
        self.0.iter().map(|e| &e.0)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|e| e.0.name.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::type_url;

    #[test]
    fn entries_are_keyed_by_name_and_replaced_by_a_newer_version() {
        let mut held = HeldSet::default();
        held.insert(Encoded::reported(type_url::ROUTE, "r1".into(), "v1".into()));
        held.insert(Encoded::reported(type_url::ROUTE, "r2".into(), "v1".into()));
        held.insert(Encoded::reported(type_url::ROUTE, "r1".into(), "v2".into()));
        assert_eq!(held.len(), 2);
        assert_eq!(held.version("r1"), Some("v2"));
        assert!(held.remove("r2"));
        assert!(!held.contains("r2"));
        assert_eq!(held.names().collect::<Vec<_>>(), ["r1"]);
    }
}
