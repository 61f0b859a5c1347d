//! Lookup and precedence tests over a whole RouteTable.

use super::*;
use http::{HeaderMap, HeaderName, Method};
use sluice_proto::config as pb;
use std::net::IpAddr;

fn direct() -> Option<pb::route::Action> {
    Some(pb::route::Action::DirectResponse(pb::DirectResponse {
        status: 200,
        ..Default::default()
    }))
}

fn route(name: &str) -> pb::Route {
    pb::Route {
        name: name.into(),
        listeners: vec!["http".into()],
        action: direct(),
        ..Default::default()
    }
}

fn path(kind: pb::path_match::Kind, value: &str) -> pb::RouteMatch {
    pb::RouteMatch {
        path: Some(pb::PathMatch {
            kind: kind as i32,
            value: value.into(),
        }),
        ..Default::default()
    }
}

fn prefix(value: &str) -> pb::RouteMatch {
    path(pb::path_match::Kind::Prefix, value)
}

fn sm(kind: pb::string_match::Kind, value: &str) -> Option<pb::StringMatch> {
    Some(pb::StringMatch {
        kind: kind as i32,
        value: value.into(),
        ..Default::default()
    })
}

fn header(name: &str, kind: pb::string_match::Kind, value: &str) -> pb::HeaderMatch {
    pb::HeaderMatch {
        name: name.into(),
        value: sm(kind, value),
    }
}

fn listener(name: &str, port: u16, hostname: &str) -> ListenerInfo {
    ListenerInfo {
        name: name.into(),
        port,
        hostname: HostPattern::parse(hostname),
    }
}

struct Table(RouteTable);

impl Table {
    fn new(routes: Vec<pb::Route>) -> Table {
        Self::with_listeners(vec![listener("http", 80, "")], routes)
    }

    fn with_listeners(listeners: Vec<ListenerInfo>, mut routes: Vec<pb::Route>) -> Table {
        routes.sort_by(|a, b| a.name.cmp(&b.name));
        let compiled: Vec<_> = routes
            .iter()
            .map(|r| Arc::new(CompiledRoute::compile(r).expect("valid route")))
            .collect();
        Table(RouteTable::build(&listeners, &compiled))
    }

    /// Name of the selected route, "405 <allow>" or "404".
    fn get(
        &self,
        port: u16,
        method: Method,
        host: &str,
        uri: &str,
        headers: &[(&str, &str)],
    ) -> String {
        let mut req = http::Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(HeaderName::from_bytes(k.as_bytes()).unwrap(), *v);
        }
        let req = req.body(()).unwrap();
        let host = NormalizedHost::new(host);
        let view = RequestView::new(&req, &host, IpAddr::from([127, 0, 0, 1]));
        let Some(index) = self.0.port(port) else {
            return "404".into();
        };
        match index.lookup(&view) {
            Lookup::Matched(e) => e.route.name.to_string(),
            Lookup::MethodNotAllowed(r) => {
                format!("405 {}", r.allow.as_ref().unwrap().to_str().unwrap())
            }
            Lookup::NotFound => "404".into(),
        }
    }

    fn at(&self, host: &str, uri: &str) -> String {
        self.get(80, Method::GET, host, uri, &[])
    }
}

#[test]
fn priority_beats_host_and_path() {
    let mut low = route("a-exact");
    low.hostnames = vec!["x.com".into()];
    low.matches = vec![path(pb::path_match::Kind::Exact, "/p")];
    let mut high = route("z-any");
    high.priority = 10;
    let t = Table::new(vec![low, high]);
    assert_eq!(t.at("x.com", "/p"), "z-any");
}

#[test]
fn host_specificity_order() {
    let mk = |name: &str, host: &str| {
        let mut r = route(name);
        if !host.is_empty() {
            r.hostnames = vec![host.into()];
        }
        r
    };
    let t = Table::new(vec![
        mk("any", ""),
        mk("wild", "*.example.com"),
        mk("deep", "*.b.example.com"),
        mk("exact", "a.b.example.com"),
    ]);
    assert_eq!(t.at("a.b.example.com", "/"), "exact");
    assert_eq!(t.at("c.b.example.com", "/"), "deep");
    assert_eq!(t.at("c.example.com", "/"), "wild");
    // The wildcard needs at least one extra label.
    assert_eq!(t.at("example.com", "/"), "any");
    assert_eq!(t.at("b.example.com", "/"), "wild");
    assert_eq!(t.at("other.org", "/"), "any");
    // Host normalisation: case, port, trailing dot.
    assert_eq!(t.at("A.B.Example.COM.:8080", "/"), "exact");
}

