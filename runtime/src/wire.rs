//! Encoding of every payload that crosses a node boundary.
//!
//! ractor_cluster frames each message field with [`BytesConvertable`]. Its `from_bytes` cannot
//! return an error, so [`Wire`] keeps the decode result inside: a handler calls
//! [`Wire::into_inner`] and logs a clear error for a payload it cannot read, instead of
//! panicking (ractor would catch the panic and drop the message without a word).

use ractor::BytesConvertable;
use serde::{de::DeserializeOwned, Serialize};

/// The version of the wire protocol: the messages of `protocol` and their payloads as
/// [`Wire`] encodes them. `troupe-node --version` prints it. Raise it when a change means
/// a node of the previous version can no longer read a message (a renamed variant or
/// field, a new required field); nodes do not compare it at the handshake yet.
pub const WIRE_VERSION: u32 = 1;

/// Why a payload could not be decoded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("undecodable {type_name} payload of {len} bytes: {reason}")]
pub struct WireError {
    /// The Rust type that was expected.
    pub type_name: &'static str,
    /// Length of the payload.
    pub len: usize,
    /// The decoder's message.
    pub reason: String,
}

/// A value encoded with rmp-serde (MessagePack, fields by name) on the wire.
#[derive(Debug, Clone)]
pub struct Wire<T>(Result<T, WireError>);

impl<T> Wire<T> {
    /// Wraps a value to send.
    pub fn new(value: T) -> Self {
        Wire(Ok(value))
    }

    /// The decoded value, or why it could not be decoded.
    pub fn into_inner(self) -> Result<T, WireError> {
        self.0
    }
}

/// Encodes a value the way [`Wire`] does.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

/// Decodes bytes the way [`Wire`] does.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    rmp_serde::from_slice(bytes).map_err(|e| WireError {
        type_name: std::any::type_name::<T>(),
        len: bytes.len(),
        reason: e.to_string(),
    })
}

fn count(direction: &'static str, len: usize) {
    use crate::observe::metric;
    metrics::counter!(metric::WIRE_BYTES, "direction" => direction).increment(len as u64);
    metrics::counter!(metric::WIRE_MESSAGES, "direction" => direction).increment(1);
}

impl<T: Serialize + DeserializeOwned> BytesConvertable for Wire<T> {
    fn into_bytes(self) -> Vec<u8> {
        let bytes = match self.0 {
            // Encoding our own serde types into a Vec cannot fail short of a bug in a Serialize
            // impl; an empty payload then fails to decode on the far side, with a log line.
            Ok(v) => encode(&v).unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot encode {}", std::any::type_name::<T>());
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        count("out", bytes.len());
        bytes
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        count("in", bytes.len());
        Wire(decode(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let v = serde_json::json!({"a": [1, 2.5, "x", null, {"b": true}]});
        let back: Wire<serde_json::Value> = Wire::from_bytes(Wire::new(v.clone()).into_bytes());
        assert_eq!(back.into_inner().unwrap(), v);
        let bad: Wire<Vec<String>> = Wire::from_bytes(vec![0xc1, 0xff, 0x00]);
        let err = bad.into_inner().unwrap_err();
        assert_eq!(err.len, 3);
    }
}
