//! Unit tests: templates, path patterns, config validation, composition.

use serde_json::{json, Value};

use crate::compose::{compose, Outcome, PartResult, DEGRADED_HEADER};
use crate::config;
use crate::template::{PathPattern, Template, Values};

fn settings(v: Value) -> config::Settings {
    match config::parse(&v.to_string()) {
        Ok(s) => s,
        Err(e) => panic!("config should be valid: {e}"),
    }
}

fn three_parts() -> config::Settings {
    settings(json!({
        "parts": [
            { "name": "product", "service": "product-info", "path": "/products/{query.productid}" },
            { "name": "recommendations", "service": "recs", "path": "/recs/{query.productid}",
              "required": false, "default": [] },
            { "name": "price", "service": "price", "path": "/prices/{query.productid}",
              "required": false, "cache_max_age_secs": 60 },
        ]
    }))
}

#[test]
fn templates_fill_and_encode() {
    let names = vec!["id".to_string()];
    let t = Template::parse("/p/{path.id}/r?x={query.q}&u={header.X-User}", &names).expect("ok");
    let mut v = Values::default();
    v.path.insert("id".into(), "42".into());
    v.query.insert("q".into(), "a b/../?&=#".into());
    v.headers.insert("x-user".into(), "alice".into());
    assert_eq!(
        t.render(&v).expect("filled"),
        "/p/42/r?x=a%20b%2F..%2F%3F%26%3D%23&u=alice"
    );
    v.path.insert("id".into(), "..".into());
    assert!(t
        .render(&v)
        .expect_err("dot segment")
        .contains("path segment `id`"));
    v.path.remove("id");
    assert_eq!(
        t.render(&v).expect_err("missing"),
        "missing path segment `id`"
    );

    for bad in [
        "nope",
        "/a/{query}",
        "/a/{x.y}",
        "/a/{query.q",
        "/a/}",
        "/a/{path.id}",
        "/a/{query.}",
    ] {
        assert!(Template::parse(bad, &[]).is_err(), "{bad}");
    }
}

#[test]
fn path_patterns() {
    let p = PathPattern::parse("/productdetails/{id}/v{x}").err();
    assert!(p.is_some_and(|e| e.contains("whole segment")));
    let p = PathPattern::parse("/productdetails/{id}").expect("ok");
    let m = p.matches("/productdetails/4%202").expect("match");
    assert_eq!(m.get("id").map(String::as_str), Some("4 2"));
    assert!(p.matches("/productdetails").is_none());
    assert!(p.matches("/productdetails/").is_none());
    assert!(p.matches("/other/42").is_none());
    assert!(p.matches("/productdetails/42/more").is_none());
    assert!(PathPattern::parse("/a/{id}/{id}").is_err());
}

#[test]
fn config_validation() {
    let s = three_parts();
    assert_eq!(s.parts.len(), 3);
    assert!(s.parts[0].required);
    assert_eq!(s.parts[0].method, "GET");
    assert_eq!(s.parts[2].cache_max_age_ms, Some(60_000));
    assert_eq!(s.degraded_key.as_deref(), Some("_degraded"));

    let err = |v: Value| config::parse(&v.to_string()).expect_err("rejected");
    assert!(err(json!({ "parts": [] })).contains("at least one"));
    let p = |extra: Value| {
        let mut part = json!({ "name": "a", "service": "s", "path": "/x" });
        for (k, v) in extra.as_object().expect("object") {
            part[k] = v.clone();
        }
        json!({ "parts": [part] })
    };
    assert!(err(p(json!({ "default": 1 }))).contains("cannot be set together"));
    assert!(err(p(json!({ "name": "a b" }))).contains("parts[0].name"));
    assert!(err(p(json!({ "path": "x" }))).contains("parts[0].path"));
    assert!(err(p(json!({ "method": "G T" }))).contains("parts[0].method"));
    assert!(err(p(json!({ "path": "/x/{path.id}" }))).contains("known: none"));
    assert!(err(p(json!({ "oops": 1 }))).contains("unknown field"));
    let twice = json!({ "parts": [
        { "name": "a", "service": "s", "path": "/x" }, { "name": "a", "service": "t", "path": "/y" } ] });
    assert!(err(twice).contains("used twice"));
}

