//! Native tests of the pure parts: framing, status mapping, JSON ↔ protobuf, config.

use prost_reflect::{DescriptorPool, DynamicMessage, MethodDescriptor, Value as PValue};
use serde_json::{json, Value};

use crate::config::{self, Settings};
use crate::error::TranscodeError;
use crate::{codec, grpc};

/// The greeter example's descriptor set, as the example ships it.
const GREETER_PB: &[u8] = include_bytes!("../../../examples/grpc-greeter/greeter.pb");

fn say_hello() -> MethodDescriptor {
    let pool = DescriptorPool::decode(GREETER_PB).expect("the example's descriptor set decodes");
    config::resolve(&pool, "helloworld.Greeter/SayHello").expect("SayHello is in the set")
}

fn field(bytes: &[u8], name: &str) -> PValue {
    let m = DynamicMessage::decode(say_hello().input(), bytes).expect("valid HelloRequest");
    m.get_field_by_name(name)
        .expect("field exists")
        .into_owned()
}

#[test]
fn frames_round_trip_and_broken_frames_are_refused() {
    let framed = grpc::frame(b"abc");
    assert_eq!(framed, [0, 0, 0, 0, 3, b'a', b'b', b'c']);
    assert_eq!(grpc::unframe(&framed), Ok(&b"abc"[..]));
    assert_eq!(grpc::unframe(&grpc::frame(b"")), Ok(&b""[..]));
    for broken in [
        &[0u8, 0, 0][..],
        &[1, 0, 0, 0, 0],
        &[0, 0, 0, 0, 4, 1],
        &[0, 0, 0, 0, 0, 9],
    ] {
        assert!(
            matches!(grpc::unframe(broken), Err(TranscodeError::BadReply(_))),
            "{broken:?} must be refused"
        );
    }
}

#[test]
fn status_comes_from_trailers_or_a_trailers_only_head() {
    let h = |pairs: &[(&str, &str)]| -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    };
    let trailers = h(&[
        ("grpc-status", "5"),
        ("grpc-message", "no%20such%20user %E2%80%9Cx%E2%80%9D"),
    ]);
    assert_eq!(
        grpc::status(&h(&[("content-type", "application/grpc")]), &trailers),
        Some((5, "no such user “x”".to_owned()))
    );
    let head = h(&[("grpc-status", "16"), ("grpc-message", "who%3F")]);
    assert_eq!(grpc::status(&head, &[]), Some((16, "who?".to_owned())));
    assert_eq!(
        grpc::status(&h(&[("grpc-status", "x")]), &[]),
        Some((2, String::new()))
    );
    assert_eq!(grpc::status(&[], &[]), None);
    assert_eq!(grpc::percent_decode("100%"), "100%");
    assert_eq!(grpc::percent_decode("%zz%4"), "%zz%4");
}

#[test]
fn grpc_codes_map_to_the_standard_http_statuses() {
    let expected = [
        (0, 200),
        (1, 499),
        (2, 500),
        (3, 400),
        (4, 504),
        (5, 404),
        (6, 409),
        (7, 403),
        (8, 429),
        (9, 400),
        (10, 409),
        (11, 400),
        (12, 501),
        (13, 500),
        (14, 503),
        (15, 500),
        (16, 401),
        (99, 500),
    ];
    for (code, http) in expected {
        assert_eq!(grpc::http_status(code), http, "grpc-status {code}");
    }
    let e = TranscodeError::Status {
        code: 5,
        message: "gone".into(),
    };
    assert_eq!(e.http_status(), 404);
    assert_eq!(
        e.body(),
        json!({ "error": "not_found", "grpc_status": 5, "message": "gone" })
    );
}

