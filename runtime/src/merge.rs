//! Request keys and key owners, for merging identical requests and memoizing results.
//!
//! A request's key is its task name plus a SHA-256 digest of its *canonical* input: the
//! JSON text of `[input, deps]` as serde_json writes it, where object keys are sorted (a
//! `BTreeMap`), numbers are written in their shortest form, and strings are escaped one
//! way. So `{"b":1,"a":2}` and `{"a":2,"b":1}` are the same request; `1` and `1.0` are not
//! (an integer and a float); NaN and infinities cannot occur (JSON has no such values, and
//! a NaN decoded from the wire becomes `null`). The dependencies' outputs are part of the
//! key because the task sees them.
//!
//! The owner of a key is chosen by rendezvous (highest random weight) hashing over the
//! live nodes that serve the task: every node computes the same owner from the same
//! membership, and when the owner leaves, its keys spread over the others while all
//! other keys stay where they were.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a task allows the runtime to do with its requests, declared at registration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskProps {
    /// Identical requests in flight at the same time may share one execution.
    pub mergeable: bool,
    /// The output depends on the input only: results may be cached and reused.
    pub pure: bool,
}

impl TaskProps {
    /// Neither merged nor cached: the default, right for any task with side effects.
    pub const PLAIN: TaskProps = TaskProps {
        mergeable: false,
        pure: false,
    };
    /// Merged and cached (a pure function of its input).
    pub const PURE: TaskProps = TaskProps {
        mergeable: true,
        pure: true,
    };
}

/// Whether a job's steps may be served by the cache or by identical requests in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheMode {
    /// Use cached results of pure tasks and merge with identical requests in flight.
    #[default]
    Use,
    /// Do not read the cache (fresh results, which refresh it); identical requests in
    /// flight are still merged.
    Bypass,
    /// Neither: every request goes straight to a worker and executes; the cache is not
    /// touched.
    Off,
}

/// The key of a request: `TASK#HEX` (128 bits of the digest).
pub fn request_key(task: &str, input: &Value, deps: &BTreeMap<String, Value>) -> String {
    // serde_json's Value keeps object keys in a BTreeMap (the `preserve_order` feature is
    // off), so this text is canonical.
    let canonical = serde_json::to_string(&(input, deps)).unwrap_or_default();
    let digest = Sha256::digest(canonical.as_bytes());
    format!("{task}#{}", crate::wire::hex(&digest[..16]))
}

/// The task name of a key.
pub fn key_task(key: &str) -> &str {
    key.rsplit_once('#').map(|(t, _)| t).unwrap_or(key)
}

fn weight(key: &str, node: &str) -> u64 {
    let d = Sha256::new()
        .chain_update(key.as_bytes())
        .chain_update([0])
        .chain_update(node.as_bytes())
        .finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The owner of `key` among `nodes`: the node with the highest weight for it.
pub fn owner<'a>(key: &str, nodes: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    nodes.into_iter().max_by_key(|n| (weight(key, n), *n))
}

/// `nodes` in rendezvous order for `key`: the owner first, then the node that would own
/// the key if the owner left, and so on.
pub fn ranked<'a>(key: &str, nodes: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<(u64, &str)> = nodes.into_iter().map(|n| (weight(key, n), n)).collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_canonical() {
        let d = BTreeMap::new();
        let a: Value = serde_json::from_str(r#"{"b": 1, "a": [2, {"y": 1, "x": 0}]}"#).unwrap();
        let b: Value = serde_json::from_str(r#"{"a": [2, {"x": 0, "y": 1}], "b": 1}"#).unwrap();
        assert_eq!(request_key("t", &a, &d), request_key("t", &b, &d));
        assert_ne!(
            request_key("t", &json!(1), &d),
            request_key("t", &json!(1.0), &d)
        );
        assert_ne!(request_key("t", &a, &d), request_key("u", &a, &d));
        let deps = BTreeMap::from([("x".to_string(), json!(1))]);
        assert_ne!(request_key("t", &a, &d), request_key("t", &a, &deps));
        assert_eq!(key_task(&request_key("troupe.fib", &a, &d)), "troupe.fib");
        // A NaN cannot become a JSON number; it is null.
        assert_eq!(serde_json::to_value(f64::NAN).unwrap(), Value::Null);
    }

    #[test]
    fn rendezvous_moves_only_the_keys_of_a_leaving_node() {
        let nodes = ["n1", "n2", "n3", "n4"];
        let keys: Vec<String> = (0..1000).map(|i| format!("t#{i}")).collect();
        let before: Vec<&str> = keys.iter().map(|k| owner(k, nodes).unwrap()).collect();
        let spread = |who: &str| before.iter().filter(|o| **o == who).count();
        for n in nodes {
            assert!((150..350).contains(&spread(n)), "{n} owns {}", spread(n));
        }
        let after: Vec<&str> = keys
            .iter()
            .map(|k| owner(k, ["n1", "n2", "n4"]).unwrap())
            .collect();
        for (b, a) in before.iter().zip(&after) {
            if *b != "n3" {
                assert_eq!(b, a, "a key of a node that stayed moved");
            }
        }
        assert_eq!(owner("k", Vec::<&str>::new()), None);
    }
}
