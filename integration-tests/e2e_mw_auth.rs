//! basicAuth and jwt middlewares through the real `sluice standalone` on Goma manifests:
//! every password hash format, users from a Secret (and its rotation), forwarded user names and
//! claims, JWTs signed with HMAC, RSA (PKCS#1 and PSS, keys from `openssl`), P-256 and Ed25519,
//! a JWKS file, a JWKS URL fetched lazily and refetched on an unknown `kid`, and bad
//! configurations that withdraw or reject the route while the others keep serving.

mod support;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use ring::rand::SystemRandom;
use ring::signature::{self, KeyPair};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;
use tokio::net::TcpListener;

const HOST: &str = "app.test";

fn middleware_yaml(name: &str, ty: &str, rule: Value) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: {ty}\n  rule: {rule}\n---\n"
    )
}

fn route_with(name: &str, path: &str, port: u16, middlewares: &[&str]) -> String {
    let list = middlewares.join(", ");
    format!(
        "{}---\n",
        route_yaml(
            name,
            "gw",
            path,
            port,
            &format!("  middlewares: [{list}]\n")
        )
    )
}

fn opaque_secret_yaml(name: &str, key: &str, value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\ntype: Opaque\nstringData:\n  {key}: {}\n---\n",
        serde_json::to_string(value).unwrap()
    )
}

