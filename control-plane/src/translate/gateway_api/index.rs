//! Read-only access to every object, recording what a translation read so the controller knows
//! which changes can affect it.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::model::gateway_api::ApiObject;
use crate::model::{Kind, Object, ObjectKey};

/// The dependency standing for every ReferenceGrant of `namespace` (grants are looked up by
/// namespace, not by name): a change to any of them changes it.
pub fn grants_of(namespace: &str) -> ObjectKey {
    ObjectKey::new(Kind::ReferenceGrant, namespace, "")
}

pub struct Index<'a> {
    objects: &'a BTreeMap<ObjectKey, Object>,
    read: RefCell<BTreeSet<ObjectKey>>,
}

impl<'a> Index<'a> {
    pub fn new(objects: &'a BTreeMap<ObjectKey, Object>) -> Self {
        Self {
            objects,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    /// Records `key` as an input of the translation, whether or not it exists.
    pub fn depend(&self, key: ObjectKey) {
        self.read.borrow_mut().insert(key);
    }

    /// The keys read (existing or not).
    pub fn into_dependencies(self) -> BTreeSet<ObjectKey> {
        self.read.into_inner()
    }

    pub fn get(&self, kind: Kind, namespace: &str, name: &str) -> Option<&'a Object> {
        let key = ObjectKey::new(kind, namespace, name);
        let found = self.objects.get(&key);
        self.depend(key);
        found
    }

    pub fn api(&self, kind: Kind, namespace: &str, name: &str) -> Option<&'a ApiObject> {
        match self.get(kind, namespace, name) {
            Some(Object::Api(o)) => Some(o),
            _ => None,
        }
    }

    /// Every object of a kind (not recorded: callers record what they use).
    pub fn all(&self, kind: Kind) -> impl Iterator<Item = &'a Object> + use<'a> {
        self.objects
            .range(ObjectKey::new(kind, "", "")..)
            .take_while(move |(k, _)| k.kind == kind)
            .map(|(_, o)| o)
    }

    /// Every object of a kind in one namespace (not recorded).
    pub fn in_namespace(
        &self,
        kind: Kind,
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a Object> + use<'a> {
        self.objects
            .range(ObjectKey::new(kind, namespace, "")..)
            .take_while(move |(k, _)| k.kind == kind && k.namespace == namespace)
            .map(|(_, o)| o)
    }
}
