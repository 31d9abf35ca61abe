//! Call-chain tracing end to end: a real OTLP/gRPC receiver (`support::otlp`) collects what
//! the gateway exports; the product-details demo (jwt-auth + aggregate with four service
//! calls) gives the span tree; real origins record the `traceparent` they receive.

use std::time::Duration;

use crate::productdetails::Demo;
use crate::support::otlp::{Collector, Span};
use crate::support::{self, origin, scrape};
use productdetails::ServiceKind;

const DEADLINE: Duration = Duration::from_secs(15);

/// A `[tracing]` table sending to `endpoint`, exporting quickly.
fn tracing_table(endpoint: &str, extra: &str) -> toml::Table {
    format!(
        "endpoint = \"{endpoint}\"\nflush_interval = \"50ms\"\nexport_timeout = \"1s\"\n{extra}"
    )
    .parse()
    .expect("tracing table")
}

/// A fresh W3C trace id (32 hex digits) for a request the test follows.
fn trace_id() -> String {
    format!("{:032x}", rand_u128())
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut a = std::collections::hash_map::RandomState::new().build_hasher();
    a.write_u8(1);
    let mut b = std::collections::hash_map::RandomState::new().build_hasher();
    b.write_u8(2);
    (u128::from(a.finish()) << 64) | u128::from(b.finish()) | 1
}

/// Polls until the collector holds a span of `trace` for which `done` holds over the whole
/// trace; the trace's spans.
async fn eventually_trace(
    collector: &Collector,
    trace: &str,
    done: impl Fn(&[Span]) -> bool,
) -> Vec<Span> {
    support::eventually("the trace reached the collector", DEADLINE, async || {
        done(&collector.trace(trace))
    })
    .await;
    collector.trace(trace)
}

/// The span tree of one product-details request: the client's span is the parent of the
/// gateway's server span; both plugin hooks and the four service calls are its children;
/// each service call has one upstream try under it, and the service received that try's
/// span as its `traceparent`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn productdetails_request_is_one_trace_with_hook_and_four_service_call_spans() {
    let collector = Collector::start().await;
    let endpoint = collector.endpoint();
    let demo = Demo::start_with(|config| {
        config.insert("tracing".into(), tracing_table(&endpoint, "").into());
    })
    .await;
    let trace = trace_id();
    let client_span = "00f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{client_span}-01");
    let authorization = format!("Bearer {}", demo.token);
    let got = support::get(
        &demo.url("42"),
        &[
            ("authorization", &authorization),
            ("traceparent", &traceparent),
        ],
    )
    .await;
    assert_eq!(got.status, 200, "{}", got.text());

    let spans = eventually_trace(&collector, &trace, |spans| {
        spans.iter().any(|s| s.kind == 2) && spans.iter().filter(|s| s.kind == 3).count() >= 4
    })
    .await;
    assert!(spans
        .iter()
        .all(|s| s.trace_id == trace && s.service == "gatehouse"));
    let server: Vec<&Span> = spans.iter().filter(|s| s.kind == 2).collect();
    assert_eq!(server.len(), 1, "one server span: {spans:#?}");
    let server = server[0];
    assert_eq!(
        server.parent_span_id, client_span,
        "a child of the client's span"
    );
    assert_eq!(server.name, "GET product-details");
    assert_eq!(server.attr("http.route"), Some("product-details"));
    assert_eq!(server.attr("http.response.status_code"), Some("200"));
    assert_eq!(server.attr("client.address"), Some("127.0.0.1"));

    let hooks: Vec<&Span> = spans
        .iter()
        .filter(|s| s.attr("gatehouse.plugin.phase").is_some())
        .collect();
    let mut hook_plugins: Vec<&str> = hooks
        .iter()
        .map(|s| s.attr("gatehouse.plugin.name").unwrap_or("?"))
        .collect();
    hook_plugins.sort();
    assert_eq!(hook_plugins, ["aggregate", "jwt-auth"], "{hooks:#?}");
    for hook in &hooks {
        assert_eq!(hook.parent_span_id, server.span_id);
        assert_eq!(hook.attr("gatehouse.plugin.phase"), Some("request"));
        assert_eq!(
            hook.attr("gatehouse.plugin.version").map(str::len),
            Some(12)
        );
    }
    let outcome = |plugin: &str| {
        hooks
            .iter()
            .find(|s| s.attr("gatehouse.plugin.name") == Some(plugin))
            .and_then(|s| s.attr("gatehouse.plugin.outcome"))
    };
    assert_eq!(outcome("jwt-auth"), Some("continue"));
    assert_eq!(outcome("aggregate"), Some("respond"));

    let calls: Vec<&Span> = spans
        .iter()
        .filter(|s| s.name.starts_with("service call "))
        .collect();
    assert_eq!(calls.len(), 4, "four service calls: {spans:#?}");
    let mut called: Vec<&str> = calls
        .iter()
        .filter_map(|s| s.attr("peer.service"))
        .collect();
    called.sort();
    assert_eq!(
        called,
        ["price", "product-info", "recommendations", "reviews"]
    );
    for call in &calls {
        assert_eq!(
            call.parent_span_id, server.span_id,
            "a child of the request span"
        );
        assert_eq!(call.attr("gatehouse.plugin.name"), Some("aggregate"));
        let service = call.attr("peer.service").expect("service");
        let tries: Vec<&Span> = spans
            .iter()
            .filter(|s| s.kind == 3 && s.parent_span_id == call.span_id)
            .collect();
        assert_eq!(tries.len(), 1, "one try for {service}: {spans:#?}");
        let attempt = tries[0];
        assert_eq!(attempt.attr("peer.service"), Some(service));
        assert_eq!(attempt.attr("gatehouse.upstream.retry"), Some("0"));
        assert_eq!(attempt.attr("http.response.status_code"), Some("200"));
        // The service saw the try's own span as its parent.
        let kind = ServiceKind::from_name(service).expect("a demo service");
        let received = demo.services[kind.name()].traceparents();
        let expected = format!("00-{trace}-{}-01", attempt.span_id);
        assert!(
            received.contains(&expected),
            "{service} received {expected}: {received:?}"
        );
    }
}

