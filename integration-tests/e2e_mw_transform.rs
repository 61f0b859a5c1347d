//! Goma transformation middlewares through the real `sluice standalone` on Goma manifests:
//! addPrefix, rewriteRegex, stripQuery, redirect, redirectScheme, redirectRegex,
//! requestHeaders, responseHeaders (cookies, Cache-Control, CORS preflight) and accessLog
//! (fields in the JSON access log). Each type: what it changes, a request it must leave alone
//! or refuse, and a bad rule: its route is not served (or keeps its last good version after an
//! edit), the log names the field, and the other routes keep serving.

mod support;

use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(20);

/// A Goma Middleware manifest; `rule` is a YAML flow mapping (JSON works).
fn middleware(name: &str, ty: &str, paths: &[&str], rule: &str) -> String {
    let paths = if paths.is_empty() {
        String::new()
    } else {
        format!("  paths: [{}]\n", paths.join(", "))
    };
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Middleware\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  type: {ty}\n{paths}  rule: {rule}\n"
    )
}

/// A route at `path` to the echo backend applying `middlewares`.
fn route(name: &str, path: &str, echo_port: u16, middlewares: &[&str]) -> String {
    route_yaml(
        name,
        "gw",
        path,
        echo_port,
        &format!("  middlewares: [{}]\n", middlewares.join(", ")),
    )
}

/// `sluice standalone` on `dir` (JSON logs and access logs on), ready to serve.
async fn start(dir: &TempDir) -> Proc {
    let (xds, admin) = (free_port(), free_port());
    let p = Proc::start(
        &[
            "--log-format",
            "json",
            "standalone",
            "--access-log",
            "--config",
            dir.path().to_str().expect("utf-8 path"),
            "--xds-listen",
            &format!("127.0.0.1:{xds}"),
            "--admin-port",
            &admin.to_string(),
        ],
        &[],
    );
    wait_ready(admin).await;
    p
}

/// The upstream path and query the echo backend saw.
fn upstream_path(r: &Reply) -> String {
    r.json()["path"].as_str().unwrap_or_default().to_owned()
}