async fn call(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(&client(), "GET", port, HOST, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn status(port: u16, path: &str, headers: &[(&str, &str)]) -> u16 {
    call(port, path, headers).await.status
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Starts standalone on `dir` and waits until `/open` serves and `path` answers `want`.
async fn start(dir: &TempDir, gw_port: u16, path: &str, want: u16) -> Proc {
    let admin = free_port();
    let (sluice, _) = standalone(dir.path(), "gw", admin).await;
    wait_ok(gw_port, HOST, "/open", Duration::from_secs(20)).await;
    eventually(&format!("{path} answers {want}"), Duration::from_secs(20), || async {
        matches!(request(&client(), "GET", gw_port, HOST, path, &[]).await, Ok(r) if r.status == want)
    })
    .await;
    sluice
}

/// A route that must not be served: 404 now and in the log the reason, naming `needle`.
async fn not_served(sluice: &Proc, gw_port: u16, path: &str, needle: &str) {
    sluice.wait_log(needle, Duration::from_secs(10));
    assert_eq!(
        status(gw_port, path, &[]).await,
        404,
        "{path} must not be served"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_checks_every_hash_format_users_from_a_secret_and_fails_closed() {
    let (_echo, backend) = echo("app");
    let gw_port = free_port();
    let dir = TempDir::new("mw-basic");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    // carol: apr1 ("p@ss w0rd"), dave: {SHA} ("password").
    let htpasswd = "# team\ncarol:$apr1$abcdefgh$UkZoB0qp2g9KE9.krwnMP0\ndave:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n";
    dir.write(
        "users.yaml",
        &opaque_secret_yaml("htpasswd", "users", htpasswd),
    );
    let mut manifests = middleware_yaml(
        "basic",
        "basicAuth",
        json!({
            "realm": "Ops",
            "forwardUsername": true,
            "users": [
                // bcrypt of "hunter2" ($2y$, cost 10), md5-crypt of "password", and plain text.
                {"username": "alice", "password": "$2y$10$IgmoIgmoIgmoIgmoIgmoIecWgdYfh7CzyKynTy/MiCHYHfw4./W6O"},
                {"username": "erin", "password": "$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/"},
                "bob:plainpw"
            ],
            "usersSecret": "htpasswd"
        }),
    );
    manifests += &middleware_yaml("bad-hash", "basic", json!({"users": ["eve:$2y$10$short"]}));
    manifests += &middleware_yaml("no-secret", "basic", json!({"usersSecret": "absent"}));
    manifests += &route_with("basic", "/basic", backend, &["basic"]);
    manifests += &route_with("badhash", "/badhash", backend, &["bad-hash"]);
    manifests += &route_with("missing", "/missing", backend, &["nope"]);
    manifests += &route_with("nosecret", "/nosecret", backend, &["no-secret"]);
    manifests += &route_yaml("open", "gw", "/open", backend, "");
    dir.write("mw.yaml", &manifests);
    let sluice = start(&dir, gw_port, "/basic", 401).await;

    // Refusals: no credentials, wrong password, unknown user, another scheme.
    let r = call(gw_port, "/basic", &[]).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.headers["www-authenticate"], "Basic realm=\"Ops\"");
    for auth in [
        basic("alice", "hunter3"),
        basic("bob", "plainpw2"),
        basic("mallory", "plainpw"),
        basic("carol", "p@ss w0r"),
        "Bearer abc".to_owned(),
    ] {
        let r = call(gw_port, "/basic", &[("authorization", &auth)]).await;
        assert_eq!(r.status, 401, "{auth}");
        assert_eq!(r.headers["www-authenticate"], "Basic realm=\"Ops\"");
    }

    // Every format lets its user through, named upstream, credentials not forwarded, and a
    // client's own X-Forwarded-User replaced.
    for (user, password) in [
        ("alice", "hunter2"),
        ("alice", "hunter2"),
        ("erin", "password"),
        ("bob", "plainpw"),
        ("carol", "p@ss w0rd"),
        ("dave", "password"),
    ] {
        let auth = basic(user, password);
        let r = call(
            gw_port,
            "/basic/x",
            &[("authorization", &auth), ("x-forwarded-user", "root")],
        )
        .await;
        assert_eq!(r.status, 200, "{user}: {}", r.body);
        let seen = r.json();
        assert_eq!(seen["headers"]["x-forwarded-user"], user);
        assert!(seen["headers"].get("authorization").is_none(), "{seen}");
    }

    // Rotating the Secret recompiles the route: carol's old password stops working.
    let rotated = "carol:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n";
    dir.write(
        "users.yaml",
        &opaque_secret_yaml("htpasswd", "users", rotated),
    );
    eventually(
        "carol's new password works",
        Duration::from_secs(10),
        || async {
            status(
                gw_port,
                "/basic",
                &[("authorization", &basic("carol", "password"))],
            )
            .await
                == 200
        },
    )
    .await;
    assert_eq!(
        status(
            gw_port,
            "/basic",
            &[("authorization", &basic("carol", "p@ss w0rd"))]
        )
        .await,
        401
    );
    assert_eq!(
        status(
            gw_port,
            "/basic",
            &[("authorization", &basic("dave", "password"))]
        )
        .await,
        401,
        "dave left the Secret"
    );

    // Bad configurations: never served (unprotected or otherwise); the others keep serving.
    not_served(&sluice, gw_port, "/badhash", "bcrypt hash").await;
    not_served(
        &sluice,
        gw_port,
        "/missing",
        "Middleware default/nope does not exist",
    )
    .await;
    assert_eq!(status(gw_port, "/nosecret", &[]).await, 404);
    assert_eq!(status(gw_port, "/open", &[]).await, 200);
    let log = sluice.log();
    assert!(!log.contains("panicked"), "{log}");
    assert!(!log.contains("hunter2"), "a password reached the log");
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A compact JWS of `header` and `claims`, signed by `sign`.
fn jwt(header: Value, claims: Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = sign(msg.as_bytes());
    format!("{msg}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn hs256(secret: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    move |m| ring::hmac::sign(&key, m).as_ref().to_vec()
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

/// SubjectPublicKeyInfo DER prefixes of a raw P-256 point and an Ed25519 key.
const P256_SPKI: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
const ED25519_SPKI: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

struct Es256 {
    pair: signature::EcdsaKeyPair,
}

impl Es256 {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        Es256 { pair }
    }
    fn sign(&self, m: &[u8]) -> Vec<u8> {
        self.pair
            .sign(&SystemRandom::new(), m)
            .unwrap()
            .as_ref()
            .to_vec()
    }
    fn pem(&self) -> String {
        pem(
            "PUBLIC KEY",
            &[P256_SPKI, self.pair.public_key().as_ref()].concat(),
        )
    }
    fn jwk(&self, kid: &str) -> Value {
        let p = self.pair.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
               "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..65])})
    }
}

struct Ed {
    pair: signature::Ed25519KeyPair,
}

impl Ed {
    fn new() -> Self {
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Ed {
            pair: signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap(),
        }
    }
    fn sign(&self, m: &[u8]) -> Vec<u8> {
        self.pair.sign(m).as_ref().to_vec()
    }
    fn pem(&self) -> String {
        pem(
            "PUBLIC KEY",
            &[ED25519_SPKI, self.pair.public_key().as_ref()].concat(),
        )
    }
    fn jwk(&self, kid: &str) -> Value {
        json!({"kty": "OKP", "crv": "Ed25519", "kid": kid,
               "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref())})
    }
}

/// openssl (Debian's default install has it; installed if missing).
fn openssl() -> &'static str {
    ensure_debian_packages(&["openssl"], || {
        Command::new("openssl")
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    "openssl"
}

/// A 2048-bit RSA key made by openssl: (ring key pair, public key PEM).
fn rsa_key(dir: &TempDir) -> (signature::RsaKeyPair, String) {
    let key = dir.path().join("rsa.pem");
    let out = Command::new(openssl())
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&key)
        .output()
        .expect("openssl genpkey");
    assert!(out.status.success(), "{out:?}");
    let public = Command::new(openssl())
        .args(["pkey", "-pubout", "-in"])
        .arg(&key)
        .output()
        .expect("openssl pkey");
    assert!(public.status.success(), "{public:?}");
    let private = std::fs::read_to_string(&key).unwrap();
    let b64: String = private
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    let der = STANDARD.decode(b64).unwrap();
    let pair = signature::RsaKeyPair::from_pkcs8(&der).unwrap();
    (pair, String::from_utf8(public.stdout).unwrap())
}

fn rsa_sign(
    pair: &signature::RsaKeyPair,
    pad: &'static dyn signature::RsaEncoding,
    m: &[u8],
) -> Vec<u8> {
    let mut sig = vec![0; pair.public().modulus_len()];
    pair.sign(pad, &SystemRandom::new(), m, &mut sig).unwrap();
    sig
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_verifies_hmac_rsa_ecdsa_eddsa_and_jwks_file_tokens_and_their_claims() {
    let (_echo, backend) = echo("app");
    let gw_port = free_port();
    let dir = TempDir::new("mw-jwt");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let secret = b"a-shared-secret-of-32-bytes-long";
    let (rsa, rsa_pem) = rsa_key(&dir);
    let es = Es256::new();
    let ed = Ed::new();
    let file_key = Ed::new();
    let jwks_path = dir.path().join("jwks.json");
    std::fs::write(
        &jwks_path,
        json!({"keys": [file_key.jwk("file-1")]}).to_string(),
    )
    .unwrap();

    let mut manifests = middleware_yaml(
        "jwt-hs",
        "jwtAuth",
        json!({
            "secret": std::str::from_utf8(secret).unwrap(),
            "issuer": "https://idp.test",
            "audience": "api",
            "claimsExpression": "Equals(`role`, `admin`) || (Contains(`groups`, `ops`) && !Prefix(`sub`, `svc-`))",
            "forwardHeaders": {"X-User-Id": "sub", "X-Groups": "groups"},
        }),
    );
    manifests += &middleware_yaml(
        "jwt-rs",
        "jwt",
        json!({"publicKey": rsa_pem, "algorithms": ["RS256", "PS256"], "forwardAuthorization": true}),
    );
    manifests += &middleware_yaml("jwt-es", "jwt", json!({"publicKey": es.pem()}));
    manifests += &middleware_yaml(
        "jwt-ed",
        "jwt",
        json!({"publicKey": ed.pem(), "alg": "EdDSA"}),
    );
    manifests += &middleware_yaml(
        "jwt-file",
        "jwt",
        json!({"jwksFile": jwks_path.to_str().unwrap()}),
    );
    // Bad configurations.
    manifests += &middleware_yaml(
        "bad-expr",
        "jwt",
        json!({"secret": "s", "claimsExpression": "Equals(`role`) && OneOf(`x`, `y`)"}),
    );
    manifests += &middleware_yaml(
        "es512",
        "jwt",
        json!({"secret": "s", "algorithms": ["ES512"]}),
    );
    manifests += &middleware_yaml(
        "no-file",
        "jwt",
        json!({"jwksFile": "/nonexistent/jwks.json"}),
    );
    for (name, mw) in [
        ("hs", "jwt-hs"),
        ("rs", "jwt-rs"),
        ("es", "jwt-es"),
        ("ed", "jwt-ed"),
        ("file", "jwt-file"),
        ("badexpr", "bad-expr"),
        ("es512", "es512"),
        ("nofile", "no-file"),
    ] {
        manifests += &route_with(name, &format!("/{name}"), backend, &[mw]);
    }
    manifests += &route_yaml("open", "gw", "/open", backend, "");
    dir.write("mw.yaml", &manifests);
    let sluice = start(&dir, gw_port, "/hs", 401).await;

    let head = |alg: &str| json!({"alg": alg, "typ": "JWT"});
    let exp = now() + 600;
    let good = json!({"sub": "u-1", "iss": "https://idp.test", "aud": ["web", "api"], "exp": exp,
                      "role": "user", "groups": ["dev", "ops"]});

    // HMAC: the claims decide, the named claims travel upstream and the token does not.
    let token = jwt(head("HS256"), good.clone(), hs256(secret));
    let r = call(
        gw_port,
        "/hs",
        &[("authorization", &bearer(&token)), ("x-user-id", "spoofed")],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = r.json();
    assert_eq!(seen["headers"]["x-user-id"], "u-1");
    assert_eq!(seen["headers"]["x-groups"], "dev,ops");
    assert!(seen["headers"].get("authorization").is_none());

    let with = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        jwt(head("HS256"), c, hs256(secret))
    };
    let refused = [
        ("expired", with(json!({"exp": now() - 120}))),
        ("not yet valid", with(json!({"nbf": now() + 600}))),
        ("issuer", with(json!({"iss": "https://evil.test"}))),
        ("audience", with(json!({"aud": "other"}))),
        ("claims", with(json!({"groups": ["dev"]}))),
        ("claims (not)", with(json!({"sub": "svc-bot"}))),
        (
            "wrong secret",
            jwt(head("HS256"), good.clone(), hs256(b"other")),
        ),
        ("alg none", jwt(head("none"), good.clone(), |_| Vec::new())),
        ("garbage", "a.b.c".to_owned()),
    ];
    for (what, token) in &refused {
        let r = call(gw_port, "/hs", &[("authorization", &bearer(token))]).await;
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(
            r.headers["www-authenticate"], "Bearer error=\"invalid_token\"",
            "{what}"
        );
    }
    let r = call(gw_port, "/hs", &[]).await;
    assert_eq!(
        (r.status, &r.headers["www-authenticate"]),
        (401, &"Bearer".parse().unwrap())
    );
    // An admin passes the other branch of the expression.
    let admin = with(json!({"role": "admin", "groups": []}));
    assert_eq!(
        status(gw_port, "/hs", &[("authorization", &bearer(&admin))]).await,
        200
    );

    // RSA PKCS#1 v1.5 and PSS; the Authorization header is kept when asked.
    let claims = json!({"sub": "r", "exp": exp});
    for (alg, pad) in [
        (
            "RS256",
            &signature::RSA_PKCS1_SHA256 as &'static dyn signature::RsaEncoding,
        ),
        ("PS256", &signature::RSA_PSS_SHA256),
    ] {
        let token = jwt(head(alg), claims.clone(), |m| rsa_sign(&rsa, pad, m));
        let r = call(gw_port, "/rs", &[("authorization", &bearer(&token))]).await;
        assert_eq!(r.status, 200, "{alg}: {}", r.body);
        assert_eq!(r.json()["headers"]["authorization"], bearer(&token));
    }
    // RS512 is not among the route's algorithms, and the public key is no HMAC secret
    // (algorithm confusion).
    let rs512 = jwt(head("RS512"), claims.clone(), |m| {
        rsa_sign(&rsa, &signature::RSA_PKCS1_SHA512, m)
    });
    let confused = jwt(head("HS256"), claims.clone(), hs256(rsa_pem.as_bytes()));
    for token in [rs512, confused] {
        assert_eq!(
            status(gw_port, "/rs", &[("authorization", &bearer(&token))]).await,
            401
        );
    }

    // ECDSA P-256, Ed25519, and a JWKS file.
    let es_token = jwt(head("ES256"), claims.clone(), |m| es.sign(m));
    assert_eq!(
        status(gw_port, "/es", &[("authorization", &bearer(&es_token))]).await,
        200
    );
    let other_es = Es256::new();
    let forged = jwt(head("ES256"), claims.clone(), |m| other_es.sign(m));
    assert_eq!(
        status(gw_port, "/es", &[("authorization", &bearer(&forged))]).await,
        401
    );
    let ed_token = jwt(head("EdDSA"), claims.clone(), |m| ed.sign(m));
    assert_eq!(
        status(gw_port, "/ed", &[("authorization", &bearer(&ed_token))]).await,
        200
    );
    assert_eq!(
        status(gw_port, "/es", &[("authorization", &bearer(&ed_token))]).await,
        401
    );
    let file_token = jwt(
        json!({"alg": "EdDSA", "kid": "file-1"}),
        claims.clone(),
        |m| file_key.sign(m),
    );
    assert_eq!(
        status(gw_port, "/file", &[("authorization", &bearer(&file_token))]).await,
        200
    );
    let wrong_kid = jwt(
        json!({"alg": "EdDSA", "kid": "file-2"}),
        claims.clone(),
        |m| file_key.sign(m),
    );
    assert_eq!(
        status(gw_port, "/file", &[("authorization", &bearer(&wrong_kid))]).await,
        401
    );

    // Bad configurations: withdrawn by the control plane or rejected by the data plane.
    not_served(&sluice, gw_port, "/badexpr", "spec.rule.claimsExpression").await;
    not_served(&sluice, gw_port, "/es512", "ES512 (P-521) is not supported").await;
    not_served(
        &sluice,
        gw_port,
        "/nofile",
        "jwt.jwks_file: /nonexistent/jwks.json",
    )
    .await;
    assert_eq!(status(gw_port, "/open", &[]).await, 200);
    assert!(!sluice.log().contains("panicked"));
}

/// A JWKS endpoint whose answer the test changes; counts the requests it gets.
struct Idp {
    port: u16,
    answer: Arc<Mutex<(u16, String)>>,
    fetches: Arc<AtomicUsize>,
}

impl Idp {
    async fn start(keys: Value) -> Idp {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answer = Arc::new(Mutex::new((200, keys.to_string())));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (a, f) = (answer.clone(), fetches.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (a, f) = (a.clone(), f.clone());
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (a, f) = (a.clone(), f.clone());
                        async move {
                            assert_eq!(req.uri().path(), "/realms/test/certs");
                            f.fetch_add(1, Ordering::SeqCst);
                            let (status, body) = a.lock().unwrap().clone();
                            let mut resp = http::Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        Idp {
            port,
            answer,
            fetches,
        }
    }

    fn serve(&self, status: u16, body: Value) {
        *self.answer.lock().unwrap() = (status, body.to_string());
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_url_is_fetched_lazily_refetched_for_a_new_kid_and_kept_while_the_idp_fails() {
    let (_echo, backend) = echo("app");
    let gw_port = free_port();
    let k1 = Es256::new();
    let k2 = Ed::new();
    let k3 = Es256::new();
    let idp = Idp::start(json!({"keys": [k1.jwk("k1")]})).await;
    let dir = TempDir::new("mw-jwks");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let url = format!("http://127.0.0.1:{}/realms/test/certs", idp.port);
    let down = format!("http://127.0.0.1:{}/realms/test/certs", free_port());
    let mut manifests = middleware_yaml(
        "remote",
        "jwtAuth",
        json!({"jwksUrl": url, "forwardHeaders": {"X-Subject": "sub"}}),
    );
    manifests += &middleware_yaml("down", "jwtAuth", json!({"jwksUrl": down}));
    manifests += &middleware_yaml("bad-url", "jwtAuth", json!({"jwksUrl": "ftp://idp/keys"}));
    manifests += &route_with("remote", "/remote", backend, &["remote"]);
    manifests += &route_with("down", "/down", backend, &["down"]);
    manifests += &route_with("badurl", "/badurl", backend, &["bad-url"]);
    manifests += &route_yaml("open", "gw", "/open", backend, "");
    dir.write("mw.yaml", &manifests);
    let sluice = start(&dir, gw_port, "/remote", 401).await;
    assert_eq!(
        idp.fetches(),
        0,
        "nothing is fetched before a token needs the keys"
    );

    let claims = json!({"sub": "s-1", "exp": now() + 600});
    let t1 = jwt(json!({"alg": "ES256", "kid": "k1"}), claims.clone(), |m| {
        k1.sign(m)
    });
    let r = call(gw_port, "/remote", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["headers"]["x-subject"], "s-1");
    assert_eq!(
        status(gw_port, "/remote", &[("authorization", &bearer(&t1))]).await,
        200
    );
    assert_eq!(idp.fetches(), 1, "the key set is cached");

    // A new key at the IdP: a token naming it makes one refetch, once the refetch interval
    // since the last fetch has passed (refused until then).
    idp.serve(200, json!({"keys": [k1.jwk("k1"), k2.jwk("k2")]}));
    let t2 = jwt(json!({"alg": "EdDSA", "kid": "k2"}), claims.clone(), |m| {
        k2.sign(m)
    });
    eventually(
        "the new kid is fetched",
        Duration::from_secs(15),
        || async { status(gw_port, "/remote", &[("authorization", &bearer(&t2))]).await == 200 },
    )
    .await;
    assert_eq!(idp.fetches(), 2);
    // An unknown kid right after: refused without hammering the IdP.
    let t3 = jwt(json!({"alg": "ES256", "kid": "k3"}), claims.clone(), |m| {
        k3.sign(m)
    });
    assert_eq!(
        status(gw_port, "/remote", &[("authorization", &bearer(&t3))]).await,
        401
    );
    assert_eq!(idp.fetches(), 2, "refetches are rate limited");

    // The IdP fails: once the refetch interval passed, the unknown kid triggers a failing fetch,
    // and the last good keys keep serving.
    idp.serve(500, json!({"error": "down"}));
    eventually(
        "a refetch reaches the failing IdP",
        Duration::from_secs(15),
        || async {
            status(gw_port, "/remote", &[("authorization", &bearer(&t3))]).await == 401
                && idp.fetches() == 3
        },
    )
    .await;
    assert_eq!(
        status(gw_port, "/remote", &[("authorization", &bearer(&t1))]).await,
        200
    );
    assert_eq!(
        status(gw_port, "/remote", &[("authorization", &bearer(&t2))]).await,
        200
    );

    // Keys never obtained: 503, never through; no token is still a plain 401.
    let r = call(gw_port, "/down", &[("authorization", &bearer(&t1))]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(status(gw_port, "/down", &[]).await, 401);
    not_served(&sluice, gw_port, "/badurl", "spec.rule.jwksUrl").await;
    assert!(sluice.log().contains("JWKS fetch failed"));
}
