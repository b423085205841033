//! Decoding annotation JSON the way Go's `encoding/json` does for upstream's annotation structs.
//!
//! Users write these annotations by hand and upstream accepts what Go accepts: object keys match
//! struct fields case-insensitively (`"IPv4"` fills `ipv4`), the last duplicate key wins, `null`
//! leaves a field at its zero value, unknown keys are ignored, and a value of the wrong JSON type is
//! an error naming the struct field. serde's derive is stricter on all four points, so annotation
//! parsers read a `serde_json::Value` through these helpers instead.

use serde_json::{Map, Value};

/// The JSON type name Go uses in `UnmarshalTypeError`.
pub(crate) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Parses text into a JSON value (syntax errors only).
pub(crate) fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|error| error.to_string())
}

/// An object being decoded into the Go struct `struct_name`.
pub(crate) struct GoObject<'a> {
    object: &'a Map<String, Value>,
    struct_name: &'static str,
}

impl<'a> GoObject<'a> {
    /// `value` must be an object (or `null`, which decodes to the zero struct: `None` here).
    pub(crate) fn new(
        value: &'a Value,
        struct_name: &'static str,
        go_type: &str,
    ) -> Result<Option<GoObject<'a>>, String> {
        match value {
            Value::Object(object) => Ok(Some(GoObject {
                object,
                struct_name,
            })),
            Value::Null => Ok(None),
            other => Err(format!(
                "json: cannot unmarshal {} into Go value of type {go_type}",
                json_type(other)
            )),
        }
    }

    /// The value of a field: the last key equal to `field`, ignoring ASCII case.
    fn field(&self, field: &str) -> Option<&'a Value> {
        self.object
            .iter()
            .filter(|(key, _)| key.as_str() == field || key.eq_ignore_ascii_case(field))
            .map(|(_, value)| value)
            .next_back()
    }

    fn type_error(&self, field: &str, value: &Value, go_type: &str) -> String {
        format!(
            "json: cannot unmarshal {} into Go struct field {}.{field} of type {go_type}",
            json_type(value),
            self.struct_name
        )
    }

    /// A `string` field.
    pub(crate) fn string(&self, field: &str) -> Result<String, String> {
        match self.field(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(text)) => Ok(text.clone()),
            Some(other) => Err(self.type_error(field, other, "string")),
        }
    }

    /// A `bool` field.
    pub(crate) fn boolean(&self, field: &str) -> Result<bool, String> {
        match self.field(field) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(flag)) => Ok(*flag),
            Some(other) => Err(self.type_error(field, other, "bool")),
        }
    }

    /// A `[]string` field (`null` items decode to empty strings, like Go).
    pub(crate) fn strings(&self, field: &str) -> Result<Vec<String>, String> {
        match self.field(field) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Null => Ok(String::new()),
                    Value::String(text) => Ok(text.clone()),
                    other => Err(self.type_error(field, other, "string")),
                })
                .collect(),
            Some(other) => Err(self.type_error(field, other, "[]string")),
        }
    }

    /// A field that must be of one JSON shape when present (`array` or `object`); content unchecked.
    pub(crate) fn shape(
        &self,
        field: &str,
        expected: &'static str,
        go_type: &str,
    ) -> Result<(), String> {
        match self.field(field) {
            None | Some(Value::Null) => Ok(()),
            Some(value) if json_type(value) == expected => Ok(()),
            Some(other) => Err(self.type_error(field, other, go_type)),
        }
    }
}

/// Decodes a JSON array of objects (a Go slice of structs); `null` is an empty slice.
pub(crate) fn array<'a>(value: &'a Value, go_type: &str) -> Result<Vec<&'a Value>, String> {
    match value {
        Value::Array(items) => Ok(items.iter().collect()),
        Value::Null => Ok(Vec::new()),
        other => Err(format!(
            "json: cannot unmarshal {} into Go value of type {go_type}",
            json_type(other)
        )),
    }
}

/// Decodes a `[]string` document.
pub(crate) fn string_list(value: &Value, go_type: &str) -> Result<Vec<String>, String> {
    match value {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Null => Ok(String::new()),
                Value::String(text) => Ok(text.clone()),
                other => Err(format!(
                    "json: cannot unmarshal {} into Go value of type string",
                    json_type(other)
                )),
            })
            .collect(),
        other => Err(format!(
            "json: cannot unmarshal {} into Go value of type {go_type}",
            json_type(other)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_case_insensitively_and_last_duplicate_wins() {
        let value = parse(r#"{"IPv4":["a"],"ipv4":["b"],"Interface":"eth0","extra":1}"#).unwrap();
        let object = GoObject::new(&value, "AnnoIPPoolItem", "types.AnnoIPPoolItem")
            .unwrap()
            .unwrap();
        assert_eq!(object.strings("ipv4").unwrap(), vec!["b"]);
        assert_eq!(object.string("interface").unwrap(), "eth0");
        assert_eq!(object.string("missing").unwrap(), "");
    }

    #[test]
    fn wrong_types_name_the_go_field() {
        let value = parse(r#"{"ipv4":"pool","cleangateway":"yes"}"#).unwrap();
        let object = GoObject::new(&value, "AnnoIPPoolItem", "types.AnnoIPPoolItem")
            .unwrap()
            .unwrap();
        assert_eq!(
            object.strings("ipv4").unwrap_err(),
            "json: cannot unmarshal string into Go struct field AnnoIPPoolItem.ipv4 of type []string"
        );
        assert_eq!(
            object.boolean("cleangateway").unwrap_err(),
            "json: cannot unmarshal string into Go struct field AnnoIPPoolItem.cleangateway of type bool"
        );
    }

    #[test]
    fn null_decodes_to_zero_values() {
        let value = parse(r#"{"ipv4":null,"ipv6":[null,"x"]}"#).unwrap();
        let object = GoObject::new(&value, "S", "S").unwrap().unwrap();
        assert!(object.strings("ipv4").unwrap().is_empty());
        assert_eq!(object.strings("ipv6").unwrap(), vec!["", "x"]);
        assert!(GoObject::new(&Value::Null, "S", "S").unwrap().is_none());
        assert!(array(&Value::Null, "T").unwrap().is_empty());
    }
}
