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
/// field, a new required field), and add the new version's golden encodings
/// (`runtime/tests/wire/`).
pub const WIRE_VERSION: u32 = 2;

/// The oldest wire version this build still speaks: a release that raises
/// [`WIRE_VERSION`] keeps speaking the previous one, so that a rolling upgrade, one release
/// at a time, always has the two versions meet.
pub const OLDEST_WIRE_VERSION: u32 = 1;

/// The environment variable that makes a process claim another wire version: for the
/// tests of the version check only.
pub const TEST_WIRE_VERSION_VAR: &str = "TROUPE_TEST_WIRE_VERSION";

/// The wire versions a process speaks, carried in its name at the handshake (the only
/// field of ractor_cluster's handshake we choose): `NAME~INCARNATION~w1-2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WireVersions {
    /// The oldest it speaks.
    pub oldest: u32,
    /// The newest it speaks.
    pub newest: u32,
}

impl WireVersions {
    /// This process's versions: [`OLDEST_WIRE_VERSION`] to [`WIRE_VERSION`], unless
    /// [`TEST_WIRE_VERSION_VAR`] names one version to claim instead.
    pub fn ours() -> WireVersions {
        match std::env::var(TEST_WIRE_VERSION_VAR)
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
        {
            Some(v) => WireVersions {
                oldest: v,
                newest: v,
            },
            None => WireVersions {
                oldest: OLDEST_WIRE_VERSION,
                newest: WIRE_VERSION,
            },
        }
    }

    /// The tag added to a process's name: `w1-2`.
    pub fn tag(&self) -> String {
        format!("w{}-{}", self.oldest, self.newest)
    }

    /// The versions a peer's name (`NAME~INCARNATION~w1-2@host`, or `NAME~w1-2@host` for a
    /// client) says it speaks. A name without the tag is from a build before the tag,
    /// which spoke version 1.
    pub fn of_peer(peer: &str) -> WireVersions {
        let member = peer.split_once('@').map_or(peer, |(m, _)| m);
        member
            .rsplit_once('~')
            .and_then(|(_, tag)| tag.strip_prefix('w'))
            .and_then(|range| {
                let (a, b) = range.split_once('-').unwrap_or((range, range));
                Some(WireVersions {
                    oldest: a.parse().ok()?,
                    newest: b.parse().ok()?,
                })
            })
            .unwrap_or(WireVersions {
                oldest: 1,
                newest: 1,
            })
    }

    /// True if the two have a version in common.
    pub fn meets(&self, other: &WireVersions) -> bool {
        self.oldest <= other.newest && other.oldest <= self.newest
    }
}

impl std::fmt::Display for WireVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.oldest == self.newest {
            write!(f, "{}", self.newest)
        } else {
            write!(f, "{} to {}", self.oldest, self.newest)
        }
    }
}

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

/// Lower-case hex digits of `bytes` (trace ids, request keys, golden encodings), in one
/// allocation: a `format!` per byte was 1-2% of a busy owner's CPU (perf).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
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

/// Payload bytes and payloads decoded (`in`) and encoded (`out`) by this process, counted
/// with relaxed atomics: the `metrics` macro looks its counter up by name and labels on
/// every call, which was 2-3% of a busy owner's CPU (perf). [`publish_counts`] hands the
/// totals to the recorder when somebody reads the metrics.
static COUNTS: [std::sync::atomic::AtomicU64; 4] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 4];
const IN: usize = 0;
const OUT: usize = 2;

fn count(direction: usize, len: usize) {
    use std::sync::atomic::Ordering::Relaxed;
    COUNTS[direction].fetch_add(len as u64, Relaxed);
    COUNTS[direction + 1].fetch_add(1, Relaxed);
}

/// Sets the wire counters (`troupe_wire_bytes_total`, `troupe_wire_messages_total`, by
/// `direction`) of the installed `metrics` recorder to this process's totals; call it
/// before rendering the metrics.
pub fn publish_counts() {
    use crate::observe::metric;
    use std::sync::atomic::Ordering::Relaxed;
    for (direction, at) in [("in", IN), ("out", OUT)] {
        metrics::counter!(metric::WIRE_BYTES, "direction" => direction)
            .absolute(COUNTS[at].load(Relaxed));
        metrics::counter!(metric::WIRE_MESSAGES, "direction" => direction)
            .absolute(COUNTS[at + 1].load(Relaxed));
    }
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
        count(OUT, bytes.len());
        golden::record(std::any::type_name::<T>(), &bytes);
        bytes
    }

    fn from_bytes(bytes: Vec<u8>) -> Self {
        count(IN, bytes.len());
        Wire(decode(&bytes))
    }
}

/// Samples of the payloads a node sends, recorded to keep as the wire version's golden
/// encodings (`runtime/tests/wire/`, checked by the actors crate's `wire_golden` tests).
/// Off unless [`golden::RECORD_VAR`] names a folder: then the first few payloads of each
/// type go to `FOLDER/PID.jsonl`, one `{"type", "hex"}` object per line.
pub mod golden {
    use std::collections::HashMap;
    use std::io::Write;
    use std::sync::{Mutex, OnceLock};

    /// The environment variable naming the folder to record into.
    pub const RECORD_VAR: &str = "TROUPE_TEST_RECORD_WIRE";
    /// Payloads kept per type (distinct encodings).
    const PER_TYPE: usize = 3;

    struct Recorder {
        file: std::fs::File,
        seen: HashMap<&'static str, Vec<Vec<u8>>>,
    }

    fn recorder() -> Option<&'static Mutex<Recorder>> {
        static R: OnceLock<Option<Mutex<Recorder>>> = OnceLock::new();
        R.get_or_init(|| {
            let dir = std::path::PathBuf::from(std::env::var_os(RECORD_VAR)?);
            std::fs::create_dir_all(&dir).ok()?;
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join(format!("{}.jsonl", std::process::id())))
                .ok()?;
            Some(Mutex::new(Recorder {
                file,
                seen: HashMap::new(),
            }))
        })
        .as_ref()
    }

    /// Records one payload of type `type_name` if recording is on.
    pub(super) fn record(type_name: &'static str, bytes: &[u8]) {
        let Some(r) = recorder() else { return };
        let mut r = r.lock().unwrap_or_else(|p| p.into_inner());
        let seen = r.seen.entry(type_name).or_default();
        if seen.len() >= PER_TYPE || seen.iter().any(|b| b == bytes) {
            return;
        }
        seen.push(bytes.to_vec());
        let line = serde_json::json!({"type": type_name, "hex": hex(bytes)});
        let _ = writeln!(r.file, "{line}");
    }

    pub use super::hex;
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