#[test]
fn path_precedence_and_segments() {
    use pb::path_match::Kind;
    let mut exact = route("e");
    exact.matches = vec![path(Kind::Exact, "/api/v1")];
    let mut long = route("long");
    long.matches = vec![prefix("/api/v1")];
    let mut short = route("short");
    short.matches = vec![prefix("/api")];
    let mut re = route("re");
    re.matches = vec![path(Kind::Regex, "/api/.*")];
    let mut root = route("root");
    root.matches = vec![prefix("/")];
    let t = Table::new(vec![exact, long, short, re, root]);
    assert_eq!(t.at("h", "/api/v1"), "e");
    assert_eq!(t.at("h", "/api/v1/x"), "long");
    assert_eq!(t.at("h", "/api/v1?q=1"), "e");
    assert_eq!(t.at("h", "/api/v2"), "short");
    assert_eq!(t.at("h", "/api"), "short");
    assert_eq!(t.at("h", "/api/"), "short");
    // Segment-aware: "/apix" is not under "/api".
    assert_eq!(t.at("h", "/apix"), "root");
    assert_eq!(t.at("h", "/"), "root");
}

#[test]
fn regex_beats_nothing_but_matches_anchored() {
    let mut re = route("re");
    re.matches = vec![path(pb::path_match::Kind::Regex, "/users/[0-9]+")];
    let t = Table::new(vec![re]);
    assert_eq!(t.at("h", "/users/12"), "re");
    assert_eq!(t.at("h", "/users/12/x"), "404");
    assert_eq!(t.at("h", "/v/users/12"), "404");
}

#[test]
fn method_headers_query_precedence() {
    use pb::string_match::Kind;
    let plain = route("a-plain");
    let mut method = route("b-method");
    method.matches = vec![pb::RouteMatch {
        method: "POST".into(),
        ..Default::default()
    }];
    let mut one_header = route("c-one-header");
    one_header.matches = vec![pb::RouteMatch {
        headers: vec![header("x-a", Kind::Exact, "1")],
        ..Default::default()
    }];
    let mut two_headers = route("d-two-headers");
    two_headers.matches = vec![pb::RouteMatch {
        headers: vec![
            header("x-a", Kind::Exact, "1"),
            header("X-B", Kind::Prefix, "v"),
        ],
        ..Default::default()
    }];
    let mut query = route("e-query");
    query.matches = vec![pb::RouteMatch {
        query_params: vec![pb::QueryParamMatch {
            name: "q".into(),
            value: sm(Kind::Exact, "1"),
        }],
        ..Default::default()
    }];
    let t = Table::new(vec![plain, method, one_header, two_headers, query]);
    assert_eq!(t.get(80, Method::GET, "h", "/", &[]), "a-plain");
    assert_eq!(t.get(80, Method::POST, "h", "/", &[]), "b-method");
    // Method set beats more headers.
    assert_eq!(
        t.get(80, Method::POST, "h", "/", &[("x-a", "1")]),
        "b-method"
    );
    assert_eq!(
        t.get(80, Method::GET, "h", "/", &[("x-a", "1")]),
        "c-one-header"
    );
    assert_eq!(
        t.get(80, Method::GET, "h", "/", &[("x-a", "1"), ("x-b", "vv")]),
        "d-two-headers"
    );
    // More headers beat query matches.
    assert_eq!(
        t.get(80, Method::GET, "h", "/?q=1", &[("x-a", "1")]),
        "c-one-header"
    );
    assert_eq!(t.get(80, Method::GET, "h", "/?q=1", &[]), "e-query");
    assert_eq!(t.get(80, Method::GET, "h", "/?q=2", &[]), "a-plain");
}

