//! A plugin built against the previous WIT version, `gatehouse:plugin@0.1.0`
//! (`wit/0.1.0/plugin.wit`), with wit-bindgen directly rather than the SDK (which follows the
//! current version). The gateway provides 0.1.2 and must keep loading components like this
//! one: the tests run it through the gateway, using a host import (`context`), the request
//! resource, and the request and response hooks.
// A plugin only makes sense as a wasm component; on the host target the crate is empty.
#![cfg(target_family = "wasm")]

wit_bindgen::generate!({
    world: "plugin",
    path: "../../wit/0.1.0",
});

use exports::gatehouse::plugin::{failure_hook, request_hook, response_hook};
use gatehouse::plugin::context;
use gatehouse::plugin::types::{Decision, FullResponse, Request, Response, UpstreamFailure};

struct Old;

impl request_hook::Guest for Old {
    fn on_request(req: Request) -> Decision {
        let _ = req.set_header("x-wit-version", b"0.1.0");
        let _ = req.set_header("x-wit-route", context::route_name().as_bytes());
        Decision::Continue
    }
}

impl response_hook::Guest for Old {
    fn on_response(resp: Response) {
        let _ = resp.set_header("x-wit-response", b"0.1.0");
    }
}

impl failure_hook::Guest for Old {
    fn on_failure(_failure: UpstreamFailure) -> Option<FullResponse> {
        None
    }
}

export!(Old);
