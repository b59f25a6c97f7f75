//! The job supervisor: one actor per job, the job's single point of control.
//!
//! It turns what happens to the job (an attempt assigned, finished, timed out; a retry
//! due; sub-work asked for; a node lost, as an `AttemptLost` for each attempt it ran; a
//! user's cancel or resume) into [`Input`]s of the job's [`JobRun`] state machine,
//! journals each if a replay needs it, steps the run with the time now, and carries out
//! the actions that come back: dispatch an attempt, arm a timer, tell the watchers,
//! answer a caller. When the job ends it hands the final status to its job manager and
//! stops. It never runs a task, never decides that a node is dead, and never talks HTTP.
//!
//! - [`run`]: the state machine itself, pure (no I/O, no clock, no global randomness).
//! - [`replay`]: what the journal keeps of a job and how the job manager rebuilds a run
//!   from it after a restart or a takeover.

pub(crate) mod replay;
pub(crate) mod run;

use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use troupe_runtime::job::status::JobEvent;
use troupe_runtime::job::status::JobState;
use troupe_runtime::observe::ClusterEvent;
use troupe_runtime::protocol::{
    first_member, worker_pool_group, AttemptRef, CallReply, EventHubMessage, JobAnswer,
    JobManagerMessage, JobQueryError, LostAttempt, ProgressKind, SpawnRequest, StepProgress,
    StepRequest, StepResult, TraceContext, WatchRequest, WatcherMessage, WorkerPoolMessage,
};
use troupe_runtime::wire::Wire;

use crate::dispatcher::{Assigned, DispatcherMessage};
use crate::{find_on, names};
use run::{Action, Input, JobRun};

/// Messages of a job supervisor (local to its node).
#[derive(RactorMessage)]
pub(crate) enum JobSupervisorMessage {
    /// The dispatcher gave an attempt to a worker on `node`.
    Assigned {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
        /// Where it runs.
        node: String,
    },
    /// An attempt ended.
    Finished(StepResult),
    /// An attempt's time limit passed.
    TimedOut {
        /// The step.
        step: String,
        /// The attempt.
        attempt: u32,
    },
    /// A retry's backoff is over.
    RetryDue {
        /// The step.
        step: String,
        /// The attempt to start.
        attempt: u32,
    },
    /// The dispatcher was not running; try this attempt again.
    Redispatch(StepRequest),
    /// The status now.
    Status(RpcReplyPort<JobAnswer>),
    /// Follow the job: reply with the status now, push later events.
    Watch(WatchRequest, RpcReplyPort<JobAnswer>),
    /// A running attempt asks for calls or a sub-job.
    Spawn(SpawnRequest),
    /// A running attempt still waits for the answer to one (see [`JobRun::call_waiting`]).
    CallWaiting(troupe_runtime::protocol::CallWaiting),
    /// Cancel the job; reply with the status after it.
    Cancel(RpcReplyPort<JobAnswer>),
    /// Resume a step waiting for a user.
    Resume(String, RpcReplyPort<JobAnswer>),
    /// A node left the cluster: its attempts run again.
    NodeDown(String),
    /// A running attempt's progress, data or warning.
    Progress(StepProgress),
    /// An attempt ended without a result; it runs again.
    AttemptLost(LostAttempt),
    /// Another submission joined the job (same unique key): follow it too.
    AddWatcher(WatchRequest),
    /// What the journal's replicas (or the core group) say of the job's end, held until
    /// now (see [`JobSupervisorState::report_end`]).
    EndConfirmed(crate::journal::EndConfirmation),
}

/// What a job supervisor starts with.
pub(crate) struct JobSupervisorArgs {
    /// The job, validated.
    pub run: JobRun,
    /// This node's name (the job's owner).
    pub owner: String,
    /// Who follows the job from the start.
    pub watchers: Vec<WatchRequest>,
    /// Where its inputs are journaled.
    pub journal: Option<crate::journal::Journal>,
    /// For a job rebuilt from a journal ([`replay`]): the inputs already journaled, and
    /// why its attempts in flight run again (the supervisor feeds and journals its
    /// [`JobRun::recovery_inputs`] first).
    pub resumed: Option<(u64, String)>,
    /// The owner's epoch for this job: 0 for the node that accepted it, the core group's
    /// decision for a node that took it over. Carried by every attempt it sends.
    pub epoch: u64,
}

