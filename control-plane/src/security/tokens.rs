//! Bootstrap credentials a pod exchanges for its first client certificate: a projected
//! ServiceAccount token checked with TokenReview (Kubernetes), or a token of a file the control
//! plane reads (elsewhere).

use super::authorize::secrets_equal;
use super::identity::PodIdentity;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use sluice_proto::discovery::Node;
use std::path::Path;

/// The audience data-plane tokens are projected for (`deploy/` and the operator use it).
pub const DEFAULT_TOKEN_AUDIENCE: &str = "sluice-xds";
/// Extra claims of a pod-bound ServiceAccount token, as TokenReview reports them.
pub const POD_NAME_CLAIM: &str = "authentication.kubernetes.io/pod-name";
pub const POD_UID_CLAIM: &str = "authentication.kubernetes.io/pod-uid";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    /// The credential itself is missing or not valid.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid, but not for what was asked.
    #[error("{0}")]
    Denied(String),
    /// The API server could not be asked.
    #[error("{0}")]
    Unavailable(String),
}

/// How bootstrap tokens are checked.
pub enum Authenticator {
    /// No bootstrap: only certificate renewal (plaintext mode never reaches it).
    None,
    Tokens(BootstrapTokens),
    Kubernetes(TokenReviewer),
}

impl Authenticator {
    /// The pod `token` authenticates; `node` is what the pod says it is (only file tokens need
    /// it: they name a gateway and a pod name pattern, not one pod).
    pub async fn authenticate(&self, token: &str, node: &Node) -> Result<PodIdentity, AuthError> {
        match self {
            Authenticator::None => Err(AuthError::Unauthenticated(
                "this control plane accepts no bootstrap tokens (no --xds-bootstrap-tokens \
                 file): present a client certificate"
                    .into(),
            )),
            Authenticator::Tokens(tokens) => tokens.authenticate(token, node),
            Authenticator::Kubernetes(reviewer) => reviewer.authenticate(token).await,
        }
    }
}

/// One line of a bootstrap token file: `TOKEN NAMESPACE/GATEWAY POD_PATTERN`.
#[derive(Clone, Debug, PartialEq)]
struct BootstrapToken {
    token: String,
    namespace: String,
    gateway: String,
    /// A pod name, or a prefix ending in `*`.
    pods: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct BootstrapTokens {
    entries: Vec<BootstrapToken>,
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

impl BootstrapTokens {
    /// Parses `TOKEN NAMESPACE/GATEWAY POD_PATTERN` lines; `#` starts a comment. Errors name
    /// the source and the line.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = || format!("{source}: line {}", i + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, gateway, pods] = fields.as_slice() else {
                return Err(format!(
                    "{}: expected \"TOKEN NAMESPACE/GATEWAY POD_PATTERN\", got {} fields",
                    at(),
                    fields.len()
                ));
            };
            if token.len() < 16 {
                return Err(format!("{}: the token is shorter than 16 characters", at()));
            }
            let Some((namespace, name)) = gateway
                .split_once('/')
                .filter(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'))
            else {
                return Err(format!(
                    "{}: gateway {gateway:?} must be \"namespace/name\"",
                    at()
                ));
            };
            if pods.is_empty() || pods[..pods.len() - 1].contains('*') {
                return Err(format!(
                    "{}: pod pattern {pods:?} may only end with '*'",
                    at()
                ));
            }
            entries.push(BootstrapToken {
                token: token.to_string(),
                namespace: namespace.to_owned(),
                gateway: name.to_owned(),
                pods: pods.to_string(),
            });
        }
        Ok(Self { entries })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{source}: {e}"))?;
        Self::parse(&text, &source)
    }

    pub fn authenticate(&self, token: &str, node: &Node) -> Result<PodIdentity, AuthError> {
        let Some(entry) = self
            .entries
            .iter()
            .find(|e| secrets_equal(e.token.as_bytes(), token.as_bytes()))
        else {
            return Err(AuthError::Unauthenticated(
                "the bootstrap token is not valid".into(),
            ));
        };
        let gateway = format!("{}/{}", entry.namespace, entry.gateway);
        if node.gateway != gateway {
            return Err(AuthError::Denied(format!(
                "node.gateway {:?} is not the gateway {gateway:?} the bootstrap token is for",
                node.gateway
            )));
        }
        if !pattern_matches(&entry.pods, &node.id) {
            return Err(AuthError::Denied(format!(
                "node.id {:?} does not match the pod pattern {:?} of the bootstrap token",
                node.id, entry.pods
            )));
        }
        let identity = PodIdentity {
            namespace: entry.namespace.clone(),
            gateway: entry.gateway.clone(),
            pod: node.id.clone(),
            uid: None,
        };
        identity.validate().map_err(AuthError::Denied)?;
        Ok(identity)
    }
}

