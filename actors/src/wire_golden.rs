//! Golden encodings: payloads that nodes of each wire version sent, kept in
//! `runtime/tests/wire/vN.jsonl` (recorded from real clusters, `keep.py` there), must still
//! decode with today's types, and decode to the same values: every field the old encoding
//! held is still there, with the same value, after a decode and a fresh encode. A change
//! that an older peer could not talk to (a renamed or retyped field, a renamed enum
//! variant, a removed type) fails here; a new optional field does not.
//!
//! Here, in the actors crate, because the core group's payloads are this crate's own.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Serialize};

use troupe_runtime::error::ActorCallError;
use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::status::{JobEvent, JobStatus};
use troupe_runtime::observe::{ClusterEvent, JobList, JobQuery, JobsPage};
use troupe_runtime::protocol::actor_host::{
    ActivationInfo, ActorEnvelope, Fenced, SavedState, StateCopy,
};
use troupe_runtime::protocol::event_hub::ClusterJobsQuery;
use troupe_runtime::protocol::gearman_admin::GearmanReport;
use troupe_runtime::protocol::job_manager::{
    InvalidateRequest, JobMoved, JobQueryError, LostAttempt, ResumeRequest, SpawnRequest,
    StepProgress, StepResult, SubmitError, SubmitRequest, UniqueJob, WatchRequest,
};
use troupe_runtime::protocol::membership::{NodeInfo, Probe, ProbeFor, Verdict};
use troupe_runtime::protocol::merger::Executed;
use troupe_runtime::protocol::replica::ReplicaBatch;
use troupe_runtime::protocol::worker_pool::{AttemptRef, CallReply, StealRequest, StepRequest};
use troupe_runtime::wire::{golden::hex, WIRE_VERSION};

use crate::core::ownership::{CoreCommand, CoreDecision, RaftRpc, RaftRpcReply};
use crate::core::{CoreRefusal, PeerIdentity};

/// Checks one golden payload of a type.
type Check = fn(&[u8]) -> Result<(), String>;

/// Decodes `bytes` as a `T`, encodes the value again, and checks that the new encoding
/// holds everything the old one did.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Result<(), String> {
    let value: T = troupe_runtime::wire::decode(bytes).map_err(|e| e.to_string())?;
    let again = troupe_runtime::wire::encode(&value).map_err(|e| e.to_string())?;
    let old = rmpv::decode::read_value(&mut &bytes[..]).map_err(|e| e.to_string())?;
    let new = rmpv::decode::read_value(&mut &again[..]).map_err(|e| e.to_string())?;
    contained(&old, &new, "")
}

/// `Ok` if every map entry of `old` is in `new` with a value that contains it, lists
/// element by element; `Err` names the first path where they differ.
fn contained(old: &rmpv::Value, new: &rmpv::Value, path: &str) -> Result<(), String> {
    use rmpv::Value;
    match (old, new) {
        (Value::Map(o), Value::Map(n)) => {
            for (k, ov) in o {
                let at = format!("{path}.{k}");
                let nv = n
                    .iter()
                    .find(|(nk, _)| nk == k)
                    .map(|(_, v)| v)
                    .ok_or_else(|| format!("{at} is gone"))?;
                contained(ov, nv, &at)?;
            }
            Ok(())
        }
        (Value::Array(o), Value::Array(n)) if o.len() == n.len() => o
            .iter()
            .zip(n)
            .enumerate()
            .try_for_each(|(i, (ov, nv))| contained(ov, nv, &format!("{path}[{i}]"))),
        (o, n) if o == n => Ok(()),
        (o, n) => Err(format!("{path} was {o} and is now {n}")),
    }
}

