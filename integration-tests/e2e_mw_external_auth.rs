//! Middlewares that ask someone else, through the real `sluice standalone` on Goma manifests:
//! forwardAuth (an in-test auth service), oauth (an in-test identity provider and a
//! cookie-keeping browser) and ldap (a real slapd). Each type: a request let through, requests
//! refused, the remote side unavailable (refused, never let through), and a bad configuration
//! that withdraws its route (not served unprotected) while other routes keep serving.

mod support;

use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::slapd::{ADMIN_DN, ADMIN_PASSWORD, BASE_DN, Slapd};
use support::*;
use tokio::net::TcpListener;

type Handler = Arc<dyn Fn(http::request::Parts, Bytes) -> Response<Full<Bytes>> + Send + Sync>;

/// A small HTTP/1.1 server answering with `handler`; its port.
async fn serve(handler: Handler) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            Ok::<_, Infallible>(handler(parts, body))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
    for (k, v) in headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    resp
}

fn middleware_yaml(name: &str, ty: &str, rule: &str) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: {ty}\n  rule:\n{rule}"
    )
}

/// A port nobody listens on.
fn closed_port() -> u16 {
    free_port()
}

async fn status_of(port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(&client(), "GET", port, "app.test", path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn wait_status(port: u16, path: &str, headers: &[(&str, &str)], want: u16) {
    eventually(
        &format!("GET {path} answers {want}"),
        Duration::from_secs(10),
        || async move {
            matches!(request(&client(), "GET", port, "app.test", path, headers).await, Ok(r) if r.status == want)
        },
    )
    .await;
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn set_cookies(r: &Reply) -> Vec<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect()
}

/// `name=value` of the Set-Cookie for `name`.
fn cookie_pair(r: &Reply, name: &str) -> String {
    set_cookies(r)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")))
        .and_then(|c| c.split(';').next().map(str::to_owned))
        .unwrap_or_else(|| panic!("no Set-Cookie {name}: {:?}", r.headers))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_admits_refuses_redirects_and_fails_closed() {
    let (_echo, echo_port) = echo("app");
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = seen.clone();
    let auth = serve(Arc::new(move |parts, _| {
        log.lock().unwrap().push(parts.headers.clone());
        match parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some("Bearer good") => reply(
                200,
                &[
                    ("x-auth-user", "alice"),
                    ("x-auth-tenant", "t1"),
                    ("set-cookie", "auth_session=s1; Path=/"),
                    ("set-cookie", "other=o; Path=/"),
                ],
                "",
            ),
            Some("Bearer forbidden") => reply(403, &[("content-type", "text/plain")], "no entry\n"),
            Some("Bearer teapot") => reply(418, &[], ""),
            _ => reply(
                401,
                &[("www-authenticate", "Bearer realm=\"auth\"")],
                "who are you\n",
            ),
        }
    }))
    .await;

    let gw_port = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-forward-auth");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let rule = format!(
        "    authUrl: http://127.0.0.1:{auth}/verify\n    forwardHostHeaders: true\n    authResponseHeaders: [\"x-auth-user:X-User\"]\n    authResponseHeadersAsParams: [\"x-auth-tenant:tenant\"]\n    addAuthCookiesToResponse: [auth_session]\n"
    );
    dir.write("fa.yaml", &middleware_yaml("fa", "forwardAuth", &rule));
    dir.write(
        "fa-signin.yaml",
        &middleware_yaml(
            "fa-signin",
            "forwardAuth",
            &format!("    authUrl: http://127.0.0.1:{auth}/verify\n    authSignIn: https://login.test/sign-in\n"),
        ),
    );
    dir.write(
        "fa-down.yaml",
        &middleware_yaml(
            "fa-down",
            "forwardAuth",
            &format!("    authUrl: http://127.0.0.1:{}/verify\n", closed_port()),
        ),
    );
    dir.write(
        "open.yaml",
        &route_yaml("open", "gw", "/open", echo_port, ""),
    );
    dir.write(
        "api.yaml",
        &route_yaml("api", "gw", "/api", echo_port, "  middlewares: [fa]\n"),
    );
    dir.write(
        "signin.yaml",
        &route_yaml(
            "signin",
            "gw",
            "/signin",
            echo_port,
            "  middlewares: [fa-signin]\n",
        ),
    );
    dir.write(
        "fa-bad.yaml",
        &middleware_yaml(
            "fa-bad",
            "forwardAuth",
            &format!("    authUrl: http://127.0.0.1:{auth}/verify\n    authResponseHeaders: [\"bad header\"]\n"),
        ),
    );
    dir.write(
        "bad.yaml",
        &route_yaml("bad", "gw", "/bad", echo_port, "  middlewares: [fa-bad]\n"),
    );
    dir.write(
        "down.yaml",
        &route_yaml(
            "down",
            "gw",
            "/down",
            echo_port,
            "  middlewares: [fa-down]\n",
        ),
    );
    let (sluice, _) = standalone(dir.path(), "gw", admin).await;
    wait_status(gw_port, "/api/x", &[], 401).await;

    // Admitted: the service's verdict reaches the upstream, a spoofed X-User does not.
    let ok = status_of(
        gw_port,
        "/api/x?q=1",
        &[("authorization", "Bearer good"), ("x-user", "mallory")],
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let echoed = ok.json();
    assert_eq!(echoed["headers"]["x-user"], "alice");
    assert_eq!(echoed["path"], "/api/x?q=1&tenant=t1");
    assert_eq!(set_cookies(&ok), ["auth_session=s1; Path=/"]);
    let sent = seen.lock().unwrap().last().cloned().unwrap();
    let h = |n: &str| {
        sent.get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(h("x-forwarded-method"), "GET");
    assert_eq!(h("x-forwarded-uri"), "/api/x?q=1");
    assert_eq!(h("x-forwarded-host"), "app.test");
    assert_eq!(h("x-forwarded-proto"), "http");
    assert_eq!(h("x-original-url"), "http://app.test/api/x?q=1");
    assert_eq!(h("x-real-ip"), "127.0.0.1");
    assert_eq!(
        h("x-user"),
        "mallory",
        "all client headers are sent when none are listed"
    );

    // Refused: 401 with the service's challenge, 403 kept, anything else 401.
    let denied = status_of(gw_port, "/api/x", &[]).await;
    assert_eq!(denied.status, 401);
    assert_eq!(header(&denied, "www-authenticate"), "Bearer realm=\"auth\"");
    assert_eq!(denied.body, "who are you\n");
    let forbidden = status_of(gw_port, "/api/x", &[("authorization", "Bearer forbidden")]).await;
    assert_eq!(forbidden.status, 403);
    let other = status_of(gw_port, "/api/x", &[("authorization", "Bearer teapot")]).await;
    assert_eq!(other.status, 401);

    // 401 with a sign-in page: redirected with the original URL.
    let redirected = status_of(gw_port, "/signin/p?a=b", &[]).await;
    assert_eq!(redirected.status, 302);
    assert_eq!(
        header(&redirected, "location"),
        "https://login.test/sign-in?rd=http%3A%2F%2Fapp.test%2Fsignin%2Fp%3Fa%3Db"
    );

    // The auth service unreachable: refused, never let through.
    let down = status_of(gw_port, "/down/x", &[("authorization", "Bearer good")]).await;
    assert_eq!(down.status, 502, "{}", down.body);

    // A route whose middleware is invalid from the start is not served; the others are.
    assert_eq!(
        status_of(gw_port, "/bad/x", &[("authorization", "Bearer good")])
            .await
            .status,
        404
    );
    assert_eq!(status_of(gw_port, "/open/x", &[]).await.status, 200);
    // An invalid edit keeps the route's last good version, still protected by the last good rule.
    dir.write(
        "fa.yaml",
        &middleware_yaml(
            "fa",
            "forwardAuth",
            &format!("    authUrl: http://127.0.0.1:{auth}/verify\n    authResponseHeaders: [\"x-auth-user:bad header\"]\n"),
        ),
    );
    eventually(
        "the invalid edit is reported",
        Duration::from_secs(10),
        || async { sluice.log().contains("x-auth-user:bad header") },
    )
    .await;
    assert_eq!(status_of(gw_port, "/api/x", &[]).await.status, 401);
    let kept = status_of(gw_port, "/api/x", &[("authorization", "Bearer good")]).await;
    assert_eq!(kept.json()["headers"]["x-user"], "alice");
    let log = sluice.log();
    assert!(
        log.contains("Route default/bad") && log.contains("spec.rule.authResponseHeaders[0]"),
        "{log}"
    );
}

/// The in-test identity provider: accepts code "good-code" for client "app"/"app-secret" and
/// access token "at-1" at its user-info endpoint.
async fn identity_provider() -> (u16, Arc<Mutex<Vec<String>>>) {
    let forms: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = forms.clone();
    let port = serve(Arc::new(move |parts, body| match parts.uri.path() {
        "/token" => {
            let form = String::from_utf8_lossy(&body).into_owned();
            log.lock().unwrap().push(form.clone());
            let pairs: Vec<(String, String)> = form_urlencoded::parse(form.as_bytes())
                .into_owned()
                .collect();
            let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            if parts.method == "POST"
                && get("grant_type") == Some("authorization_code")
                && get("code") == Some("good-code")
                && get("client_id") == Some("app")
                && get("client_secret") == Some("app-secret")
            {
                reply(
                    200,
                    &[("content-type", "application/json")],
                    r#"{"access_token":"at-1","token_type":"Bearer","expires_in":600}"#,
                )
            } else {
                reply(
                    400,
                    &[("content-type", "application/json")],
                    r#"{"error":"invalid_grant"}"#,
                )
            }
        }
        "/userinfo" => match parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
        {
            Some("Bearer at-1") => reply(200, &[], r#"{"sub":"alice"}"#),
            _ => reply(401, &[], ""),
        },
        _ => reply(404, &[], ""),
    }))
    .await;
    (port, forms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_login_flow_with_signed_cookies() {
    let (_echo, echo_port) = echo("app");
    let (idp, forms) = identity_provider().await;
    let gw_port = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-oauth");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let rule = |redirect: &str| {
        format!(
            "    clientId: app\n    clientSecret: app-secret\n    redirectUrl: {redirect}\n    scopes: [openid, email]\n    endpoint:\n      authUrl: https://idp.test/authorize\n      tokenUrl: http://127.0.0.1:{idp}/token\n      userInfoUrl: http://127.0.0.1:{idp}/userinfo\n"
        )
    };
    dir.write(
        "login.yaml",
        &middleware_yaml("login", "oauth2", &rule("http://app.test/app/callback")),
    );
    dir.write(
        "open.yaml",
        &route_yaml("open", "gw", "/open", echo_port, ""),
    );
    dir.write(
        "app.yaml",
        &route_yaml("app", "gw", "/app", echo_port, "  middlewares: [login]\n"),
    );
    let (sluice, _) = standalone(dir.path(), "gw", admin).await;
    wait_status(gw_port, "/app/page", &[], 302).await;

    // 1. Unauthenticated: sent to the provider with a state bound to a signed cookie.
    let start = status_of(gw_port, "/app/page?x=1", &[]).await;
    assert_eq!(start.status, 302);
    let location = header(&start, "location").to_owned();
    let (base, query) = location.split_once('?').unwrap();
    assert_eq!(base, "https://idp.test/authorize");
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(param("client_id"), "app");
    assert_eq!(param("redirect_uri"), "http://app.test/app/callback");
    assert_eq!(param("response_type"), "code");
    assert_eq!(param("scope"), "openid email");
    let state = param("state");
    assert!(state.len() >= 20, "{state}");
    let state_cookie = cookie_pair(&start, "goma_oauth_state");
    let raw = set_cookies(&start).join("\n");
    assert!(
        raw.contains("HttpOnly")
            && raw.contains("SameSite=Lax")
            && raw.contains("Path=/app/callback"),
        "{raw}"
    );

    // 2. A callback whose state does not match the cookie is refused (CSRF).
    let forged = status_of(
        gw_port,
        "/app/callback?code=good-code&state=someone-elses",
        &[("cookie", &state_cookie)],
    )
    .await;
    assert_eq!(forged.status, 400);
    let no_cookie = status_of(
        gw_port,
        &format!("/app/callback?code=good-code&state={state}"),
        &[],
    )
    .await;
    assert_eq!(no_cookie.status, 400);
    // A code the provider refuses logs nobody in.
    let bad_code = status_of(
        gw_port,
        &format!("/app/callback?code=stolen&state={state}"),
        &[("cookie", &state_cookie)],
    )
    .await;
    assert_eq!(bad_code.status, 502);
    assert!(set_cookies(&bad_code).is_empty());

    // 3. The real callback: code exchanged, session cookie set, back to the original page.
    let done = status_of(
        gw_port,
        &format!("/app/callback?code=good-code&state={state}"),
        &[("cookie", &state_cookie)],
    )
    .await;
    assert_eq!(done.status, 302, "{}", done.body);
    assert_eq!(header(&done, "location"), "/app/page?x=1");
    let session = cookie_pair(&done, "goma_access_token");
    let raw = set_cookies(&done).join("\n");
    assert!(
        raw.contains("Path=/app;") && raw.contains("Max-Age=600"),
        "{raw}"
    );
    assert!(
        !session.contains("at-1"),
        "the provider's token stays out of the browser"
    );
    let form = forms.lock().unwrap().last().cloned().unwrap();
    assert!(
        form.contains("redirect_uri=http%3A%2F%2Fapp.test%2Fapp%2Fcallback"),
        "{form}"
    );

    // 4. Logged in: served. A tampered session is not.
    let page = status_of(gw_port, "/app/page", &[("cookie", &session)]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(page.backend(), "app");
    let (name_value, mac) = session.rsplit_once('.').unwrap();
    let mut tampered = name_value.to_owned();
    tampered.push('A');
    let tampered = format!("{tampered}.{mac}");
    assert_eq!(
        status_of(gw_port, "/app/page", &[("cookie", &tampered)])
            .await
            .status,
        302
    );
    let post = request(&client(), "POST", gw_port, "app.test", "/app/page", &[])
        .await
        .unwrap();
    assert_eq!(post.status, 401, "no redirect that would lose a body");

    // 5. Bad config: a callback outside the route withdraws it; other routes keep serving.
    dir.write(
        "login.yaml",
        &middleware_yaml(
            "login",
            "oauth2",
            &rule("http://app.test/elsewhere/callback"),
        ),
    );
    wait_status(gw_port, "/app/page", &[("cookie", &session)], 404).await;
    assert_eq!(status_of(gw_port, "/open/x", &[]).await.status, 200);
    let log = sluice.log();
    assert!(
        log.contains("Route default/app") && log.contains("spec.rule.redirectUrl"),
        "{log}"
    );
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_checks_credentials_against_a_real_slapd() {
    let people = format!("ou=people,{BASE_DN}");
    let ldap = tokio::task::spawn_blocking(move || {
        Slapd::start(&format!(
            "dn: uid=alice,{people}\nobjectClass: inetOrgPerson\nuid: alice\ncn: Alice\nsn: A\nuserPassword: alice-pw\n\n\
             dn: uid=bob,{people}\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: B\nuserPassword: bob-pw\n\n\
             dn: cn=twin1,{people}\nobjectClass: inetOrgPerson\nuid: twin\ncn: twin1\nsn: T\nuserPassword: twin-pw\n\n\
             dn: cn=twin2,{people}\nobjectClass: inetOrgPerson\nuid: twin\ncn: twin2\nsn: T\nuserPassword: twin-pw\n"
        ))
    })
    .await
    .unwrap();
    let (_echo, echo_port) = echo("app");
    let gw_port = free_port();
    let admin = free_port();
    let dir = TempDir::new("mw-ldap");
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    let rule = |port: u16| {
        format!(
            "    url: ldap://127.0.0.1:{port}\n    baseDN: {BASE_DN}\n    bindDN: {ADMIN_DN}\n    bindPass: {ADMIN_PASSWORD}\n    userFilter: (&(objectClass=inetOrgPerson)(uid=%s))\n    realm: Staff\n    forwardUsername: true\n    connPool: {{size: 2, burst: 4, ttl: 30s}}\n"
        )
    };
    dir.write(
        "dir.yaml",
        &middleware_yaml("dir", "ldapAuth", &rule(ldap.port)),
    );
    dir.write(
        "anon.yaml",
        &middleware_yaml(
            "anon",
            "ldap",
            &format!(
                "    url: ldap://127.0.0.1:{}\n    baseDN: {BASE_DN}\n",
                ldap.port
            ),
        ),
    );
    dir.write(
        "bad.yaml",
        &middleware_yaml(
            "bad",
            "ldap",
            &format!(
                "    url: ldap://127.0.0.1:{}\n    baseDN: {BASE_DN}\n    userFilter: (uid=admin)\n",
                ldap.port
            ),
        ),
    );
    dir.write(
        "bad-r.yaml",
        &route_yaml("bad-r", "gw", "/bad", echo_port, "  middlewares: [bad]\n"),
    );
    dir.write(
        "down.yaml",
        &middleware_yaml("down", "ldap", &rule(closed_port())),
    );
    // TLS to the directory: ldaps:// and StartTLS (the private CA skipped), and ldaps:// with
    // verification on, which a private CA fails.
    let tls = |name: &str, url: String, extra: &str| {
        middleware_yaml(
            name,
            "ldap",
            &format!(
                "    url: {url}\n    baseDN: {BASE_DN}\n    bindDN: {ADMIN_DN}\n    bindPass: {ADMIN_PASSWORD}\n{extra}"
            ),
        )
    };
    dir.write(
        "ldaps.yaml",
        &tls(
            "ldaps",
            format!("ldaps://127.0.0.1:{}", ldap.tls_port),
            "    insecureSkipVerify: true\n",
        ),
    );
    dir.write(
        "starttls.yaml",
        &tls(
            "starttls",
            format!("ldap://127.0.0.1:{}", ldap.port),
            "    startTLS: true\n    insecureSkipVerify: true\n",
        ),
    );
    dir.write(
        "verified.yaml",
        &tls(
            "verified",
            format!("ldaps://127.0.0.1:{}", ldap.tls_port),
            "",
        ),
    );
    for name in ["ldaps", "starttls", "verified"] {
        dir.write(
            &format!("{name}-r.yaml"),
            &route_yaml(
                &format!("{name}-r"),
                "gw",
                &format!("/{name}"),
                echo_port,
                &format!("  middlewares: [{name}]\n"),
            ),
        );
    }
    dir.write(
        "open.yaml",
        &route_yaml("open", "gw", "/open", echo_port, ""),
    );
    dir.write(
        "staff.yaml",
        &route_yaml("staff", "gw", "/staff", echo_port, "  middlewares: [dir]\n"),
    );
    dir.write(
        "anon-r.yaml",
        &route_yaml(
            "anon-r",
            "gw",
            "/anon",
            echo_port,
            "  middlewares: [anon]\n",
        ),
    );
    dir.write(
        "down-r.yaml",
        &route_yaml(
            "down-r",
            "gw",
            "/down",
            echo_port,
            "  middlewares: [down]\n",
        ),
    );
    let (sluice, _) = standalone(dir.path(), "gw", admin).await;
    wait_status(gw_port, "/staff/x", &[], 401).await;

    // Admitted, with the user name forwarded (a client-sent one is replaced); the cached and
    // pooled paths admit again.
    let alice = basic("alice", "alice-pw");
    for _ in 0..3 {
        let ok = status_of(
            gw_port,
            "/staff/x",
            &[("authorization", &alice), ("x-forwarded-user", "root")],
        )
        .await;
        assert_eq!(ok.status, 200, "{}", ok.body);
        assert_eq!(ok.json()["headers"]["x-forwarded-user"], "alice");
    }
    let bob = basic("bob", "bob-pw");
    assert_eq!(
        status_of(gw_port, "/staff/x", &[("authorization", &bob)])
            .await
            .status,
        200
    );
    // Anonymous search bind works too.
    assert_eq!(
        status_of(gw_port, "/anon/x", &[("authorization", &bob)])
            .await
            .status,
        200
    );

    let over_tls = status_of(gw_port, "/ldaps/x", &[("authorization", &bob)]).await;
    assert_eq!(over_tls.status, 200, "{}", over_tls.body);
    let upgraded = status_of(gw_port, "/starttls/x", &[("authorization", &bob)]).await;
    assert_eq!(upgraded.status, 200, "{}", upgraded.body);
    let wrong = basic("bob", "nope");
    for path in ["/ldaps/x", "/starttls/x"] {
        let r = status_of(gw_port, path, &[("authorization", &wrong)]).await;
        assert_eq!(r.status, 401, "{path}");
    }
    let untrusted = status_of(gw_port, "/verified/x", &[("authorization", &bob)]).await;
    assert_eq!(
        untrusted.status, 503,
        "an unverifiable directory is not trusted"
    );

    // Refused: no credentials, a wrong password, an empty password (an unauthenticated bind
    // would succeed), an injected filter, an unknown user, an ambiguous user.
    let none = status_of(gw_port, "/staff/x", &[]).await;
    assert_eq!(none.status, 401);
    assert_eq!(header(&none, "www-authenticate"), "Basic realm=\"Staff\"");
    for (user, password) in [
        ("alice", "wrong"),
        ("alice", ""),
        ("*", "alice-pw"),
        ("*)(uid=*", "alice-pw"),
        ("al*", "alice-pw"),
        ("nobody", "x"),
        ("twin", "twin-pw"),
    ] {
        let r = status_of(
            gw_port,
            "/staff/x",
            &[("authorization", &basic(user, password))],
        )
        .await;
        assert_eq!(
            r.status, 401,
            "{user:?}/{password:?} must be refused: {}",
            r.body
        );
    }
    // The cache does not admit a wrong password for a cached user.
    assert_eq!(
        status_of(
            gw_port,
            "/staff/x",
            &[("authorization", &basic("alice", "alice-pw2"))]
        )
        .await
        .status,
        401
    );

    // Directory unreachable: refused with 503, never let through.
    let down = status_of(gw_port, "/down/x", &[("authorization", &alice)]).await;
    assert_eq!(down.status, 503, "{}", down.body);

    // A route whose middleware is invalid from the start (a filter that ignores the user name)
    // is not served; the others are.
    assert_eq!(
        status_of(gw_port, "/bad/x", &[("authorization", &alice)])
            .await
            .status,
        404
    );
    assert_eq!(status_of(gw_port, "/open/x", &[]).await.status, 200);
    // An invalid edit keeps the route's last good version, protected by the last good rule.
    dir.write(
        "dir.yaml",
        &middleware_yaml(
            "dir",
            "ldapAuth",
            &format!(
                "    url: ldaps://127.0.0.1:{}\n    baseDN: {BASE_DN}\n    startTLS: true\n",
                ldap.tls_port
            ),
        ),
    );
    eventually(
        "the invalid edit is reported",
        Duration::from_secs(10),
        || async { sluice.log().contains("spec.rule.startTLS") },
    )
    .await;
    assert_eq!(status_of(gw_port, "/staff/x", &[]).await.status, 401);
    assert_eq!(
        status_of(gw_port, "/staff/x", &[("authorization", &alice)])
            .await
            .status,
        200
    );
    let log = sluice.log();
    assert!(
        log.contains("Route default/bad-r") && log.contains("spec.rule.userFilter"),
        "{log}"
    );
    assert!(log.contains("spec.rule.startTLS"), "{log}");
    drop(ldap);
}
