//! Unit tests of the canonicaliser: one case per rule, then the properties (proptest).

use std::borrow::Cow;

use proptest::prelude::*;

use super::{canonicalize, PathError, PathPolicy};

const STRICT: PathPolicy = PathPolicy {
    merge_slashes: true,
    allow_encoded_slash: false,
};
const KEEP_SLASHES: PathPolicy = PathPolicy {
    merge_slashes: false,
    allow_encoded_slash: false,
};
const ENCODED_SLASH: PathPolicy = PathPolicy {
    merge_slashes: true,
    allow_encoded_slash: true,
};

fn canon(path: &str) -> Result<String, PathError> {
    canonicalize(path, &STRICT).map(Cow::into_owned)
}

#[test]
fn canonical_paths_are_borrowed() {
    for path in [
        "/",
        "/a",
        "/a/b/",
        "/api/v1/users/42",
        "/a.b/c-d_e~f",
        "/...",
        "/.a/b.",
        "/search/a%20b%3F",
    ] {
        assert!(
            matches!(canonicalize(path, &STRICT), Ok(Cow::Borrowed(p)) if p == path),
            "{path} is canonical and not copied"
        );
    }
    assert!(matches!(canonicalize("*", &STRICT), Ok(Cow::Borrowed("*"))));
}