/// A parent that was not sampled: the gateway exports nothing for it, yet the upstream
/// still gets a `traceparent` of the same trace (flags 00), so the chain stays joined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsampled_parent_exports_no_span_but_still_propagates() {
    let collector = Collector::start().await;
    let upstream = origin::echo("a").await;
    let gw = support::gateway(&format!(
        r#"
[tracing]
endpoint = "{}"
flush_interval = "50ms"
sample_ratio = 1.0

[[services]]
name = "a"
endpoints = ["{}"]

[[routes]]
name = "all"
match = {{ prefix = "/" }}
service = "a"
"#,
        collector.endpoint(),
        upstream.addr
    ))
    .await;
    let url = format!("http://{}/x", gw.public_addr);
    let unsampled = trace_id();
    let got = support::get(
        &url,
        &[(
            "traceparent",
            &format!("00-{unsampled}-00f067aa0ba902b7-00"),
        )],
    )
    .await;
    assert_eq!(got.status, 200);
    let sent = got.json()["headers"]["traceparent"]
        .as_str()
        .expect("the upstream got a traceparent")
        .to_owned();
    assert!(sent.starts_with(&format!("00-{unsampled}-")), "{sent}");
    assert!(sent.ends_with("-00"), "still not sampled: {sent}");
    assert!(
        !sent.contains("00f067aa0ba902b7"),
        "the gateway's own span id: {sent}"
    );

    // A sampled request afterwards: once its spans arrived, the queue is past the first.
    let sampled = trace_id();
    let got = support::get(
        &url,
        &[("traceparent", &format!("00-{sampled}-00f067aa0ba902b7-01"))],
    )
    .await;
    assert_eq!(got.status, 200);
    let spans = eventually_trace(&collector, &sampled, |s| s.len() >= 2).await;
    let client = spans.iter().find(|s| s.kind == 3).expect("a client span");
    assert_eq!(client.attr("peer.service"), Some("a"));
    assert_eq!(
        got.json()["headers"]["traceparent"],
        format!("00-{sampled}-{}-01", client.span_id)
    );
    assert!(
        collector.trace(&unsampled).is_empty(),
        "nothing exported for it"
    );
    // A request without a traceparent starts a trace (sample_ratio 1.0).
    let got = support::get(&url, &[]).await;
    let started = got.json()["headers"]["traceparent"]
        .as_str()
        .expect("a new trace is propagated")
        .to_owned();
    assert!(started.ends_with("-01"), "{started}");
}

/// Without `[tracing]` the gateway leaves trace headers alone: the client's `traceparent`
/// and `tracestate` reach the upstream as sent.
#[tokio::test]
async fn tracing_off_passes_traceparent_through_untouched() {
    let upstream = origin::echo("a").await;
    let gw = support::gateway(&format!(
        "[[services]]\nname = \"a\"\nendpoints = [\"{}\"]\n[[routes]]\nname = \"all\"\nmatch = {{ prefix = \"/\" }}\nservice = \"a\"\n",
        upstream.addr
    ))
    .await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let got = support::get(
        &format!("http://{}/x", gw.public_addr),
        &[("traceparent", traceparent), ("tracestate", "vendor=1")],
    )
    .await;
    assert_eq!(got.json()["headers"]["traceparent"], traceparent);
    assert_eq!(got.json()["headers"]["tracestate"], "vendor=1");
}

/// A collector that is down: every request still succeeds, and the spans that could not be
/// delivered are counted (dropped at the full queue, or failed exports).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_leaves_requests_unaffected_and_counts_lost_spans() {
    let down = origin::closed_port().await;
    let upstream = origin::echo("a").await;
    let gw = support::gateway(&format!(
        r#"
[tracing]
endpoint = "http://{down}"
queue_size = 4
batch_size = 2
flush_interval = "10ms"
export_timeout = "200ms"

[[services]]
name = "a"
endpoints = ["{}"]

[[routes]]
name = "all"
match = {{ prefix = "/" }}
service = "a"
"#,
        upstream.addr
    ))
    .await;
    let url = format!("http://{}/x", gw.public_addr);
    for _ in 0..40 {
        let got = support::get(&url, &[]).await;
        assert_eq!(got.status, 200, "{}", got.text());
    }
    support::eventually("lost spans are counted", DEADLINE, async || {
        let metrics = scrape::scrape(gw.admin_addr).await;
        let lost = scrape::value(
            &metrics,
            "gatehouse_trace_spans_total",
            &[("result", "dropped")],
        ) + scrape::value(
            &metrics,
            "gatehouse_trace_spans_total",
            &[("result", "failed")],
        );
        let exported = scrape::value(
            &metrics,
            "gatehouse_trace_spans_total",
            &[("result", "exported")],
        );
        lost > 0.0 && exported == 0.0
    })
    .await;
}
