//! The internal API of the policy server (policy contract §1), as a pure function from a
//! request to a response over the loaded content, with the test faults applied. Bodies are
//! upstream's bytes: key order, bare integers, `{"error": "..."}` texts, 404 in plain text.

use serde::{Deserialize, Serialize};
use silk_core::policy::Policy;

use super::data::{Loaded, SecurityGroupRow, TagRegistry};

/// The internal routes, for fault scoping and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Policies,
    PoliciesLastUpdated,
    Tags,
    SecurityGroups,
    SecurityGroupsLastUpdated,
}

/// What the server does wrong on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    #[default]
    None,
    /// Listener closed: connections are refused.
    Down,
    /// 500 with upstream's database error body.
    Error500,
    /// 200 with a body that is not JSON.
    MalformedJson,
    /// `security_groups` pages after the first (requests with `from`) answer 500, as a
    /// database failing mid-pagination would.
    MissingPage,
}

/// A fault and the routes it hits (all internal routes when `routes` is empty).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl Fault {
    pub fn none() -> Fault {
        Fault::default()
    }

    /// `kind` on every internal route.
    pub fn all(kind: FaultKind) -> Fault {
        Fault {
            kind,
            routes: Vec::new(),
        }
    }

    fn hits(&self, route: Route) -> bool {
        self.routes.is_empty() || self.routes.contains(&route)
    }
}

/// A response: status, content type, body, and whether the HSTS header goes on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub json: bool,
    pub body: String,
    pub hsts: bool,
}

impl Response {
    fn ok(body: String) -> Response {
        Response {
            status: 200,
            json: true,
            body,
            hsts: true,
        }
    }

    fn error(status: u16, text: &str) -> Response {
        Response {
            status,
            json: true,
            body: format!("{{\"error\": \"{text}\"}}"),
            hsts: true,
        }
    }

    fn not_found() -> Response {
        Response {
            status: 404,
            json: false,
            body: "404 page not found\n".into(),
            hsts: false,
        }
    }

    fn method_not_allowed() -> Response {
        Response {
            status: 405,
            json: false,
            body: "Method Not Allowed\n".into(),
            hsts: false,
        }
    }
}

/// The route of `path` (`/networking/:version/internal/...`; the tags route is fixed at `v1`)
/// and the method it answers.
pub fn route_of(path: &str) -> Option<(Route, &'static str)> {
    let rest = path.strip_prefix("/networking/")?;
    let (version, tail) = rest.split_once('/')?;
    if version.is_empty() {
        return None;
    }
    match tail {
        "internal/policies" => Some((Route::Policies, "GET")),
        "internal/policies_last_updated" => Some((Route::PoliciesLastUpdated, "GET")),
        "internal/tags" if version == "v1" => Some((Route::Tags, "PUT")),
        "internal/security_groups" => Some((Route::SecurityGroups, "GET")),
        "internal/security_groups_last_updated" => Some((Route::SecurityGroupsLastUpdated, "GET")),
        _ => None,
    }
}

/// Percent-decoding of one query value, `+` as a space (Go's `url.ParseQuery`); a `%` not
/// followed by two hex digits stays as it is.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                match (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) {
                    (Some(h), Some(l)) => {
                        out.push(h * 16 + l);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of `key` in `query`, decoded.
pub fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| decode(v))
}

// Response bodies as structs: their fields serialise in upstream's key order.

#[derive(Serialize)]
struct PoliciesBody<'a> {
    total_policies: usize,
    policies: Vec<&'a Policy>,
}

#[derive(Serialize)]
struct SecurityGroupsBody<'a> {
    next: u64,
    security_groups: Vec<&'a SecurityGroupRow>,
}

#[derive(Serialize)]
struct TagOut<'a> {
    id: &'a str,
    tag: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

fn to_json(v: &impl Serialize) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => Response::ok(body),
        Err(_) => Response::error(500, "map policies as bytes failed"),
    }
}

#[derive(Deserialize)]
struct TagBody {
    #[serde(alias = "ID", alias = "Id")]
    id: String,
    #[serde(rename = "type", alias = "Type", alias = "TYPE")]
    kind: String,
}