/// Hands an event of this node's job to the node's event hub (cast; never waits).
fn publish(
    hub: &mut Option<ActorRef<EventHubMessage>>,
    owner: &str,
    ev: &JobEvent,
    state: JobState,
) {
    if hub.is_none() {
        *hub = find_on(names::EVENT_HUB, owner);
    }
    if let Some(h) = hub {
        let msg = EventHubMessage::Publish(Wire::new(ClusterEvent::job(owner, ev.clone(), state)));
        if h.cast(msg).is_err() {
            *hub = None;
        }
    }
}

struct Watcher {
    req: WatchRequest,
    actor: Option<ActorRef<WatcherMessage>>,
}

/// State of a job supervisor.
pub(crate) struct JobSupervisorState {
    run: JobRun,
    journal: Option<crate::journal::Journal>,
    /// Inputs applied so far (the journal's sequence numbers).
    seq: u64,
    /// For a job rebuilt from a journal: why its attempts in flight run again (it is
    /// recovered instead of started).
    recover: Option<String>,
    reported: bool,
    /// The job's end event, held until the end is confirmed: published once no copy of
    /// the job can be taken over, so that the end a client sees is the job's only one.
    held_end: Option<JobEvent>,
    /// Cancels answered once the end they caused is confirmed: until then the job's
    /// status says it runs, and a cancel's answer must not say otherwise.
    held_cancels: Vec<RpcReplyPort<JobAnswer>>,
    owner: String,
    epoch: u64,
    watchers: Vec<Watcher>,
    hub: Option<ActorRef<EventHubMessage>>,
    trace: TraceContext,
    span: tracing::Span,
}

impl From<Assigned> for JobSupervisorMessage {
    fn from(a: Assigned) -> Self {
        // (An actor of one job knows its job.)
        Self::Assigned {
            step: a.step,
            attempt: a.attempt,
            node: a.node,
        }
    }
}

impl TryFrom<JobSupervisorMessage> for Assigned {
    type Error = JobSupervisorMessage;

    fn try_from(m: JobSupervisorMessage) -> Result<Self, Self::Error> {
        match m {
            JobSupervisorMessage::Assigned {
                step,
                attempt,
                node,
            } => Ok(Self {
                job: String::new(),
                step,
                attempt,
                node,
            }),
            other => Err(other),
        }
    }
}

/// Records that the supervision of `job` (run here at `epoch`) crashed: the job fails.
/// Its end is journaled and the node's event hub told (the supervision cannot say it
/// ended); returns the failed status for the job manager.
pub(crate) fn record_crash(
    owner: &str,
    journal: Option<&crate::journal::Journal>,
    job: &str,
    epoch: u64,
    err: &str,
) -> troupe_runtime::job::status::JobStatus {
    tracing::error!(job = %job, error = %err, "job supervisor crashed; the job fails");
    let st = troupe_runtime::job::status::JobStatus {
        id: job.to_string(),
        name: String::new(),
        state: JobState::Failed,
        steps: Default::default(),
        output: None,
        error: Some(format!("the job's supervisor crashed: {err}")),
        stats: Default::default(),
        elapsed_ms: None,
        submitted_at_ms: 0,
    };
    let ev = JobEvent::JobFinished {
        status: Box::new(st.clone()),
    };
    publish(&mut None, owner, &ev, JobState::Failed);
    if let Some(j) = journal {
        j.end(&st, epoch);
    }
    st
}

/// How a job's supervision reaches itself later (its timers, a dispatch to try again,
/// its end's confirmation): through its own actor, or through the actor that hosts it
/// beside other one-step jobs (`light_jobs`).
pub(crate) trait Mailbox: Send + Sync {
    /// Sends `msg` now; false if nobody receives it any more.
    fn cast(&self, msg: JobSupervisorMessage) -> bool;
    /// Sends `msg` after `delay`.
    fn send_after(&self, delay: Duration, msg: JobSupervisorMessage);
    /// Where the dispatcher says which node took an attempt.
    fn assigned(&self) -> DerivedActorRef<Assigned>;
    /// A copy, to move into a task.
    fn boxed(&self) -> Box<dyn Mailbox>;
    /// Ends the supervision (its job manager is gone).
    fn stop(&self);
}

impl Mailbox for ActorRef<JobSupervisorMessage> {
    fn cast(&self, msg: JobSupervisorMessage) -> bool {
        self.send_message(msg).is_ok()
    }