#[test]
fn json_and_query_become_the_input_message() {
    let input = say_hello().input();
    let bytes = codec::encode_request(&input, br#"{"name":"ada","times":2}"#, Some("shout=true"))
        .expect("fits HelloRequest");
    assert_eq!(field(&bytes, "name"), PValue::String("ada".into()));
    assert_eq!(field(&bytes, "times"), PValue::I32(2));
    assert_eq!(field(&bytes, "shout"), PValue::Bool(true));
    // A GET with only a query; numbers may be strings in proto3 JSON.
    let bytes = codec::encode_request(&input, b"", Some("name=bob&times=3")).expect("query only");
    assert_eq!(field(&bytes, "name"), PValue::String("bob".into()));
    assert_eq!(field(&bytes, "times"), PValue::I32(3));
}

#[test]
fn bad_client_input_is_a_bad_request_saying_why() {
    let input = say_hello().input();
    let cases: [(&[u8], Option<&str>, &str); 5] = [
        (b"{not json", None, "not valid JSON"),
        (b"[1]", None, "must be a JSON object"),
        (br#"{"name":1}"#, None, "HelloRequest"),
        (br#"{"nope":1}"#, None, "nope"),
        (b"", Some("shout=yes"), "not true or false"),
    ];
    for (body, query, needle) in cases {
        match codec::encode_request(&input, body, query) {
            Err(TranscodeError::BadRequest(m)) => {
                assert!(m.contains(needle), "{m:?} lacks {needle:?}")
            }
            other => panic!(
                "{:?}: expected a bad request, got {other:?}",
                String::from_utf8_lossy(body)
            ),
        }
    }
}

#[test]
fn reply_becomes_proto3_json() {
    let output = say_hello().output();
    let mut reply = DynamicMessage::new(output.clone());
    reply.set_field_by_name("message", PValue::String("Hello, ada!".into()));
    reply.set_field_by_name("length", PValue::I64(11));
    let bytes = prost::Message::encode_to_vec(&reply);
    let json: Value =
        serde_json::from_slice(&codec::decode_reply(&output, &bytes, false).expect("decodes"))
            .expect("JSON");
    assert_eq!(json, json!({ "message": "Hello, ada!", "length": "11" }));
    let empty: Value =
        serde_json::from_slice(&codec::decode_reply(&output, b"", true).expect("decodes"))
            .expect("JSON");
    assert_eq!(empty, json!({ "message": "", "length": "0" }));
    assert!(matches!(
        codec::decode_reply(&output, &[0xff], false),
        Err(TranscodeError::BadReply(_))
    ));
}

#[test]
fn config_mistakes_are_named() {
    let pool = DescriptorPool::decode(GREETER_PB).expect("decodes");
    assert_eq!(
        config::grpc_path(&say_hello()),
        "/helloworld.Greeter/SayHello"
    );
    assert!(config::resolve(&pool, "helloworld.Greeter.SayHello").is_ok());
    for (name, needle) in [
        ("helloworld.Nope/SayHello", "known: helloworld.Greeter"),
        ("helloworld.Greeter/Nope", "has no method"),
        ("SayHello", "expected"),
    ] {
        match config::resolve(&pool, name) {
            Err(TranscodeError::Config(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
            other => panic!("{name}: expected a config error, got {other:?}"),
        }
    }
    let err = |json: &str| match Settings::parse(json) {
        Err(TranscodeError::Config(m)) => m,
        other => panic!("{json}: expected a config error, got {other:?}"),
    };
    assert!(err(r#"{"method":"a.B/C"}"#).contains("service"));
    assert!(err(r#"{"service":"g"}"#).contains("set `method`"));
    assert!(
        err(r#"{"service":"g","method":"a.B/C","methods":{"/x":"a.B/C"}}"#).contains("together")
    );
    assert!(err(r#"{"service":"g","method":"a.B/C","bogus":1}"#).contains("bogus"));
    let s = Settings::parse(r#"{"service":"g","methods":{"/hello":"a.B/C"}}"#).expect("valid");
    assert_eq!(s.method_for("/hello"), Ok("a.B/C"));
    assert_eq!(
        s.method_for("/other"),
        Err(TranscodeError::NoMethod("/other".into()))
    );
    assert_eq!(s.descriptors, "descriptors");
}
