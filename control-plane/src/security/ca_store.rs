//! Where the CA lives: created once, then shared by every replica and every restart. In
//! Kubernetes a Secret of the control plane's namespace (create if absent: the replica that
//! loses the creation race reads the winner's); otherwise a directory.

use super::ca::{CaError, CertificateAuthority};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Keys of the CA files and of the Secret's data.
pub const CA_CERT_KEY: &str = "ca.crt";
pub const CA_KEY_KEY: &str = "ca.key";
/// The Secret `deploy/` expects.
pub const DEFAULT_CA_SECRET: &str = "sluice-xds-ca";
/// The Secret's type: not `Opaque` or `kubernetes.io/tls`, so the provider (which watches only
/// those) never loads it and no gateway can reference the CA key.
pub const CA_SECRET_TYPE: &str = "sluice.dev/xds-ca";

#[derive(Debug, thiserror::Error)]
pub enum CaStoreError {
    #[error("CA directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("CA in {0}: {1}")]
    Invalid(String, CaError),
    #[error("CA Secret {0}: {1}")]
    Api(String, kube::Error),
    #[error("CA Secret {0}: data.{1} is missing")]
    MissingKey(String, &'static str),
    #[error("CA Secret {0}: data.{1} is not UTF-8 PEM")]
    NotPem(String, &'static str),
}

/// Loads the CA of `dir` (`ca.crt`, `ca.key`), creating it (key file mode 0600) when absent.
pub fn load_or_create_in_dir(dir: &Path) -> Result<CertificateAuthority, CaStoreError> {
    let io = |e| CaStoreError::Io(dir.to_owned(), e);
    std::fs::create_dir_all(dir).map_err(io)?;
    let cert_path = dir.join(CA_CERT_KEY);
    let key_path = dir.join(CA_KEY_KEY);
    let place = dir.display().to_string();
    if !key_path.exists() {
        let ca = CertificateAuthority::generate(OffsetDateTime::now_utc())
            .map_err(|e| CaStoreError::Invalid(place.clone(), e))?;
        // The key first and exclusively: a concurrent creator loses here and reads ours.
        match write_new(&key_path, ca.key_pem(), 0o600) {
            Ok(()) => {
                write_new(&cert_path, ca.cert_pem(), 0o644).map_err(io)?;
                tracing::info!(dir = %place, "created the xDS CA");
                return Ok(ca);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io(e)),
        }
    }
    load_from_dir(dir)
}

/// Loads the CA of `dir` (`ca.crt`, `ca.key`); never creates one (an offline signer must use
/// the CA the control plane trusts).
pub fn load_from_dir(dir: &Path) -> Result<CertificateAuthority, CaStoreError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| CaStoreError::Io(path, e))
    };
    let key = read(CA_KEY_KEY)?;
    let cert = read(CA_CERT_KEY)?;
    CertificateAuthority::from_pem(&cert, &key)
        .map_err(|e| CaStoreError::Invalid(dir.display().to_string(), e))
}

/// Creates `path` (never overwrites) with `text` and permission `mode`.
pub fn write_new(path: &Path, text: &str, mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)?.write_all(text.as_bytes())
}

fn from_secret(id: &str, secret: &Secret) -> Result<CertificateAuthority, CaStoreError> {
    let text = |key: &'static str| -> Result<&str, CaStoreError> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .ok_or_else(|| CaStoreError::MissingKey(id.to_owned(), key))?;
        std::str::from_utf8(&bytes.0).map_err(|_| CaStoreError::NotPem(id.to_owned(), key))
    };
    CertificateAuthority::from_pem(text(CA_CERT_KEY)?, text(CA_KEY_KEY)?)
        .map_err(|e| CaStoreError::Invalid(id.to_owned(), e))
}

