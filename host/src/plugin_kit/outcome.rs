//! What a case observed, compared with what it expects: a list of differences, one per field,
//! each with the expected and the observed value.

use std::collections::BTreeMap;

use serde::Serialize;

use super::case::{Expect, ExpectResponse, RequestChanges};

/// The headers the host sets on every answer; recorded expectations leave them out.
const HOST_HEADERS: [&str; 2] = ["content-length", "x-request-id"];

/// The response a client got, as observed.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ObservedResponse {
    /// The status.
    pub status: u16,
    /// Every header (several values joined by `, `).
    pub headers: BTreeMap<String, String>,
    /// The body, as text (lossy).
    pub body: String,
}

/// What happened in one case.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Observed {
    /// See [`Expect::outcome`].
    pub outcome: String,
    /// The failing phase, for a plugin failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The error message, for a plugin failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the request phase changed, when the request went on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestChanges>,
    /// The response the client got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<ObservedResponse>,
}

/// One field where the observed outcome differs from the expected one.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Difference {
    /// The field, e.g. `response.status` or `request.set_headers.x-user`.
    pub field: String,
    /// What the case expects (`(absent)` when it expects nothing there).
    pub expected: String,
    /// What happened (`(absent)` when nothing was there).
    pub observed: String,
}

const ABSENT: &str = "(absent)";

fn quoted(s: &str) -> String {
    format!("{s:?}")
}

impl Observed {
    /// The expectation that this observation passes exactly (what `--record` writes). The
    /// host's own headers (`content-length`, `x-request-id`) are left out.
    pub fn to_expect(&self) -> Expect {
        Expect {
            outcome: self.outcome.clone(),
            phase: self.phase.clone(),
            error: self.error.clone(),
            // An unchanged request needs no table: `continue` without one means unchanged.
            request: self
                .request
                .clone()
                .filter(|r| *r != RequestChanges::default()),
            response: self.response.as_ref().map(|r| ExpectResponse {
                status: Some(r.status),
                headers: r
                    .headers
                    .iter()
                    .filter(|(n, _)| !HOST_HEADERS.contains(&n.as_str()))
                    .map(|(n, v)| (n.clone(), v.clone()))
                    .collect(),
                body: Some(r.body.clone()),
            }),
        }
    }

    /// Every difference from `expect` (none: the case passes).
    pub fn compare(&self, expect: &Expect) -> Vec<Difference> {
        let mut diffs = Vec::new();
        let mut differ = |field: &str, expected: String, observed: String| {
            if expected != observed {
                diffs.push(Difference {
                    field: field.to_string(),
                    expected,
                    observed,
                });
            }
        };
        differ("outcome", expect.outcome.clone(), self.outcome.clone());
        if let Some(phase) = &expect.phase {
            differ(
                "phase",
                phase.clone(),
                self.phase.clone().unwrap_or_else(|| ABSENT.into()),
            );
        }
        if let Some(error) = &expect.error {
            let observed = self.error.clone().unwrap_or_default();
            if !observed.contains(error.as_str()) {
                diffs.push(Difference {
                    field: "error (contains)".into(),
                    expected: quoted(error),
                    observed: if self.error.is_some() {
                        quoted(&observed)
                    } else {
                        ABSENT.into()
                    },
                });
            }
        }
        if let Some(want) = &expect.request {
            let got = self.request.clone().unwrap_or_default();
            compare_changes(want, &got, &mut diffs);
        } else if self.outcome == "continue" {
            // Without a `[expect.request]` the request must go on unchanged.
            compare_changes(
                &RequestChanges::default(),
                self.request.as_ref().unwrap_or(&RequestChanges::default()),
                &mut diffs,
            );
        }
        if let Some(want) = &expect.response {
            compare_response(want, self.response.as_ref(), &mut diffs);
        }
        diffs
    }
}

fn opt(value: &Option<String>) -> String {
    value
        .as_deref()
        .map(quoted)
        .unwrap_or_else(|| ABSENT.into())
}

fn compare_changes(want: &RequestChanges, got: &RequestChanges, diffs: &mut Vec<Difference>) {
    let mut differ = |field: String, expected: String, observed: String| {
        if expected != observed {
            diffs.push(Difference {
                field,
                expected,
                observed,
            });
        }
    };
    differ("request.method".into(), opt(&want.method), opt(&got.method));
    differ("request.path".into(), opt(&want.path), opt(&got.path));
    let names: std::collections::BTreeSet<&String> = want
        .set_headers
        .keys()
        .chain(got.set_headers.keys())
        .collect();
    for name in names {
        differ(
            format!("request.set_headers.{name}"),
            opt(&want.set_headers.get(name).cloned()),
            opt(&got.set_headers.get(name).cloned()),
        );
    }
    let mut want_removed = want.removed_headers.clone();
    let mut got_removed = got.removed_headers.clone();
    want_removed.sort();
    got_removed.sort();
    differ(
        "request.removed_headers".into(),
        format!("{want_removed:?}"),
        format!("{got_removed:?}"),
    );
    differ("request.body".into(), opt(&want.body), opt(&got.body));
}

fn compare_response(
    want: &ExpectResponse,
    got: Option<&ObservedResponse>,
    diffs: &mut Vec<Difference>,
) {
    let Some(got) = got else {
        diffs.push(Difference {
            field: "response".into(),
            expected: "a response".into(),
            observed: ABSENT.into(),
        });
        return;
    };
    let mut differ = |field: String, expected: String, observed: String| {
        if expected != observed {
            diffs.push(Difference {
                field,
                expected,
                observed,
            });
        }
    };
    if let Some(status) = want.status {
        differ(
            "response.status".into(),
            status.to_string(),
            got.status.to_string(),
        );
    }
    for (name, value) in &want.headers {
        differ(
            format!("response.headers.{name}"),
            quoted(value),
            opt(&got.headers.get(&name.to_ascii_lowercase()).cloned()),
        );
    }
    if let Some(body) = &want.body {
        differ("response.body".into(), quoted(body), quoted(&got.body));
    }
}