/// The payload types, by the name a recording gives them. A type renamed or moved only
/// (its encoding unchanged) gets its old name added here, beside the new one.
fn checks() -> BTreeMap<&'static str, Check> {
    macro_rules! table {
        ($($t:ty),* $(,)?) => {
            BTreeMap::from([$((std::any::type_name::<$t>(), round_trip::<$t> as Check)),*])
        };
    }
    table![
        Vec<String>,
        Vec<JobStatus>,
        Vec<ClusterEvent>,
        Vec<ActivationInfo>,
        Vec<NodeInfo>,
        Option<JobStatus>,
        Option<SavedState>,
        Option<UniqueJob>,
        Result<(), Fenced>,
        Result<String, SubmitError>,
        Result<serde_json::Value, ActorCallError>,
        Result<CoreDecision, CoreRefusal>,
        Result<JobSpec, JobQueryError>,
        Result<JobStatus, JobQueryError>,
        PeerIdentity,
        CoreCommand,
        RaftRpc,
        RaftRpcReply,
        JobEvent,
        JobList,
        JobQuery,
        JobsPage,
        ActorEnvelope,
        StateCopy,
        ClusterJobsQuery,
        GearmanReport,
        InvalidateRequest,
        JobMoved,
        LostAttempt,
        ResumeRequest,
        SpawnRequest,
        StepProgress,
        StepResult,
        SubmitRequest,
        WatchRequest,
        NodeInfo,
        Probe,
        ProbeFor,
        Verdict,
        Executed,
        ReplicaBatch,
        AttemptRef,
        CallReply,
        StealRequest,
        StepRequest,
    ]
}

/// The golden files, by wire version.
fn golden_files() -> Vec<(u32, std::path::PathBuf)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/tests/wire");
    (1..=WIRE_VERSION)
        .map(|v| (v, dir.join(format!("v{v}.jsonl"))))
        .collect()
}

#[test]
fn every_wire_versions_golden_payloads_decode_to_the_same_values() {
    let checks = checks();
    let mut checked = 0;
    let mut types = std::collections::BTreeSet::new();
    let mut failures = Vec::new();
    for (version, file) in golden_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
            panic!(
                "no golden encodings for wire version {version} at {}: {e}. Record them (runtime/tests/wire/keep.py)",
                file.display()
            )
        });
        for line in text.lines() {
            let entry: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let ty = entry["type"].as_str().expect("type");
            let hex_text = entry["hex"].as_str().expect("hex");
            let bytes: Vec<u8> = (0..hex_text.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex_text[i..i + 2], 16).expect("hex"))
                .collect();
            assert_eq!(hex(&bytes), hex_text);
            let Some(check) = checks.get(ty) else {
                failures.push(format!(
                    "v{version}: no type {ty} any more: keep it, add its new name to the table if it only moved, or raise WIRE_VERSION"
                ));
                continue;
            };
            if let Err(e) = check(&bytes) {
                failures.push(format!("v{version}: a {ty} of {} bytes: {e}", bytes.len()));
            }
            checked += 1;
            types.insert(ty.to_string());
        }
    }
    assert!(
        failures.is_empty(),
        "payloads an older node sends no longer decode the same (raise WIRE_VERSION and keep speaking the old one, or make the change additive):\n{}",
        failures.join("\n")
    );
    assert!(
        types.len() >= 40,
        "only {} payload types have golden encodings ({checked} payloads)",
        types.len()
    );
}

#[test]
fn a_changed_field_is_caught() {
    use rmpv::Value;
    let old = Value::Map(vec![
        (Value::from("id"), Value::from("j-1")),
        (Value::from("attempt"), Value::from(2)),
    ]);
    let added = Value::Map(vec![
        (Value::from("id"), Value::from("j-1")),
        (Value::from("attempt"), Value::from(2)),
        (Value::from("new"), Value::Nil),
    ]);
    let renamed = Value::Map(vec![
        (Value::from("job"), Value::from("j-1")),
        (Value::from("attempt"), Value::from(2)),
    ]);
    assert_eq!(contained(&old, &added, ""), Ok(()));
    assert_eq!(
        contained(&old, &renamed, ""),
        Err(".\"id\" is gone".to_string())
    );
    // A golden payload that today's type cannot read is reported, not a panic.
    assert!(round_trip::<NodeInfo>(&[0xc1]).is_err());
}
