//! The words both sides of the crate boundary share: what runtime (task authors, clients,
//! the wire) and the system actors in `troupe-actors` both name.
//!
//! This module is a leaf: it imports nothing else of the crate, so that anything may use
//! it without an import cycle.

use serde::{Deserialize, Serialize};

/// The task that runs a job step which targets an actor (`actor` and `key` in a job
/// file): its input is `{"actor", "key", "message"}`. Every node serves it.
pub const ACTOR_STEP_TASK: &str = "troupe.actor";

/// Whether an attempt continues a job already under way (see the scheduler's priority
/// lanes in `troupe_actors::scheduler::lanes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// A later step, a fan-out child, a call or sub-job, a retry.
    Continuing,
    /// A first step of a job.
    #[default]
    New,
}

/// A node that holds something the core group hands out (a job, an actor's lease), and
/// the fencing epoch since which it holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The node.
    pub node: String,
    /// The fencing epoch: 0 for the node that accepted a job, else the Raft log index of
    /// the decision that handed it over.
    pub epoch: u64,
}

/// A job's id, `NODE-BOOT-SEQ`: the node that accepted the job (its first owner), that
/// node's boot stamp (hex milliseconds since the Unix epoch at its start, so ids stay unique
/// across restarts) and a sequence number within that boot.
///
/// Minted by [`JobId::new`] and read by [`JobId::parse`] and [`JobId::owner`], nowhere else.
/// The boot stamp is not a fencing epoch: that is the core group's log index, carried
/// beside the id (see [`Holder`]). On the wire a `JobId` is its string, checked when it
/// is decoded, so every `JobId` is well-formed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct JobId(String);

/// A string that is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a job id (NODE-BOOT-SEQ, as `submit` prints it)")]
pub struct BadJobId(pub String);

impl JobId {
    /// The id of job number `seq` accepted by `node` in its boot `boot` (hex).
    pub fn new(node: &str, boot: &str, seq: u64) -> JobId {
        JobId(format!("{node}-{boot}-{seq}"))
    }

    /// Reads a job id given by a user or a peer.
    pub fn parse(s: &str) -> Result<JobId, BadJobId> {
        JobId::try_from(s.to_string())
    }

    /// The node named by `id`, a job id given as text, if it is one.
    pub fn owner_of(id: &str) -> Option<&str> {
        Self::split(id).map(|(node, _, _)| node)
    }

    /// Node, boot stamp and sequence number of a well-formed id.
    fn split(s: &str) -> Option<(&str, &str, &str)> {
        let (rest, seq) = s.rsplit_once('-')?;
        let (node, boot) = rest.rsplit_once('-')?;
        let well_formed = !node.is_empty()
            && !seq.is_empty()
            && !boot.is_empty()
            && seq.chars().all(|c| c.is_ascii_digit())
            && boot.chars().all(|c| c.is_ascii_hexdigit());
        well_formed.then_some((node, boot, seq))
    }

    /// The node that accepted the job (its owner until a takeover moves it).
    pub fn owner(&self) -> &str {
        // Well-formed by construction: minted by `new`, or checked by `parse` or on decode.
        Self::split(&self.0).map_or("", |(node, _, _)| node)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for JobId {
    type Err = BadJobId;
    fn from_str(s: &str) -> Result<JobId, BadJobId> {
        JobId::parse(s)
    }
}

impl TryFrom<String> for JobId {
    type Error = BadJobId;
    fn try_from(s: String) -> Result<JobId, BadJobId> {
        match Self::split(&s) {
            Some(_) => Ok(JobId(s)),
            None => Err(BadJobId(s)),
        }
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.0
    }
}

impl AsRef<str> for JobId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for JobId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for JobId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for JobId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A step's id within its job: a job file's step id (`fetch`), an item of a `for_each`
/// (`each[2]`), a re-entrant call of a running step (`fib/call-0`) or a step of a sub-job
/// it started (`tree/leaf`). Built by the constructors below, so the shapes live in one
/// place. On the wire a `StepId` is its string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(String);

impl StepId {
    /// A step named in a job file (or any id read back from a status).
    pub fn new(id: impl Into<String>) -> StepId {
        StepId(id.into())
    }

    /// Item `index` of a `for_each` step.
    pub fn item(&self, index: usize) -> StepId {
        StepId(format!("{}[{index}]", self.0))
    }

    /// Call number `n` made by this step's running attempt.
    pub fn call(&self, n: u64) -> StepId {
        self.child(&Self::call_name(n))
    }

    /// The local name of call number `n` within the calls' group (`call-N`).
    pub fn call_name(n: u64) -> String {
        format!("call-{n}")
    }

    /// The `n`th sub-job of this step, when its step names would clash with earlier ones
    /// (`STEP/job-N`); its steps are children of it.
    pub fn sub_job(&self, n: usize) -> StepId {
        self.child(&format!("job-{n}"))
    }

    /// Step `local` of a sub-job started by this step's running attempt.
    pub fn child(&self, local: &str) -> StepId {
        StepId(format!("{}/{local}", self.0))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for StepId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StepId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for StepId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for StepId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for StepId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// One attempt of one step of one job: what a worker runs, a result answers, a cancel
/// names, and a fencing check compares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    /// The job.
    pub job: JobId,
    /// The step.
    pub step: StepId,
    /// The attempt number (1 for the first).
    pub attempt: u32,
}

impl std::fmt::Display for AttemptRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}#{}", self.job, self.step, self.attempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_job_id_names_its_owner_even_with_dashes_in_the_node_name() {
        let id = JobId::new("my-node-2", "19a8f3c2b11", 42);
        assert_eq!(id.as_str(), "my-node-2-19a8f3c2b11-42");
        assert_eq!(id.owner(), "my-node-2");
        assert_eq!(JobId::owner_of(id.as_str()), Some("my-node-2"));
        assert_eq!(JobId::parse(id.as_str()), Ok(id));
        assert_eq!(JobId::owner_of("n1-19a8f3c2b11-42"), Some("n1"));
        assert_eq!(JobId::owner_of("garbage"), None);
    }

    #[test]
    fn malformed_job_ids_are_refused_with_the_text_given() {
        for bad in ["garbage", "-ff-1", "n1-zz-1", "n1--1", "n1-ff-", "n1-ff-x"] {
            assert_eq!(JobId::parse(bad), Err(BadJobId(bad.to_string())), "{bad}");
        }
        let e = JobId::parse("nope").unwrap_err().to_string();
        assert!(e.contains("`nope` is not a job id"), "{e}");
    }

    #[test]
    fn ids_are_plain_strings_on_the_wire() {
        let id = JobId::new("n1", "ff", 1);
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"n1-ff-1\"");
        let back: Result<JobId, _> = serde_json::from_str("\"not an id\"");
        assert!(back.is_err(), "a malformed id is refused when decoded");
        let step = StepId::new("fib").call(0).child("leaf").item(3);
        assert_eq!(step.as_str(), "fib/call-0/leaf[3]");
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            "\"fib/call-0/leaf[3]\""
        );
    }
}