/// One request as the router sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub body: &'a [u8],
}

/// The server's test knobs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub fault: Fault,
    /// `security_groups` page size when the request has no `limit` (upstream ignores the
    /// `per_page` its clients send, so it never pages; this makes the lab page).
    pub page_size: Option<usize>,
}

/// Answers one request. `tags` is the create-or-get registry (`PUT tags` writes to it).
pub fn respond(
    content: &Loaded,
    tags: &mut TagRegistry,
    settings: &Settings,
    req: Request<'_>,
) -> Response {
    let Request {
        method,
        path,
        query,
        body,
    } = req;
    let fault = &settings.fault;
    let Some((route, allowed)) = route_of(path) else {
        return Response::not_found();
    };
    if method != allowed {
        return Response::method_not_allowed();
    }
    if fault.hits(route) {
        match fault.kind {
            FaultKind::Error500 => {
                let text = if route == Route::Tags {
                    "database create failed"
                } else {
                    "database read failed"
                };
                return Response::error(500, text);
            }
            FaultKind::MalformedJson => {
                return Response::ok("{\"policies\": [{\"source\": ".into());
            }
            FaultKind::MissingPage
                if route == Route::SecurityGroups && query_value(query, "from").is_some() =>
            {
                return Response::error(500, "database read failed");
            }
            _ => {}
        }
    }
    match route {
        Route::Policies => policies(content, query),
        Route::PoliciesLastUpdated => Response::ok(content.policies_last_updated.to_string()),
        Route::SecurityGroupsLastUpdated => {
            Response::ok(content.security_groups_last_updated.to_string())
        }
        Route::Tags => create_tag(tags, body),
        Route::SecurityGroups => security_groups(content, query, settings.page_size),
    }
}

fn policies(content: &Loaded, query: &str) -> Response {
    let ids: Option<Vec<String>> =
        query_value(query, "id").map(|v| v.split(',').map(str::to_string).collect());
    let selected: Vec<_> = content
        .policies
        .iter()
        .filter(|p| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(&p.source.id) || ids.contains(&p.destination.id))
        })
        .collect();
    to_json(&PoliciesBody {
        total_policies: selected.len(),
        policies: selected,
    })
}

fn create_tag(tags: &mut TagRegistry, body: &[u8]) -> Response {
    let Ok(req) = serde_json::from_slice::<TagBody>(body) else {
        return Response::error(400, "failed parsing request body");
    };
    match tags.create_or_get(&req.id, &req.kind) {
        Ok(Some(tag)) => to_json(&TagOut {
            id: &req.id,
            tag: &tag,
            kind: &req.kind,
        }),
        _ => Response::error(500, "database create failed"),
    }
}

