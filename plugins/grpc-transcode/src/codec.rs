//! JSON (body and query parameters) → protobuf for the method's input, and the reply's
//! protobuf → JSON, using the proto3 JSON mapping through `prost-reflect`.

use prost::Message;
use prost_reflect::{DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, SerializeOptions};
use serde_json::{Map, Value};

use crate::error::TranscodeError;

/// Encode the request for `input`: the JSON object in `body` (empty means `{}`), with query
/// parameters (`?name=ada&tags=a&tags=b`) set on top of it, by proto or JSON field name.
pub fn encode_request(
    input: &MessageDescriptor,
    body: &[u8],
    query: Option<&str>,
) -> Result<Vec<u8>, TranscodeError> {
    let bad = TranscodeError::BadRequest;
    let mut object = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(o)) => o,
            Ok(_) => return Err(bad("request body must be a JSON object".to_owned())),
            Err(e) => return Err(bad(format!("request body is not valid JSON: {e}"))),
        }
    };
    if let Some(query) = query {
        merge_query(input, query, &mut object)?;
    }
    let message = DynamicMessage::deserialize(input.clone(), Value::Object(object))
        .map_err(|e| bad(format!("request does not fit {}: {e}", input.full_name())))?;
    Ok(message.encode_to_vec())
}

/// Set query parameters on the JSON object: a repeated field collects every value, other
/// fields take the last. Values stay strings (proto3 JSON accepts numbers and enum names as
/// strings) except booleans, which must be JSON `true`/`false`.
fn merge_query(
    input: &MessageDescriptor,
    query: &str,
    object: &mut Map<String, Value>,
) -> Result<(), TranscodeError> {
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let field = field(input, &key).ok_or_else(|| {
            TranscodeError::BadRequest(format!(
                "query parameter {key:?}: {} has no such field",
                input.full_name()
            ))
        })?;
        let value = scalar(&field, &value)?;
        if field.is_list() {
            match object
                .entry(field.json_name().to_owned())
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(value),
                other => *other = Value::Array(vec![value]),
            }
        } else {
            object.remove(field.name());
            object.insert(field.json_name().to_owned(), value);
        }
    }
    Ok(())
}

fn field(input: &MessageDescriptor, key: &str) -> Option<FieldDescriptor> {
    input
        .get_field_by_name(key)
        .or_else(|| input.get_field_by_json_name(key))
}

fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, TranscodeError> {
    match field.kind() {
        Kind::Message(_) => Err(TranscodeError::BadRequest(format!(
            "query parameter {:?}: message fields must be sent in the JSON body",
            field.name()
        ))),
        Kind::Bool => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            other => Err(TranscodeError::BadRequest(format!(
                "query parameter {:?}: {other:?} is not true or false",
                field.name()
            ))),
        },
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// Decode a reply message of type `output` into JSON text (proto3 JSON mapping: lowerCamelCase
/// names, 64-bit integers as strings; defaults left out unless `emit_defaults`).
pub fn decode_reply(
    output: &MessageDescriptor,
    bytes: &[u8],
    emit_defaults: bool,
) -> Result<Vec<u8>, TranscodeError> {
    let message = DynamicMessage::decode(output.clone(), bytes).map_err(|e| {
        TranscodeError::BadReply(format!("not a valid {}: {e}", output.full_name()))
    })?;
    let options = SerializeOptions::new().skip_default_fields(!emit_defaults);
    let mut out = Vec::with_capacity(bytes.len() * 2 + 2);
    let mut serializer = serde_json::Serializer::new(&mut out);
    message
        .serialize_with_options(&mut serializer, &options)
        .map_err(|e| TranscodeError::BadReply(format!("cannot write the reply as JSON: {e}")))?;
    Ok(out)
}
