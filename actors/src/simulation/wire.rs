//! The words the simulated nodes, the simulated core group and the checker share: messages
//! between nodes, requests to the core group, timers, what a node reports to the checker,
//! and the rules a run uses (the fixes under test and the mutations that break them).
//! A leaf: it imports nothing else of the simulation.

use serde_json::Value;
use troupe_runtime::protocol::{JobMoved, SavedState};
use troupe_runtime::task::TaskError;
use troupe_runtime::vocab::Holder;

use crate::core::ownership::CoreDecision;
use crate::job_manager::takeover::WriteKind;
use crate::job_supervisor::replay::JobRecord;
use crate::job_supervisor::run::Input;

/// Simulated milliseconds since the start of a run.
pub(crate) type Ms = u64;

/// Which rules the simulated cluster follows. The defaults are the rules the cluster is to
/// have; a test turns one off to show that some seed then breaks an invariant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rules {
    /// An owner tells the core group a job ended before the end counts (the client hears
    /// of it), and the core group refuses to hand an ended job over (issue 22, items 1
    /// and 9). Off: the end counts once the owner journaled it, as the nodes do today.
    pub core_refuses_ended: bool,
    /// The core group records an end only from the job's owner at its current epoch. Off
    /// (a mutation): from any node that ran the job.
    pub ended_owner_check: bool,
    /// A supervisor drops results of attempts dispatched at another epoch.
    pub result_fencing: bool,
    /// A keyed actor acknowledges an add only once its replica kept the save; without a
    /// replica, or without its answer in time, the caller hears "unavailable" (issue 22,
    /// item 2). Off: the add is acknowledged on the local save alone, as today.
    pub ack_needs_copy: bool,
    /// A new activation starts only after reading all stores but one, so that it sees at
    /// least one of the two copies of every acknowledged save (proposed by the
    /// simulation: without it the majority side of a partition activates a key whose
    /// holder and replica are both on the minority side, from an older state). Off: it
    /// starts from whatever the hosts it reached within the wait hold, as today.
    pub gather_quorum: bool,
    /// A restarted node asks the core group who owns its journaled jobs until it answers,
    /// and resumes none before (issue 22, item 9). Off: it resumes them all when the
    /// core group does not answer in time, as today.
    pub resume_waits_for_core: bool,
    /// A node that learns a job moved to another (its end refused, or the core group's
    /// answer at restart) tells that node. The node told adopts it from its copy, and a
    /// takeover asked for with no answer is asked about again until one comes: those are
    /// the takeover rules' own (`Takeovers::job_moved`, `Takeovers::tick`), always on.
    /// Off: nobody tells the holder.
    pub adopt_when_told: bool,
    /// An end counts once every node the owner sent the job's journal to acked it (a
    /// holder acks an end its copy is not fenced for, and drops the copy), as the
    /// nodes do; the core group records it only when an ack is late (1 s), and for jobs
    /// resumed after a restart or taken over (stale copies may be held by nodes their
    /// run does not know of). Off: the core group records every end first.
    pub end_acked_by_holders: bool,
    /// A holder whose copy is fenced (the job moved on) does not ack the owner's end, it
    /// tells the owner of the move. Off (a mutation): it acks it too.
    pub fenced_ends_unacked: bool,
    /// Ends of jobs resumed after a restart or taken over wait for the core group's
    /// record. Off (a mutation): acks of the holders this run knows of confirm them.
    pub resumed_ends_need_core: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            core_refuses_ended: true,
            ended_owner_check: true,
            result_fencing: true,
            ack_needs_copy: true,
            gather_quorum: true,
            resume_waits_for_core: true,
            adopt_when_told: true,
            end_acked_by_holders: true,
            fenced_ends_unacked: true,
            resumed_ends_need_core: true,
        }
    }
}

/// A message from one node to another.
#[derive(Debug, Clone)]
pub(crate) enum Msg {
    /// Membership gossip: the heartbeat.
    Gossip,
    /// Run an attempt (owner to worker).
    Run {
        /// The job.
        job: String,
        /// The owner's epoch.
        epoch: u64,
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
    },
    /// An attempt's result (worker to the owner that dispatched it).
    StepDone {
        /// The job.
        job: String,
        /// The epoch it was dispatched at.
        epoch: u64,
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// What it gave.
        result: Result<Value, TaskError>,
    },
    /// A journal write of the owner's job to a replica.
    Write {
        /// The job.
        job: String,
        /// The owner's epoch.
        epoch: u64,
        /// What it holds.
        kind: WriteKind,
        /// With `Start`: the job's record.
        record: Option<JobRecord>,
        /// With `Start`: every input so far; with `Input`: one.
        inputs: Vec<Input>,
    },
    /// The job belongs to another node now.
    Moved(JobMoved),
    /// The end of `job` at `epoch`, to a node that may hold a copy (acked, unless fenced).
    EndOwed {
        /// The job.
        job: String,
        /// The owner's epoch.
        epoch: u64,
    },
    /// This node holds the end of `job` (its copy is gone).
    EndAcked {
        /// The job.
        job: String,
    },
    /// A client's add to a keyed actor, routed to its host.
    ActorAdd {
        /// `TYPE/KEY`.
        actor: String,
        /// The add's id.
        add: u64,
        /// How many times it was forwarded.
        hops: u32,
    },
    /// A new activation reads (and fences) the actor's state here.
    FetchState {
        /// The actor.
        actor: String,
        /// The new activation's epoch.
        epoch: u64,
    },
    /// The answer to `FetchState`.
    StateIs {
        /// The actor.
        actor: String,
        /// The epoch asked for.
        epoch: u64,
        /// The newest state held here.
        saved: Option<SavedState>,
    },
    /// Keep a copy of this save (to the replica).
    KeepCopy {
        /// The actor.
        actor: String,
        /// The save.
        saved: SavedState,
    },
    /// The replica's answer to `KeepCopy`.
    CopyKept {
        /// The actor.
        actor: String,
        /// The save's epoch.
        epoch: u64,
        /// The save's number.
        seq: u64,
        /// Kept (`false`: a newer activation's save or fence is held).
        ok: bool,
    },
}

