//! Offline issuance of admin client certificates (`sluice admin-cert`): whoever holds the CA key
//! signs a certificate naming an admin and the namespaces it may inspect. Nothing is stored by
//! the control plane: it trusts what its CA signed, until it expires or its serial is listed in
//! `--xds-revoked`.

use super::admin_identity::AdminIdentity;
use super::ca::CaError;
use super::ca_store::{CaStoreError, load_from_dir, write_new};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Admin certificates last at most this long: they can only be revoked by serial.
pub const MAX_ADMIN_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum AdminCertError {
    #[error(transparent)]
    Ca(#[from] CaStoreError),
    #[error("signing the admin certificate: {0}")]
    Sign(#[from] CaError),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `sluice admin-cert` wrote.
#[derive(Debug)]
pub struct AdminCertFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
    /// Lower-case hex, as `--xds-revoked` takes it.
    pub serial: String,
    pub not_after: time::OffsetDateTime,
}

impl AdminCertFiles {
    /// The expiry, RFC 3339 (UTC).
    pub fn valid_until(&self) -> String {
        self.not_after
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| format!("{} (Unix time)", self.not_after.unix_timestamp()))
    }
}

/// Parses a lifetime: a positive number followed by `s`, `m`, `h` or `d`, at most
/// [`MAX_ADMIN_VALIDITY`].
pub fn parse_validity(text: &str) -> Result<Duration, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} needs a unit: s, m, h or d (e.g. 24h)"))?;
    let (number, unit) = text.split_at(unit_at);
    let seconds_per = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    let count: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let validity = Duration::from_secs(count.saturating_mul(seconds_per));
    if validity.is_zero() || validity > MAX_ADMIN_VALIDITY {
        return Err(format!("{text:?} must be more than 0 and at most 365d"));
    }
    Ok(validity)
}

/// Signs an admin certificate for `identity` with the CA of `ca_dir` and writes
/// `OUT/NAME.crt` and `OUT/NAME.key` (mode 0600); neither may exist yet.
pub fn issue_to_dir(
    ca_dir: &Path,
    identity: &AdminIdentity,
    validity: Duration,
    out: &Path,
) -> Result<AdminCertFiles, AdminCertError> {
    let ca = load_from_dir(ca_dir)?;
    let (issued, key_pem) = ca.issue_admin(identity, time::OffsetDateTime::now_utc(), validity)?;
    std::fs::create_dir_all(out).map_err(|e| AdminCertError::Write {
        path: out.to_owned(),
        source: e,
    })?;
    let key = out.join(format!("{}.key", identity.name));
    let certificate = out.join(format!("{}.crt", identity.name));
    write_new(&key, &key_pem, 0o600).map_err(|e| AdminCertError::Write {
        path: key.clone(),
        source: e,
    })?;
    if let Err(e) = write_new(&certificate, &issued.certificate_pem, 0o644) {
        // No key without its certificate left behind.
        let _ = std::fs::remove_file(&key);
        return Err(AdminCertError::Write {
            path: certificate,
            source: e,
        });
    }
    Ok(AdminCertFiles {
        certificate,
        key,
        serial: issued.serial,
        not_after: issued.not_after,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::AdminScope;
    use crate::security::identity::CertifiedPeer;

    #[test]
    fn lifetimes_need_a_unit_and_stay_bounded() {
        assert_eq!(parse_validity("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_validity("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_validity("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_validity("365d"), Ok(MAX_ADMIN_VALIDITY));
        for bad in ["24", "h", "0h", "366d", "1w", "-1h", "1.5h", ""] {
            assert!(parse_validity(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn issues_into_a_directory_with_the_ca_of_another() {
        let root = std::env::temp_dir().join(format!("sluice-admin-cert-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let ca_dir = root.join("ca");
        // Nothing to sign with: the CA is never created here.
        let alice = AdminIdentity {
            name: "alice".into(),
            scope: AdminScope::parse("team-a").expect("scope"),
        };
        let out = root.join("out");
        let err = issue_to_dir(&ca_dir, &alice, Duration::from_secs(60), &out).expect_err("no CA");
        assert!(err.to_string().contains("ca.key"), "{err}");
        assert!(!ca_dir.exists());

        let ca = super::super::ca_store::load_or_create_in_dir(&ca_dir).expect("CA");
        let files = issue_to_dir(&ca_dir, &alice, Duration::from_secs(60), &out).expect("issued");
        assert_eq!(files.certificate, out.join("alice.crt"));
        let pem = std::fs::read_to_string(&files.certificate).expect("crt");
        let der =
            <rustls_pki_types::CertificateDer as rustls_pki_types::pem::PemObject>::from_pem_slice(
                pem.as_bytes(),
            )
            .expect("der");
        let Ok(CertifiedPeer::Admin(admin)) = CertifiedPeer::from_der(&der) else {
            panic!("not an admin certificate");
        };
        assert_eq!(
            (admin.identity, admin.serial),
            (alice.clone(), files.serial)
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&files.key)
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A second run does not overwrite the key.
        let again =
            issue_to_dir(&ca_dir, &alice, Duration::from_secs(60), &out).expect_err("exists");
        assert!(again.to_string().contains("alice.key"), "{again}");
        drop(ca);
        let _ = std::fs::remove_dir_all(&root);
    }
}