    fn send_after(&self, delay: Duration, msg: JobSupervisorMessage) {
        ractor::time::send_after(delay, self.get_cell(), move || msg);
    }

    fn assigned(&self) -> DerivedActorRef<Assigned> {
        self.get_derived()
    }

    fn boxed(&self) -> Box<dyn Mailbox> {
        Box::new(self.clone())
    }

    fn stop(&self) {
        self.get_cell().stop(None);
    }
}

/// The job supervisor.
pub(crate) struct JobSupervisor;

fn dispatch(me: &dyn Mailbox, request: StepRequest) {
    let owner = request.owner.clone();
    match find_on::<DispatcherMessage>(names::DISPATCHER, &owner) {
        Some(d) => {
            // The dispatcher is stopping: get the request back and try again shortly.
            if let Err(ractor::MessagingErr::SendErr(DispatcherMessage::Dispatch {
                request: r,
                ..
            })) = d.cast(DispatcherMessage::Dispatch {
                request,
                supervisor: me.assigned(),
            }) {
                me.send_after(
                    Duration::from_millis(10),
                    JobSupervisorMessage::Redispatch(r),
                );
            }
        }
        None => me.send_after(
            Duration::from_millis(10),
            JobSupervisorMessage::Redispatch(request),
        ),
    }
}

fn worker_pool(node: &str) -> Option<ActorRef<WorkerPoolMessage>> {
    first_member(&worker_pool_group(node))
}

impl JobSupervisorState {
    /// Follows the job for `req`, once per watcher group (a group that already watches,
    /// for a submission that coalesced into this job, would get every event twice).
    fn watch(&mut self, req: WatchRequest) {
        match self.watchers.iter_mut().find(|w| w.req.group == req.group) {
            Some(w) => {
                w.req.progress |= req.progress;
                w.req.reports_only &= req.reports_only;
            }
            None => self.watchers.push(Watcher { req, actor: None }),
        }
    }

    fn notify(&mut self, ev: &JobEvent) {
        // Partial data goes to the watchers only: it is not part of the job's history.
        if !matches!(ev, JobEvent::StepData { .. }) {
            publish(&mut self.hub, &self.owner, ev, self.run.state());
        }
        let end = matches!(ev, JobEvent::JobFinished { .. });
        let report = matches!(
            ev,
            JobEvent::StepProgress { .. }
                | JobEvent::StepData { .. }
                | JobEvent::StepNeedsAction { .. }
        );
        for w in &mut self.watchers {
            if !(end || w.req.progress && (report || !w.req.reports_only)) {
                continue;
            }
            if w.actor.is_none() {
                w.actor = first_member(&w.req.group);
            }
            if let Some(a) = &w.actor {
                if a.cast(WatcherMessage::Event(Wire::new(ev.clone())))
                    .is_err()
                {
                    w.actor = None;
                }
            }
        }
    }

