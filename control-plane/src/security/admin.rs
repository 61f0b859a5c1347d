//! Who may use the inspection service: open on loopback plaintext (standalone), otherwise an
//! admin bearer token or an admin client certificate (`super::admin_identity`), each scoped to
//! every namespace or to some.

use super::authorize::secrets_equal;
use std::collections::BTreeSet;
use std::path::Path;

/// Which gateways an admin may see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminScope {
    All,
    Namespaces(BTreeSet<String>),
}

impl AdminScope {
    /// Whether the gateway `namespace/name` is visible.
    pub fn allows(&self, gateway_id: &str) -> bool {
        match self {
            AdminScope::All => true,
            AdminScope::Namespaces(namespaces) => gateway_id
                .split_once('/')
                .is_some_and(|(ns, _)| namespaces.contains(ns)),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct AdminTokens {
    entries: Vec<(String, AdminScope)>,
}

impl AdminTokens {
    /// Parses `TOKEN SCOPE` lines, SCOPE `*` or `ns1,ns2`; `#` starts a comment.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{source}: line {}", i + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [token, scope] = fields.as_slice() else {
                return Err(format!(
                    "{at}: expected \"TOKEN *\" or \"TOKEN NAMESPACE[,NAMESPACE...]\", got {} fields",
                    fields.len()
                ));
            };
            if token.len() < 16 {
                return Err(format!("{at}: the token is shorter than 16 characters"));
            }
            let scope = AdminScope::parse(scope).map_err(|e| format!("{at}: {e}"))?;
            entries.push((token.to_string(), scope));
        }
        Ok(Self { entries })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| format!("{source}: {e}"))?;
        Self::parse(&text, &source)
    }

    fn scope_of(&self, token: &str) -> Option<&AdminScope> {
        self.entries
            .iter()
            .find(|(t, _)| secrets_equal(t.as_bytes(), token.as_bytes()))
            .map(|(_, s)| s)
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum AdminAccess {
    /// No credential needed: loopback plaintext (standalone, tests).
    #[default]
    Open,
    /// A bearer token of this set; none configured means nobody may inspect.
    Tokens(AdminTokens),
}

impl AdminAccess {
    /// The scope `bearer` grants, or why it is refused.
    pub fn authorize(&self, bearer: Option<&str>) -> Result<AdminScope, String> {
        match self {
            AdminAccess::Open => Ok(AdminScope::All),
            AdminAccess::Tokens(tokens) => {
                let token = bearer.ok_or_else(|| {
                    "the inspection service needs an admin credential \
                     (authorization: Bearer <token>, or an admin client certificate)"
                        .to_owned()
                })?;
                tokens
                    .scope_of(token)
                    .cloned()
                    .ok_or_else(|| "the admin token is not valid".to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_their_scope_and_nothing_else() {
        let access = AdminAccess::Tokens(
            AdminTokens::parse(
                "aaaaaaaaaaaaaaaa *\nbbbbbbbbbbbbbbbb team-a,team-b # scoped\n",
                "admin",
            )
            .expect("parses"),
        );
        assert_eq!(
            access.authorize(Some("aaaaaaaaaaaaaaaa")),
            Ok(AdminScope::All)
        );
        let scoped = access.authorize(Some("bbbbbbbbbbbbbbbb")).expect("scoped");
        assert!(scoped.allows("team-a/gw"));
        assert!(!scoped.allows("team-c/gw"));
        assert!(!scoped.allows("team-a"));
        assert_eq!(
            access.authorize(Some("cccccccccccccccc")),
            Err("the admin token is not valid".into())
        );
        assert!(
            access
                .authorize(None)
                .expect_err("none")
                .contains("needs an admin credential")
        );
        assert_eq!(AdminAccess::Open.authorize(None), Ok(AdminScope::All));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            AdminTokens::parse("aaaaaaaaaaaaaaaa a,,b\n", "f"),
            Err("f: line 1: scope \"a,,b\" has an empty or '*' namespace".into())
        );
        assert_eq!(
            AdminTokens::parse("short *\n", "f"),
            Err("f: line 1: the token is shorter than 16 characters".into())
        );
    }
}
