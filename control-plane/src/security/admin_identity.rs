//! An admin's identity as an admin client certificate carries it: one URI SAN
//! `sluice-admin://NAME?namespaces=NS1,NS2` (or `?namespaces=*`). Its scheme is not the pods'
//! (`spiffe://sluice/…`), so an admin certificate can never be read as a pod's, nor the reverse.

use super::admin::AdminScope;
use super::identity::valid_segment;
use std::collections::BTreeSet;
use std::fmt;

pub const ADMIN_URI_PREFIX: &str = "sluice-admin://";
const NAMESPACES_QUERY: &str = "?namespaces=";

/// Who an admin certificate was issued to, and which gateways' namespaces it may inspect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdminIdentity {
    pub name: String,
    pub scope: AdminScope,
}

impl AdminIdentity {
    /// Checks the name and every namespace are plain name segments.
    pub fn validate(&self) -> Result<(), String> {
        if !valid_segment(&self.name) {
            return Err(format!("admin name {:?} is not a valid name", self.name));
        }
        if let AdminScope::Namespaces(namespaces) = &self.scope {
            if namespaces.is_empty() {
                return Err("an admin scope needs at least one namespace (or *)".into());
            }
            if let Some(bad) = namespaces.iter().find(|ns| !valid_segment(ns)) {
                return Err(format!("namespace {bad:?} is not a valid name"));
            }
        }
        Ok(())
    }

    pub fn uri(&self) -> String {
        format!(
            "{ADMIN_URI_PREFIX}{}{NAMESPACES_QUERY}{}",
            self.name, self.scope
        )
    }

    /// The inverse of [`AdminIdentity::uri`], strictly: `None` for anything else.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(ADMIN_URI_PREFIX)?;
        let (name, scope) = rest.split_once(NAMESPACES_QUERY)?;
        let scope = AdminScope::parse(scope).ok()?;
        let identity = Self {
            name: name.to_owned(),
            scope,
        };
        identity.validate().ok().map(|()| identity)
    }
}

impl AdminScope {
    /// `*` (every namespace) or `NS1,NS2`: the scope of an admin token line or certificate.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(AdminScope::All);
        }
        let namespaces: BTreeSet<String> = text.split(',').map(str::to_owned).collect();
        if namespaces.iter().any(|n| n.is_empty() || n == "*") {
            return Err(format!("scope {text:?} has an empty or '*' namespace"));
        }
        Ok(AdminScope::Namespaces(namespaces))
    }
}

impl fmt::Display for AdminScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminScope::All => f.write_str("*"),
            AdminScope::Namespaces(namespaces) => {
                let list: Vec<&str> = namespaces.iter().map(String::as_str).collect();
                f.write_str(&list.join(","))
            }
        }
    }
}

impl fmt::Display for AdminIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scope {
            AdminScope::All => write!(f, "admin {} (every namespace)", self.name),
            scope => write!(f, "admin {} (namespaces {scope})", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scoped(name: &str, namespaces: &[&str]) -> AdminIdentity {
        AdminIdentity {
            name: name.into(),
            scope: AdminScope::Namespaces(namespaces.iter().map(|n| (*n).to_owned()).collect()),
        }
    }

    #[test]
    fn uri_round_trips_for_scoped_and_unscoped_admins() {
        let alice = scoped("alice", &["team-b", "team-a"]);
        assert_eq!(alice.uri(), "sluice-admin://alice?namespaces=team-a,team-b");
        assert_eq!(AdminIdentity::from_uri(&alice.uri()), Some(alice.clone()));
        assert_eq!(alice.to_string(), "admin alice (namespaces team-a,team-b)");
        let root = AdminIdentity {
            name: "root".into(),
            scope: AdminScope::All,
        };
        assert_eq!(root.uri(), "sluice-admin://root?namespaces=*");
        assert_eq!(AdminIdentity::from_uri(&root.uri()), Some(root));
    }

    #[test]
    fn anything_else_is_not_an_admin_identity() {
        for uri in [
            "sluice-admin://alice",
            "sluice-admin://alice?namespaces=",
            "sluice-admin://alice?namespaces=a,,b",
            "sluice-admin://alice?namespaces=a,*",
            "sluice-admin://alice?namespaces=a&x=y",
            "sluice-admin://alice?namespaces=a#frag",
            "sluice-admin://al/ice?namespaces=a",
            "sluice-admin://?namespaces=a",
            "sluice-admin://alice?scope=a",
            "spiffe://sluice/ns/edge/gateway/public/pod/p",
            "https://alice?namespaces=a",
        ] {
            assert_eq!(AdminIdentity::from_uri(uri), None, "{uri}");
        }
    }

    #[test]
    fn invalid_names_are_named() {
        assert_eq!(
            scoped("al ice", &["a"]).validate(),
            Err("admin name \"al ice\" is not a valid name".into())
        );
        assert_eq!(
            scoped("alice", &["a/b"]).validate(),
            Err("namespace \"a/b\" is not a valid name".into())
        );
    }
}