/// Checks projected ServiceAccount tokens with TokenReview, then that their pod exists (same
/// UID) and is a data-plane pod of the operator (its labels name the gateway).
#[derive(Clone)]
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
}

/// The pod a reviewed token is bound to: (namespace, name, uid).
pub fn pod_claims(
    review: &TokenReview,
    audience: &str,
) -> Result<(String, String, String), AuthError> {
    let status = review
        .status
        .as_ref()
        .ok_or_else(|| AuthError::Unavailable("TokenReview answered without a status".into()))?;
    if status.authenticated != Some(true) {
        let why = status.error.as_deref().unwrap_or("no reason given");
        return Err(AuthError::Unauthenticated(format!(
            "the ServiceAccount token was not authenticated by TokenReview: {why}"
        )));
    }
    if let Some(audiences) = &status.audiences
        && !audiences.iter().any(|a| a == audience)
    {
        return Err(AuthError::Unauthenticated(format!(
            "the ServiceAccount token is not for audience {audience:?}"
        )));
    }
    let user = status.user.as_ref().ok_or_else(|| {
        AuthError::Unauthenticated("TokenReview names no user for the token".into())
    })?;
    let username = user.username.as_deref().unwrap_or_default();
    let namespace = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(ns, _)| ns.to_owned())
        .ok_or_else(|| {
            AuthError::Unauthenticated(format!(
                "the token belongs to {username:?}, not to a ServiceAccount"
            ))
        })?;
    let claim = |name: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(name))
            .and_then(|v| v.first())
            .filter(|v| !v.is_empty())
            .cloned()
    };
    let (Some(pod), Some(uid)) = (claim(POD_NAME_CLAIM), claim(POD_UID_CLAIM)) else {
        return Err(AuthError::Unauthenticated(format!(
            "the ServiceAccount token is not bound to a pod (no {POD_NAME_CLAIM} / \
             {POD_UID_CLAIM} claims): use a projected token"
        )));
    };
    Ok((namespace, pod, uid))
}

