//! Revocation outside Kubernetes: an operator lists revoked pods and certificates in a file
//! (`--xds-revoked FILE`) that the control plane re-reads when it changes. A revoked pod's open
//! streams are closed, and its certificates are refused at the next connect or renewal; a
//! revoked pod is issued no new certificate either, whatever its bootstrap token. A `serial`
//! line revokes an admin certificate (`sluice admin-cert`) the same way.
//!
//! ```text
//! # every certificate of a pod, and any new one
//! pod edge/public-1
//! # one certificate, by the serial the control plane logged when it issued it
//! serial 5f0c2a9e41d7b3c8
//! ```

use super::admin_identity::AdminIdentity;
use super::identity::PodIdentity;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often the file is checked for changes (a revocation takes effect within this).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A serial in one spelling: lower-case hex without separators or leading zero bytes (DER
/// may prefix a positive serial with `00`).
fn normalize_serial(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let mut rest = hex.as_str();
    while rest.len() > 2 && rest.starts_with("00") {
        rest = &rest[2..];
    }
    rest.to_owned()
}

/// The parsed file: what is revoked, each with where it was revoked (for the refusal message).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RevocationList {
    /// "namespace/pod" -> "FILE:LINE".
    pods: BTreeMap<String, String>,
    /// normalized serial -> "FILE:LINE".
    serials: BTreeMap<String, String>,
}

impl RevocationList {
    /// Parses `pod NAMESPACE/POD` and `serial HEX` lines; `#` starts a comment.
    pub fn parse(text: &str, source: &str) -> Result<Self, String> {
        let mut list = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = format!("{source}:{}", i + 1);
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["pod", pod] => {
                    let valid = pod.split_once('/').is_some_and(|(ns, name)| {
                        !ns.is_empty() && !name.is_empty() && !name.contains('/')
                    });
                    if !valid {
                        return Err(format!("{at}: pod {pod:?} must be \"NAMESPACE/POD\""));
                    }
                    list.pods.insert((*pod).to_owned(), at);
                }
                ["serial", serial] => {
                    let normalized = normalize_serial(serial);
                    if normalized.is_empty() || !normalized.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(format!(
                            "{at}: serial {serial:?} is not a hexadecimal serial number"
                        ));
                    }
                    list.serials.insert(normalized, at);
                }
                _ => {
                    return Err(format!(
                        "{at}: expected \"pod NAMESPACE/POD\" or \"serial HEX\", got {line:?}"
                    ));
                }
            }
        }
        Ok(list)
    }

    /// Refuses `identity` when its pod is revoked, or `serial` (the certificate it presents)
    /// when that certificate is.
    pub fn check(&self, identity: &PodIdentity, serial: Option<&str>) -> Result<(), String> {
        let pod = format!("{}/{}", identity.namespace, identity.pod);
        if let Some(at) = self.pods.get(&pod) {
            return Err(format!(
                "the credentials of {identity} are revoked (pod {pod}, {at})"
            ));
        }
        if let Some(serial) = serial
            && let Some(at) = self.serials.get(&normalize_serial(serial))
        {
            return Err(format!(
                "the client certificate of {identity} (serial {serial}) is revoked ({at})"
            ));
        }
        Ok(())
    }

    /// Refuses the admin certificate `serial` of `admin` when it is revoked.
    pub fn check_admin(&self, admin: &AdminIdentity, serial: &str) -> Result<(), String> {
        match self.serials.get(&normalize_serial(serial)) {
            Some(at) => Err(format!(
                "the admin certificate of {admin} (serial {serial}) is revoked ({at})"
            )),
            None => Ok(()),
        }
    }

    pub fn len(&self) -> usize {
        self.pods.len() + self.serials.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The current revocation list, shared by every request and stream; empty unless a file is
/// followed.
pub struct Revocations {
    current: watch::Sender<Arc<RevocationList>>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self::new(RevocationList::default())
    }
}

impl Revocations {
    pub fn new(list: RevocationList) -> Self {
        Self {
            current: watch::channel(Arc::new(list)).0,
        }
    }

    pub fn check(&self, identity: &PodIdentity, serial: Option<&str>) -> Result<(), String> {
        self.current.borrow().check(identity, serial)
    }

    pub fn check_admin(&self, admin: &AdminIdentity, serial: &str) -> Result<(), String> {
        self.current.borrow().check_admin(admin, serial)
    }

    /// Installs a new list and wakes every stream to re-check itself.
    pub fn replace(&self, list: RevocationList) {
        self.current.send_replace(Arc::new(list));
    }

