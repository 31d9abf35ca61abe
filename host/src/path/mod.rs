//! Path canonicalisation: the one form of a request path that routing, plugins and the
//! upstream all see (issue 12, section 1).
//!
//! This module sits below `routing` and `proxy` and knows nothing of either: it turns a path
//! (`&str`, no query) into its canonical form or says why the path is refused. The proxy
//! pipeline calls it once per request, before routing, and replaces the request URI's path
//! with the result; nothing downstream derives a path of its own. It is public so that the
//! fuzz target (`fuzz/`) and the bench (`benches/canonical.rs`) drive the same code.
//!
//! The rules, in the order they apply to each `/`-separated segment (README, "Path
//! canonicalisation", states them for operators):
//! 1. Percent-escapes: an escape of an unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded;
//!    every other escape is kept with upper-case hex (`%2f` → `%2F`). A `%` not followed by
//!    two hex digits is refused.
//! 2. Refused outright: a raw `\`, a control character (0x00–0x1F, 0x7F) raw or encoded,
//!    an encoded `/` or `\` (`%2F`, `%5C`) unless the policy allows them (then they stay
//!    encoded, never decoded), and a segment whose decoded bytes are not valid UTF-8
//!    (overlong forms such as `%C0%AE` included).
//! 3. A raw non-ASCII character is percent-encoded (upper-case hex), so `/é` and `/%C3%A9`
//!    are one path.
//! 4. `;` path parameters on a dot segment or an empty one (`..;`, `.;x`, `;x`) are refused:
//!    Tomcat-style origins drop the parameter and then resolve the dot segment.
//! 5. Dot segments (`.` and `..`, however encoded) are removed as RFC 3986 §5.2.4 says; a
//!    `..` that would climb above the root is refused.
//! 6. With `merge_slashes` (the default), empty segments are dropped, so `//a///b` is `/a/b`
//!    (a trailing `/` is kept: `/a/` stays `/a/`).
//!
//! The common case, an already-canonical ASCII path, is one scan and no allocation
//! ([`canonicalize`] returns `Cow::Borrowed`).

use std::borrow::Cow;

/// How strict canonicalisation is. `Default` is the safe policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PathPolicy {
    /// Drop empty segments (`//a` → `/a`). Default true: origins that merge slashes would
    /// otherwise see a different path than the one routed.
    pub merge_slashes: bool,
    /// Let `%2F` and `%5C` through, still encoded. Default false. The global policy never
    /// sets it; a route that opts in (`routes.allow_encoded_slash`) does, see
    /// `proxy::pipeline`.
    pub allow_encoded_slash: bool,
}

impl Default for PathPolicy {
    fn default() -> Self {
        PathPolicy {
            merge_slashes: true,
            allow_encoded_slash: false,
        }
    }
}

/// Why a path has no canonical form; the request gets 400 `bad_path` naming it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path does not start with '/'")]
    NotAbsolute,
    #[error("encoded '{0}' in path")]
    EncodedSeparator(char),
    #[error("raw '\\' in path")]
    Backslash,
    #[error("control character 0x{0:02X} in path")]
    ControlCharacter(u8),
    #[error("malformed percent-escape in path")]
    BadEscape,
    #[error("invalid or overlong UTF-8 in path segment")]
    InvalidUtf8,
    #[error("';' parameter on a dot or empty segment in path")]
    DotSegmentParameter,
    #[error("dot segment between encoded separators in path")]
    EncodedDotSegment,
    #[error("'..' climbs above the root")]
    AboveRoot,
}

impl PathError {
    /// Whether the path would be canonical under a policy that allows encoded separators: the
    /// only error a route's `allow_encoded_slash` can lift.
    pub fn is_encoded_separator(&self) -> bool {
        matches!(self, PathError::EncodedSeparator(_))
    }
}

/// The canonical form of `path` (no query) under `policy`; borrowed when `path` already is.
///
/// Idempotent: the canonical form of a canonical path is itself. `*` (the `OPTIONS *`
/// target) is returned unchanged.
pub fn canonicalize<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if path == "*" {
        return Ok(Cow::Borrowed(path));
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_canonical(path.as_bytes(), policy.merge_slashes) {
        return Ok(Cow::Borrowed(path));
    }
    rebuild(path, policy).map(Cow::Owned)
}

/// The fast path: one scan, true when nothing would change. Anything unusual (a lower-case
/// or decodable escape, `;`, a non-ASCII or control byte, a dot or empty segment) sends the
/// path to [`rebuild`], which also produces the precise error.
fn is_canonical(path: &[u8], merge_slashes: bool) -> bool {
    // `path[0]` is '/'; `start` is the first byte of the current segment.
    let mut start = 1;
    let mut i = 1;
    while i < path.len() {
        match path[i] {
            b'/' => {
                if is_dot_or_empty(&path[start..i], merge_slashes) {
                    return false;
                }
                start = i + 1;
            }
            // An escape that stays as it is (`%20`, `%3F`) keeps the fast path.
            b'%' if is_kept_escape(path.get(i + 1..i + 3)) => i += 2,
            b'%' | b'\\' | b';' | 0x00..=0x1F | 0x7F..=0xFF => return false,
            _ => {}
        }
        i += 1;
    }
    // A trailing empty segment is a trailing slash, which is kept.
    let last = &path[start..];
    !(last == b"." || last == b"..")
}