#[test]
fn name_breaks_ties() {
    let t = Table::new(vec![route("b"), route("a"), route("c")]);
    assert_eq!(t.at("h", "/x"), "a");
}

#[test]
fn creation_order_breaks_ties_before_the_name() {
    let aged = |name: &str, order: i64| pb::Route {
        creation_order: order,
        ..route(name)
    };
    let t = Table::new(vec![aged("a", 20), aged("b", 10), aged("c", 10)]);
    // The oldest wins; among equally old, the smaller name.
    assert_eq!(t.at("h", "/x"), "b");
    // Precedence still comes first: a longer prefix beats an older route.
    let mut young = aged("young", 99);
    young.matches = vec![prefix("/x")];
    let t = Table::new(vec![aged("old", 1), young]);
    assert_eq!(t.at("h", "/x/y"), "young");
}

#[test]
fn listener_isolation_on_a_shared_port() {
    let mut wild = route("wild");
    wild.listeners = vec!["wildcard".into()];
    let mut foo = route("foo");
    foo.listeners = vec!["foo".into()];
    foo.matches = vec![prefix("/only-foo")];
    let mut empty = route("empty");
    empty.listeners = vec!["empty".into()];
    let t = Table::with_listeners(
        vec![
            listener("wildcard", 80, "*.example.com"),
            listener("foo", 80, "foo.example.com"),
            listener("empty", 80, ""),
        ],
        vec![wild, foo, empty],
    );
    assert_eq!(t.at("bar.example.com", "/"), "wild");
    assert_eq!(t.at("foo.example.com", "/only-foo"), "foo");
    // foo.example.com belongs to the "foo" listener: the wildcard listener's route must not
    // serve it even where "foo" has no matching route, nor may the catch-all listener's.
    assert_eq!(t.at("foo.example.com", "/"), "404");
    // Hosts no hostname listener takes fall to the listener without a hostname.
    assert_eq!(t.at("other.org", "/"), "empty");
    assert_eq!(t.at("bar.example.com", "/x"), "wild");
}

#[test]
fn header_and_query_kinds_with_invert() {
    use pb::string_match::Kind;
    let mut r = route("r");
    r.matches = vec![pb::RouteMatch {
        headers: vec![
            header("x-env", Kind::Suffix, "-prod"),
            pb::HeaderMatch {
                name: "x-debug".into(),
                value: Some(pb::StringMatch {
                    kind: Kind::Exact as i32,
                    value: "1".into(),
                    invert: true,
                    ..Default::default()
                }),
            },
        ],
        query_params: vec![pb::QueryParamMatch {
            name: "region".into(),
            value: Some(pb::StringMatch {
                kind: Kind::OneOf as i32,
                values: vec!["eu".into(), "us".into()],
                ..Default::default()
            }),
        }],
        ..Default::default()
    }];
    let t = Table::new(vec![r]);
    let get = |uri: &str, h: &[(&str, &str)]| t.get(80, Method::GET, "h", uri, h);
    assert_eq!(get("/?region=eu", &[("X-Env", "eu-prod")]), "r");
    // Missing inverted header passes; present and equal fails.
    assert_eq!(
        get("/?region=eu", &[("x-env", "eu-prod"), ("x-debug", "1")]),
        "404"
    );
    assert_eq!(
        get("/?region=eu", &[("x-env", "eu-prod"), ("x-debug", "0")]),
        "r"
    );
    assert_eq!(get("/?region=asia", &[("x-env", "eu-prod")]), "404");
    assert_eq!(get("/?region=us", &[("x-env", "eu-dev")]), "404");
    // A missing header fails.
    assert_eq!(get("/?region=us", &[]), "404");
}

#[test]
fn regex_and_contains_header_kinds() {
    use pb::string_match::Kind;
    let mut r = route("r");
    r.matches = vec![pb::RouteMatch {
        headers: vec![
            header("user-agent", Kind::Regex, "Mobi|Android"),
            header("accept", Kind::Contains, "json"),
        ],
        ..Default::default()
    }];
    let t = Table::new(vec![r]);
    let get = |h: &[(&str, &str)]| t.get(80, Method::GET, "h", "/", h);
    assert_eq!(
        get(&[
            ("user-agent", "x Android y"),
            ("accept", "application/json")
        ]),
        "r"
    );
    assert_eq!(
        get(&[("user-agent", "Desktop"), ("accept", "application/json")]),
        "404"
    );
    assert_eq!(
        get(&[("user-agent", "Mobi"), ("accept", "text/html")]),
        "404"
    );
}

