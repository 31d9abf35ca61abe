//! `/metrics` read with a real Prometheus text-format parser (prometheus-parse).

use std::net::SocketAddr;

use prometheus_parse::{Scrape, Value};

/// The admin listener's `/metrics`, parsed.
pub async fn scrape(admin: SocketAddr) -> Scrape {
    let got = super::get(&format!("http://{admin}/metrics"), &[]).await;
    assert_eq!(got.status, 200, "/metrics answers");
    let text = got.text();
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("/metrics parses")
}

/// The sum of the samples of `metric` whose labels include all of `labels` (0 if none).
/// Histograms count their observations (the `+Inf` bucket).
pub fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// The distinct values of label `label` among the samples of `metric`.
pub fn label_values(scrape: &Scrape, metric: &str, label: &str) -> Vec<String> {
    let mut values: Vec<String> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter_map(|s| s.labels.get(label).map(str::to_owned))
        .collect();
    values.sort();
    values.dedup();
    values
}