/// Whether `%` + `hex` is already in canonical form and needs no further check: upper-case
/// hex of an ASCII byte that is not unreserved, not a separator, not a control character and
/// not `;` (which the parameter rule looks at).
fn is_kept_escape(hex_digits: Option<&[u8]>) -> bool {
    let Some(&[hi, lo]) = hex_digits else {
        return false;
    };
    let is_upper_hex = |b: u8| b.is_ascii_digit() || (b'A'..=b'F').contains(&b);
    let (Some(h), Some(l)) = (hex(hi), hex(lo)) else {
        return false;
    };
    let decoded = h << 4 | l;
    is_upper_hex(hi)
        && is_upper_hex(lo)
        && (0x20..=0x7E).contains(&decoded)
        && !is_unreserved(decoded)
        && !matches!(decoded, b'/' | b'\\' | b';')
}

fn is_dot_or_empty(segment: &[u8], merge_slashes: bool) -> bool {
    segment == b"." || segment == b".." || (merge_slashes && segment.is_empty())
}

/// The slow path: segment by segment into a new string.
fn rebuild(path: &str, policy: &PathPolicy) -> Result<String, PathError> {
    let mut out = String::with_capacity(path.len());
    // Where each kept segment's leading '/' is in `out`, so `..` can drop the last one.
    let mut starts: Vec<usize> = Vec::new();
    let mut segment = String::new();
    let mut segments = path[1..].split('/').peekable();
    while let Some(raw) = segments.next() {
        let is_last = segments.peek().is_none();
        segment.clear();
        normalize_segment(raw, policy, &mut segment)?;
        check_parameters(&segment)?;
        if policy.allow_encoded_slash {
            check_encoded_parts(&segment)?;
        }
        match segment.as_str() {
            "." => {}
            ".." => {
                let Some(start) = starts.pop() else {
                    return Err(PathError::AboveRoot);
                };
                out.truncate(start);
            }
            "" if policy.merge_slashes && !is_last => continue,
            kept => {
                starts.push(out.len());
                out.push('/');
                out.push_str(kept);
                continue;
            }
        }
        // A dot segment at the end leaves a trailing slash: `/a/.` and `/a/b/..` are `/a/`.
        if is_last {
            starts.push(out.len());
            out.push('/');
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    Ok(out)
}

/// One segment's escapes and characters (rules 1–3) into `out`.
fn normalize_segment(raw: &str, policy: &PathPolicy, out: &mut String) -> Result<(), PathError> {
    let bytes = raw.as_bytes();
    // Set when an escape decodes to a non-ASCII byte: the segment's bytes must then be
    // checked as UTF-8 once it is complete.
    let mut needs_utf8_check = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'%' => {
                let decoded = match (bytes.get(i + 1), bytes.get(i + 2)) {
                    (Some(&hi), Some(&lo)) => match (hex(hi), hex(lo)) {
                        (Some(hi), Some(lo)) => hi << 4 | lo,
                        _ => return Err(PathError::BadEscape),
                    },
                    _ => return Err(PathError::BadEscape),
                };
                match decoded {
                    b'/' | b'\\' if !policy.allow_encoded_slash => {
                        return Err(PathError::EncodedSeparator(char::from(decoded)));
                    }
                    0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter(decoded)),
                    _ if is_unreserved(decoded) => out.push(char::from(decoded)),
                    _ => {
                        needs_utf8_check |= decoded >= 0x80;
                        push_escape(out, decoded);
                    }
                }
                i += 3;
            }
            b'\\' => return Err(PathError::Backslash),
            0x00..=0x1F | 0x7F => return Err(PathError::ControlCharacter(b)),
            0x80..=0xFF => {
                // Raw UTF-8 (the input is a `str`): encode it so that it has one spelling.
                push_escape(out, b);
                i += 1;
            }
            _ => {
                out.push(char::from(b));
                i += 1;
            }
        }
    }
    if needs_utf8_check && std::str::from_utf8(&decode_all(out)).is_err() {
        return Err(PathError::InvalidUtf8);
    }
    Ok(())
}

/// Rule 4: `..;x`, `.;x` and `;x` are refused (the name before `;` is a dot or empty).
fn check_parameters(segment: &str) -> Result<(), PathError> {
    // `;` can only be raw here: `%3B` is not unreserved, so it stays encoded, and Tomcat and
    // Spring do not take an encoded `;` as a parameter either. Refusing it too costs nothing.
    let name_end = [segment.find(';'), segment.find("%3B")]
        .into_iter()
        .flatten()
        .min();
    match name_end.map(|end| &segment[..end]) {
        Some("" | "." | "..") => Err(PathError::DotSegmentParameter),
        _ => Ok(()),
    }
}

/// With encoded separators allowed, the parts between them must not be dot segments: an
/// origin that decodes `%2F` would resolve `a%2F..%2Fadmin` to `/admin`.
fn check_encoded_parts(segment: &str) -> Result<(), PathError> {
    if !segment.contains("%2F") && !segment.contains("%5C") {
        return Ok(());
    }
    let parts = segment.split("%2F").flat_map(|p| p.split("%5C"));
    for part in parts {
        if part == "." || part == ".." {
            return Err(PathError::EncodedDotSegment);
        }
    }
    Ok(())
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escape(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0xF)]));
}

/// Every escape of a normalised segment decoded (its escapes are all well-formed).
fn decode_all(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests;
