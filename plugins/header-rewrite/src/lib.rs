//! Sets headers from its config on the request and on the response.
//!
//! Config: `{ request = { name = "value" }, response = { name = "value" } }`.

use gatehouse_sdk::prelude::*;

/// Rewrites headers as configured.
pub struct HeaderRewrite;

fn apply(section: &str, set: impl Fn(&str, &str)) {
    let cfg = config_json().unwrap_or_default();
    if let Some(headers) = cfg[section].as_object() {
        for (name, value) in headers {
            set(name, value.as_str().unwrap_or_default());
        }
    }
}

impl Plugin for HeaderRewrite {
    fn on_request(req: &Request) -> Decision {
        apply("request", |n, v| {
            if req.set_header_str(n, v).is_err() {
                log::warn(&format!("cannot set request header {n}"));
            }
        });
        Decision::Continue
    }

    fn on_response(resp: &Response) {
        apply("response", |n, v| {
            if resp.set_header_str(n, v).is_err() {
                log::warn(&format!("cannot set response header {n}"));
            }
        });
    }
}

export_plugin!(HeaderRewrite);
