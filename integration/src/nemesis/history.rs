//! What a nemesis run records, as plain data the checker reads afterwards: the jobs the
//! clients submitted and every end they saw, the effects tasks wrote to the ledger, the
//! counter adds and their replies, the money in the accounts, and the ownership claims
//! read from the nodes' logs and activation lists. Also the parsers that turn a ledger
//! file and a node's log into these records.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One end of a job as somebody saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndSeen {
    /// Who answered: `wait` (the submitting client's handle) or `node nX` (a status
    /// asked through node nX alone after the heal).
    pub via: String,
    /// The job's state (`succeeded`, `failed`, `cancelled`, or a state that is not an end).
    pub state: String,
    /// The job's output, if it has one.
    pub output: Option<Value>,
    /// Attempts of each step, by step id.
    pub attempts: BTreeMap<String, u32>,
    /// When the client saw it (Unix ms, the bench's clock; the same machine's as the nodes').
    pub seen_ms: u64,
}

impl EndSeen {
    /// True if the state is an end (succeeded, failed, cancelled).
    pub fn is_end(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// One submitted job.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobRec {
    /// The id the submission answered (empty if it was not acknowledged).
    pub id: String,
    /// True if the submission answered an id: the cluster accepted the job.
    pub acked: bool,
    /// Every answer seen about it, in order.
    pub seen: Vec<EndSeen>,
}

/// One effect a task wrote to the ledger when an attempt started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Effect {
    /// The job.
    pub job: String,
    /// The step.
    pub step: String,
    /// The attempt number.
    pub attempt: u32,
    /// The node that ran it.
    pub node: String,
    /// When it started (Unix ms).
    pub ts_ms: u64,
}

/// One `add` sent to a `troupe.counter` key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Add {
    /// The key.
    pub key: String,
    /// True if the call answered (the add is acknowledged).
    pub acked: bool,
    /// The total the reply carried.
    pub total: Option<i64>,
}

/// A node's claim to own a job or an actor key at an epoch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Claim {
    /// `job` or `actor`.
    pub kind: String,
    /// The job id, or `TYPE/KEY`.
    pub id: String,
    /// The fencing epoch.
    pub epoch: u64,
    /// The claiming node.
    pub node: String,
}

/// The whole history of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct History {
    /// Submitted jobs.
    pub jobs: Vec<JobRec>,
    /// The ledger.
    pub effects: Vec<Effect>,
    /// How many effects one step may have: the documented at-least-once bound.
    pub effect_bound: usize,
    /// Counter adds.
    pub adds: Vec<Add>,
    /// Each counter key's total read after the heal (`None`: it could not be read).
    pub counter_finals: BTreeMap<String, Option<i64>>,
    /// The accounts' sum before the transfers.
    pub money_before: Option<i64>,
    /// The accounts' sum after the heal (`None`: it could not be read).
    pub money_after: Option<i64>,
    /// Transfers submitted, and those still not ended when the run was checked.
    pub transfers: usize,
    /// Transfers that had not ended by the end of the grace period.
    pub transfers_unfinished: usize,
    /// Transfers that ended neither moved, refused nor refunded (with why).
    pub transfers_odd: Vec<String>,
    /// Ownership claims from logs and activation lists.
    pub claims: Vec<Claim>,
    /// The faults, as `(offset ms, description)`.
    pub faults: Vec<(u64, String)>,
}

/// Reads a ledger file's lines (`{"job","step","attempt","node","ts_ms"}`); a torn last
/// line (a node killed mid-write) is skipped.
pub fn parse_ledger(text: &str) -> Vec<Effect> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Removes ANSI colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The value of `key=VALUE` in a log line (up to the next space).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!("{key}=");
    line.split_whitespace()
        .find_map(|t| t.strip_prefix(pat.as_str()))
        .map(|v| v.trim_matches('"'))
}

/// The ownership claims in node `node`'s log: `took the job over` (job, epoch) and
/// `activated` (actor, epoch; logged at debug by `actor_host::activation`).
pub fn parse_log_claims(node: &str, log: &str) -> Vec<Claim> {
    let mut out = vec![];
    for raw in log.lines() {
        let line = strip_ansi(raw);
        let (kind, id) = if line.contains("took the job over") {
            ("job", field(&line, "job"))
        } else if line.contains(" activated") {
            ("actor", field(&line, "actor"))
        } else {
            continue;
        };
        if let (Some(id), Some(epoch)) = (id, field(&line, "epoch").and_then(|e| e.parse().ok())) {
            out.push(Claim {
                kind: kind.into(),
                id: id.into(),
                epoch,
                node: node.into(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_lines_parse_and_a_torn_line_is_skipped() {
        let text = "{\"job\":\"n1-1-1\",\"step\":\"a\",\"attempt\":1,\"node\":\"n2\",\"ts_ms\":5}\n{\"job\":\"n1-1";
        let e = parse_ledger(text);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].node, "n2");
    }

    #[test]
    fn claims_are_read_from_compact_log_lines_with_colours() {
        let log = "2026-12-03T14:00:00.1Z  INFO troupe_actors::job_manager::copies: took the job over job=n1-7-3 from=n1 epoch=12\n\
                   \u{1b}[2m2026\u{1b}[0m DEBUG activation: activated \u{1b}[3mactor\u{1b}[0m\u{1b}[2m=\u{1b}[0mtroupe.counter/k1 \u{1b}[3mepoch\u{1b}[0m\u{1b}[2m=\u{1b}[0m40 seq=3\n\
                   INFO something else epoch=1\n";
        let c = parse_log_claims("n3", log);
        assert_eq!(
            c,
            vec![
                Claim {
                    kind: "job".into(),
                    id: "n1-7-3".into(),
                    epoch: 12,
                    node: "n3".into()
                },
                Claim {
                    kind: "actor".into(),
                    id: "troupe.counter/k1".into(),
                    epoch: 40,
                    node: "n3".into()
                },
            ]
        );
    }
}