/// Loads the CA from Secret `namespace/name`, creating it when absent. Every replica may run
/// this at once: creation conflicts (409) are answered by reading the Secret that won.
pub async fn load_or_create_in_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<CertificateAuthority, CaStoreError> {
    let id = format!("{namespace}/{name}");
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let api_err = |e| CaStoreError::Api(id.clone(), e);
    if let Some(existing) = api.get_opt(name).await.map_err(api_err)? {
        return from_secret(&id, &existing);
    }
    let ca = CertificateAuthority::generate(OffsetDateTime::now_utc())
        .map_err(|e| CaStoreError::Invalid(id.clone(), e))?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "sluice".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some(CA_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([
            (
                CA_CERT_KEY.to_owned(),
                ByteString(ca.cert_pem().as_bytes().to_vec()),
            ),
            (
                CA_KEY_KEY.to_owned(),
                ByteString(ca.key_pem().as_bytes().to_vec()),
            ),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %id, "created the xDS CA");
            Ok(ca)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            // Another replica created it first: everyone uses that one.
            let winner = api.get(name).await.map_err(api_err)?;
            from_secret(&id, &winner)
        }
        Err(e) => Err(api_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "sluice-ca-{tag}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn fastrand_suffix() -> u128 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
    }

    #[test]
    fn a_directory_ca_is_created_once_then_reused() {
        let dir = temp_dir("dir");
        let first = load_or_create_in_dir(&dir).expect("created");
        let second = load_or_create_in_dir(&dir).expect("loaded");
        assert_eq!(first.cert_pem(), second.cert_pem());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(CA_KEY_KEY))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join(CA_CERT_KEY), "garbage").expect("write");
        let err = load_or_create_in_dir(&dir).expect_err("refused");
        assert!(err.to_string().contains("certificate"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: Value) {
        send.send_response(
            Response::builder()
                .status(StatusCode::from_u16(status).expect("status"))
                .body(Body::from(serde_json::to_vec(&body).expect("json")))
                .expect("response"),
        );
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "code": code})
    }

    /// Two replicas race: this one finds no Secret, loses the create (409) and uses the winner's.
    #[tokio::test]
    async fn a_lost_creation_race_reads_the_winners_secret() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let winner = CertificateAuthority::generate(OffsetDateTime::now_utc()).expect("ca");
        let winner_pem = winner.cert_pem().to_owned();
        let task =
            tokio::spawn(async move { load_or_create_in_secret(client, "sluice", "xds-ca").await });
        let path = "/api/v1/namespaces/sluice/secrets";

        let (request, send) = handle.next_request().await.expect("get");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri().path(), format!("{path}/xds-ca"));
        respond(send, 404, status(404, "NotFound"));

        let (request, send) = handle.next_request().await.expect("create");
        assert_eq!(request.method(), "POST");
        assert_eq!(request.uri().path(), path);
        let body = request.into_body().collect_bytes().await.expect("body");
        let sent: Value = serde_json::from_slice(&body).expect("a Secret");
        assert_eq!(sent["metadata"]["name"], "xds-ca");
        assert_eq!(sent["type"], CA_SECRET_TYPE);
        assert!(sent["data"][CA_CERT_KEY].is_string());
        assert!(sent["data"][CA_KEY_KEY].is_string());
        respond(send, 409, status(409, "AlreadyExists"));

        let (request, send) = handle.next_request().await.expect("re-read");
        assert_eq!(request.method(), "GET");
        assert_eq!(request.uri().path(), format!("{path}/xds-ca"));
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        respond(
            send,
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "xds-ca", "namespace": "sluice", "resourceVersion": "7"},
                "type": CA_SECRET_TYPE,
                "data": {CA_CERT_KEY: b64(winner.cert_pem()), CA_KEY_KEY: b64(winner.key_pem())}}),
        );
        let ca = task.await.expect("no panic").expect("the winner's CA");
        assert_eq!(ca.cert_pem(), winner_pem);
    }

    #[tokio::test]
    async fn a_secret_without_the_key_is_an_error_naming_it() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let task =
            tokio::spawn(async move { load_or_create_in_secret(client, "sluice", "xds-ca").await });
        let (_, send) = handle.next_request().await.expect("get");
        respond(
            send,
            200,
            json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "xds-ca", "namespace": "sluice"}, "data": {}}),
        );
        let err = task.await.expect("no panic").expect_err("refused");
        assert_eq!(
            err.to_string(),
            "CA Secret sluice/xds-ca: data.ca.crt is missing"
        );
    }
}
