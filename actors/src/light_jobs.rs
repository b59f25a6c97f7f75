//! The light path: the supervision of this node's small jobs, in one actor.
//!
//! Most jobs have one step or a few: every `call`, most Gearman and HTTP traffic, short
//! chains. Each used to get a [`JobSupervisor`](crate::job_supervisor::JobSupervisor)
//! actor of its own, spawned, linked to the job manager, stopped, and reported on by a
//! supervision event, for a job that lives a millisecond. Here they share one actor,
//! [`LightJobs`]: each job keeps the
//! very state a supervisor keeps ([`JobSupervisorState`]: its run, retries, timeouts, the
//! calls and sub-jobs of its steps, node loss, journal, watchers, held end), in a map by
//! job id, and every message carries the job's id. So a light job behaves as a full one;
//! only the actor is shared.
//!
//! A panic while one job's supervision handles a message fails that job alone (it is
//! caught here and recorded as a crashed supervisor's job is); if the host itself
//! crashes, the job manager fails the jobs it held and starts another.
//!
//! A job's supervision never awaits (it returns actions), and a node's actors share one
//! thread by default, so an actor of its own bought a small job nothing but its cost.
//! Jobs of more than [`MAX_STEPS`] steps, a `for_each` step, and jobs rebuilt from a
//! journal keep their own actor: a fan-out's item results and a replay are long runs of
//! work that the other jobs' messages should not queue behind.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};
use ractor_cluster::RactorMessage;
use troupe_runtime::protocol::JobManagerMessage;
use troupe_runtime::wire::Wire;

use crate::dispatcher::Assigned;
use crate::job_supervisor::{
    record_crash, JobSupervisorArgs, JobSupervisorMessage, JobSupervisorState, Mailbox,
};

/// The most steps (in its job file) a job on the light path has: 4-step jobs of echoes
/// ran at x1.07-1.17 the steps/s with it, and 3-step chains took x0.85-0.91 the time
/// (overhead bench, three runs against three of one-step jobs only, 2026-12-05).
pub(crate) const MAX_STEPS: usize = 16;

/// Messages of the host of light jobs (local to its node).
// `For` is the common message and the large one: boxing it would cost an allocation per
// message on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(RactorMessage)]
pub(crate) enum LightJobsMessage {
    /// Start supervising a job.
    Start(Box<JobSupervisorArgs>),
    /// A message for one job's supervision.
    For(String, JobSupervisorMessage),
    /// The job manager has the job's final status: forget the job.
    Forget(String),
}

impl From<Assigned> for LightJobsMessage {
    fn from(a: Assigned) -> Self {
        LightJobsMessage::For(a.job.clone(), JobSupervisorMessage::from(a))
    }
}

impl TryFrom<LightJobsMessage> for Assigned {
    type Error = LightJobsMessage;

    fn try_from(m: LightJobsMessage) -> Result<Self, Self::Error> {
        match m {
            LightJobsMessage::For(job, msg) => match Assigned::try_from(msg) {
                Ok(a) => Ok(Assigned { job, ..a }),
                Err(msg) => Err(LightJobsMessage::For(job, msg)),
            },
            other => Err(other),
        }
    }
}

/// Where a live job's supervision runs, as the job manager reaches it.
#[derive(Clone)]
pub(crate) enum Supervisor {
    /// An actor of its own.
    Own(ActorRef<JobSupervisorMessage>),
    /// The host of light jobs.
    Light(ActorRef<LightJobsMessage>),
}

impl Supervisor {
    /// Sends `msg` to the supervision of `job`; if it cannot be delivered, gives it back
    /// when it can (its reply port is then answered by the caller).
    // The error is the message itself, as ractor's own `SendErr` is.
    #[allow(clippy::result_large_err)]
    pub(crate) fn cast(
        &self,
        job: &str,
        msg: JobSupervisorMessage,
    ) -> Result<(), Option<JobSupervisorMessage>> {
        match self {
            Supervisor::Own(a) => a.cast(msg).map_err(|e| match e {
                ractor::MessagingErr::SendErr(m) => Some(m),
                _ => None,
            }),
            Supervisor::Light(h) => {
                h.cast(LightJobsMessage::For(job.to_string(), msg))
                    .map_err(|e| match e {
                        ractor::MessagingErr::SendErr(LightJobsMessage::For(_, m)) => Some(m),
                        _ => None,
                    })
            }
        }
    }

