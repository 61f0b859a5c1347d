//! ReferenceGrant: a reference to another namespace is allowed only when a grant in the target
//! namespace names the referrer's kind and namespace and the target's kind (and name, if given).

use super::index::Index;
use crate::model::Kind;
use crate::model::Object;
use crate::model::gateway_api::ApiObject;

/// One side of a reference: group ("" for core), kind, namespace.
pub struct Referrer<'s> {
    pub group: &'s str,
    pub kind: &'s str,
    pub namespace: &'s str,
}

pub fn permitted(
    index: &Index,
    from: &Referrer,
    to_group: &str,
    to_kind: &str,
    to_namespace: &str,
    to_name: &str,
) -> bool {
    if from.namespace == to_namespace {
        return true;
    }
    index.depend(super::index::grants_of(to_namespace));
    index
        .in_namespace(Kind::ReferenceGrant, to_namespace)
        .filter_map(|o| match o {
            Object::Api(api) => match &**api {
                ApiObject::ReferenceGrant(g) => Some(&g.spec),
                _ => None,
            },
            _ => None,
        })
        .any(|grant| {
            grant.from.iter().any(|f| {
                f.group == from.group && f.kind == from.kind && f.namespace == from.namespace
            }) && grant.to.iter().any(|t| {
                t.group == to_group
                    && t.kind == to_kind
                    && t.name
                        .as_deref()
                        .is_none_or(|n| n.is_empty() || n == to_name)
            })
        })
}
