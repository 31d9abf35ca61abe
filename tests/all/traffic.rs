//! Route-level traffic control (docs/traffic.md): weighted splits, sticky splits, A/B by
//! cookie, and blue-green through the admin API, against real origins that count their hits.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gatehouse::config;
use gatehouse::gateway::{self, RunningGateway};

use crate::plugins::guests::TempDir;
use crate::support::{self, get, origin, Got};

/// An origin that answers its name and counts the requests it served.
async fn counting(name: &'static str) -> (origin::Origin, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    let o = origin::start(move |_req| {
        counter.fetch_add(1, Ordering::Relaxed);
        async move { origin::text(200, name) }
    })
    .await;
    (o, hits)
}

fn services(list: &[(&str, std::net::SocketAddr)]) -> String {
    list.iter()
        .map(|(name, addr)| format!("[[services]]\nname = \"{name}\"\nendpoints = [\"{addr}\"]\n"))
        .collect()
}

async fn admin(gw: &RunningGateway, method: &str, path: &str, body: &str) -> Got {
    support::send(
        &support::http1(),
        method,
        &format!("http://{}{path}", gw.admin_addr),
        &[
            ("authorization", "Bearer s3cret"),
            ("content-type", "application/json"),
        ],
        Bytes::from(body.to_owned()),
    )
    .await
}

