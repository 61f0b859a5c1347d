//! The ADS node is bound to the authenticated peer: a pod gets its own gateway and nothing else.

use super::identity::PodIdentity;
use sluice_proto::discovery::Node;

/// Checks `node` names exactly the authenticated pod and its gateway. `credential` says what
/// authenticated it ("client certificate", "token"), for the reason.
pub fn authorize_node(identity: &PodIdentity, node: &Node, credential: &str) -> Result<(), String> {
    let gateway = identity.gateway_id();
    if node.gateway != gateway {
        return Err(format!(
            "node.gateway {:?} is not the authenticated gateway {gateway:?} ({credential} of {identity})",
            node.gateway
        ));
    }
    if node.id != identity.pod {
        return Err(format!(
            "node.id {:?} is not the authenticated pod {:?} ({credential} of {identity})",
            node.id, identity.pod
        ));
    }
    Ok(())
}

/// Constant-time equality for secrets (a token compared byte by byte leaks its prefix).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> PodIdentity {
        PodIdentity {
            namespace: "edge".into(),
            gateway: "a".into(),
            pod: "a-1".into(),
            uid: None,
        }
    }

    fn node(gateway: &str, id: &str) -> Node {
        Node {
            id: id.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    #[test]
    fn only_the_own_gateway_and_pod_are_allowed() {
        assert_eq!(
            authorize_node(&identity(), &node("edge/a", "a-1"), "client certificate"),
            Ok(())
        );
        assert_eq!(
            authorize_node(&identity(), &node("edge/b", "a-1"), "client certificate"),
            Err(
                "node.gateway \"edge/b\" is not the authenticated gateway \"edge/a\" \
                 (client certificate of pod edge/a-1 of gateway edge/a)"
                    .into()
            )
        );
        assert_eq!(
            authorize_node(&identity(), &node("edge/a", "a-2"), "token"),
            Err("node.id \"a-2\" is not the authenticated pod \"a-1\" \
                 (token of pod edge/a-1 of gateway edge/a)"
                .into())
        );
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(secrets_equal(b"abc", b"abc"));
        assert!(!secrets_equal(b"abc", b"abd"));
        assert!(!secrets_equal(b"abc", b"ab"));
    }
}
