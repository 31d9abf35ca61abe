//! Fuzzes the gateway's path canonicaliser (`gatehouse::path`): it never panics, its output
//! is canonical (idempotent), and no output holds a dot segment, an empty segment when
//! slashes merge, an encoded separator under the strict policy, a raw `\`, or a control byte.
#![no_main]

// The very source file the gateway runs (`gatehouse::path`), compiled here on its own: the
// module uses nothing else from the crate, and depending on the whole `gatehouse` crate would
// make every fuzz build instrument wasmtime and cranelift (tens of minutes on 2 cores).
#[path = "../../host/src/path/mod.rs"]
#[allow(dead_code)] // `is_encoded_separator` is for the pipeline, not needed here.
mod path;

use libfuzzer_sys::fuzz_target;
use path::{canonicalize, PathPolicy};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let policy = PathPolicy {
        merge_slashes: flags & 1 == 0,
        allow_encoded_slash: flags & 2 != 0,
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // As sent, and as an absolute path (most inputs do not start with '/').
    check(text, &policy);
    check(&format!("/{text}"), &policy);
});

fn check(input: &str, policy: &PathPolicy) {
    let Ok(once) = canonicalize(input, policy) else {
        return;
    };
    if once == "*" {
        return;
    }
    let twice = canonicalize(&once, policy);
    assert_eq!(twice.as_deref(), Ok(once.as_ref()), "not idempotent: {input:?}");
    assert!(once.starts_with('/'), "{once:?} from {input:?}");
    for segment in once[1..].split('/') {
        assert!(segment != "." && segment != "..", "dot segment in {once:?} from {input:?}");
    }
    if policy.merge_slashes {
        assert!(!once.contains("//"), "'//' in {once:?} from {input:?}");
    }
    if !policy.allow_encoded_slash {
        let upper = once.to_ascii_uppercase();
        assert!(
            !upper.contains("%2F") && !upper.contains("%5C"),
            "encoded separator in {once:?} from {input:?}"
        );
    }
    assert!(!once.contains('\\'), "raw '\\' in {once:?} from {input:?}");
    assert!(
        once.bytes().all(|b| (0x20..0x7F).contains(&b)),
        "control or non-ASCII byte in {once:?} from {input:?}"
    );
}
