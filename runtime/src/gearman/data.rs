//! Gearman workloads are bytes, Troupe inputs and outputs are JSON: the rule of DESIGN.md.
//!
//! A workload that parses as JSON is that JSON; any other workload is a JSON string of its
//! bytes (bytes that are not UTF-8 are replaced by U+FFFD: Gearman users who send binary
//! data should send it base64-encoded or as JSON). A result that is a JSON string goes
//! back as its raw text; any other result as JSON text. External workers get inputs and
//! give results by the same rule, so `gearman -w -f reverse -- rev` works unchanged.

use serde_json::Value;

/// The JSON value of a workload.
pub fn from_workload(data: &[u8]) -> Value {
    serde_json::from_slice(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()))
}

/// The bytes of a result (or of an input handed to an external worker).
pub fn to_workload(v: &Value) -> Vec<u8> {
    match v {
        Value::String(s) => s.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_stays_json_and_text_becomes_a_string() {
        assert_eq!(from_workload(br#"{"add": 5}"#), json!({"add": 5}));
        assert_eq!(from_workload(b"hello"), json!("hello"));
        assert_eq!(from_workload(b"12"), json!(12));
        assert_eq!(to_workload(&json!("hello")), b"hello");
        assert_eq!(to_workload(&json!(5)), b"5");
        assert_eq!(to_workload(&json!({"a": [1]})), br#"{"a":[1]}"#);
    }

    #[test]
    fn text_round_trips() {
        for w in [&b"hello world"[..], b"", b"line\n"] {
            assert_eq!(to_workload(&from_workload(w)), w);
        }
    }
}