/// The parts of `s` paired with `outcomes`, in order.
fn results(s: &config::Settings, outcomes: Vec<Outcome>) -> Vec<PartResult<'_>> {
    s.parts
        .iter()
        .zip(outcomes)
        .map(|(part, outcome)| PartResult { part, outcome })
        .collect()
}

fn header(resp: &gatehouse_sdk::FullResponse, name: &str) -> Option<String> {
    resp.headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn compose_all_live() {
    let s = three_parts();
    let results = vec![
        PartResult {
            part: &s.parts[0],
            outcome: Outcome::Live(json!({ "id": 42 })),
        },
        PartResult {
            part: &s.parts[1],
            outcome: Outcome::Live(json!([1, 2])),
        },
        PartResult {
            part: &s.parts[2],
            outcome: Outcome::Live(json!({ "amount": 9.5 })),
        },
    ];
    let resp = compose(&s, results);
    assert_eq!(resp.status, 200);
    let doc: Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(
        doc,
        json!({ "product": { "id": 42 }, "recommendations": [1, 2], "price": { "amount": 9.5 } })
    );
    assert_eq!(header(&resp, DEGRADED_HEADER), None);
}

#[test]
fn compose_degraded_and_failed() {
    let s = three_parts();
    let results = vec![
        PartResult {
            part: &s.parts[0],
            outcome: Outcome::Live(json!({ "id": 42 })),
        },
        PartResult {
            part: &s.parts[1],
            outcome: Outcome::Failed("timed out".into()),
        },
        PartResult {
            part: &s.parts[2],
            outcome: Outcome::Cached {
                value: json!({ "amount": 9 }),
                age_secs: 3,
                why: "service answered 503".into(),
            },
        },
    ];
    let resp = compose(&s, results);
    assert_eq!(resp.status, 200);
    let doc: Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(doc["recommendations"], json!([]));
    assert_eq!(doc["price"], json!({ "amount": 9 }));
    assert_eq!(doc["_degraded"]["price"]["source"], "cache");
    assert_eq!(doc["_degraded"]["price"]["age_secs"], 3);
    assert_eq!(doc["_degraded"]["recommendations"]["source"], "default");
    assert_eq!(
        header(&resp, DEGRADED_HEADER).as_deref(),
        Some("price=cache, recommendations=default")
    );

    let results = vec![
        PartResult {
            part: &s.parts[0],
            outcome: Outcome::Failed("service answered 503".into()),
        },
        PartResult {
            part: &s.parts[1],
            outcome: Outcome::Live(json!([])),
        },
        PartResult {
            part: &s.parts[2],
            outcome: Outcome::Failed("connect refused".into()),
        },
    ];
    let resp = compose(&s, results);
    assert_eq!(resp.status, 502);
    let doc: Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(doc["error"], "aggregate_part_failed");
    assert_eq!(doc["part"], "product");
    assert_eq!(doc["failed"][0]["service"], "product-info");
    assert_eq!(
        doc["failed"].as_array().map(Vec::len),
        Some(1),
        "optional parts are not listed"
    );
}

#[test]
fn cache_flag_marks_the_part_object_live_or_cached() {
    let s = settings(json!({
        "parts": [
            { "name": "price", "service": "price", "path": "/prices/{query.productid}",
              "required": false, "cache_max_age_secs": 60, "cache_flag": "cached" },
            { "name": "tags", "service": "tags", "path": "/tags",
              "required": false, "cache_max_age_secs": 60, "cache_flag": "cached" },
        ]
    }));
    assert_eq!(s.parts[0].cache_flag.as_deref(), Some("cached"));

    let live = compose(
        &s,
        results(
            &s,
            vec![
                // The service's own `cached` key is overwritten: the gateway knows better.
                Outcome::Live(json!({ "amount": 9.5, "cached": true })),
                Outcome::Live(json!(["a"])),
            ],
        ),
    );
    let doc: Value = serde_json::from_slice(&live.body).expect("json");
    assert_eq!(doc["price"], json!({ "amount": 9.5, "cached": false }));
    assert_eq!(
        doc["tags"],
        json!(["a"]),
        "a non-object body is left as it is"
    );

    let stale = compose(
        &s,
        results(
            &s,
            vec![
                Outcome::Cached {
                    value: json!({ "amount": 9.5 }),
                    age_secs: 12,
                    why: "timed out".into(),
                },
                Outcome::Cached {
                    value: json!(["a"]),
                    age_secs: 12,
                    why: "timed out".into(),
                },
            ],
        ),
    );
    assert_eq!(stale.status, 200);
    let doc: Value = serde_json::from_slice(&stale.body).expect("json");
    assert_eq!(doc["price"], json!({ "amount": 9.5, "cached": true }));
    assert_eq!(doc["tags"], json!(["a"]));
    assert_eq!(doc["_degraded"]["price"]["source"], "cache");
    assert_eq!(doc["_degraded"]["price"]["age_secs"], 12);

    // A failed part with nothing cached gets its default untouched.
    let failed = compose(&s, results(&s, vec![Outcome::Failed("timed out".into())]));
    let doc: Value = serde_json::from_slice(&failed.body).expect("json");
    assert_eq!(doc["price"], Value::Null);
}

#[test]
fn cache_flag_needs_a_cache() {
    let err =
        |part: Value| config::parse(&json!({ "parts": [part] }).to_string()).expect_err("rejected");
    let e = err(
        json!({ "name": "p", "service": "s", "path": "/x", "required": false,
                        "cache_flag": "cached" }),
    );
    assert!(
        e.contains("parts[0]: `cache_flag` needs `cache_max_age_secs`"),
        "{e}"
    );
    let e = err(
        json!({ "name": "p", "service": "s", "path": "/x", "required": false,
                        "cache_max_age_secs": 5, "cache_flag": "" }),
    );
    assert!(e.contains("parts[0].cache_flag: must not be empty"), "{e}");
}

#[test]
fn relayed_status_answers_the_whole() {
    let s = settings(json!({
        "parts": [
            { "name": "product", "service": "product-info", "path": "/products/{query.productid}",
              "relay_statuses": [404] },
            { "name": "price", "service": "price", "path": "/prices/{query.productid}",
              "required": false },
        ]
    }));
    assert_eq!(s.parts[0].relay_statuses, vec![404]);
    let resp = compose(
        &s,
        results(
            &s,
            vec![
                Outcome::Relayed {
                    status: 404,
                    body: br#"{"error":"not_found","message":"no product 9"}"#.to_vec(),
                },
                Outcome::Failed("service answered 404".into()),
            ],
        ),
    );
    assert_eq!(resp.status, 404);
    assert_eq!(
        header(&resp, "content-type").as_deref(),
        Some("application/json")
    );
    let doc: Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(
        doc,
        json!({ "error": "not_found", "message": "no product 9" })
    );

    // A body that is not JSON still gives the client JSON.
    let resp = compose(
        &s,
        results(
            &s,
            vec![Outcome::Relayed {
                status: 404,
                body: b"not here".to_vec(),
            }],
        ),
    );
    let doc: Value = serde_json::from_slice(&resp.body).expect("json");
    assert_eq!(doc["error"], "part_status");
    assert_eq!(doc["part"], "product");
    assert_eq!(doc["status"], 404);

    let err =
        |part: Value| config::parse(&json!({ "parts": [part] }).to_string()).expect_err("rejected");
    let e = err(json!({ "name": "p", "service": "s", "path": "/x", "relay_statuses": [503] }));
    assert!(
        e.contains("parts[0].relay_statuses: 503 is not a 4xx status"),
        "{e}"
    );
    let e = err(
        json!({ "name": "p", "service": "s", "path": "/x", "required": false,
                        "relay_statuses": [404] }),
    );
    assert!(
        e.contains("`relay_statuses` needs `required = true`"),
        "{e}"
    );
}