    /// Wakes on every new list.
    pub fn subscribe(&self) -> watch::Receiver<Arc<RevocationList>> {
        self.current.subscribe()
    }
}

/// Reads and parses the revocation file.
pub fn load(path: &Path) -> Result<RevocationList, String> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{source}: {e}"))?;
    RevocationList::parse(&text, &source)
}

/// Re-reads `path` every [`RELOAD_INTERVAL`] and installs it when it says something new. A
/// file that cannot be read or parsed keeps the previous list in force (revocations are never
/// dropped by a typo) and is reported once.
pub async fn follow(path: PathBuf, revocations: Arc<Revocations>) {
    let mut current = revocations.subscribe();
    let mut last_error: Option<String> = None;
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        match load(&path) {
            Ok(list) => {
                last_error = None;
                if **current.borrow_and_update() != list {
                    tracing::info!(file = %path.display(), entries = list.len(), "revocation list reloaded");
                    revocations.replace(list);
                }
            }
            Err(error) => {
                if last_error.as_ref() != Some(&error) {
                    tracing::error!(%error, "cannot use the revocation list; the previous one stays in force");
                    last_error = Some(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(pod: &str) -> PodIdentity {
        PodIdentity {
            namespace: "edge".into(),
            gateway: "public".into(),
            pod: pod.into(),
            uid: None,
        }
    }

    #[test]
    fn pods_and_serials_are_revoked_with_where_it_was_said() {
        let list = RevocationList::parse(
            "# revoked\npod edge/public-1\n\nserial 00:AB:cd:01  # stolen\n",
            "revoked",
        )
        .expect("parses");
        assert_eq!(list.len(), 2);
        assert_eq!(
            list.check(&identity("public-1"), Some("ff")),
            Err(
                "the credentials of pod edge/public-1 of gateway edge/public are revoked \
                 (pod edge/public-1, revoked:2)"
                    .into()
            )
        );
        assert_eq!(
            list.check(&identity("public-2"), Some("abcd01")),
            Err(
                "the client certificate of pod edge/public-2 of gateway edge/public \
                 (serial abcd01) is revoked (revoked:4)"
                    .into()
            )
        );
        assert_eq!(list.check(&identity("public-2"), Some("abcd02")), Ok(()));
        // A token-authenticated pod has no certificate yet: only its pod counts.
        assert_eq!(list.check(&identity("public-2"), None), Ok(()));
        assert!(list.check(&identity("public-1"), None).is_err());
        // An admin certificate is revoked by its serial.
        let alice = AdminIdentity {
            name: "alice".into(),
            scope: crate::security::AdminScope::All,
        };
        assert_eq!(
            list.check_admin(&alice, "00abcd01"),
            Err(
                "the admin certificate of admin alice (every namespace) (serial 00abcd01) \
                 is revoked (revoked:4)"
                    .into()
            )
        );
        assert_eq!(list.check_admin(&alice, "abcd02"), Ok(()));
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            RevocationList::parse("pod public-1\n", "f"),
            Err("f:1: pod \"public-1\" must be \"NAMESPACE/POD\"".into())
        );
        assert_eq!(
            RevocationList::parse("\nserial xyz\n", "f"),
            Err("f:2: serial \"xyz\" is not a hexadecimal serial number".into())
        );
        assert_eq!(
            RevocationList::parse("node edge/p\n", "f"),
            Err(
                "f:1: expected \"pod NAMESPACE/POD\" or \"serial HEX\", got \"node edge/p\"".into()
            )
        );
    }

    #[tokio::test]
    async fn a_changed_file_is_followed_and_a_broken_one_keeps_the_previous_list() {
        let dir = std::env::temp_dir().join(format!("sluice-revoked-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("revoked");
        std::fs::write(&path, "").expect("write");
        let revocations = Arc::new(Revocations::new(load(&path).expect("empty list")));
        let mut changes = revocations.subscribe();
        let task = tokio::spawn(follow(path.clone(), revocations.clone()));
        std::fs::write(&path, "pod edge/public-1\n").expect("write");
        tokio::time::timeout(Duration::from_secs(10), changes.changed())
            .await
            .expect("reloaded in time")
            .expect("open");
        assert!(revocations.check(&identity("public-1"), None).is_err());
        std::fs::write(&path, "pod broken\n").expect("write");
        tokio::time::sleep(RELOAD_INTERVAL * 3).await;
        assert!(
            revocations.check(&identity("public-1"), None).is_err(),
            "a broken file does not lift revocations"
        );
        task.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
