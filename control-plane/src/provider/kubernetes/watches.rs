//! What the Kubernetes provider watches: one watch per kind (two for Secrets), each with the API
//! resource it lists, and how the initial list is fetched.

use std::fmt;

use kube::api::ApiResource;

use crate::model::{DISCOVERY_GROUP, Kind};

/// Field selectors of the two Secret watches. A field selector cannot express "tls or Opaque",
/// and these are the only types a gateway uses (`translate::secret`).
pub const TLS_SECRETS: &str = "type=kubernetes.io/tls";
pub const OPAQUE_SECRETS: &str = "type=Opaque";

/// One watch: a kind, optionally narrowed by a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    pub kind: Kind,
    pub field_selector: Option<&'static str>,
}

/// Index of a watch in [`watch_specs`].
pub type WatchId = usize;

/// Every watch the provider runs, in a fixed order.
pub fn watch_specs() -> Vec<WatchSpec> {
    Kind::ALL
        .into_iter()
        .flat_map(|kind| {
            let selectors: &[Option<&'static str>] = if kind == Kind::Secret {
                &[Some(TLS_SECRETS), Some(OPAQUE_SECRETS)]
            } else {
                &[None]
            };
            selectors.iter().map(move |field_selector| WatchSpec {
                kind,
                field_selector: *field_selector,
            })
        })
        .collect()
}

impl WatchSpec {
    /// The resource listed and watched: group, served version, kind and plural.
    pub fn api_resource(&self) -> ApiResource {
        self.kind.api_resource()
    }

    /// Whether the resource is a custom one that may not be installed (a 404 on list then means
    /// "no CRD", not a broken API server).
    pub fn is_custom(&self) -> bool {
        !matches!(self.kind.group(), "" | DISCOVERY_GROUP)
    }
}

/// `HTTPRoute.gateway.networking.k8s.io/v1`, `Secret/v1 (type=Opaque)`: names a watch in logs.
impl fmt::Display for WatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ar = self.api_resource();
        if ar.group.is_empty() {
            write!(f, "{}/{}", ar.kind, ar.version)?;
        } else {
            write!(f, "{}.{}/{}", ar.kind, ar.group, ar.version)?;
        }
        if let Some(selector) = self.field_selector {
            write!(f, " ({selector})")?;
        }
        Ok(())
    }
}

/// Whether the API server streams the initial list (WatchList, `sendInitialEvents`) by default:
/// beta and on in 1.32, turned off by default in 1.33, on again from 1.34. Elsewhere (and when
/// the version cannot be read) the watcher lists in pages. A server whose administrator turned
/// the feature off answers 422 and the watch falls back to paged lists (see the edge).
pub fn streams_initial_lists(major: &str, minor: &str) -> bool {
    // Minor versions of managed clusters carry suffixes: "32+", "34-gke.100".
    let number = |s: &str| -> Option<u32> {
        let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    };
    match (number(major), number(minor)) {
        (Some(1), Some(minor)) => minor == 32 || minor >= 34,
        (Some(major), Some(_)) => major > 1,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_watched_secrets_twice() {
        let specs = watch_specs();
        assert_eq!(specs.len(), Kind::ALL.len() + 1);
        let secrets: Vec<_> = specs
            .iter()
            .filter(|s| s.kind == Kind::Secret)
            .map(|s| s.field_selector)
            .collect();
        assert_eq!(secrets, [Some(TLS_SECRETS), Some(OPAQUE_SECRETS)]);
    }

    #[test]
    fn api_resources_use_the_served_versions() {
        let ar = |kind| {
            WatchSpec {
                kind,
                field_selector: None,
            }
            .api_resource()
        };
        let r = ar(Kind::GomaRoute);
        assert_eq!(
            (r.api_version.as_str(), r.plural.as_str()),
            ("gateway.jkaninda.dev/v1alpha1", "routes")
        );
        let r = ar(Kind::BackendTlsPolicy);
        assert_eq!(
            (r.api_version.as_str(), r.plural.as_str()),
            ("gateway.networking.k8s.io/v1", "backendtlspolicies")
        );
        let r = ar(Kind::ReferenceGrant);
        assert_eq!(r.api_version, "gateway.networking.k8s.io/v1");
        let r = ar(Kind::EndpointSlice);
        assert_eq!(
            (r.api_version.as_str(), r.plural.as_str()),
            ("discovery.k8s.io/v1", "endpointslices")
        );
        let r = ar(Kind::Service);
        assert_eq!((r.api_version.as_str(), r.group.as_str()), ("v1", ""));
        // Every resolved apiVersion maps back to the kind the parse path expects.
        for spec in watch_specs() {
            let r = spec.api_resource();
            assert_eq!(Kind::from_type(&r.api_version, &r.kind), Some(spec.kind));
        }
        assert!(
            WatchSpec {
                kind: Kind::TcpRoute,
                field_selector: None
            }
            .is_custom()
        );
        assert!(
            !WatchSpec {
                kind: Kind::EndpointSlice,
                field_selector: None
            }
            .is_custom()
        );
    }

    #[test]
    fn watch_names() {
        let specs = watch_specs();
        let names: Vec<String> = specs.iter().map(ToString::to_string).collect();
        assert!(names.contains(&"HTTPRoute.gateway.networking.k8s.io/v1".to_string()));
        assert!(names.contains(&"Secret/v1 (type=Opaque)".to_string()));
        assert!(names.contains(&"Route.gateway.jkaninda.dev/v1alpha1".to_string()));
    }

    #[test]
    fn streaming_lists_by_server_version() {
        assert!(!streams_initial_lists("1", "29"));
        assert!(!streams_initial_lists("1", "31"));
        assert!(streams_initial_lists("1", "32"));
        assert!(!streams_initial_lists("1", "33+"));
        assert!(streams_initial_lists("1", "34-gke.100"));
        assert!(streams_initial_lists("1", "36"));
        assert!(!streams_initial_lists("", ""));
        assert!(!streams_initial_lists("1", "x"));
    }
}