fn security_groups(content: &Loaded, query: &str, page_size: Option<usize>) -> Response {
    let from = match query_value(query, "from").filter(|v| !v.is_empty()) {
        None => 0,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => n,
            Err(_) => return Response::error(500, "invalid value for 'from' parameter"),
        },
    };
    let limit = match query_value(query, "limit").filter(|v| !v.is_empty()) {
        None => page_size.unwrap_or(0),
        Some(v) => match v.parse::<usize>() {
            Ok(n) => n,
            Err(_) => return Response::error(500, "invalid value for 'limit' parameter"),
        },
    };
    let spaces: Vec<String> = query_value(query, "space_guids")
        .map(|v| v.split(',').map(str::to_string).collect())
        .unwrap_or_default();
    let matching = content.security_groups.iter().filter(|g| {
        g.id >= from
            && (g.staging_default
                || g.running_default
                || g.staging_space_guids.iter().any(|s| spaces.contains(s))
                || g.running_space_guids.iter().any(|s| spaces.contains(s)))
    });
    let mut page: Vec<&SecurityGroupRow> = Vec::new();
    let mut next = 0;
    for g in matching {
        if limit > 0 && page.len() == limit {
            next = g.id;
            break;
        }
        page.push(g);
    }
    to_json(&SecurityGroupsBody {
        next,
        security_groups: page,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::data::{load, parse};
    use super::*;

    fn content() -> (Loaded, TagRegistry) {
        let file = parse(
            r#"{
          "policies": [
            {"source": {"id": "a"}, "destination": {"id": "b", "protocol": "tcp", "ports": {"start": 8080, "end": 8080}}},
            {"source": {"id": "c"}, "destination": {"id": "d", "protocol": "udp", "ports": {"start": 53, "end": 54}}}
          ],
          "security_groups": [
            {"guid": "g1", "name": "public", "rules": [{"protocol": "all", "destination": "0.0.0.0-9.255.255.255"}], "running_default": true},
            {"guid": "g2", "name": "s1-only", "rules": [], "running_space_guids": ["s1"]},
            {"guid": "g3", "name": "s2-staging", "rules": [], "staging_space_guids": ["s2"]},
            {"guid": "g4", "name": "s1-again", "rules": [], "running_space_guids": ["s1", "s9"]}
          ]
        }"#,
        )
        .unwrap();
        let mut tags = TagRegistry::new(2);
        let l = load(&file, None, &mut tags, 1_729_785_226_123_456_000).unwrap();
        (l, tags)
    }

    fn get(path_and_query: &str) -> Response {
        get_with(path_and_query, &Fault::none())
    }

    fn get_with(path_and_query: &str, fault: &Fault) -> Response {
        let settings = Settings {
            fault: fault.clone(),
            page_size: None,
        };
        call(&settings, "GET", path_and_query, b"")
    }

    fn call(settings: &Settings, method: &str, path_and_query: &str, body: &[u8]) -> Response {
        let (c, mut t) = content();
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let req = Request {
            method,
            path,
            query,
            body,
        };
        respond(&c, &mut t, settings, req)
    }

    #[test]
    fn policies_all_and_filtered_by_source_or_destination() {
        let all = get("/networking/v1/internal/policies");
        assert_eq!(all.status, 200);
        assert_eq!(
            all.body,
            r#"{"total_policies":2,"policies":[{"source":{"id":"a","tag":"0001"},"destination":{"id":"b","tag":"0002","protocol":"tcp","ports":{"start":8080,"end":8080}}},{"source":{"id":"c","tag":"0003"},"destination":{"id":"d","tag":"0004","protocol":"udp","ports":{"start":53,"end":54}}}]}"#
        );
        assert!(all.hsts);
        let by_dst = get("/networking/v1/internal/policies?id=x,d");
        assert!(by_dst
            .body
            .starts_with(r#"{"total_policies":1,"policies":[{"source":{"id":"c""#));
        let none = get("/networking/v0/internal/policies?id=");
        assert_eq!(none.body, r#"{"total_policies":0,"policies":[]}"#);
        assert_eq!(
            get("/networking/v1/internal/policies_last_updated").body,
            "1729785226123456000"
        );
        assert_eq!(
            get("/networking/v1/internal/security_groups_last_updated").body,
            "1729785226123456000"
        );
    }

    #[test]
    fn security_groups_filter_by_space_and_page_with_next_and_from() {
        let global = get("/networking/v1/internal/security_groups?per_page=5000");
        assert_eq!(
            global.body,
            r#"{"next":0,"security_groups":[{"guid":"g1","name":"public","rules":"[{\"protocol\":\"all\",\"destination\":\"0.0.0.0-9.255.255.255\",\"ports\":\"\",\"type\":0,\"code\":0,\"description\":\"\",\"log\":false}]","staging_default":false,"running_default":true,"staging_space_guids":[],"running_space_guids":[]}]}"#
        );
        let guids = |r: &Response| -> (u64, Vec<String>) {
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            (
                v["next"].as_u64().unwrap(),
                v["security_groups"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|g| g["guid"].as_str().unwrap().to_string())
                    .collect(),
            )
        };
        let s1 = get("/networking/v1/internal/security_groups?per_page=5000&space_guids=s1,s2");
        assert_eq!(
            guids(&s1),
            (0, vec!["g1".into(), "g2".into(), "g3".into(), "g4".into()])
        );
        // per_page is ignored (as upstream); limit pages, next is the first id left out.
        let p1 = get("/networking/v1/internal/security_groups?space_guids=s1&limit=2");
        assert_eq!(guids(&p1), (4, vec!["g1".into(), "g2".into()]));
        let p2 = get("/networking/v1/internal/security_groups?space_guids=s1&limit=2&from=4");
        assert_eq!(guids(&p2), (0, vec!["g4".into()]));
        assert_eq!(
            get("/networking/v1/internal/security_groups?from=x").body,
            r#"{"error": "invalid value for 'from' parameter"}"#
        );
        assert_eq!(
            get("/networking/v1/internal/security_groups?limit=-1").status,
            500
        );
        // The server's page size applies when the request has no limit.
        let paged = Settings {
            fault: Fault::none(),
            page_size: Some(1),
        };
        let r = call(
            &paged,
            "GET",
            "/networking/v1/internal/security_groups?space_guids=s1&per_page=5000",
            b"",
        );
        assert_eq!(guids(&r), (2, vec!["g1".into()]));
        let r = call(
            &paged,
            "GET",
            "/networking/v1/internal/security_groups?space_guids=s1&from=3",
            b"",
        );
        assert_eq!(guids(&r), (0, vec!["g4".into()]));
    }

    #[test]
    fn tags_create_or_get_in_either_key_casing() {
        let (c, mut t) = content();
        let put = |t: &mut TagRegistry, body: &str| {
            let req = Request {
                method: "PUT",
                path: "/networking/v1/internal/tags",
                query: "",
                body: body.as_bytes(),
            };
            respond(&c, t, &Settings::default(), req)
        };
        let r = put(&mut t, r#"{"ID":"INGRESS_ROUTER","Type":"router"}"#);
        assert_eq!(
            r.body,
            r#"{"id":"INGRESS_ROUTER","tag":"0005","type":"router"}"#
        );
        let r = put(&mut t, r#"{"id":"INGRESS_ROUTER","type":"router"}"#);
        assert_eq!(
            r.body,
            r#"{"id":"INGRESS_ROUTER","tag":"0005","type":"router"}"#
        );
        assert_eq!(put(&mut t, r#"{"id":"a","type":"router"}"#).status, 500);
        let bad = put(&mut t, "{");
        assert_eq!(
            (bad.status, bad.body.as_str()),
            (400, r#"{"error": "failed parsing request body"}"#)
        );
    }

    #[test]
    fn unknown_paths_404_and_wrong_methods_405() {
        let r = get("/networking/v1/internal/nothing");
        assert_eq!(
            (r.status, r.body.as_str(), r.json),
            (404, "404 page not found\n", false)
        );
        assert_eq!(get("/networking/v2/internal/tags").status, 404);
        let r = call(
            &Settings::default(),
            "POST",
            "/networking/v1/internal/policies",
            b"",
        );
        assert_eq!(r.status, 405);
    }

    #[test]
    fn faults_hit_their_routes_only() {
        let f = Fault::all(FaultKind::Error500);
        assert_eq!(
            get_with("/networking/v1/internal/policies", &f).body,
            r#"{"error": "database read failed"}"#
        );
        let f = Fault {
            kind: FaultKind::MalformedJson,
            routes: vec![Route::SecurityGroups],
        };
        let r = get_with("/networking/v1/internal/security_groups", &f);
        assert_eq!(r.status, 200);
        assert!(serde_json::from_str::<serde_json::Value>(&r.body).is_err());
        assert_eq!(get_with("/networking/v1/internal/policies", &f).status, 200);
        assert!(serde_json::from_str::<serde_json::Value>(
            &get_with("/networking/v1/internal/policies", &f).body
        )
        .is_ok());
        let f = Fault::all(FaultKind::MissingPage);
        assert_eq!(
            get_with(
                "/networking/v1/internal/security_groups?space_guids=s1&limit=2",
                &f
            )
            .status,
            200
        );
        assert_eq!(
            get_with(
                "/networking/v1/internal/security_groups?space_guids=s1&limit=2&from=4",
                &f
            )
            .status,
            500
        );
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(query_value("id=a%2Cb&x=1", "id").as_deref(), Some("a,b"));
        assert_eq!(query_value("x=1&id", "id").as_deref(), Some(""));
        assert_eq!(query_value("x=1", "id"), None);
        assert_eq!(query_value("id=100%", "id").as_deref(), Some("100%"));
    }
}