#[test]
fn allowed_methods_are_authoritative() {
    let mut get_only = route("a-get");
    get_only.matches = vec![prefix("/api")];
    get_only.allowed_methods = vec!["GET".into(), "HEAD".into()];
    let mut post_only = route("b-post");
    post_only.matches = vec![prefix("/")];
    post_only.allowed_methods = vec!["POST".into()];
    let t = Table::new(vec![get_only, post_only]);
    assert_eq!(t.get(80, Method::GET, "h", "/api/x", &[]), "a-get");
    // The best route refuses POST: 405, never handed to the less specific route (that would
    // let a method restriction be bypassed).
    assert_eq!(t.get(80, Method::POST, "h", "/api/x", &[]), "405 GET, HEAD");
    assert_eq!(
        t.get(80, Method::DELETE, "h", "/api/x", &[]),
        "405 GET, HEAD"
    );
    assert_eq!(t.get(80, Method::POST, "h", "/other", &[]), "b-post");
    assert_eq!(t.get(80, Method::DELETE, "h", "/other", &[]), "405 POST");
}

#[test]
fn not_found() {
    let mut r = route("r");
    r.hostnames = vec!["a.com".into()];
    let t = Table::new(vec![r]);
    assert_eq!(t.at("b.com", "/"), "404");
    assert_eq!(t.get(81, Method::GET, "a.com", "/", &[]), "404");
}

#[test]
fn listeners_sharing_a_port() {
    let mut api = route("api");
    api.listeners = vec!["api".into()];
    let mut web = route("web");
    web.listeners = vec!["web".into()];
    let mut both = route("both");
    both.listeners = vec!["api".into(), "web".into()];
    both.matches = vec![prefix("/shared")];
    let mut other_port = route("other");
    other_port.listeners = vec!["admin".into()];
    let t = Table::with_listeners(
        vec![
            listener("api", 80, "api.example.com"),
            listener("web", 80, "*.web.example.com"),
            listener("admin", 9000, ""),
        ],
        vec![api, web, both, other_port],
    );
    assert_eq!(t.at("api.example.com", "/"), "api");
    assert_eq!(t.at("www.web.example.com", "/"), "web");
    assert_eq!(t.at("www.web.example.com", "/shared/x"), "both");
    assert_eq!(t.at("api.example.com", "/shared"), "both");
    // The listener hostname restricts its routes.
    assert_eq!(t.at("web.example.com", "/"), "404");
    assert_eq!(t.at("other.example.com", "/"), "404");
    assert_eq!(t.get(9000, Method::GET, "anything", "/", &[]), "other");
    assert_eq!(
        t.get(9000, Method::GET, "api.example.com", "/shared", &[]),
        "other"
    );
}

#[test]
fn route_hostnames_intersect_listener_hostname() {
    let mut r = route("r");
    r.listeners = vec!["l".into()];
    r.hostnames = vec!["*.example.com".into()];
    let t = Table::with_listeners(vec![listener("l", 80, "a.example.com")], vec![r]);
    assert_eq!(t.at("a.example.com", "/"), "r");
    assert_eq!(t.at("b.example.com", "/"), "404");
}

#[test]
fn any_of_several_matches() {
    let mut r = route("r");
    r.matches = vec![prefix("/a"), path(pb::path_match::Kind::Exact, "/b")];
    let t = Table::new(vec![r]);
    assert_eq!(t.at("h", "/a/1"), "r");
    assert_eq!(t.at("h", "/b"), "r");
    assert_eq!(t.at("h", "/b/1"), "404");
    let _ = HeaderMap::new();
}