    fn apply(&mut self, me: &dyn Mailbox, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Dispatch(d) => {
                    if let Some(t) = d.timeout {
                        let (step, attempt) = (d.step.clone(), d.attempt);
                        me.send_after(t, JobSupervisorMessage::TimedOut { step, attempt });
                    }
                    dispatch(
                        me,
                        StepRequest {
                            job: self.run.id().to_string(),
                            step: d.step,
                            attempt: d.attempt,
                            task: d.task,
                            input: d.input,
                            deps: d.deps,
                            owner: self.owner.clone(),
                            epoch: self.epoch,
                            resumed: d.resumed,
                            cache: d.cache,
                            key: None,
                            merger: None,
                            trace: self.trace.clone(),
                            priority: self.run.priority(),
                            stage: d.stage,
                            near: d.near,
                        },
                    );
                }
                Action::RetryLater {
                    step,
                    attempt,
                    delay,
                } => {
                    me.send_after(delay, JobSupervisorMessage::RetryDue { step, attempt });
                }
                Action::Notify(ev @ JobEvent::JobFinished { .. }) if self.ends_wait() => {
                    self.held_end = Some(ev);
                }
                Action::Notify(ev) => self.notify(&ev),
                Action::CancelAttempt {
                    step,
                    attempt,
                    node,
                } => {
                    // Not yet assigned: the dispatcher's answer will come, and the attempt's
                    // result will be discarded as stale.
                    if let Some(pool) = node.as_deref().and_then(worker_pool) {
                        let a = AttemptRef {
                            job: self.run.id().to_string(),
                            step,
                            attempt,
                        };
                        let _ = pool.cast(WorkerPoolMessage::Cancel(Wire::new(a)));
                    }
                }
                Action::Reply {
                    node,
                    call_id,
                    result,
                } => crate::worker_pool::answer_call(&node, CallReply { call_id, result }),
            }
        }
        if self.run.state().is_terminal() && !self.reported {
            self.reported = true;
            let status = self.run.status();
            // One line per job, as a worker log of Celery or Gearman has.
            match &status.error {
                Some(e) => {
                    tracing::info!(job = %status.id, name = %status.name, state = status.state.as_str(), elapsed_ms = status.elapsed_ms.unwrap_or(0), error = %e, "job ended")
                }
                None => {
                    tracing::info!(job = %status.id, name = %status.name, state = status.state.as_str(), elapsed_ms = status.elapsed_ms.unwrap_or(0), "job ended")
                }
            }
            // A job resumed after a restart or taken over may have stale copies on nodes
            // this one does not know of: only the core group's record confirms its end.
            let core_only = self.recover.is_some() || self.epoch > 0;
            let confirming = self
                .journal
                .as_ref()
                .and_then(|j| j.end_confirmed(&status, self.epoch, core_only));
            match confirming {
                Some(rx) => {
                    let me = me.boxed();
                    tokio::spawn(async move {
                        // The journal's writer gone (the node stops): nothing can confirm.
                        if let Ok(what) = rx.await {
                            me.cast(JobSupervisorMessage::EndConfirmed(what));
                        }
                    });
                }
                None => self.report_end(me),
            }
        }
    }

    /// Whether the job's end waits to be confirmed before it is published (its journal
    /// is copied to replicas).
    fn ends_wait(&self) -> bool {
        self.journal.as_ref().is_some_and(|j| j.confirms_ends())
    }

    /// Publishes the held end, if any, and reports the end to the job manager.
    fn report_end(&mut self, me: &dyn Mailbox) {
        if let Some(ev) = self.held_end.take() {
            self.notify(&ev);
        }
        for reply in self.held_cancels.drain(..) {
            let _ = reply.send(Wire::new(Ok(self.run.status())));
        }
        // The job manager stops this actor when it has the final status, so that a
        // question it forwarded here meanwhile is still answered.
        match find_on::<JobManagerMessage>(names::JOB_MANAGER, &self.owner) {
            Some(jm) => {
                let _ = jm.cast(JobManagerMessage::JobEnded(Wire::new(self.run.status())));
            }
            None => me.stop(),
        }
    }

    /// The job's status as others may see it: while its end waits to be confirmed, it
    /// still runs.
    fn status(&self) -> troupe_runtime::job::status::JobStatus {
        let mut st = self.run.status();
        if self.held_end.is_some() {
            st.state = JobState::Running;
        }
        st
    }
}

impl JobSupervisorState {
    /// The supervision of a job, not started yet ([`JobSupervisorState::start`]).
    pub(crate) fn new(args: JobSupervisorArgs) -> Self {
        let trace = TraceContext::for_job(args.run.id(), &args.owner);
        // Every log line of this job's supervision carries the job and its trace id.
        let span = tracing::info_span!(
            parent: None,
            "job",
            job = %args.run.id(),
            trace_id = %trace.trace_id,
            span_id = %trace.parent_id,
        );
        let (seq, recover) = match args.resumed {
            Some((seq, reason)) => (seq, Some(reason)),
            None => (0, None),
        };
        JobSupervisorState {
            run: args.run,
            journal: args.journal,
            seq,
            recover,
            reported: false,
            held_end: None,
            held_cancels: Vec::new(),
            owner: args.owner,
            epoch: args.epoch,
            watchers: args
                .watchers
                .into_iter()
                .map(|req| Watcher { req, actor: None })
                .collect(),
            hub: None,
            trace,
            span,
        }
    }

