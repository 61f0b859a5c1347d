//! A translated resource, encoded and hashed once, then shared by every gateway view and stream.

use prost::{Message, Name};
use std::sync::Arc;

/// One encoded config resource. Identical content has the identical version on every replica and
/// after every restart, because the version is a hash of the deterministic encoding.
#[derive(Debug, PartialEq, Eq)]
pub struct Encoded {
    pub type_url: &'static str,
    pub name: String,
    pub version: String,
    pub bytes: Vec<u8>,
}

impl Encoded {
    pub fn new<M: Message + Name>(type_url: &'static str, name: String, message: &M) -> Arc<Self> {
        debug_assert_eq!(M::type_url(), type_url);
        let bytes = message.encode_to_vec();
        let version = format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&bytes));
        Arc::new(Self {
            type_url,
            name,
            version,
            bytes,
        })
    }

    /// A resource known only by the name and version a client reported holding (in
    /// `initial_resource_versions`); it carries no content and is never sent.
    pub fn reported(type_url: &'static str, name: String, version: String) -> Arc<Self> {
        Arc::new(Self {
            type_url,
            name,
            version,
            bytes: Vec::new(),
        })
    }

    /// The wire form, as sent in a `DeltaDiscoveryResponse`.
    pub fn to_resource(&self) -> sluice_proto::discovery::Resource {
        sluice_proto::discovery::Resource {
            name: self.name.clone(),
            version: self.version.clone(),
            resource: Some(prost_types::Any {
                type_url: self.type_url.to_string(),
                value: self.bytes.clone(),
            }),
            ttl: None,
        }
    }
}

/// Index of a type URL in `type_url::ALL` (make-before-break order).
pub fn type_index(type_url: &str) -> Option<usize> {
    sluice_proto::type_url::ALL
        .iter()
        .position(|t| *t == type_url)
}

/// A listener resource for tests.
#[cfg(test)]
pub(crate) fn test_listener(name: &str, port: u32) -> Arc<Encoded> {
    let l = sluice_proto::config::Listener {
        name: name.into(),
        port,
        ..Default::default()
    };
    Encoded::new(sluice_proto::type_url::LISTENER, name.into(), &l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::config as pb;
    use sluice_proto::type_url;

    #[test]
    fn version_is_a_content_hash() {
        let a = pb::Listener {
            name: "http".into(),
            port: 8080,
            ..Default::default()
        };
        let mut b = a.clone();
        let x = Encoded::new(type_url::LISTENER, "http".into(), &a);
        let y = Encoded::new(type_url::LISTENER, "http".into(), &b);
        assert_eq!(x.version, y.version);
        b.port = 8081;
        let z = Encoded::new(type_url::LISTENER, "http".into(), &b);
        assert_ne!(x.version, z.version);
    }

    #[test]
    fn type_url_matches_prost_name() {
        assert_eq!(pb::Route::type_url(), type_url::ROUTE);
        assert_eq!(pb::Cluster::type_url(), type_url::CLUSTER);
        assert_eq!(pb::Listener::type_url(), type_url::LISTENER);
        assert_eq!(pb::Secret::type_url(), type_url::SECRET);
    }
}
