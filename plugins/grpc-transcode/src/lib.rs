//! `grpc-transcode`: answers REST/JSON requests by calling a unary gRPC method over h2c. On the
//! request phase the plugin maps the route (or the request path) to a method of a protobuf
//! descriptor set granted as a file, turns the JSON body and query into the method's input
//! message, calls the gRPC service through the host (`services::call`), and answers with the
//! reply as JSON, or with the `grpc-status` mapped to an HTTP status. Config reference:
//! docs/shipped-plugins.md.
//!
//! Cost: instances are fresh per request, so the descriptor set is decoded on every request
//! (once per instance, only after the request's method is known); that is linear in the size
//! of the descriptor set, so grant one built from just the protos the route needs.

pub mod codec;
pub mod config;
pub mod error;
pub mod grpc;

#[cfg(test)]
mod tests;

use gatehouse_sdk::prelude::*;
use gatehouse_sdk::services::{self as host, CallError, ServiceRequest};
use prost_reflect::DescriptorPool;

use crate::config::Settings;
use crate::error::TranscodeError;

/// The plugin.
pub struct GrpcTranscode;

impl Plugin for GrpcTranscode {
    fn on_request(req: &Request) -> Decision {
        let response = match transcode(req) {
            Ok(json) => FullResponse {
                status: 200,
                headers: vec![("content-type".to_owned(), b"application/json".to_vec())],
                body: json,
            },
            Err(e) => {
                if let TranscodeError::Config(_) = e {
                    log::error(&e.to_string());
                }
                json_response(e.http_status(), &e.body())
            }
        };
        Decision::Respond(response)
    }
}

/// The whole round trip for one request; the JSON reply body on success.
fn transcode(req: &Request) -> Result<Vec<u8>, TranscodeError> {
    let settings = Settings::parse(&context::config())?;
    let method_name = settings.method_for(&req.path())?;
    let file = files::get(&settings.descriptors).ok_or_else(|| {
        TranscodeError::Config(format!(
            "no file granted as {:?}; add `files = {{ {} = \"<descriptor set>.pb\" }}` to the route's plugin entry",
            settings.descriptors, settings.descriptors
        ))
    })?;
    let pool = DescriptorPool::decode(file.as_slice()).map_err(|e| {
        TranscodeError::Config(format!(
            "file {:?} is not a protobuf descriptor set: {e}",
            settings.descriptors
        ))
    })?;
    let method = config::resolve(&pool, method_name)?;

    let body = req
        .body()
        .map_err(|e| TranscodeError::BadRequest(format!("cannot read the request body: {e:?}")))?;
    let message = codec::encode_request(&method.input(), &body, req.query().as_deref())?;

    let mut headers = vec![
        ("content-type".to_owned(), b"application/grpc".to_vec()),
        ("te".to_owned(), b"trailers".to_vec()),
        (
            "x-request-id".to_owned(),
            context::request_id().into_bytes(),
        ),
    ];
    for name in &settings.forward_headers {
        for value in req.header_all(name) {
            headers.push((name.to_ascii_lowercase(), value));
        }
    }
    let reply = host::call(
        &settings.service,
        &ServiceRequest {
            method: "POST".to_owned(),
            path_with_query: config::grpc_path(&method),
            headers,
            body: grpc::frame(&message),
        },
    )
    .map_err(|e| match e {
        CallError::Timeout => TranscodeError::Timeout,
        CallError::NotAllowed(s) => TranscodeError::Config(format!(
            "service {s:?} is not granted; add it to the route's `calls`"
        )),
        CallError::UnknownService(s) => TranscodeError::Config(format!("no service named {s:?}")),
        CallError::InvalidRequest(m) => TranscodeError::Config(m),
        CallError::TooLarge => TranscodeError::BadReply("reply exceeds the body cap".to_owned()),
        CallError::Failed(m) => TranscodeError::CallFailed(m),
    })?;

    if reply.status != 200 {
        return Err(TranscodeError::BadReply(format!(
            "HTTP status {} instead of 200 (is the service speaking gRPC over h2c?)",
            reply.status
        )));
    }
    match grpc::status(&reply.headers, &reply.trailers) {
        None => Err(TranscodeError::BadReply(
            "no grpc-status in the reply".to_owned(),
        )),
        Some((0, _)) => {
            let bytes = grpc::unframe(&reply.body)?;
            codec::decode_reply(&method.output(), bytes, settings.emit_defaults)
        }
        Some((code, message)) => Err(TranscodeError::Status { code, message }),
    }
}

#[cfg(target_arch = "wasm32")]
export_plugin!(GrpcTranscode);