    /// Starts the job (or, rebuilt from a journal, recovers it).
    pub(crate) fn start(&mut self, me: &dyn Mailbox) {
        let span = self.span.clone();
        span.in_scope(|| {
            let actions = match self.recover.take() {
                Some(reason) => {
                    tracing::info!(job = %self.run.id(), "job resumed from the journal");
                    let mut actions = Vec::new();
                    for input in self.run.recovery_inputs(&reason) {
                        actions.extend(self.feed(input));
                    }
                    actions
                }
                None => self.feed(Input::Start),
            };
            self.apply(me, actions);
        });
    }

    /// This node's epoch for the job.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Where the job is journaled (none for a job accepted without a record).
    pub(crate) fn journal(&self) -> Option<&crate::journal::Journal> {
        self.journal.as_ref()
    }

    /// Takes in one message about the job.
    pub(crate) fn receive(&mut self, me: &dyn Mailbox, msg: JobSupervisorMessage) {
        let span = self.span.clone();
        span.in_scope(|| self.handle(me, msg));
    }
}

impl Actor for JobSupervisor {
    type Msg = JobSupervisorMessage;
    type State = JobSupervisorState;
    type Arguments = JobSupervisorArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: JobSupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(JobSupervisorState::new(args))
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.start(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.receive(&myself, msg);
        Ok(())
    }
}

impl JobSupervisorState {
    /// Steps the run with an input and journals the input if a replay needs it: the one
    /// way this actor changes its job. An input that ends the job is not journaled (nor
    /// copied): the job's end, journaled next, holds all a replay needs, and a crash
    /// before that end is durable runs the last step again, as it would have run an
    /// input lost in the commit window. An input to an ended job changes nothing.
    fn feed(&mut self, input: Input) -> Vec<Action> {
        if self.run.state().is_terminal() {
            return self.run.step(input, Instant::now());
        }
        let encoded = match &self.journal {
            Some(j) if input.is_journaled() => j.encode_input(self.run.id(), &input),
            _ => None,
        };
        let actions = self.run.step(input, Instant::now());
        if let (Some(j), Some(b)) = (&self.journal, encoded) {
            if !self.run.state().is_terminal() {
                self.seq += 1;
                j.input_encoded(self.run.id(), self.seq, b);
            }
        }
        actions
    }

