//! What the journal's handle asks its writer thread to commit, and who waits for it.
//!
//! Its own module because every part of the journal speaks it: the handle sends these,
//! the writer batches them, the store commits them and replication copies them.

use std::path::PathBuf;

use tokio::sync::oneshot;
use troupe_runtime::protocol::{Fenced, ReplicaBatch, SavedState};
use troupe_runtime::vocab::Holder;

/// What the journal's handle asks the writer thread to commit.
pub(super) enum Write {
    /// A job of this node's started: its id, this node's epoch for it, its record
    /// (encoded), and who waits for it to be durable.
    Start(String, u64, Vec<u8>, Option<Waiter>),
    /// A job of this node's started, its start already sent to the job's replicas (ahead
    /// of the commit, by the handle): committed as a `Start`, not copied again.
    StartSent(String, u64, Vec<u8>, SentAhead),
    /// A job's input: its id, its number (from 1), the input (encoded).
    Input(String, u64, Vec<u8>),
    /// A job ended: its id, its final status (encoded) and the epoch it ran at here.
    End(String, Vec<u8>, u64),
    /// The end of a job (at its epoch here) that waits to be confirmed: kept until
    /// `Confirmed`, so that a restart does not publish it unconfirmed.
    Unconfirmed(String, u64),
    /// The end of a job is confirmed (or the job moved on): nothing waits for it.
    Confirmed(String),
    /// Another node's writes, kept as a copy.
    Keep(ReplicaBatch),
    /// Drop the copy of a job (taken over here, or ended).
    Forget(String),
    /// Drop a job of this node's that another node took over: its record, inputs, end
    /// (an end here is not the job's) and unconfirmed mark. Its holder is kept (as long
    /// as an ended status would be), so that a restart sends questions about the job
    /// there rather than answering from nothing (`None`: a drop logged by an older
    /// release, which kept no holder).
    Drop(String, Option<Holder>),
    /// An actor's state (this node's activation's, or a copy of another node's). Urgent:
    /// somebody waits for it.
    ActorState(String, SavedState, StateWaiter),
    /// Fence an actor at an epoch and read its state, in one transaction (urgent).
    ActorFetch(String, u64, oneshot::Sender<Option<SavedState>>),
    /// Nothing to commit itself: ends the commit window at once and has the writer take
    /// in the ends replicas acked (urgent: an owner waits to publish an end, for it to be
    /// sent to the replicas or for their acks).
    Flush,
    /// Drop every copy of other nodes' jobs (this node leaves); answered once committed.
    ForgetAll(oneshot::Sender<()>),
}

/// The submission behind a [`Write::StartSent`].
#[derive(Debug, Clone, Copy)]
pub(super) struct SentAhead {
    /// Its wait (see `replication::Pending`): a failed commit refuses the submission if no
    /// replica answered it yet.
    pub(super) wait: u64,
    /// It waits for this commit too (`journal_ack = "synced"`): the commit does not linger.
    pub(super) synced: bool,
}

/// Why a write somebody waited for is not durable: the journal's commit failed (a full
/// disk, a folder gone read-only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("its journal in {folder} cannot be written ({reason}); free space there (or fix the folder), then try again")]
pub struct CommitFailed {
    /// The node's data folder.
    pub folder: PathBuf,
    /// The error redb (and the OS under it) gave.
    pub reason: String,
}

/// What a waiter for a job's start hears: durable, or why not.
pub(crate) type Durable = Result<(), CommitFailed>;

/// Someone waiting for a job's start to be durable.
pub(super) struct Waiter {
    /// Fired once it is, or once its commit failed.
    pub(super) done: oneshot::Sender<Durable>,
}

/// Someone waiting for an actor's state to be saved: told whether it was, or that a
/// newer activation's save is already here.
pub(super) type StateWaiter = oneshot::Sender<Result<(), Fenced>>;

impl Write {
    /// This write again, for the next commit if this one fails: what nobody waits for (a
    /// job's inputs and end, copies, drops). A write somebody waits for is not: its waiter
    /// hears of the failure (a submission is refused, a save rolled back).
    pub(super) fn again(&self) -> Option<Write> {
        match self {
            Write::Start(id, epoch, b, None) => {
                Some(Write::Start(id.clone(), *epoch, b.clone(), None))
            }
            Write::StartSent(id, epoch, b, ahead) => {
                Some(Write::StartSent(id.clone(), *epoch, b.clone(), *ahead))
            }
            Write::Input(id, seq, b) => Some(Write::Input(id.clone(), *seq, b.clone())),
            Write::End(id, b, epoch) => Some(Write::End(id.clone(), b.clone(), *epoch)),
            Write::Unconfirmed(id, epoch) => Some(Write::Unconfirmed(id.clone(), *epoch)),
            Write::Confirmed(id) => Some(Write::Confirmed(id.clone())),
            Write::Keep(b) => Some(Write::Keep(b.clone())),
            Write::Forget(id) => Some(Write::Forget(id.clone())),
            Write::Drop(id, h) => Some(Write::Drop(id.clone(), h.clone())),
            Write::Start(_, _, _, Some(_))
            | Write::ActorState(..)
            | Write::ActorFetch(..)
            | Write::Flush
            | Write::ForgetAll(_) => None,
        }
    }

    /// Its answer comes from redb when the batch is applied there (a save's fencing, a
    /// fetch's state, a forget): its batch is applied at once, not later with others.
    pub(super) fn is_answered_by_redb(&self) -> bool {
        matches!(
            self,
            Write::ActorState(..) | Write::ActorFetch(..) | Write::ForgetAll(_)
        )
    }

    /// Somebody waits for this write's commit.
    pub(super) fn is_urgent(&self) -> bool {
        match self {
            Write::Start(_, _, _, w) => w.is_some(),
            Write::StartSent(.., ahead) => ahead.synced,
            Write::Keep(b) => b.ack.is_some(),
            Write::ActorState(..) | Write::ActorFetch(..) | Write::Flush | Write::ForgetAll(_) => {
                true
            }
            _ => false,
        }
    }
}