#[test]
fn dot_segments_are_removed() {
    let cases = [
        ("/a/./b", "/a/b"),
        ("/a/b/../c", "/a/c"),
        ("/public/../admin", "/admin"),
        ("/a/.", "/a/"),
        ("/a/b/..", "/a/"),
        ("/a/..", "/"),
        ("/.", "/"),
        ("/./", "/"),
        ("/a/b/../../c", "/c"),
    ];
    for (input, want) in cases {
        assert_eq!(canon(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn encoded_dots_in_any_case_are_dot_segments() {
    for input in [
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "/public/%2E%2E/admin",
        "/public/.%2e/admin",
        "/public/%2e./admin",
        "/public/x/%2e/../../admin",
    ] {
        assert_eq!(canon(input).as_deref(), Ok("/admin"), "{input}");
    }
}

#[test]
fn climbing_above_the_root_is_refused() {
    for input in [
        "/..",
        "/../a",
        "/a/../..",
        "/%2e%2e/admin",
        "/a/b/../../../c",
    ] {
        assert_eq!(canon(input), Err(PathError::AboveRoot), "{input}");
    }
}

#[test]
fn unreserved_escapes_are_decoded_and_others_upper_cased() {
    let cases = [
        ("/%61%62c", "/abc"),
        ("/%7e%2D%5f%2E", "/~-_."),
        ("/a%20b", "/a%20b"),
        ("/a%2a", "/a%2A"),
        ("/a%3fb", "/a%3Fb"),
        ("/%c3%a9", "/%C3%A9"),
        ("/é", "/%C3%A9"),
        ("/a%25b", "/a%25b"),
        ("/%252e%252e/x", "/%252e%252e/x"),
    ];
    for (input, want) in cases {
        assert_eq!(canon(input).as_deref(), Ok(want), "{input}");
    }
}

#[test]
fn repeated_slashes_merge_unless_configured_not_to() {
    assert_eq!(canon("//admin").as_deref(), Ok("/admin"));
    assert_eq!(canon("/a///b//").as_deref(), Ok("/a/b/"));
    assert_eq!(canon("//").as_deref(), Ok("/"));
    let keep = |p| canonicalize(p, &KEEP_SLASHES).map(Cow::into_owned);
    assert_eq!(keep("//admin").as_deref(), Ok("//admin"));
    assert_eq!(keep("/a//../b").as_deref(), Ok("/a/b"));
    assert!(matches!(
        canonicalize("/a//b", &KEEP_SLASHES),
        Ok(Cow::Borrowed(_))
    ));
}

#[test]
fn encoded_separators_are_refused_unless_allowed() {
    assert_eq!(canon("/a%2fb"), Err(PathError::EncodedSeparator('/')));
    assert_eq!(canon("/a%2Fb"), Err(PathError::EncodedSeparator('/')));
    assert_eq!(canon("/a%5Cb"), Err(PathError::EncodedSeparator('\\')));
    assert_eq!(canon("/a%5cb"), Err(PathError::EncodedSeparator('\\')));
    let allowed = |p| canonicalize(p, &ENCODED_SLASH).map(Cow::into_owned);
    assert_eq!(allowed("/a%2fb").as_deref(), Ok("/a%2Fb"), "kept, encoded");
    assert_eq!(allowed("/a%5cb/%2e%2e/c").as_deref(), Ok("/c"));
    assert_eq!(
        allowed("/public%2F..%2Fadmin"),
        Err(PathError::EncodedDotSegment),
        "an origin decoding %2F would climb"
    );
    assert_eq!(allowed("/a%2F%2e"), Err(PathError::EncodedDotSegment));
    assert!(canon("/a%2fb").is_err_and(|e| e.is_encoded_separator()));
    assert!(!canon("/a%00b").is_err_and(|e| e.is_encoded_separator()));
}

#[test]
fn backslash_control_characters_and_bad_escapes_are_refused() {
    assert_eq!(canon("/a\\b"), Err(PathError::Backslash));
    assert_eq!(canon("/a%00b"), Err(PathError::ControlCharacter(0)));
    assert_eq!(canon("/a\u{0}b"), Err(PathError::ControlCharacter(0)));
    assert_eq!(canon("/a%0ab"), Err(PathError::ControlCharacter(0x0A)));
    assert_eq!(canon("/a\tb"), Err(PathError::ControlCharacter(0x09)));
    assert_eq!(canon("/a%7Fb"), Err(PathError::ControlCharacter(0x7F)));
    assert_eq!(canon("/a%zzb"), Err(PathError::BadEscape));
    assert_eq!(canon("/a%2"), Err(PathError::BadEscape));
    assert_eq!(canon("/a%"), Err(PathError::BadEscape));
    assert_eq!(canon("a/b"), Err(PathError::NotAbsolute));
}

#[test]
fn invalid_and_overlong_utf8_is_refused() {
    for input in [
        "/%C0%AE",
        "/%C0%AE%C0%AE/admin",
        "/%E0%80%AE",
        "/%FF",
        "/%C3",
        "/%C3é",
    ] {
        assert_eq!(canon(input), Err(PathError::InvalidUtf8), "{input}");
    }
}

#[test]
fn parameters_on_dot_or_empty_segments_are_refused() {
    for input in [
        "/public/..;/admin",
        "/public/..;x=1/admin",
        "/public/.;/admin",
        "/public/%2e%2e;/admin",
        "/;/admin",
        "/public/..%3B/admin",
    ] {
        assert_eq!(canon(input), Err(PathError::DotSegmentParameter), "{input}");
    }
    assert_eq!(canon("/a;v=1/b").as_deref(), Ok("/a;v=1/b"));
    assert_eq!(
        canon("/a/b;jsessionid=x").as_deref(),
        Ok("/a/b;jsessionid=x")
    );
}

// --- properties ---

/// Path pieces chosen to hit every rule often: dots and their escapes, separators raw and
/// encoded, escapes of every kind, `;`, non-ASCII.
fn piece() -> impl Strategy<Value = String> {
    let tokens = prop::sample::select(vec![
        "/", "//", ".", "..", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", "%3b", "%3B",
        "a", "b", "admin", "%41", "%7e", "%25", "%20", "%zz", "%", "%C0%AE", "%C3%A9", "é", "%00",
        "\u{1}", "~", "-", "_", "%2", "?",
    ]);
    prop_oneof![
        4 => tokens.prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
    ]
}

fn path() -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), 0..24).prop_map(|pieces| format!("/{}", pieces.concat()))
}

fn policy() -> impl Strategy<Value = PathPolicy> {
    (any::<bool>(), any::<bool>()).prop_map(|(merge_slashes, allow_encoded_slash)| PathPolicy {
        merge_slashes,
        allow_encoded_slash,
    })
}

/// What every canonical output must satisfy under `policy`.
pub(crate) fn assert_canonical_output(out: &str, policy: &PathPolicy) {
    assert!(out.starts_with('/'), "{out:?} is absolute");
    let body = &out[1..];
    for segment in body.split('/') {
        assert!(
            segment != "." && segment != "..",
            "{out:?} has a dot segment"
        );
    }
    if policy.merge_slashes {
        assert!(!out.contains("//"), "{out:?} has an empty segment");
    }
    if !policy.allow_encoded_slash {
        let upper = out.to_ascii_uppercase();
        assert!(
            !upper.contains("%2F") && !upper.contains("%5C"),
            "{out:?} has an encoded separator"
        );
    }
    assert!(!out.contains('\\'), "{out:?} has a raw backslash");
    assert!(
        out.bytes().all(|b| (0x20..0x7F).contains(&b)),
        "{out:?} has a control or non-ASCII byte"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn canonical_form_is_idempotent_and_clean(input in path(), policy in policy()) {
        if let Ok(once) = canonicalize(&input, &policy) {
            assert_canonical_output(&once, &policy);
            let twice = canonicalize(&once, &policy);
            prop_assert_eq!(twice.as_deref(), Ok(once.as_ref()), "canon(canon(x)) == canon(x)");
            if !once.contains(['%', ';']) {
                prop_assert!(matches!(twice, Ok(Cow::Borrowed(_))), "a canonical path is not copied");
            }
        }
    }

    #[test]
    fn the_fast_path_agrees_with_the_slow_one(input in path(), policy in policy()) {
        if super::is_canonical(input.as_bytes(), policy.merge_slashes) {
            prop_assert_eq!(super::rebuild(&input, &policy), Ok(input.clone()));
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(input in any::<String>(), policy in policy()) {
        let _ = canonicalize(&input, &policy);
        let _ = canonicalize(&format!("/{input}"), &policy);
    }
}