fn header<'a>(r: &'a Reply, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn send(port: u16, method: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Reply {
    request(&client(), method, port, host, path, headers)
        .await
        .unwrap_or_else(|e| panic!("{method} {host}{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_query_middlewares() {
    let (_echo, echo_port) = echo("e1");
    let port = free_port();
    let dir = TempDir::new("mw-transform-path");
    dir.write("gw.yaml", &gateway_yaml("gw", port));
    dir.write(
        "mw.yaml",
        &[
            middleware("prefix", "addPrefix", &["/users/*"], r#"{"prefix": "/v1"}"#),
            middleware(
                "rewrite",
                "rewriteRegex",
                &[],
                r#"{"pattern": "^/rw/([a-z]+)/(.*)$", "replacement": "/tenants/{{goma.headers.X-Tenant}}/$1/{{goma.query.lang}}/$2"}"#,
            ),
            middleware(
                "strip",
                "stripQuery",
                &[],
                r#"{"params": ["utm_source", "utm_medium"], "methods": ["GET"], "pathPattern": "^/sq/search"}"#,
            ),
        ]
        .join("---\n"),
    );
    dir.write(
        "routes.yaml",
        &[
            route("ap", "/ap", echo_port, &["prefix"]),
            route("rw", "/rw", echo_port, &["rewrite"]),
            route("sq", "/sq", echo_port, &["strip"]),
        ]
        .join("---\n"),
    );
    let _sluice = start(&dir).await;
    wait_ok(port, "x", "/ap/other", WAIT).await;

    // addPrefix: prepended in scope (paths are relative to the route), query kept.
    let r = send(port, "GET", "x", "/ap/users/7?x=1", &[]).await;
    assert_eq!(upstream_path(&r), "/v1/ap/users/7?x=1", "{r:?}");
    let r = send(port, "GET", "x", "/ap/other", &[]).await;
    assert_eq!(upstream_path(&r), "/ap/other", "out of scope: untouched");

    // rewriteRegex: groups, a header and a query token (values percent-encoded).
    let r = send(
        port,
        "GET",
        "x",
        "/rw/users/7?lang=en%20GB",
        &[("x-tenant", "acme corp")],
    )
    .await;
    assert_eq!(
        upstream_path(&r),
        "/tenants/acme%20corp/users/en%20GB/7?lang=en%20GB",
        "{r:?}"
    );
    let r = send(port, "GET", "x", "/rw", &[]).await;
    assert_eq!(upstream_path(&r), "/rw", "no match: untouched");
    // A token value that is a dot segment is refused, never forwarded.
    let r = send(port, "GET", "x", "/rw/users/7", &[("x-tenant", "..")]).await;
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.body.contains("\"backend\""), "{r:?}");

    // stripQuery: only the named params, others keep order and encoding.
    let r = send(
        port,
        "GET",
        "x",
        "/sq/search?q=a%20b&utm_source=x&p=1&utm_medium=y",
        &[],
    )
    .await;
    assert_eq!(upstream_path(&r), "/sq/search?q=a%20b&p=1", "{r:?}");
    let r = send(port, "POST", "x", "/sq/search?q=1&utm_source=x", &[]).await;
    assert_eq!(
        upstream_path(&r),
        "/sq/search?q=1&utm_source=x",
        "other methods: untouched"
    );
    let r = send(port, "GET", "x", "/sq/other?utm_source=x", &[]).await;
    assert_eq!(
        upstream_path(&r),
        "/sq/other?utm_source=x",
        "other paths: untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_middlewares() {
    let (_echo, echo_port) = echo("e1");
    let port = free_port();
    let dir = TempDir::new("mw-transform-redirect");
    dir.write("gw.yaml", &gateway_yaml("gw", port));
    dir.write(
        "mw.yaml",
        &[
            middleware(
                "moved",
                "redirect",
                &["/old/*"],
                r#"{"url": "https://new.example.com/landing", "permanent": true}"#,
            ),
            middleware(
                "to-https",
                "redirectScheme",
                &[],
                r#"{"scheme": "https", "port": 8443}"#,
            ),
            middleware("to-http", "redirectScheme", &[], r#"{"scheme": "http"}"#),
            middleware(
                "regex",
                "redirectRegex",
                &[],
                r#"{"pattern": "^http://([a-z.]+)(:[0-9]+)?/rx/old/(.*)$", "replacement": "https://$1/new/$3"}"#,
            ),
        ]
        .join("---\n"),
    );
    dir.write(
        "routes.yaml",
        &[
            route("rd", "/rd", echo_port, &["moved"]),
            route("rs", "/rs", echo_port, &["to-https"]),
            route("plain", "/plain", echo_port, &["to-http"]),
            route("rx", "/rx", echo_port, &["regex"]),
        ]
        .join("---\n"),
    );
    let _sluice = start(&dir).await;
    wait_ok(port, "x", "/rd/new", WAIT).await;

    let r = send(port, "GET", "x", "/rd/old/page", &[]).await;
    assert_eq!(r.status, 301, "{r:?}");
    assert_eq!(header(&r, "location"), "https://new.example.com/landing");
    let r = send(port, "GET", "x", "/rd/new", &[]).await;
    assert_eq!((r.status, r.backend()), (200, "e1".into()), "out of scope");

    // redirectScheme keeps host, path and query; on the target scheme it does nothing.
    let r = send(port, "GET", "shop.example.com", "/rs/a?b=1", &[]).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        header(&r, "location"),
        "https://shop.example.com:8443/rs/a?b=1"
    );
    let r = send(port, "GET", "shop.example.com", "/plain/a", &[]).await;
    assert_eq!(
        (r.status, r.backend()),
        (200, "e1".into()),
        "already http: no loop"
    );

    // redirectRegex over the full URL (the listener port is part of it).
    let r = send(port, "GET", "legacy.example.com", "/rx/old/a?q=1", &[]).await;
    assert_eq!(r.status, 302, "{r:?}");
    assert_eq!(
        header(&r, "location"),
        "https://legacy.example.com/new/a?q=1"
    );
    let r = send(port, "GET", "legacy.example.com", "/rx/keep", &[]).await;
    assert_eq!((r.status, r.backend()), (200, "e1".into()), "no match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_middlewares() {
    let (_echo, echo_port) = echo("e1");
    let port = free_port();
    let dir = TempDir::new("mw-transform-headers");
    dir.write("gw.yaml", &gateway_yaml("gw", port));
    dir.write(
        "mw.yaml",
        &[
            middleware(
                "req",
                "requestHeaders",
                &["/in/*"],
                r#"{"setHeaders": {"X-Env": "prod", "X-Drop": ""}, "removeHeaders": ["X-Internal"]}"#,
            ),
            middleware(
                "resp",
                "responseHeaders",
                &[],
                r#"{"setHeaders": {"X-Frame-Options": "DENY", "X-Route": "{route.name}"}, "setCookies": [{"name": "seen", "value": "1", "attributes": {"path": "/", "httpOnly": true, "sameSite": "Lax"}}], "cacheControl": "no-store", "cacheStatuses": [200], "cors": {"enabled": true, "origins": ["https://app.example.com"], "allowMethods": ["GET", "PUT"], "allowedHeaders": ["X-A"], "maxAge": 600}}"#,
            ),
        ]
        .join("---\n"),
    );
    dir.write(
        "routes.yaml",
        &[
            route("rh", "/rh", echo_port, &["req"]),
            route("resp", "/resp", echo_port, &["resp"]),
        ]
        .join("---\n"),
    );
    let _sluice = start(&dir).await;
    wait_ok(port, "x", "/rh/out", WAIT).await;

    let sent = [
        ("x-env", "dev"),
        ("x-drop", "1"),
        ("x-internal", "secret"),
        ("x-keep", "k"),
    ];
    let r = send(port, "GET", "x", "/rh/in/a", &sent).await;
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-env"], "prod", "{r:?}");
    assert!(seen.get("x-drop").is_none(), "{r:?}");
    assert!(seen.get("x-internal").is_none(), "{r:?}");
    assert_eq!(seen["x-keep"], "k");
    let r = send(port, "GET", "x", "/rh/out", &sent).await;
    let seen = &r.json()["headers"];
    assert_eq!(
        (&seen["x-env"], &seen["x-internal"]),
        (&"dev".into(), &"secret".into()),
        "out of scope: untouched"
    );

    let origin = ("origin", "https://app.example.com");
    let r = send(port, "GET", "x", "/resp/a", &[origin]).await;
    assert_eq!(r.backend(), "e1");
    assert_eq!(header(&r, "x-frame-options"), "DENY");
    assert_eq!(header(&r, "x-route"), "resp", "template expanded");
    assert_eq!(
        header(&r, "set-cookie"),
        "seen=1; Path=/; HttpOnly; SameSite=Lax"
    );
    assert_eq!(header(&r, "cache-control"), "no-store");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );
    // The preflight is answered by the gateway.
    let preflight = [origin, ("access-control-request-method", "PUT")];
    let r = send(port, "OPTIONS", "x", "/resp/a", &preflight).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.is_empty(), "not forwarded: {r:?}");
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert_eq!(header(&r, "access-control-allow-methods"), "GET, PUT");
    assert_eq!(header(&r, "access-control-max-age"), "600");
    // Another origin gets no CORS permission, on preflights or responses.
    let evil = ("origin", "https://evil.example");
    let r = send(
        port,
        "OPTIONS",
        "x",
        "/resp/a",
        &[evil, ("access-control-request-method", "PUT")],
    )
    .await;
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "{r:?}"
    );
    let r = send(port, "GET", "x", "/resp/a", &[evil]).await;
    assert_eq!(r.backend(), "e1");
    assert!(
        r.headers.get("access-control-allow-origin").is_none(),
        "{r:?}"
    );
    assert_eq!(header(&r, "x-frame-options"), "DENY");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_fields() {
    let (_echo, echo_port) = echo("e1");
    let port = free_port();
    let dir = TempDir::new("mw-transform-log");
    dir.write("gw.yaml", &gateway_yaml("gw", port));
    dir.write(
        "mw.yaml",
        &middleware(
            "fields",
            "accessLog",
            &[],
            r#"{"headers": ["X-User"], "query": ["page", "absent"], "cookies": ["session"]}"#,
        ),
    );
    dir.write(
        "routes.yaml",
        &[
            route("logged", "/logged", echo_port, &["fields"]),
            route_yaml("plain", "gw", "/plain", echo_port, ""),
        ]
        .join("---\n"),
    );
    let sluice = start(&dir).await;
    wait_ok(port, "x", "/plain", WAIT).await;
    let secret_headers = [
        ("x-user", "alice"),
        ("authorization", "Bearer topsecret"),
        ("cookie", "session=abc; other=zzz-cookie"),
    ];
    let r = send(
        port,
        "GET",
        "x",
        "/logged/x?page=2&token=qqq",
        &secret_headers,
    )
    .await;
    assert_eq!(r.status, 200);
    let r = send(port, "GET", "x", "/plain/x", &secret_headers).await;
    assert_eq!(r.status, 200);

    let access = |path: &'static str| {
        let log = sluice.log();
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["target"] == "access" && v["fields"]["path"] == path)
    };
    eventually("both access lines", WAIT, || {
        let done = access("/logged/x").is_some() && access("/plain/x").is_some();
        async move { done }
    })
    .await;
    let logged = access("/logged/x").unwrap();
    let fields = &logged["fields"];
    assert_eq!(fields["header.x-user"], "alice", "{logged}");
    assert_eq!(fields["query.page"], "2");
    assert_eq!(fields["query.absent"], "-");
    assert_eq!(fields["cookie.session"], "abc");
    assert_eq!(fields["status"], 200);
    assert_eq!(fields["route"], "route/default/logged");
    // Only what is named: no Authorization, no other cookie, no other query parameter.
    let text = logged.to_string();
    for secret in ["topsecret", "zzz-cookie", "qqq"] {
        assert!(!text.contains(secret), "{secret} logged: {text}");
    }
    // A route without the middleware logs the usual fields only.
    let plain = access("/plain/x").unwrap();
    let names: Vec<&String> = plain["fields"].as_object().unwrap().keys().collect();
    assert!(
        !names
            .iter()
            .any(|k| k.starts_with("header.") || k.starts_with("cookie.")),
        "{plain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rules_are_not_served_and_other_routes_keep_serving() {
    let (_echo, echo_port) = echo("e1");
    let port = free_port();
    let dir = TempDir::new("mw-transform-bad");
    dir.write("gw.yaml", &gateway_yaml("gw", port));
    // (type, bad rule, the field the error names)
    let bad = [
        ("addPrefix", r#"{"prefix": "v1"}"#, "spec.rule.prefix"),
        (
            "rewriteRegex",
            r#"{"pattern": "^/", "replacement": "/{{goma.cookie.a}}"}"#,
            "spec.rule.replacement",
        ),
        (
            "stripQuery",
            r#"{"params": ["a"], "methods": ["G T"]}"#,
            "spec.rule.methods[0]",
        ),
        ("redirect", r#"{"url": "https://a b"}"#, "spec.rule.url"),
        ("redirectScheme", r#"{"scheme": "ftp"}"#, "spec.rule.scheme"),
        (
            "redirectRegex",
            r#"{"pattern": "^/", "replacement": "https://x/\u00e9"}"#,
            "spec.rule.replacement",
        ),
        (
            "requestHeaders",
            r#"{"setHeaders": {"Host": "evil.example"}}"#,
            "spec.rule.setHeaders.Host",
        ),
        (
            "responseHeaders",
            r#"{"setCookies": [{"name": "a", "value": "b c"}]}"#,
            "spec.rule.setCookies[0].value",
        ),
        ("accessLog", r#"{"query": [""]}"#, "spec.rule.query[0]"),
    ];
    let mut middlewares = vec![middleware("good", "addPrefix", &[], r#"{"prefix": "/v1"}"#)];
    let mut routes = vec![
        route_yaml("ok", "gw", "/ok", echo_port, ""),
        route("live", "/live", echo_port, &["good"]),
    ];
    for (i, (ty, rule, _)) in bad.iter().enumerate() {
        middlewares.push(middleware(&format!("bad{i}"), ty, &[], rule));
        routes.push(route(
            &format!("r{i}"),
            &format!("/r{i}"),
            echo_port,
            &[&format!("bad{i}")],
        ));
    }
    dir.write("mw.yaml", &middlewares.join("---\n"));
    dir.write("routes.yaml", &routes.join("---\n"));
    let sluice = start(&dir).await;
    wait_ok(port, "x", "/ok", WAIT).await;
    let r = send(port, "GET", "x", "/live/a", &[]).await;
    assert_eq!(upstream_path(&r), "/v1/live/a");

    for (i, (ty, _, field)) in bad.iter().enumerate() {
        let r = send(port, "GET", "x", &format!("/r{i}/a"), &[]).await;
        assert_eq!(
            r.status, 404,
            "{ty}: a route with a bad {ty} is not served: {r:?}"
        );
        let log = sluice.log();
        assert!(
            log.lines().any(|l| l.contains(&format!(
                "Route default/r{i}: spec.middlewares[0]: Middleware default/bad{i}"
            ))),
            "{ty}: the route's error is not logged:\n{log}"
        );
        // The reason names the Middleware's field: in the route's error, or where the manifest
        // was refused (a rule of the wrong shape never becomes a Middleware).
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("Middleware default/bad{i}"))
                    && l.contains(&format!("{field}: "))),
            "{ty}: {field} not named:\n{log}"
        );
    }
    assert_eq!(send(port, "GET", "x", "/ok", &[]).await.status, 200);

    // A middleware edited into a bad rule leaves its routes on their last good version (the
    // old rule still applies, nothing is served without it), and the others keep serving.
    dir.write(
        "mw.yaml",
        &middlewares[1..]
            .iter()
            .cloned()
            .chain([middleware(
                "good",
                "addPrefix",
                &[],
                r#"{"prefix": "no-slash"}"#,
            )])
            .collect::<Vec<_>>()
            .join("---\n"),
    );
    eventually("the bad edit is reported", WAIT, || {
        let seen = sluice
            .log()
            .contains("Middleware default/good cannot be applied (spec.rule.prefix: ");
        async move { seen }
    })
    .await;
    let r = send(port, "GET", "x", "/live/a", &[]).await;
    assert_eq!(upstream_path(&r), "/v1/live/a", "last good version: {r:?}");
    assert_eq!(send(port, "GET", "x", "/ok", &[]).await.status, 200);
}
