//! How the MCP tools read numbers and flags: as JSON numbers and booleans,
//! and as the strings some clients send for them (the official Inspector's
//! CLI passes `limit=3` as `"3"`), with a schema that says plainly
//! `integer, minimum 0` or `boolean` — no `null` type and no `uint64`
//! format, which strict JSON-Schema validators (ajv) refuse.
//!
//! It owns parsing the tool arguments' scalars; it must not accept
//! anything else as a number (a fraction, a sign, words are errors).

use rmcp::schemars::{json_schema, Schema, SchemaGenerator};
use serde::de::{Deserializer, Error};
use serde::Deserialize;

/// A number or a string of one.
#[derive(Deserialize)]
#[serde(untagged)]
enum Scalar {
    Count(u64),
    Flag(bool),
    Text(String),
}

fn count_of<E: Error>(v: Scalar) -> Result<u64, E> {
    match v {
        Scalar::Count(n) => Ok(n),
        Scalar::Text(s) => s
            .trim()
            .parse()
            .map_err(|_| E::custom(format!("{s:?} is not a whole number of at least 0"))),
        Scalar::Flag(b) => Err(E::custom(format!("{b} is not a whole number"))),
    }
}

/// A whole number ≥ 0, given as a number or a string of digits.
pub(crate) fn count<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    count_of(Scalar::deserialize(d)?)
}

/// [`count`] where the field may be left out or `null`.
pub(crate) fn some_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Scalar>::deserialize(d)? {
        None => Ok(None),
        Some(Scalar::Text(s)) if s.trim().is_empty() => Ok(None),
        Some(v) => count_of(v).map(Some),
    }
}

/// `true`/`false`, given as a boolean or as the string `true`/`false`.
pub(crate) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    match Scalar::deserialize(d)? {
        Scalar::Flag(b) => Ok(b),
        Scalar::Text(s) => match s.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(D::Error::custom(format!("{other:?} is not true or false"))),
        },
        Scalar::Count(n) => Err(D::Error::custom(format!("{n} is not true or false"))),
    }
}

/// The schema of a [`count`] field.
pub(crate) fn count_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "minimum": 0})
}

/// The schema of a [`flag`] field.
pub(crate) fn flag_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "boolean"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct Args {
        #[serde(default, deserialize_with = "some_count")]
        limit: Option<u64>,
        #[serde(default, deserialize_with = "flag")]
        ack: bool,
    }

    fn parse(v: serde_json::Value) -> Result<Args, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn numbers_and_flags_come_as_json_or_as_strings() {
        let want = Args {
            limit: Some(3),
            ack: true,
        };
        assert_eq!(
            parse(serde_json::json!({"limit":3,"ack":true})).ok(),
            Some(want)
        );
        let want = Args {
            limit: Some(3),
            ack: true,
        };
        assert_eq!(
            parse(serde_json::json!({"limit":"3","ack":"true"})).ok(),
            Some(want)
        );
        let none = Args {
            limit: None,
            ack: false,
        };
        assert_eq!(parse(serde_json::json!({})).ok(), Some(none));
        for bad in [
            serde_json::json!({"limit":"3.5"}),
            serde_json::json!({"limit":"-1"}),
            serde_json::json!({"limit":-1}),
            serde_json::json!({"limit":"three"}),
            serde_json::json!({"ack":"yes"}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
