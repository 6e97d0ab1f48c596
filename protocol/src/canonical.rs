//! The bytes a manifest signature covers (DESIGN §5, RFC 8785 JSON Canonicalization Scheme).
//!
//! The signed bytes are the RFC 8785 canonical form of the whole received JSON object with its
//! `signatures` member removed. Unknown members stay in, so changing any of them breaks the
//! signature. Seed 003 signed `serde_json::to_string` of a struct holding a `HashMap`, whose
//! order changes from process to process; canonicalising the received value makes that bug
//! impossible.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The member that holds signatures and is left out of the signed bytes.
pub const SIGNATURES_FIELD: &str = "signatures";

/// Why signing bytes could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The top-level JSON value is not an object.
    #[error("a signed document must be a JSON object")]
    NotAnObject,
    /// The canonicaliser refused the value.
    #[error("RFC 8785 canonicalisation failed")]
    Jcs(#[source] serde_json::Error),
}

/// The RFC 8785 canonical form of `value`.
///
/// # Errors
/// [`CanonicalError::Jcs`] if the canonicaliser refuses the value.
pub fn canonicalize(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    serde_jcs::to_vec(value).map_err(CanonicalError::Jcs)
}

/// The signed bytes of a document: RFC 8785 of `document` minus its `signatures` member.
///
/// # Errors
/// [`CanonicalError::NotAnObject`] unless `document` is an object; [`CanonicalError::Jcs`].
pub fn signing_bytes(document: &Value) -> Result<Vec<u8>, CanonicalError> {
    let Value::Object(map) = document else {
        return Err(CanonicalError::NotAnObject);
    };
    let mut unsigned = map.clone();
    unsigned.remove(SIGNATURES_FIELD);
    canonicalize(&Value::Object(unsigned))
}

/// SHA-256 of [`signing_bytes`] (32 bytes): the message each Ed25519 signature signs.
///
/// # Errors
/// As [`signing_bytes`].
pub fn signing_digest(document: &Value) -> Result<[u8; 32], CanonicalError> {
    Ok(Sha256::digest(signing_bytes(document)?).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jcs(text: &str) -> String {
        let v: Value = serde_json::from_str(text).unwrap();
        String::from_utf8(canonicalize(&v).unwrap()).unwrap()
    }

    #[test]
    fn rfc8785_keys_sort_by_utf16_code_units() {
        // RFC 8785 §3.2.3 sorting example: U+20AC, U+1F600 (surrogates D83D DE00), U+FB33 ...
        // In UTF-16 order the surrogate pair (0xD83D) sorts before U+FB33 although in UTF-8
        // byte order U+1F600 comes last.
        let input = r#"{"\u20ac":"Euro Sign","\r":"Carriage Return","\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One","\ud83d\ude00":"Emoji: Grinning Face","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis"}"#;
        let out = jcs(input);
        let order: Vec<&str> = [
            "\r",
            "1",
            "\u{80}",
            "\u{f6}",
            "\u{20ac}",
            "\u{1f600}",
            "\u{fb33}",
        ]
        .to_vec();
        let mut last = 0;
        for key in order {
            let pos = out.find(&serde_json::to_string(key).unwrap()).unwrap();
            assert!(pos >= last, "key {key:?} out of order in {out}");
            last = pos;
        }
    }

    #[test]
    fn rfc8785_number_forms() {
        // RFC 8785 Appendix B / §3.2.2.3: ECMAScript Number.prototype.toString forms.
        assert_eq!(
            jcs("[1.0, -0.0, 1e30, 1E-7, 0.000001, 333333333.33333329, 4.50]"),
            "[1,0,1e+30,1e-7,0.000001,333333333.3333333,4.5]"
        );
        assert_eq!(
            jcs("[1e21, 1e20, 100, 9007199254740991]"),
            "[1e+21,100000000000000000000,100,9007199254740991]"
        );
    }

    #[test]
    fn rfc8785_string_escapes() {
        // §3.2.2.2: only ", \ and control characters are escaped; \b \t \n \f \r short forms,
        // others \u00XX lowercase; "/" and non-ASCII are written as themselves.
        assert_eq!(
            jcs(r#""\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/""#),
            "\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\""
        );
        assert_eq!(
            jcs(r#""\u0008\u0009\u000c\u000d\u001f""#),
            r#""\b\t\f\r\u001f""#
        );
    }

    #[test]
    fn rfc8785_appendix_example_canonicalises_exactly() {
        // RFC 8785 §3.2.4 example input and output.
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        let expected = "{\"literals\":[null,true,false],\"numbers\":[333333333.3333333,1e+30,4.5,0.002,1e-27],\"string\":\"€$\\u000f\\nA'B\\\"\\\\\\\\\\\"/\"}";
        assert_eq!(jcs(input), expected);
    }

    #[test]
    fn signing_bytes_drop_only_signatures() {
        let doc: Value = serde_json::from_str(
            r#"{"b":1,"a":{"z":[],"y":"x"},"signatures":[{"k":1}],"extra":true}"#,
        )
        .unwrap();
        let bytes = signing_bytes(&doc).unwrap();
        assert_eq!(bytes, br#"{"a":{"y":"x","z":[]},"b":1,"extra":true}"#);
        assert!(matches!(
            signing_bytes(&Value::Null),
            Err(CanonicalError::NotAnObject)
        ));
    }
}
