//! The gRPC wire pieces the plugin needs for unary calls: length-prefixed message framing,
//! reading `grpc-status` / `grpc-message`, and mapping status codes to HTTP.

use crate::error::TranscodeError;

/// The 5-byte prefix of every gRPC message: a compressed flag and a big-endian length.
const PREFIX: usize = 5;

/// `message` as one uncompressed gRPC length-prefixed message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PREFIX + message.len());
    out.push(0);
    // A unary request body is capped by the host far below 4 GiB; saturate rather than wrap.
    let len = u32::try_from(message.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(message);
    out
}

/// The one message of a unary reply. The plugin never advertises compression
/// (`grpc-accept-encoding`), so a compressed message is a broken reply, as is trailing data.
pub fn unframe(body: &[u8]) -> Result<&[u8], TranscodeError> {
    let bad = |what: &str| TranscodeError::BadReply(what.to_owned());
    if body.len() < PREFIX {
        return Err(bad("reply has no complete gRPC message"));
    }
    if body[0] != 0 {
        return Err(bad("reply message is compressed, which was not asked for"));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let rest = &body[PREFIX..];
    match rest.len().cmp(&len) {
        std::cmp::Ordering::Less => Err(bad("reply message is cut short")),
        std::cmp::Ordering::Greater => Err(bad("unary reply has more than one message")),
        std::cmp::Ordering::Equal => Ok(rest),
    }
}

/// `grpc-status` and the decoded `grpc-message`: from the trailers, or from the headers for a
/// trailers-only reply (how servers send errors without a body). `None` when neither has one.
pub fn status(
    headers: &[(String, Vec<u8>)],
    trailers: &[(String, Vec<u8>)],
) -> Option<(u32, String)> {
    let find = |list: &[(String, Vec<u8>)], name: &str| {
        list.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let from = if find(trailers, "grpc-status").is_some() {
        trailers
    } else {
        headers
    };
    // An unparsable status is UNKNOWN (2), as the gRPC spec has clients treat it.
    let code = find(from, "grpc-status")?.trim().parse().unwrap_or(2);
    let message = find(from, "grpc-message")
        .map(|m| percent_decode(&m))
        .unwrap_or_default();
    Some((code, message))
}

/// Undo gRPC's percent-encoding of `grpc-message` (`%XX` bytes of UTF-8). Malformed escapes
/// are kept as they are, as the spec asks of receivers.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical name of a gRPC status code, lower-case (`not_found`), as used in error bodies.
pub fn code_name(code: u32) -> &'static str {
    match code {
        0 => "ok",
        1 => "cancelled",
        2 => "unknown",
        3 => "invalid_argument",
        4 => "deadline_exceeded",
        5 => "not_found",
        6 => "already_exists",
        7 => "permission_denied",
        8 => "resource_exhausted",
        9 => "failed_precondition",
        10 => "aborted",
        11 => "out_of_range",
        12 => "unimplemented",
        13 => "internal",
        14 => "unavailable",
        15 => "data_loss",
        16 => "unauthenticated",
        _ => "unknown",
    }
}

/// The HTTP status for a gRPC status code, per `google.rpc.Code` (the mapping grpc-gateway and
/// Google's APIs use). Codes outside the standard set are 500.
pub fn http_status(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}