    fn handle(&mut self, me: &dyn Mailbox, msg: JobSupervisorMessage) {
        let state = self;
        let actions = match msg {
            JobSupervisorMessage::Assigned {
                step,
                attempt,
                node,
            } => state.feed(Input::Assigned {
                step,
                attempt,
                node,
            }),
            JobSupervisorMessage::Finished(r) if r.epoch != state.epoch => {
                // Sent for this job's previous owner (fenced): its attempt is not ours.
                tracing::debug!(step = %r.step, attempt = r.attempt, epoch = r.epoch, "result for another epoch of this job; discarded");
                Vec::new()
            }
            JobSupervisorMessage::Finished(r) => {
                let (job, step, attempt) = (r.job, r.step, r.attempt);
                let actions = state.feed(Input::Finished {
                    step: step.clone(),
                    attempt,
                    node: r.node,
                    result: r.result,
                    source: r.source,
                });
                if actions.is_empty() {
                    tracing::debug!(job = %job, step = %step, attempt, "discarded a result of an attempt given up");
                }
                actions
            }
            JobSupervisorMessage::TimedOut { step, attempt } => {
                state.feed(Input::TimedOut { step, attempt })
            }
            JobSupervisorMessage::RetryDue { step, attempt } => {
                state.feed(Input::RetryDue { step, attempt })
            }
            JobSupervisorMessage::Redispatch(r) => {
                dispatch(me, r);
                Vec::new()
            }
            JobSupervisorMessage::Status(reply) => {
                let _ = reply.send(Wire::new(Ok(state.status())));
                Vec::new()
            }
            JobSupervisorMessage::EndConfirmed(crate::journal::EndConfirmation::Confirmed) => {
                state.report_end(me);
                Vec::new()
            }
            JobSupervisorMessage::EndConfirmed(crate::journal::EndConfirmation::Moved(h)) => {
                // Taken over while this node was cut off: the holder's end is the job's.
                tracing::warn!(job = %state.run.id(), owner = %h.node, epoch = h.epoch, "this job was taken over while its end here waited to be confirmed; the holder's end stands");
                state.held_end = None;
                for reply in state.held_cancels.drain(..) {
                    let _ = reply.send(Wire::new(Err(JobQueryError::Unavailable(format!(
                        "job {} was taken over by {}; ask again",
                        state.run.id(),
                        h.node
                    )))));
                }
                if let Some(j) = &state.journal {
                    // Its end here is dropped with it, here and after a restart.
                    j.drop_job(state.run.id(), &h);
                }
                if let Some(jm) = find_on::<JobManagerMessage>(names::JOB_MANAGER, &state.owner) {
                    let _ = jm.cast(JobManagerMessage::JobMoved(Wire::new(
                        troupe_runtime::protocol::JobMoved {
                            job: state.run.id().to_string(),
                            owner: h.node,
                            epoch: h.epoch,
                        },
                    )));
                }
                Vec::new()
            }
            JobSupervisorMessage::Watch(req, reply) => {
                let _ = reply.send(Wire::new(Ok(state.status())));
                state.watch(req);
                Vec::new()
            }
            JobSupervisorMessage::AddWatcher(req) => {
                state.watch(req);
                Vec::new()
            }
            JobSupervisorMessage::Progress(p) => {
                let (step, attempt) = (p.attempt.step, p.attempt.attempt);
                state.feed(match p.kind {
                    ProgressKind::Status {
                        numerator,
                        denominator,
                    } => Input::Progress {
                        step,
                        attempt,
                        numerator,
                        denominator,
                    },
                    ProgressKind::Data(data) => Input::Data {
                        step,
                        attempt,
                        data,
                        warning: false,
                    },
                    ProgressKind::Warning(data) => Input::Data {
                        step,
                        attempt,
                        data,
                        warning: true,
                    },
                })
            }
            JobSupervisorMessage::AttemptLost(l) => {
                tracing::info!(step = %l.attempt.step, attempt = l.attempt.attempt, reason = %l.reason, "attempt lost; running it again");
                state.feed(Input::AttemptLost {
                    step: l.attempt.step,
                    attempt: l.attempt.attempt,
                    reason: l.reason,
                    counts: l.counts,
                })
            }
            JobSupervisorMessage::NodeDown(n) => {
                // Journaled as the attempts it loses (see `JobRun::node_lost_inputs`).
                let mut actions = Vec::new();
                for input in state.run.node_lost_inputs(&n) {
                    actions.extend(state.feed(input));
                }
                tracing::debug!(job = %state.run.id(), node = %n, actions = actions.len(), "node lost");
                actions
            }
            // Not an input: it changes nothing, at most answers again; a call that left
            // no trace here loses its attempt (which the next reminder then ends).
            JobSupervisorMessage::CallWaiting(r) => {
                match state
                    .run
                    .call_waiting(&r.from.step, r.from.attempt, r.call_id, &r.reply_to)
                {
                    Some(actions) => actions,
                    None => {
                        tracing::info!(step = %r.from.step, attempt = r.from.attempt, "an attempt waits for a call this job never got (a connection closed); running it again");
                        state.feed(Input::AttemptLost {
                            step: r.from.step,
                            attempt: r.from.attempt,
                            reason: format!(
                                "its call or its answer was lost with a connection to {}",
                                r.reply_to
                            ),
                            counts: false,
                        })
                    }
                }
            }
            JobSupervisorMessage::Spawn(r) => state.feed(Input::Spawn {
                step: r.from.step,
                attempt: r.from.attempt,
                call_id: r.call_id,
                reply_to: r.reply_to,
                kind: r.kind,
            }),
            JobSupervisorMessage::Cancel(reply) => {
                let actions = state.feed(Input::Cancel);
                tracing::info!(job = %state.run.id(), "job cancelled");
                state.apply(me, actions);
                // The end the cancel caused may wait for its confirmation: so does the
                // answer, which would otherwise say "cancelled" while the status says it runs.
                match state.held_end.is_some() {
                    true => state.held_cancels.push(reply),
                    false => {
                        let _ = reply.send(Wire::new(Ok(state.status())));
                    }
                }
                Vec::new()
            }
            // Checked first: a refused resume is answered, and is not an input.
            JobSupervisorMessage::Resume(step, reply) => match state.run.check_resume(&step) {
                Ok(()) => {
                    let actions = state.feed(Input::Resume { step });
                    let _ = reply.send(Wire::new(Ok(state.status())));
                    actions
                }
                Err(e) => {
                    let _ = reply.send(Wire::new(Err(e)));
                    Vec::new()
                }
            },
        };
        state.apply(me, actions);
    }
}