/// `n` GETs of `url` from `tasks` concurrent clients; returns how many did not get a 200.
async fn load(url: String, n: usize, tasks: usize) -> usize {
    let failed = Arc::new(AtomicUsize::new(0));
    let left = Arc::new(AtomicUsize::new(n));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (url, failed, left) = (url.clone(), Arc::clone(&failed), Arc::clone(&left));
        handles.push(tokio::spawn(async move {
            let client = support::http1();
            while left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |l| l.checked_sub(1))
                .is_ok()
            {
                let got = support::send(&client, "GET", &url, &[], Bytes::new()).await;
                if got.status != 200 {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for h in handles {
        h.await.expect("load task");
    }
    failed.load(Ordering::SeqCst)
}

#[tokio::test]
async fn a_weighted_split_holds_its_share_over_10000_requests() {
    let (blue, blue_hits) = counting("blue").await;
    let (green, green_hits) = counting("green").await;
    let gw = support::gateway(&format!(
        "{}[[routes]]\nname = \"shop\"\n\
         [[routes.split]]\nservice = \"blue\"\nweight = 95\n\
         [[routes.split]]\nservice = \"green\"\nweight = 5\n",
        services(&[("blue", blue.addr), ("green", green.addr)])
    ))
    .await;
    let failed = load(format!("http://{}/item", gw.public_addr), 10_000, 8).await;
    assert_eq!(failed, 0, "no request fails");
    let (b, g) = (
        blue_hits.load(Ordering::SeqCst),
        green_hits.load(Ordering::SeqCst),
    );
    assert_eq!(b + g, 10_000, "every request reached one origin");
    let share = g as f64 / 10_000.0;
    // 5 % ± 1 point: the binomial's standard deviation here is 0.22 points.
    assert!((0.04..0.06).contains(&share), "green got {g} of 10000");

    let metrics = get(&format!("http://{}/metrics", gw.admin_addr), &[])
        .await
        .text();
    assert!(
        metrics.contains(&format!(
            r#"gatehouse_split_requests_total{{route="shop",service="green"}} {g}"#
        )),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_sticky_split_keeps_each_user_on_one_version() {
    let (blue, _) = counting("blue").await;
    let (green, _) = counting("green").await;
    let gw = support::gateway(&format!(
        "{}[[routes]]\nname = \"shop\"\nsticky = \"cookie:user\"\n\
         [[routes.split]]\nservice = \"blue\"\nweight = 1\n\
         [[routes.split]]\nservice = \"green\"\nweight = 1\n",
        services(&[("blue", blue.addr), ("green", green.addr)])
    ))
    .await;
    let url = format!("http://{}/", gw.public_addr);
    let client = support::http1();
    let mut on_green = 0;
    for user in 0..200 {
        let cookie = format!("theme=dark; user=u{user}");
        let mut seen = Vec::new();
        for _ in 0..5 {
            let got =
                support::send(&client, "GET", &url, &[("cookie", &cookie)], Bytes::new()).await;
            seen.push(got.text());
        }
        assert!(
            seen.iter().all(|s| *s == seen[0]),
            "user u{user} moved: {seen:?}"
        );
        on_green += usize::from(seen[0] == "green");
    }
    assert!(
        (70..130).contains(&on_green),
        "{on_green} of 200 users on green"
    );

    // Without the cookie: the weights still hold, at random.
    let mut keyless_green = 0;
    for _ in 0..200 {
        keyless_green += usize::from(get(&url, &[]).await.text() == "green");
    }
    assert!(
        (60..140).contains(&keyless_green),
        "{keyless_green} of 200 keyless on green"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_cookie_predicate_routes_the_b_group() {
    let (a, _) = counting("a").await;
    let (b, _) = counting("b").await;
    let gw = support::gateway(&format!(
        "{}[[routes]]\nname = \"variant-a\"\nservice = \"a\"\nmatch = {{ prefix = \"/shop\" }}\n\
         [[routes]]\nname = \"variant-b\"\nservice = \"b\"\n\
         match = {{ prefix = \"/shop\", cookies = {{ ab = \"b\" }} }}\n\
         [[routes]]\nname = \"beta-any\"\nservice = \"b\"\n\
         match = {{ prefix = \"/beta\", cookies = {{ beta = \"*\" }} }}\n\
         [[routes]]\nname = \"beta-header\"\nservice = \"a\"\n\
         match = {{ prefix = \"/beta\", headers = {{ x-beta = \"1\" }}, cookies = {{ beta = \"*\" }} }}\n",
        services(&[("a", a.addr), ("b", b.addr)])
    ))
    .await;
    let url = |p: &str| format!("http://{}{p}", gw.public_addr);
    let at = async |p: &str, headers: &[(&str, &str)]| {
        let got = get(&url(p), headers).await;
        if got.status == 200 {
            got.text()
        } else {
            got.status.to_string()
        }
    };
    // The cookie route comes second in the file and wins by having one more predicate.
    assert_eq!(at("/shop", &[("cookie", "ab=b")]).await, "b");
    assert_eq!(at("/shop", &[("cookie", "x=1; ab=b")]).await, "b");
    assert_eq!(
        at("/shop", &[("cookie", "x=1"), ("cookie", "ab=b")]).await,
        "b"
    );
    assert_eq!(at("/shop", &[("cookie", "ab=a")]).await, "a");
    assert_eq!(
        at("/shop", &[("cookie", "ab=bb")]).await,
        "a",
        "exact value"
    );
    assert_eq!(at("/shop", &[]).await, "a");
    // "*": present with any value; two predicates beat one.
    assert_eq!(at("/beta", &[("cookie", "beta=")]).await, "b");
    assert_eq!(
        at("/beta", &[("cookie", "beta=yes"), ("x-beta", "1")]).await,
        "a"
    );
    assert_eq!(at("/beta", &[]).await, "404");
    gw.shutdown().await;
}

const TOKEN: &str = "[admin]\ntoken = \"s3cret\"\n";

#[tokio::test]
async fn the_admin_api_reads_and_sets_a_split_and_validates_like_config() {
    let (blue, _) = counting("blue").await;
    let (green, _) = counting("green").await;
    let gw = support::gateway(&format!(
        "{TOKEN}{}[[routes]]\nname = \"shop\"\nservice = \"blue\"\n",
        services(&[("blue", blue.addr), ("green", green.addr)])
    ))
    .await;
    let path = "/admin/routes/shop/split";
    let unauthorized = get(&format!("http://{}{path}", gw.admin_addr), &[]).await;
    assert_eq!(unauthorized.status, 401);

    let now = admin(&gw, "GET", path, "").await;
    assert_eq!(now.status, 200, "{}", now.text());
    assert_eq!(
        now.json()["split"],
        serde_json::json!([{ "service": "blue", "weight": 1 }])
    );
    assert_eq!(now.json()["set_at_run_time"], false);

    let bad = |body: &'static str, field: &'static str| {
        let gw = &gw;
        async move {
            let got = admin(gw, "PUT", path, body).await;
            assert_eq!(got.status, 400, "{body}: {}", got.text());
            assert_eq!(got.json()["error"], "bad_split", "{body}");
            assert_eq!(got.json()["field"], field, "{body}: {}", got.text());
        }
    };
    bad(
        r#"{"split":[{"service":"nope","weight":1}]}"#,
        "split[0].service",
    )
    .await;
    bad(
        r#"{"split":[{"service":"blue","weight":0}]}"#,
        "split[0].weight",
    )
    .await;
    bad(
        r#"{"split":[{"service":"blue","weight":9},{"service":"green","weight":-1}]}"#,
        "split[1].weight",
    )
    .await;
    bad(
        r#"{"split":[{"service":"blue","weight":1.5}]}"#,
        "split[0].weight",
    )
    .await;
    bad(r#"{"split":[]}"#, "split").await;
    bad(
        r#"{"split":[{"service":"blue","weight":1},{"service":"blue","weight":1}]}"#,
        "split[1].service",
    )
    .await;
    bad(
        r#"{"split":[{"service":"blue","weight":1}],"sticky":"body"}"#,
        "sticky",
    )
    .await;
    bad(
        r#"{"split":[{"service":"blue","weight":1,"zone":"a"}]}"#,
        "split[0].zone",
    )
    .await;
    let missing = admin(&gw, "PUT", "/admin/routes/nope/split", r#"{"split":[]}"#).await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["error"], "unknown_route");
    assert_eq!(
        get(&format!("http://{}/", gw.public_addr), &[])
            .await
            .text(),
        "blue",
        "nothing applied"
    );

    let set = admin(
        &gw,
        "PUT",
        path,
        r#"{"split":[{"service":"blue","weight":90},{"service":"green","weight":10}],"sticky":"header:x-user"}"#,
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(set.json()["set_at_run_time"], true);
    assert!(set.json()["note"]
        .as_str()
        .is_some_and(|n| n.contains("reload")));
    let dump = admin(&gw, "GET", "/admin/config", "").await.json();
    assert_eq!(
        dump["routes"][0]["split"],
        serde_json::json!([{ "service": "blue", "weight": 90 }, { "service": "green", "weight": 10 }])
    );
    assert_eq!(dump["routes"][0]["sticky"], "header:x-user");
    assert_eq!(dump["routes"][0]["target_set_at_run_time"], true);
    assert!(dump["routes"][0].get("service").is_none());

    // Sticky: kept when the body leaves it out, dropped by `null`.
    let again = admin(
        &gw,
        "PUT",
        path,
        r#"{"split":[{"service":"blue","weight":50},{"service":"green","weight":50}]}"#,
    )
    .await;
    assert_eq!(again.json()["sticky"], "header:x-user");
    let plain = admin(
        &gw,
        "PUT",
        path,
        r#"{"split":[{"service":"green","weight":1}],"sticky":null}"#,
    )
    .await;
    assert_eq!(plain.json()["sticky"], serde_json::Value::Null);
    let dump = admin(&gw, "GET", "/admin/config", "").await.json();
    assert_eq!(
        dump["routes"][0]["service"], "green",
        "one target reads as service"
    );
    assert_eq!(
        get(&format!("http://{}/", gw.public_addr), &[])
            .await
            .text(),
        "green"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn switch_to_moves_every_route_of_a_service() {
    let (blue, _) = counting("blue").await;
    let (green, _) = counting("green").await;
    let (other, _) = counting("other").await;
    let gw = support::gateway(&format!(
        "{TOKEN}{}\
         [[routes]]\nname = \"a\"\nservice = \"blue\"\nmatch = {{ prefix = \"/a\" }}\n\
         [[routes]]\nname = \"b\"\nmatch = {{ prefix = \"/b\" }}\n\
         [[routes.split]]\nservice = \"blue\"\nweight = 3\n\
         [[routes.split]]\nservice = \"green\"\nweight = 1\n\
         [[routes]]\nname = \"c\"\nservice = \"other\"\nmatch = {{ prefix = \"/c\" }}\n",
        services(&[
            ("blue", blue.addr),
            ("green", green.addr),
            ("other", other.addr)
        ])
    ))
    .await;
    let switched = admin(&gw, "POST", "/admin/services/blue/switch-to/green", "").await;
    assert_eq!(switched.status, 200, "{}", switched.text());
    let routes = &switched.json()["routes"];
    assert_eq!(routes.as_array().map(Vec::len), Some(2), "{routes}");
    assert_eq!(
        routes[1]["split"],
        serde_json::json!([{ "service": "green", "weight": 4 }])
    );
    for p in ["/a", "/b", "/b", "/b"] {
        assert_eq!(
            get(&format!("http://{}{p}", gw.public_addr), &[])
                .await
                .text(),
            "green"
        );
    }
    assert_eq!(
        get(&format!("http://{}/c", gw.public_addr), &[])
            .await
            .text(),
        "other"
    );
    let again = admin(&gw, "POST", "/admin/services/blue/switch-to/green", "").await;
    assert_eq!(
        again.json()["routes"],
        serde_json::json!([]),
        "nothing left on blue"
    );
    let unknown = admin(&gw, "POST", "/admin/services/blue/switch-to/teal", "").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.json()["error"], "unknown_service");
    let get_not_post = admin(&gw, "GET", "/admin/services/blue/switch-to/green", "").await;
    assert_eq!(get_not_post.status, 405);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_blue_green_switch_under_load_fails_no_request() {
    let (blue, blue_hits) = counting("blue").await;
    let (green, green_hits) = counting("green").await;
    let gw = support::gateway(&format!(
        "{TOKEN}{}[[routes]]\nname = \"shop\"\nservice = \"blue\"\n",
        services(&[("blue", blue.addr), ("green", green.addr)])
    ))
    .await;
    let url = format!("http://{}/item", gw.public_addr);
    let switched = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (failed, blue_after) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, switched, stop) = (url.clone(), Arc::clone(&switched), Arc::clone(&stop));
        let (failed, blue_after) = (Arc::clone(&failed), Arc::clone(&blue_after));
        clients.push(tokio::spawn(async move {
            let client = support::http1();
            let mut sent = 0usize;
            while !stop.load(Ordering::SeqCst) {
                // Read before sending: a request that starts after the switch must see green.
                let after = switched.load(Ordering::SeqCst);
                let got = support::send(&client, "GET", &url, &[], Bytes::new()).await;
                if got.status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                } else if after && got.text() != "green" {
                    blue_after.fetch_add(1, Ordering::SeqCst);
                }
                sent += 1;
            }
            sent
        }));
    }
    support::eventually(
        "traffic flows to blue",
        Duration::from_secs(10),
        async || blue_hits.load(Ordering::SeqCst) >= 500,
    )
    .await;
    let put = admin(
        &gw,
        "PUT",
        "/admin/routes/shop/split",
        r#"{"split":[{"service":"green","weight":100}]}"#,
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    switched.store(true, Ordering::SeqCst);
    let green_at_switch = green_hits.load(Ordering::SeqCst);
    support::eventually(
        "traffic flows to green",
        Duration::from_secs(10),
        async || green_hits.load(Ordering::SeqCst) >= green_at_switch + 500,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut sent = 0;
    for c in clients {
        sent += c.await.expect("client task");
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "failed requests out of {sent}"
    );
    assert_eq!(
        blue_after.load(Ordering::SeqCst),
        0,
        "requests sent after the switch on blue"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_reload_puts_back_the_file_target() {
    let (blue, _) = counting("blue").await;
    let (green, _) = counting("green").await;
    let dir = TempDir::new("traffic-reload");
    let path = dir.join("gatehouse.toml");
    let text = format!(
        "[listen]\npublic = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n{TOKEN}{}\
         [[routes]]\nname = \"shop\"\nservice = \"blue\"\n",
        services(&[("blue", blue.addr), ("green", green.addr)])
    );
    std::fs::write(&path, text).expect("write config");
    let gw = gateway::start(config::load_file(&path).expect("valid config"))
        .await
        .expect("gateway starts");
    let url = format!("http://{}/", gw.public_addr);
    let put = admin(
        &gw,
        "PUT",
        "/admin/routes/shop/split",
        r#"{"split":[{"service":"green","weight":1}]}"#,
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(get(&url, &[]).await.text(), "green");
    let reloaded = admin(&gw, "POST", "/admin/reload", "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    assert_eq!(
        get(&url, &[]).await.text(),
        "blue",
        "the file is the source of truth"
    );
    let now = admin(&gw, "GET", "/admin/routes/shop/split", "")
        .await
        .json();
    assert_eq!(now["set_at_run_time"], false);
    gw.shutdown().await;
}

/// The real binary: the access log names the service a split picked, and SIGHUP drops a
/// run-time target with an info line naming the route.
#[tokio::test]
async fn the_logs_name_the_picked_service_and_the_dropped_target() {
    let (blue, _) = counting("blue").await;
    let (green, _) = counting("green").await;
    let (public, admin_addr) = (origin::closed_port().await, origin::closed_port().await);
    let dir = TempDir::new("traffic-logs");
    let path = dir.join("gatehouse.toml");
    let text = format!(
        "[listen]\npublic = \"{public}\"\nadmin = \"{admin_addr}\"\n[log]\nformat = \"json\"\n{TOKEN}{}\
         [[routes]]\nname = \"shop\"\n[[routes.split]]\nservice = \"blue\"\nweight = 1\n\
         [[routes.split]]\nservice = \"green\"\nweight = 1\n",
        services(&[("blue", blue.addr), ("green", green.addr)])
    );
    std::fs::write(&path, text).expect("write config");
    let child = support::spawn_gatehouse(&path, admin_addr, true).await;
    let url = format!("http://{public}/");
    let first = get(&url, &[]).await.text();
    let put = support::send(
        &support::http1(),
        "PUT",
        &format!("http://{admin_addr}/admin/routes/shop/split"),
        &[("authorization", "Bearer s3cret")],
        Bytes::from_static(br#"{"split":[{"service":"green","weight":1}]}"#),
    )
    .await;
    assert_eq!(put.status, 200, "{}", put.text());
    support::signal(&child, "-HUP");
    support::eventually(
        "the reload puts blue back",
        Duration::from_secs(10),
        async || get(&url, &[]).await.text() == "blue",
    )
    .await;
    support::signal(&child, "-TERM");
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("gatehouse exits")
        .expect("output");
    let logs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .chain(String::from_utf8_lossy(&out.stderr).lines())
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        logs.iter()
            .any(|l| l["target"] == "gatehouse::access" && l["service"] == first.as_str()),
        "an access line names {first}: {logs:?}"
    );
    let dropped = logs
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("reload drops"))
        })
        .unwrap_or_else(|| panic!("no line about the dropped target: {logs:?}"));
    assert_eq!(dropped["level"], "INFO");
    assert_eq!(dropped["route"], "shop");
    assert_eq!(dropped["dropped"], "green");
    assert_eq!(dropped["now"], "blue=1, green=1");
}