/// A request to the core group.
#[derive(Debug, Clone)]
pub(crate) enum CoreReq {
    /// A command of the real state machine (`Ownership`).
    Command(crate::core::ownership::CoreCommand),
    /// `node` at `epoch` ended `job` (the rule of [`Rules::core_refuses_ended`]).
    Ended {
        /// The job.
        job: String,
        /// Its owner.
        node: String,
        /// The owner's epoch.
        epoch: u64,
    },
}

/// The core group's answer.
#[derive(Debug, Clone)]
pub(crate) enum CoreReply {
    /// The real state machine's decision.
    Decision(CoreDecision),
    /// The job has ended: it is not handed over.
    AlreadyEnded {
        /// Who ended it.
        holder: Holder,
    },
    /// The end was recorded (`true`), or refused because `holder` owns the job now.
    EndRecorded {
        /// Recorded.
        ok: bool,
        /// The owner now.
        holder: Holder,
    },
}

/// A timer a node armed (lost when the node crashes).
#[derive(Debug, Clone)]
pub(crate) enum Timer {
    /// The membership and job manager tick.
    Tick,
    /// Send gossip.
    Gossip,
    /// Feed this input to the run of `job` at `epoch` (a retry due, a timeout).
    Feed {
        /// The job.
        job: String,
        /// The run's epoch.
        epoch: u64,
        /// The input.
        input: Input,
    },
    /// A worker finished an attempt: send its result to `owner`.
    WorkDone {
        /// The owner that dispatched it.
        owner: String,
        /// The job.
        job: String,
        /// Its epoch.
        epoch: u64,
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
    },
    /// The replica's answer to save `seq` of `actor` did not come in time.
    CopyWait {
        /// The actor.
        actor: String,
        /// The activation's epoch.
        epoch: u64,
        /// The save.
        seq: u64,
    },
    /// Gathering the state of `actor` for the activation at `epoch` waited long enough.
    GatherWait {
        /// The actor.
        actor: String,
        /// The epoch.
        epoch: u64,
    },
    /// The core group did not answer request `req`.
    CoreTimeout {
        /// The request.
        req: u64,
    },
}

/// Something a node did that the checker judges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Obs {
    /// A client's job was accepted.
    Accepted {
        /// The job.
        job: String,
    },
    /// A step of the run of `job` at `epoch` ended (the watchers were told).
    StepEnded {
        /// The job.
        job: String,
        /// The run's epoch.
        epoch: u64,
        /// The step.
        step: String,
    },
    /// The end of `job` counts: the client hears it.
    Published {
        /// The job.
        job: String,
        /// Its owner.
        node: String,
        /// The owner's epoch.
        epoch: u64,
        /// The status, in short.
        summary: String,
    },
    /// An activation of `actor` started at `epoch` from a state holding `adds`.
    Activated {
        /// The actor.
        actor: String,
        /// Its epoch.
        epoch: u64,
        /// The adds its state holds.
        adds: Vec<u64>,
    },
    /// The activation at `epoch` acknowledged add `add`.
    AddAcked {
        /// The actor.
        actor: String,
        /// The add.
        add: u64,
        /// The activation's epoch.
        epoch: u64,
    },
}

/// What a node asks the world to do.
#[derive(Debug, Clone)]
pub(crate) enum Out {
    /// Send a message.
    Send {
        /// To whom.
        to: String,
        /// What.
        msg: Msg,
    },
    /// Ask the core group; the answer comes with the same `req`.
    Core {
        /// The request's number on this node.
        req: u64,
        /// The request.
        cmd: CoreReq,
    },
    /// Arm a timer.
    After {
        /// In how long.
        delay: Ms,
        /// Which.
        timer: Timer,
    },
    /// Report to the checker.
    Observe(Obs),
    /// A line for the trace.
    Note(String),
}
