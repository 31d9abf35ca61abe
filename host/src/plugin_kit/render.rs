//! The human-readable report of a test run: one block per case with its result, the diff
//! when it failed, its service calls, log lines, time and memory.

use std::fmt::Write as _;

use super::runner::{CaseReport, Report};

/// The whole report as text.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "plugin {} (sha256 {}…, loaded in {:.0} ms)",
        report.plugin.display(),
        report.hash.get(..12).unwrap_or(&report.hash),
        report.load_ms
    );
    for case in &report.cases {
        case_text(&mut out, case);
    }
    let _ = writeln!(out, "\n{} passed, {} failed", report.passed, report.failed);
    out
}

fn case_text(out: &mut String, case: &CaseReport) {
    let verdict = if case.passed { "ok  " } else { "FAIL" };
    let outcome = case
        .observed
        .as_ref()
        .map(|o| o.outcome.as_str())
        .unwrap_or("-");
    let _ = writeln!(
        out,
        "\n{verdict} {} ({}) — {outcome}, {:.2} ms, {} KiB memory",
        case.name,
        case.file.display(),
        case.time_ms,
        case.memory_bytes / 1024
    );
    if let Some(d) = &case.description {
        let _ = writeln!(out, "     {d}");
    }
    if let Some(e) = &case.setup_error {
        let _ = writeln!(out, "     cannot run: {e}");
        return;
    }
    if case.unrecorded {
        let _ = writeln!(
            out,
            "     no [expect] yet: check the outcome below, then run with --record"
        );
        if let Some(o) = &case.observed {
            let expect = toml::to_string(&super::record::ExpectTable {
                expect: o.to_expect(),
            })
            .unwrap_or_default();
            for line in expect.lines() {
                let _ = writeln!(out, "     | {line}");
            }
        }
    }
    if !case.differences.is_empty() {
        let _ = writeln!(out, "     expected (-) vs observed (+):");
        for d in &case.differences {
            let _ = writeln!(out, "     {}", d.field);
            let _ = writeln!(out, "       - {}", d.expected);
            let _ = writeln!(out, "       + {}", d.observed);
        }
        if let Some(error) = case.observed.as_ref().and_then(|o| o.error.as_ref()) {
            let _ = writeln!(out, "     plugin error: {error}");
        }
    }
    {
        for call in &case.calls {
            let _ = writeln!(
                out,
                "     call {} {} {} -> {}",
                call.service, call.method, call.path, call.answer
            );
            for (n, v) in &call.headers {
                let _ = writeln!(out, "          {n}: {v}");
            }
            if !call.body.is_empty() {
                let _ = writeln!(out, "          body: {}", clip(&call.body, 200));
            }
        }
        for line in &case.logs {
            let _ = writeln!(out, "     log {:5} {}", line.level, line.message);
        }
    }
}

fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}