#[test]
fn regexes_indexed_under_their_literal_directory() {
    use pb::path_match::Kind;
    let mut items = route("items");
    items.matches = vec![path(Kind::Regex, "/items/[0-9]+")];
    let mut alt = route("alt");
    alt.matches = vec![path(Kind::Regex, "/a/x|/b/[a-z]+")];
    let mut opt = route("opt");
    opt.matches = vec![path(Kind::Regex, "/opt/?[0-9]*")];
    let t = Table::new(vec![items, alt, opt]);
    assert_eq!(t.at("h", "/items/42"), "items");
    assert_eq!(t.at("h", "/items/x"), "404");
    assert_eq!(t.at("h", "/a/x"), "alt");
    assert_eq!(t.at("h", "/b/zz"), "alt");
    assert_eq!(t.at("h", "/opt"), "opt");
    assert_eq!(t.at("h", "/opt7"), "opt");
    assert_eq!(t.at("h", "/opt/7"), "opt");
}

#[test]
fn incremental_index_matches_full_rebuild() {
    let compile = |r: pb::Route| Arc::new(CompiledRoute::compile(&r).expect("valid route"));
    let listeners = vec![listener("http", 80, ""), listener("other", 81, "")];
    let mk = |name: &str, host: &str, p: &str| {
        let mut r = route(name);
        r.hostnames = vec![host.into()];
        r.matches = vec![prefix(p)];
        compile(r)
    };
    let lookup = |t: &RouteTable, host: &str, p: &str| -> String {
        let req = http::Request::get(p).body(()).unwrap();
        let host = NormalizedHost::new(host);
        let view = RequestView::new(&req, &host, IpAddr::from([127, 0, 0, 1]));
        match t.port(80).map(|i| i.lookup(&view)) {
            Some(Lookup::Matched(e)) => e.route.name.to_string(),
            _ => "404".into(),
        }
    };
    let mut builder = IndexBuilder::default();
    let a = mk("a", "a.com", "/a");
    let b = mk("b", "b.com", "/b");
    let c = mk("c", "a.com", "/c");
    let t1 = builder.build(&listeners, &[a.clone(), b.clone(), c.clone()]);
    assert_eq!(lookup(&t1, "a.com", "/a"), "a");
    assert_eq!(lookup(&t1, "a.com", "/c"), "c");

    // Move "a" to another host, drop "b", add "d" on a.com; "c" is untouched.
    let a2 = mk("a", "z.com", "/a");
    let d = mk("d", "a.com", "/d");
    let t2 = builder.build(&listeners, &[a2.clone(), c.clone(), d.clone()]);
    let full = RouteTable::build(&listeners, &[a2, c, d]);
    for (host, p) in [
        ("a.com", "/a"),
        ("z.com", "/a"),
        ("b.com", "/b"),
        ("a.com", "/c"),
        ("a.com", "/d"),
    ] {
        assert_eq!(lookup(&t2, host, p), lookup(&full, host, p), "{host}{p}");
    }
    assert_eq!(lookup(&t2, "z.com", "/a"), "a");
    assert_eq!(lookup(&t2, "a.com", "/a"), "404");
    assert_eq!(lookup(&t2, "b.com", "/b"), "404");
    assert_eq!(lookup(&t2, "a.com", "/d"), "d");
    // The earlier table is unaffected (it is still serving in-flight requests).
    assert_eq!(lookup(&t1, "b.com", "/b"), "b");

    // A listener change rebuilds everything: routes on the removed listener disappear.
    let t3 = builder.build(&[listener("other", 81, "")], &[mk("a", "z.com", "/a")]);
    assert_eq!(lookup(&t3, "z.com", "/a"), "404");
}

#[test]
fn routes_on_missing_listeners_are_placed_when_they_appear() {
    let mut r = route("r");
    r.listeners = vec!["http".into(), "later".into()];
    let compiled = vec![Arc::new(CompiledRoute::compile(&r).expect("valid route"))];
    let mut builder = IndexBuilder::default();
    let before = Table(builder.build(&[listener("http", 80, "")], &compiled));
    assert_eq!(before.at("h", "/"), "r");
    assert!(before.0.port(81).is_none());
    let both = [listener("http", 80, ""), listener("later", 81, "")];
    let after = Table(builder.build(&both, &compiled));
    assert_eq!(after.at("h", "/"), "r");
    assert_eq!(after.get(81, Method::GET, "h", "/", &[]), "r");
}
