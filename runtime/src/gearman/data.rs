//! Gearman workloads are bytes, Troupe inputs and outputs are JSON.
//!
//! Between a Gearman client and a Gearman worker the bytes pass through exactly, whatever
//! they hold (msgpack, pickle, gzip, JSON text that must not be reformatted): inside Troupe
//! a workload travels in its *carried* form, a JSON object of one key that holds its
//! bytes, never parsed: `{"$gearman": "TEXT"}` for UTF-8 text, `{"$gearman_base64":
//! "BASE64"}` for other bytes. That is also what a job's status shows for it.
//!
//! At the boundary with a Troupe task (a built-in, a Rust task, a job file's step), and
//! there only, DESIGN.md's rule applies ([`for_task`]): a workload that parses as JSON is
//! that JSON, other UTF-8 text is a JSON string; bytes that are not UTF-8 are refused with
//! a clear error, never replaced. A result goes back to a Gearman client as its carried
//! bytes, or, from a Troupe task, a JSON string as its raw text and anything else as JSON
//! text ([`to_workload`]).

use base64::Engine;
use serde_json::Value;

/// The key of a carried UTF-8 workload.
pub const TEXT_KEY: &str = "$gearman";
/// The key of a carried workload that is not UTF-8 (standard base64, padded).
pub const BASE64_KEY: &str = "$gearman_base64";

/// The error of a step whose Gearman worker sent `WORK_FAIL`.
pub const WORK_FAIL: &str = "the Gearman worker reported WORK_FAIL";
/// Before the carried data of a worker's `WORK_EXCEPTION` in a step's error: the client
/// gets the data back exactly from there.
pub const EXCEPTION: &str = "the Gearman worker reported an exception: ";

/// The carried form of a workload: its bytes, exactly.
pub fn carry(data: &[u8]) -> Value {
    let (key, text) = match std::str::from_utf8(data) {
        Ok(t) => (TEXT_KEY, t.to_string()),
        Err(_) => (
            BASE64_KEY,
            base64::engine::general_purpose::STANDARD.encode(data),
        ),
    };
    Value::Object(serde_json::Map::from_iter([(
        key.to_string(),
        Value::String(text),
    )]))
}

/// The bytes of a carried workload; `None` for any other value.
pub fn carried(v: &Value) -> Option<Vec<u8>> {
    let o = v.as_object().filter(|o| o.len() == 1)?;
    if let Some(Value::String(t)) = o.get(TEXT_KEY) {
        return Some(t.as_bytes().to_vec());
    }
    match o.get(BASE64_KEY) {
        Some(Value::String(b)) => base64::engine::general_purpose::STANDARD.decode(b).ok(),
        _ => None,
    }
}

/// The input a Troupe task gets for `v`: a carried workload by DESIGN.md's rule, anything
/// else as it is. `Err` for a carried workload that is not UTF-8 text.
pub fn for_task(v: Value) -> Result<Value, String> {
    let Some(bytes) = carried(&v) else {
        return Ok(v);
    };
    if let Ok(json) = serde_json::from_slice(&bytes) {
        return Ok(json);
    }
    String::from_utf8(bytes).map(Value::String).map_err(|e| {
        format!(
            "the Gearman workload of {} bytes is not UTF-8 text (byte {} is not), and Troupe tasks take JSON: send binary data to a Troupe task base64-encoded, or serve the function with a Gearman worker, which gets the bytes as they are",
            e.as_bytes().len(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The bytes a Gearman client (or worker) gets for `v`: a carried workload's own bytes; a
/// JSON string's raw text; any other value as JSON text.
pub fn to_workload(v: &Value) -> Vec<u8> {
    if let Some(bytes) = carried(v) {
        return bytes;
    }
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
    fn every_byte_passes_through_exactly() {
        let all: Vec<u8> = (0..=255).collect();
        let json_looking: &[&[u8]] = &[
            br#""quoted""#,
            b"18446744073709551617",
            b"1.10",
            b"1e2",
            br#"{"a": 1, "a": 2}"#,
            b"",
            b"0",
            &all,
            b"\xff\xfe\x00",
        ];
        for w in json_looking {
            assert_eq!(to_workload(&carry(w)), *w, "{w:?}");
        }
        assert_eq!(carry(b"hi"), json!({"$gearman": "hi"}));
        assert_eq!(carry(b"\xff"), json!({"$gearman_base64": "/w=="}));
    }

    #[test]
    fn a_task_gets_json_or_text_and_never_replaced_bytes() {
        assert_eq!(for_task(carry(br#"{"add": 5}"#)), Ok(json!({"add": 5})));
        assert_eq!(for_task(carry(b"12")), Ok(json!(12)));
        assert_eq!(for_task(carry(b"hello")), Ok(json!("hello")));
        assert_eq!(for_task(carry(b"")), Ok(json!("")));
        let e = for_task(carry(b"ok\xff")).expect_err("not UTF-8");
        assert!(e.contains("3 bytes") && e.contains("byte 2"), "{e}");
        // Anything else is left alone, also objects that only look carried.
        for v in [
            json!({"x": 1}),
            json!("s"),
            json!({"$gearman": 1}),
            json!({"$gearman": "a", "b": 2}),
        ] {
            assert_eq!(for_task(v.clone()), Ok(v));
        }
    }

    #[test]
    fn task_results_go_back_by_the_rule() {
        assert_eq!(to_workload(&json!("hello")), b"hello");
        assert_eq!(to_workload(&json!(5)), b"5");
        assert_eq!(to_workload(&json!({"a": [1]})), br#"{"a":[1]}"#);
    }
}
