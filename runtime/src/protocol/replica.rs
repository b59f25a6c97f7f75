//! Copies of an owner's journal kept by other nodes (`journal_replicas`): the batches an
//! owner's journal sends to a replica's job manager.

use serde::{Deserialize, Serialize};

/// A slice of an owner's journal for a node that keeps a copy (see `journal_replicas`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaBatch {
    /// The owner that sends it.
    pub owner: String,
    /// The writes, in the owner's commit order.
    pub writes: Vec<ReplicaWrite>,
    /// Set when the owner waits for this batch to reach the replica (a submission is
    /// answered once a replica holds its job's start, `journal_ack = "copied"`, and an
    /// end is published once every holder of a copy has it): the replica answers
    /// [`JobManagerMessage::ReplicaAcked`](super::job_manager::JobManagerMessage::ReplicaAcked)
    /// with this token on receipt and commits the batch in its next group commit.
    #[serde(default)]
    pub ack: Option<u64>,
    /// With `ack`: answer it only once the batch is committed here, on disk
    /// (`journal_ack = "synced"`), not on receipt.
    #[serde(default)]
    pub synced: bool,
}

/// One journal write about one job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaWrite {
    /// The job.
    pub job: String,
    /// The owner's epoch for the job (writes from an older epoch are refused).
    pub epoch: u64,
    /// What was written.
    pub what: ReplicaWhat,
    /// Set on an `End` sent ahead of the owner's own journal write (so that the round
    /// trip overlaps the write): the replica acks it but keeps its copy, which the same
    /// `End` without this mark drops once the owner has written it. An owner killed in
    /// between comes back without the job, and the copy is all that is left of it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ahead: bool,
}

/// For `skip_serializing_if`: a write without the mark costs no bytes for it.
fn is_false(b: &bool) -> bool {
    !*b
}

/// What a [`ReplicaWrite`] records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ReplicaWhat {
    /// The job's record (its file and limits), encoded.
    Start(#[serde(with = "serde_bytes")] Vec<u8>),
    /// Input number `seq`, encoded.
    Input(u64, #[serde(with = "serde_bytes")] Vec<u8>),
    /// The job ended: the copy is dropped (kept, if the write is marked `ahead`, until
    /// the owner's journal holds the end).
    End,
}
