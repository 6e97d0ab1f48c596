//! Strict JSON parsing for signed documents (DESIGN §5, RFC 8785 §3.1, RFC 7493 I-JSON).
//!
//! `serde_json` alone keeps the last of two duplicate keys and accepts integers that an
//! RFC 8785 canonicaliser (which works in IEEE 754 doubles) would round. Both would let two
//! parties read different documents out of the same signed bytes, so [`parse_strict`] refuses
//! them, and it caps nesting depth before any recursion can hurt.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Default nesting limit for manifests and records: objects and arrays inside each other.
pub const DEFAULT_MAX_DEPTH: usize = 16;

/// The largest integer that survives a round trip through an IEEE 754 double (2^53).
pub const MAX_SAFE_INTEGER: u64 = 1 << 53;

/// Why a document was refused by [`parse_strict`].
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// Objects/arrays nested deeper than the limit.
    #[error("JSON nests deeper than {limit} levels")]
    TooDeep {
        /// The nesting limit that was exceeded.
        limit: usize,
    },
    /// The same key twice in one object.
    #[error("JSON object has the key {key:?} twice")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// An integer outside ±2^53, which RFC 8785 canonicalisers cannot represent exactly.
    #[error("JSON integer {value} is outside ±2^53 (RFC 7493 §2.2)")]
    UnsafeInteger {
        /// The integer as written.
        value: String,
    },
    /// Not JSON at all, or trailing garbage.
    #[error("malformed JSON")]
    Syntax(#[source] serde_json::Error),
}

#[derive(Debug, Clone)]
enum Violation {
    TooDeep(usize),
    DuplicateKey(String),
    UnsafeInteger(String),
}

/// Parses `bytes` as one JSON value, refusing nesting beyond `max_depth`, duplicate object
/// keys and integers outside ±2^53.
///
/// # Errors
/// [`JsonError`] naming the first violation, or [`JsonError::Syntax`] for malformed input.
pub fn parse_strict(bytes: &[u8], max_depth: usize) -> Result<Value, JsonError> {
    let violation = Cell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let seed = Strict {
        depth: 0,
        max_depth,
        violation: &violation,
    };
    let result = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
    match result {
        Ok(v) => Ok(v),
        Err(e) => Err(match violation.take() {
            Some(Violation::TooDeep(limit)) => JsonError::TooDeep { limit },
            Some(Violation::DuplicateKey(key)) => JsonError::DuplicateKey { key },
            Some(Violation::UnsafeInteger(value)) => JsonError::UnsafeInteger { value },
            None => JsonError::Syntax(e),
        }),
    }
}

struct Strict<'a> {
    depth: usize,
    max_depth: usize,
    violation: &'a Cell<Option<Violation>>,
}

impl<'a> Strict<'a> {
    fn fail<E: de::Error>(&self, v: Violation) -> E {
        let msg = format!("{v:?}");
        self.violation.set(Some(v));
        E::custom(msg)
    }

    fn child(&self) -> Strict<'a> {
        Strict {
            depth: self.depth + 1,
            max_depth: self.max_depth,
            violation: self.violation,
        }
    }

    fn enter<E: de::Error>(&self) -> Result<(), E> {
        if self.depth >= self.max_depth {
            return Err(self.fail(Violation::TooDeep(self.max_depth)));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(self.fail(Violation::UnsafeInteger(v.to_string())));
        }
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > MAX_SAFE_INTEGER {
            return Err(self.fail(Violation::UnsafeInteger(v.to_string())));
        }
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(self.fail(Violation::DuplicateKey(key)));
            }
            let v = map.next_value_seed(self.child())?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_json_parses() {
        let v = parse_strict(br#"{"a":[1,2.5,"x",null,true],"b":{}}"#, 4).unwrap();
        assert_eq!(v["a"][1], Value::from(2.5));
    }

    #[test]
    fn duplicate_key_is_refused() {
        let err = parse_strict(br#"{"version":"1.0.0","version":"9.0.0"}"#, 4).unwrap_err();
        assert!(
            matches!(err, JsonError::DuplicateKey { ref key } if key == "version"),
            "{err}"
        );
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        let deep = format!("{}{}", "[".repeat(5), "]".repeat(5));
        assert!(parse_strict(deep.as_bytes(), 5).is_ok());
        let err = parse_strict(deep.as_bytes(), 4).unwrap_err();
        assert!(matches!(err, JsonError::TooDeep { limit: 4 }), "{err}");
        // Far deeper than serde_json's own recursion limit: still our typed error, no overflow.
        let very = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(matches!(
            parse_strict(very.as_bytes(), 16),
            Err(JsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn integers_beyond_2_pow_53_are_refused() {
        assert!(parse_strict(b"9007199254740992", 1).is_ok());
        assert!(matches!(
            parse_strict(b"9007199254740993", 1),
            Err(JsonError::UnsafeInteger { .. })
        ));
        assert!(matches!(
            parse_strict(b"-9223372036854775808", 1),
            Err(JsonError::UnsafeInteger { .. })
        ));
    }

    #[test]
    fn trailing_garbage_is_a_syntax_error() {
        assert!(matches!(
            parse_strict(b"{} {}", 4),
            Err(JsonError::Syntax(_))
        ));
        assert!(matches!(parse_strict(b"", 4), Err(JsonError::Syntax(_))));
    }
}
