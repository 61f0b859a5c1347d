//! Which watched Secrets (and ConfigMaps) reach the store: only those some object references. A
//! cluster holds many Secrets (service-account tokens, Helm releases, other teams' credentials)
//! that a gateway must never receive and the control plane should not translate, and many
//! ConfigMaps of which only the CA bundles named by Gateway API objects matter.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::model::{Object, ObjectKey};
use crate::provider::ProviderEvent;

#[derive(Default)]
pub(super) struct SecretGate {
    /// Last good version of every watched Secret, forwarded or not.
    held: HashMap<ObjectKey, Object>,
    /// Secret -> how many objects reference it.
    references: HashMap<ObjectKey, usize>,
    /// Referring object -> the Secrets it references.
    by_referrer: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Secrets currently in the store.
    forwarded: HashSet<ObjectKey>,
}

impl SecretGate {
    /// A Secret was created or changed: forward it if something references it.
    pub(super) fn secret_applied(&mut self, secret: Object, out: &mut Vec<ProviderEvent>) {
        let key = secret.key();
        if self.references.get(&key).is_some_and(|n| *n > 0) {
            self.forwarded.insert(key.clone());
            out.push(ProviderEvent::Apply(secret.clone()));
        }
        self.held.insert(key, secret);
    }

    pub(super) fn secret_deleted(&mut self, key: &ObjectKey, out: &mut Vec<ProviderEvent>) {
        self.held.remove(key);
        if self.forwarded.remove(key) {
            out.push(ProviderEvent::Delete(key.clone()));
        }
    }

    /// `referrer` now references `secrets` (empty: deleted). A Secret referenced for the first
    /// time is forwarded if it exists; one no longer referenced by anything leaves the store.
    pub(super) fn references_changed(
        &mut self,
        referrer: &ObjectKey,
        secrets: BTreeSet<ObjectKey>,
        out: &mut Vec<ProviderEvent>,
    ) {
        let before = if secrets.is_empty() {
            self.by_referrer.remove(referrer).unwrap_or_default()
        } else {
            self.by_referrer
                .insert(referrer.clone(), secrets.clone())
                .unwrap_or_default()
        };
        for added in secrets.difference(&before) {
            let n = self.references.entry(added.clone()).or_insert(0);
            *n += 1;
            if *n == 1
                && let Some(secret) = self.held.get(added)
                && self.forwarded.insert(added.clone())
            {
                out.push(ProviderEvent::Apply(secret.clone()));
            }
        }
        for removed in before.difference(&secrets) {
            let Some(n) = self.references.get_mut(removed) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.references.remove(removed);
                if self.forwarded.remove(removed) {
                    out.push(ProviderEvent::Delete(removed.clone()));
                }
            }
        }
    }
}