/// The gateway (name, in the pod's namespace) whose data plane `pod` is, by the operator's labels.
pub fn gateway_of_pod(pod: &Pod) -> Option<String> {
    use crate::operator::metadata::{
        COMPONENT_LABEL, DATA_PLANE_COMPONENT, INSTANCE_LABEL, MANAGED_BY, MANAGED_BY_LABEL,
    };
    let labels = pod.metadata.labels.as_ref()?;
    let is = |k: &str, v: &str| labels.get(k).map(String::as_str) == Some(v);
    if !is(MANAGED_BY_LABEL, MANAGED_BY) || !is(COMPONENT_LABEL, DATA_PLANE_COMPONENT) {
        return None;
    }
    labels
        .get(INSTANCE_LABEL)
        .filter(|g| !g.is_empty())
        .cloned()
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: impl Into<String>) -> Self {
        Self {
            client,
            audience: audience.into(),
        }
    }

    pub async fn authenticate(&self, token: &str) -> Result<PodIdentity, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let reviewed = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| AuthError::Unavailable(format!("TokenReview failed: {e}")))?;
        let (namespace, name, uid) = pod_claims(&reviewed, &self.audience)?;
        let pod = Api::<Pod>::namespaced(self.client.clone(), &namespace)
            .get_opt(&name)
            .await
            .map_err(|e| AuthError::Unavailable(format!("reading pod {namespace}/{name}: {e}")))?
            .ok_or_else(|| {
                AuthError::Denied(format!(
                    "pod {namespace}/{name} of the token does not exist"
                ))
            })?;
        if pod.metadata.uid.as_deref() != Some(uid.as_str()) {
            return Err(AuthError::Denied(format!(
                "pod {namespace}/{name} has uid {:?}, not the token's {uid:?} (re-created)",
                pod.metadata.uid.as_deref().unwrap_or_default()
            )));
        }
        let gateway = gateway_of_pod(&pod).ok_or_else(|| {
            AuthError::Denied(format!(
                "pod {namespace}/{name} is not a sluice data-plane pod (operator labels missing)"
            ))
        })?;
        let identity = PodIdentity {
            namespace,
            gateway,
            pod: name,
            uid: Some(uid),
        };
        identity.validate().map_err(AuthError::Denied)?;
        Ok(identity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(gateway: &str, id: &str) -> Node {
        Node {
            id: id.into(),
            gateway: gateway.into(),
            ..Default::default()
        }
    }

    const FILE: &str = "# bootstrap tokens\n\
        0123456789abcdef0123 edge/a a-*\n\
        fedcba9876543210fedc edge/b b-0  # one pod\n";

    #[test]
    fn a_file_token_admits_its_gateway_and_pod_pattern_only() {
        let tokens = BootstrapTokens::parse(FILE, "tokens").expect("parses");
        assert_eq!(
            tokens.authenticate("0123456789abcdef0123", &node("edge/a", "a-7")),
            Ok(PodIdentity {
                namespace: "edge".into(),
                gateway: "a".into(),
                pod: "a-7".into(),
                uid: None
            })
        );
        assert_eq!(
            tokens.authenticate("0123456789abcdef0123", &node("edge/b", "a-7")),
            Err(AuthError::Denied(
                "node.gateway \"edge/b\" is not the gateway \"edge/a\" the bootstrap token is for"
                    .into()
            ))
        );
        assert!(matches!(
            tokens.authenticate("fedcba9876543210fedc", &node("edge/b", "b-1")),
            Err(AuthError::Denied(m)) if m.contains("pod pattern \"b-0\"")
        ));
        assert_eq!(
            tokens.authenticate("0123456789abcdef0124", &node("edge/a", "a-7")),
            Err(AuthError::Unauthenticated(
                "the bootstrap token is not valid".into()
            ))
        );
    }

    #[test]
    fn file_errors_name_the_line() {
        for (text, error) in [
            (
                "short edge/a *\n",
                "t: line 1: the token is shorter than 16 characters",
            ),
            (
                "\n0123456789abcdef0123 edge *\n",
                "t: line 2: gateway \"edge\" must be \"namespace/name\"",
            ),
            (
                "0123456789abcdef0123 edge/a a-*-x\n",
                "t: line 1: pod pattern \"a-*-x\" may only end with '*'",
            ),
            (
                "0123456789abcdef0123 edge/a\n",
                "t: line 1: expected \"TOKEN NAMESPACE/GATEWAY POD_PATTERN\", got 2 fields",
            ),
        ] {
            assert_eq!(
                BootstrapTokens::parse(text, "t"),
                Err(error.into()),
                "{text}"
            );
        }
    }

    fn review(status: serde_json::Value) -> TokenReview {
        serde_json::from_value(json!({"apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview", "spec": {}, "status": status}))
        .expect("a TokenReview")
    }

    #[test]
    fn pod_claims_come_from_a_pod_bound_service_account_token() {
        let ok = review(json!({"authenticated": true, "audiences": ["sluice-xds"],
            "user": {"username": "system:serviceaccount:edge:a",
                "extra": {POD_NAME_CLAIM: ["a-1"], POD_UID_CLAIM: ["u-1"]}}}));
        assert_eq!(
            pod_claims(&ok, "sluice-xds"),
            Ok(("edge".into(), "a-1".into(), "u-1".into()))
        );
        assert!(matches!(pod_claims(&ok, "other"),
            Err(AuthError::Unauthenticated(m)) if m.contains("audience \"other\"")));
        let refused = review(json!({"authenticated": false, "error": "token expired"}));
        assert_eq!(
            pod_claims(&refused, "sluice-xds"),
            Err(AuthError::Unauthenticated(
                "the ServiceAccount token was not authenticated by TokenReview: token expired"
                    .into()
            ))
        );
        let unbound = review(json!({"authenticated": true,
            "user": {"username": "system:serviceaccount:edge:a"}}));
        assert!(matches!(pod_claims(&unbound, "sluice-xds"),
            Err(AuthError::Unauthenticated(m)) if m.contains("not bound to a pod")));
        let user = review(json!({"authenticated": true, "user": {"username": "alice"}}));
        assert!(matches!(pod_claims(&user, "sluice-xds"),
            Err(AuthError::Unauthenticated(m)) if m.contains("\"alice\"")));
    }

    #[test]
    fn a_pod_belongs_to_the_gateway_its_operator_labels_name() {
        let pod = |labels: serde_json::Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "labels": labels}}))
                .expect("a Pod")
        };
        assert_eq!(
            gateway_of_pod(&pod(json!({"app.kubernetes.io/managed-by": "sluice",
                "app.kubernetes.io/component": "data-plane",
                "app.kubernetes.io/instance": "a"}))),
            Some("a".into())
        );
        assert_eq!(
            gateway_of_pod(&pod(json!({"app.kubernetes.io/instance": "a"}))),
            None
        );
    }
}
