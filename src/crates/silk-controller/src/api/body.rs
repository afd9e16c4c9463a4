//! Request bodies decoded the way Go's `encoding/json` does for upstream's structs: no
//! Content-Type needed, keys matched exactly first and then case-insensitively, unknown keys
//! ignored, missing keys and `null` left at zero values; a value of the wrong type is an error
//! named like Go's. Bodies are capped at [`MAX_BODY`] bytes.

use actix_web::web;
use futures::StreamExt;
use serde_json::{Map, Value};

use super::error::ApiError;

/// Upstream reads bodies without limit; every legitimate body is under 200 bytes.
pub const MAX_BODY: usize = 64 * 1024;

/// Reads the whole body, failing with 413 past [`MAX_BODY`].
pub async fn read_body(mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("read-body: {e}")))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(ApiError::PayloadTooLarge(format!(
                "read-body: request body larger than {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A decoded JSON object with Go's field lookup.
pub struct GoObject {
    type_name: &'static str,
    map: Map<String, Value>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn unmarshal(msg: String) -> ApiError {
    ApiError::BadRequest(format!("unmarshal-request: {msg}"))
}

impl GoObject {
    /// Parses `body` as the JSON object for Go type `type_name` (used in error texts).
    pub fn parse(type_name: &'static str, body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| unmarshal(e.to_string()))?;
        match value {
            Value::Object(map) => Ok(GoObject { type_name, map }),
            Value::Null => Ok(GoObject {
                type_name,
                map: Map::new(),
            }),
            other => Err(unmarshal(format!(
                "json: cannot unmarshal {} into Go value of type {type_name}",
                kind(&other)
            ))),
        }
    }

    /// Exact key first, then the last case-insensitive match.
    fn field(&self, key: &str) -> Option<&Value> {
        self.map.get(key).or_else(|| {
            self.map
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
                .next_back()
        })
    }

    fn type_error(&self, key: &str, v: &Value, want: &str) -> ApiError {
        unmarshal(format!(
            "json: cannot unmarshal {} into Go struct field {}.{key} of type {want}",
            kind(v),
            self.type_name
        ))
    }

    /// A string field; missing or `null` gives `""`.
    pub fn string(&self, key: &str) -> Result<String, ApiError> {
        match self.field(key) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v) => Err(self.type_error(key, v, "string")),
        }
    }

    /// A bool field; missing or `null` gives `false`.
    pub fn bool(&self, key: &str) -> Result<bool, ApiError> {
        match self.field(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(self.type_error(key, v, "bool")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_like_go() {
        let o = GoObject::parse(
            "AcquireRequest",
            br#"{"UNDERLAY_IP":"10.0.0.1","extra":[1],"single_overlay_ip":null}"#,
        )
        .unwrap();
        assert_eq!(o.string("underlay_ip").unwrap(), "10.0.0.1");
        assert!(!o.bool("single_overlay_ip").unwrap());
        let o = GoObject::parse("AcquireRequest", b"null").unwrap();
        assert_eq!(o.string("underlay_ip").unwrap(), "");
        let o = GoObject::parse("AcquireRequest", br#"{"underlay_ip":5}"#).unwrap();
        assert_eq!(
            o.string("underlay_ip").unwrap_err().to_string(),
            "unmarshal-request: json: cannot unmarshal number into Go struct field AcquireRequest.underlay_ip of type string"
        );
        let o = GoObject::parse("AcquireRequest", br#"{"single_overlay_ip":"true"}"#).unwrap();
        assert!(o.bool("single_overlay_ip").is_err());
        for bad in [&b""[..], b"{", b"[]", b"\"x\"", b"{} x"] {
            let e = GoObject::parse("AcquireRequest", bad).err().unwrap();
            assert!(e.to_string().starts_with("unmarshal-request: "), "{e}");
        }
    }
}