    /// Ends the supervision of `job`, which ended.
    pub(crate) fn stop(&self, job: &str) {
        match self {
            Supervisor::Own(a) => a.get_cell().stop(None),
            Supervisor::Light(h) => {
                let _ = h.cast(LightJobsMessage::Forget(job.to_string()));
            }
        }
    }
}

/// How one hosted job's supervision reaches itself: through the host, with its id.
#[derive(Clone)]
struct Hosted {
    host: ActorRef<LightJobsMessage>,
    job: Arc<str>,
}

impl Mailbox for Hosted {
    fn cast(&self, msg: JobSupervisorMessage) -> bool {
        self.host
            .send_message(LightJobsMessage::For(self.job.to_string(), msg))
            .is_ok()
    }

    fn send_after(&self, delay: Duration, msg: JobSupervisorMessage) {
        let job = self.job.to_string();
        ractor::time::send_after(delay, self.host.get_cell(), move || {
            LightJobsMessage::For(job, msg)
        });
    }

    fn assigned(&self) -> DerivedActorRef<Assigned> {
        self.host.get_derived()
    }

    fn boxed(&self) -> Box<dyn Mailbox> {
        Box::new(self.clone())
    }

    fn stop(&self) {
        let _ = self
            .host
            .cast(LightJobsMessage::Forget(self.job.to_string()));
    }
}

/// The host of light jobs.
pub(crate) struct LightJobs;

/// Its jobs, by id.
pub(crate) struct LightJobsState {
    jobs: HashMap<String, (JobSupervisorState, Hosted)>,
    owner: String,
}

/// What the host starts with: this node's name (each job's supervision carries its own
/// journal, if it has one).
pub(crate) struct LightJobsArgs {
    /// This node's name.
    pub owner: String,
}

impl LightJobsState {
    /// Runs `f` on `job`'s supervision; a panic in it fails the job (only).
    fn guarded(&mut self, job: &str, f: impl FnOnce(&mut JobSupervisorState, &Hosted)) {
        let Some((sup, me)) = self.jobs.get_mut(job) else {
            return;
        };
        let me = me.clone();
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| f(sup, &me))) {
            let why = crate::worker_pool::panic_message(&*panic);
            let gone = self.jobs.remove(job);
            let epoch = gone.as_ref().map_or(0, |(s, _)| s.epoch());
            let journal = gone.as_ref().and_then(|(s, _)| s.journal());
            let st = record_crash(&self.owner, journal, job, epoch, &why);
            if let Some(jm) =
                crate::find_on::<JobManagerMessage>(crate::names::JOB_MANAGER, &self.owner)
            {
                let _ = jm.cast(JobManagerMessage::JobEnded(Wire::new(st)));
            }
        }
    }
}

impl Actor for LightJobs {
    type Msg = LightJobsMessage;
    type State = LightJobsState;
    type Arguments = LightJobsArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: LightJobsArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(LightJobsState {
            jobs: HashMap::new(),
            owner: args.owner,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LightJobsMessage::Start(args) => {
                let job = args.run.id().to_string();
                let me = Hosted {
                    host: myself,
                    job: Arc::from(job.as_str()),
                };
                state
                    .jobs
                    .insert(job.clone(), (JobSupervisorState::new(*args), me));
                state.guarded(&job, |sup, me| sup.start(me));
            }
            LightJobsMessage::For(job, msg) => {
                if state.jobs.contains_key(&job) {
                    state.guarded(&job, |sup, me| sup.receive(me, msg));
                } else {
                    tracing::debug!(job = %job, "message for a light job that ended; dropped");
                }
            }
            LightJobsMessage::Forget(job) => {
                state.jobs.remove(&job);
            }
        }
        Ok(())
    }
}

/// Starts the host of light jobs under the job manager `myself`; `None` (logged) if it
/// cannot start, and every job then gets an actor of its own.
pub(crate) async fn spawn(
    manager: &ActorRef<JobManagerMessage>,
    args: LightJobsArgs,
) -> Option<ActorRef<LightJobsMessage>> {
    match Actor::spawn_linked(None, LightJobs, args, manager.get_cell()).await {
        Ok((host, _)) => Some(host),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the host of light jobs; every job gets its own supervisor");
            None
        }
    }
}
