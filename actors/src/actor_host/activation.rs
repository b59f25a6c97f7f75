//! One activation of a keyed actor: its state, its mailbox, its saves.
//!
//! The activation handles one message at a time, in mailbox order. The handler runs under
//! `catch_unwind`; a failure or panic restores the state from the last good snapshot and
//! counts as a restart (OTP restart intensity, `actors.max_restarts`). This is a restart
//! inside the activation rather than a ractor respawn on purpose: a respawn would drop
//! the messages queued behind the failing one, while here they are handled next, against
//! the restored state. Past the limit the activation refuses messages and stops; its
//! host keeps the actor stopped for `actors.stopped_for_ms`.
//!
//! A persistent type's replies wait for the save of the state they produced. Saves are
//! pipelined: while one is in flight the activation goes on handling messages, and the
//! next save carries the newest state for all of them (a group commit per actor, so a
//! busy key is not bounded by one fsync per message).
//!
//! An activation leased by the core group acknowledges a save only once a write quorum of
//! the N hosts of its type hold it ([`super::quorum`]: a majority, at least two): this
//! node's journal and the next hosts in the key's rendezvous order, all written at once,
//! each given at most [`COPY_WAIT`]. Since a new activation reads a majority of the stores
//! first, it sees every acknowledged save, wherever a partition falls; and once it has
//! fenced them the old activation cannot gather a quorum and acknowledges nothing more.
//! N is every host of the type this process has seen ([`super::quorum::KnownHosts`]), not
//! the hosts in view, so a node cut off with a few others does not take them for a
//! majority. A save too few hosts confirmed is refused: its callers get "unavailable" and
//! the activation rolls back to its last save a quorum holds.
//!
//! No reply goes out on a state a write quorum does not hold, not even a read or a
//! refusal: an activation first writes the state it read back to a quorum at its own
//! epoch, and after a refused save it writes the rolled-back state the same way before
//! it answers again (if either is refused, it ends). So a refused save that reached a
//! store somewhere either shows in the next answer on the key or never comes back: no
//! caller sees a state without it and a later one with it (a withdrawal refused for want
//! of money, then an earlier refused withdrawal back, which the nemesis's 20-minute run
//! found as money destroyed). Without a lease (a cluster too small for a core group) one
//! replica is written, best effort.
//!
//! A call is applied once across its retries: each carries the call's id, and an
//! activation keeps the answers of the last calls that changed its state or were refused
//! ([`ANSWERED_KEEP`] at most, [`ANSWERED_BYTES`] in all, each while a try of it may
//! still come) in the saved state itself. So a retry whose first try was applied (the
//! reply lost, or the save refused yet held by a store the next activation read) gets
//! the first reply, from this activation or the next; and a try that comes after
//! another was refused is refused alike, not applied on a state that changed meanwhile.
//! A job step's attempts are tries of one call (`route::step_call_id`): an attempt that
//! kept running on a node cut off, while its step ran again elsewhere and was refused,
//! once withdrew money behind the back of a transfer that had ended "refused" (the
//! nemesis, seed 774123; ARCHITECTURE.md, "The nemesis test").

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use serde_json::Value;
use troupe_runtime::actor::route;
use troupe_runtime::actor::{
    actor_name, ActorCallError, ActorContext, ActorError, ActorLink, ErasedActor, ErasedState,
    HandleError,
};
use troupe_runtime::config::ActorsConfig;
use troupe_runtime::protocol::{
    ActorHostMessage, ActorReply, Answered, Fenced, SavedState, StateCopy,
};
use troupe_runtime::wire::Wire;

use super::quorum::{write_quorum, KnownHosts};
use super::store::ActorStore;
use crate::supervision::RestartIntensity;

/// How long a save waits for each replica's answer (as a job submission does,
/// `journal::ACK_WAIT`); a replica silent that long does not count towards the quorum.
const COPY_WAIT: Duration = crate::journal::ACK_WAIT;

/// How many calls that changed the state an activation remembers the replies of.
/// Every save carries them, so few: a retry comes within seconds of its first try, and
/// a key busy enough to see more calls than this meanwhile is rare (the actors bench
/// measured 128 as +600 us a persistent message).
pub(crate) const ANSWERED_KEEP: usize = 16;
/// How many bytes of replies (as JSON) it keeps in all.
pub(crate) const ANSWERED_BYTES: usize = 8 * 1024;
/// A reply larger than this is not kept (a retry is told that the call was applied).
const REPLY_KEEP_BYTES: usize = 2 * 1024;
/// A refusal's reason is kept up to this many characters.
const REFUSAL_KEEP_CHARS: usize = 256;

/// Why an activation stopped (its host acts on it).
pub(crate) mod reason {
    /// Idle, or its key moved to another node: the lease is released.
    pub(crate) const RELEASED: &str = "released";
    /// A newer activation exists elsewhere: nothing to release.
    pub(crate) const FENCED: &str = "fenced";
    /// Its state could not be saved: released, the next activation reloads.
    pub(crate) const SAVE_FAILED: &str = "save failed";
    /// Prefix of a stop by restart intensity.
    pub(crate) const STOPPED: &str = "stopped: ";
}

/// Counters an activation keeps for `troupe-node actors`.
#[derive(Debug, Default)]
pub(crate) struct ActivationStats {
    /// Messages handled.
    pub handled: AtomicU64,
    /// Restarts.
    pub restarts: AtomicU32,
    /// The newest save kept, (epoch, seq): the one it started from until it saves.
    pub last_save: std::sync::Mutex<Option<(u64, u64)>>,
    /// Why it ended (see [`reason`]), set just before it stops.
    pub end: std::sync::Mutex<Option<String>>,
}

/// Messages of an activation (local).
#[derive(RactorMessage)]
pub(crate) enum ActivationMessage {
    /// A message for the actor, its call's id (`ActorEnvelope::call_id`), where its
    /// reply goes, and when its sender stops waiting (a message whose sender stopped
    /// waiting is not handled: see `ActorEnvelope::wait_ms`).
    Handle(
        Value,
        Option<u64>,
        RpcReplyPort<ActorReply>,
        Option<Instant>,
    ),
    /// A save ended (from the save's task).
    Saved(u64, SaveOutcome),
    /// Stop once the saves in flight are done (idle, or the key moved).
    Stop,
}

/// How a save ended.
#[derive(Debug)]
pub(crate) enum SaveOutcome {
    /// Saved on a write quorum of the type's hosts (or, where no quorum is required, here).
    Kept,
    /// Saved here, but too few replicas confirmed their copy (why): not durable as
    /// promised.
    NotCopied(String),
    /// A store holds a newer activation's state: this one was replaced.
    Fenced(u64),
    /// The local commit failed.
    Failed(String),
}

/// What an activation starts from.
pub(crate) struct ActivationArgs {
    /// The actor's type.
    pub actor_type: String,
    /// Its key.
    pub key: String,
    /// This node.
    pub node: String,
    /// The lease's epoch.
    pub epoch: u64,
    /// The type's handler.
    pub kind: Arc<dyn ErasedActor>,
    /// The newest saved state found (none: a new actor).
    pub saved: Option<SavedState>,
    /// A save counts only once a write quorum of the type's hosts holds it (the core group
    /// leased the actor; false in a cluster too small for a core group, where one replica
    /// is written, best effort).
    pub quorum_required: bool,
    /// The hosts of each type this node has seen: the N of the quorum.
    pub known: KnownHosts,
    /// Where states are saved.
    pub store: ActorStore,
    /// How handlers reach the node.
    pub link: Arc<dyn ActorLink>,
    /// Restart limits.
    pub limits: ActorsConfig,
    /// Counters shared with the host.
    pub stats: Arc<ActivationStats>,
    /// Where the handler runs (apart from the node's actors).
    pub tasks: crate::task_runtime::TaskRuntime,
}

/// Why an activation refuses messages.
enum Refusal {
    /// Stopped by restart intensity: callers get "stopped".
    Stopped(String),
    /// Ending (idle, moved, fenced): callers get "unavailable" and try again elsewhere.
    Moving(String),
}

/// An activation.
pub(crate) struct Activation;

/// The state of an activation.
pub(crate) struct ActivationState {
    args: ActivationArgs,
    name: String,
    ctx: ActorContext,
    state: ErasedState,
    /// The state after the last message that succeeded (what a failure restores).
    snapshot: Vec<u8>,
    /// Saves made (the seq of `snapshot`).
    seq: u64,
    /// The seq of the newest save started.
    sent: u64,
    saving: bool,
    /// The state of the save in flight.
    in_flight: Vec<u8>,
    /// The state of the last save kept as promised (by a write quorum): what a refused
    /// save rolls back to.
    durable: Vec<u8>,
    /// The seq of the newest save kept as promised: no reply goes out on a state newer
    /// than this one (a reply waits, a refusal and a read included, for the save of the
    /// state it saw).
    acked: u64,
    /// The save in flight writes the state this activation starts from, or rolls back to,
    /// at its epoch (see [`ActivationState::establish`]): if it is refused too, the
    /// activation ends rather than answer from a state no quorum holds.
    establishing: bool,
    /// The calls that changed the state and their replies, oldest first, each with its
    /// reply's size (see [`Answered`]).
    answered: VecDeque<(Answered, usize)>,
    /// `answered` as of the save in flight.
    in_flight_answered: Vec<Answered>,
    /// `answered` as of `durable` (what a refused save rolls back to).
    durable_answered: Vec<Answered>,
    /// Replies waiting for the save of the state they produced (or saw).
    waiting: VecDeque<(u64, RpcReplyPort<ActorReply>, Result<Value, ActorCallError>)>,
    intensity: RestartIntensity,
    /// Set once the activation refuses messages (stopped by restart intensity, or ending).
    refusing: Option<Refusal>,
    /// Stop with this reason once no save is in flight.
    stop_after: Option<String>,
}

impl ActivationState {
    fn error(&self, make: impl FnOnce(String) -> ActorCallError) -> ActorCallError {
        make(self.name.clone())
    }

    fn restore(&mut self) {
        match self.args.kind.load(Some(&self.snapshot)) {
            Ok(s) => self.state = s,
            Err(e) => {
                tracing::error!(actor = %self.name, error = %e, "cannot restore the saved state")
            }
        }
    }

    /// Runs the user's handler on the task runtime (apart from the node's actors, so a
    /// handler that computes without yielding does not stop the node), the state moved
    /// there and back. A panic comes back as `Err`; the state is then restored by the
    /// restart that follows.
    async fn run_handler(
        &mut self,
        message: Value,
    ) -> Result<Result<Value, HandleError>, Box<dyn std::any::Any + Send>> {
        let kind = self.args.kind.clone();
        let ctx = self.ctx.clone();
        let mut state = std::mem::replace(&mut self.state, Box::new(()));
        let run = self.args.tasks.spawn(async move {
            let out = AssertUnwindSafe(kind.handle_json(&ctx, &mut state, message))
                .catch_unwind()
                .await;
            (state, out)
        });
        match run.await {
            Ok((state, out)) => {
                self.state = state;
                out
            }
            Err(e) if e.is_panic() => Err(e.into_panic()),
            Err(e) => Err(Box::new(format!(
                "the task runtime stopped the handler: {e}"
            ))),
        }
    }

    /// The reply to an earlier try of call `id`, if this state saw it applied.
    fn answered_before(&self, id: u64) -> Option<Result<Value, ActorCallError>> {
        let (a, _) = self.answered.iter().find(|(a, _)| a.call_id == id)?;
        if let Some(reason) = &a.refused {
            return Some(Err(self.error(|actor| ActorCallError::Refused {
                actor,
                reason: reason.clone(),
            })));
        }
        Some(match a.reply.as_deref().map(serde_json::from_slice::<Value>) {
            Some(Ok(v)) => Ok(v),
            _ => Err(self.error(|actor| ActorCallError::Refused {
                actor,
                reason: "this call was applied already (this is a retry of it); its reply was too large to keep".into(),
            })),
        })
    }

    /// Remembers call `id`'s answer: its reply (it changed the state) or why it was
    /// refused (see [`ANSWERED_KEEP`]). Kept while a try of the call may still come: for
    /// its caller's wait, and at least [`CALL_TIMEOUT`](route::CALL_TIMEOUT), as another
    /// try (a job step's earlier attempt) may have started before this one with that
    /// much to wait, plus [`CLOCK_SKEW`](route::CLOCK_SKEW).
    fn remember(&mut self, id: u64, deadline: Option<Instant>, answer: Result<&Value, &str>) {
        let now = troupe_runtime::observe::now_ms();
        let waits = deadline.map_or(route::CALL_TIMEOUT, |d| {
            d.saturating_duration_since(Instant::now())
                .max(route::CALL_TIMEOUT)
        });
        let until_ms = now.saturating_add(millis(waits + route::CLOCK_SKEW));
        let (reply, refused) = match answer {
            Ok(v) => (
                serde_json::to_vec(v)
                    .ok()
                    .filter(|b| b.len() <= REPLY_KEEP_BYTES),
                None,
            ),
            Err(why) => (
                None,
                Some(why.chars().take(REFUSAL_KEEP_CHARS).collect::<String>()),
            ),
        };
        let a = Answered {
            call_id: id,
            until_ms,
            reply,
            refused,
        };
        let size = answer_size(&a);
        self.answered.push_back((a, size));
        let mut bytes: usize = self.answered.iter().map(|(_, n)| n).sum();
        while let Some((a, n)) = self.answered.front() {
            let over = self.answered.len() > ANSWERED_KEEP || bytes > ANSWERED_BYTES;
            if !over && a.until_ms > now {
                break;
            }
            bytes -= n;
            self.answered.pop_front();
        }
    }

    fn answered_list(&self) -> Vec<Answered> {
        self.answered.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Starts a save of the newest state if none is in flight.
    fn save_next(&mut self, myself: &ActorRef<ActivationMessage>) {
        if self.saving || self.sent >= self.seq {
            return;
        }
        self.saving = true;
        self.sent = self.seq;
        let required = self.args.quorum_required;
        self.in_flight = self.snapshot.clone();
        self.in_flight_answered = self.answered_list();
        let (actor_type, key, node) = (&self.args.actor_type, &self.args.key, &self.args.node);
        let in_view = troupe_runtime::actor::route::hosts(actor_type);
        let mut known = self
            .args
            .known
            .learn(actor_type, in_view.iter().map(|(n, _)| n.as_str()));
        if self.args.quorum_required {
            known.insert(node.clone());
        }
        let n = known.len();
        let quorum = write_quorum(n);
        let wanted = if self.args.quorum_required {
            quorum - 1
        } else {
            1
        };
        let replicas = super::replicas(actor_type, key, node, &in_view, wanted);
        let short = (replicas.len() < wanted).then(|| {
            format!(
                "only {} other of the {n} nodes serving {actor_type} in view",
                replicas.len()
            )
        });
        let saved = SavedState {
            epoch: self.args.epoch,
            seq: self.seq,
            state: self.snapshot.clone(),
            hosts: known.into_iter().collect(),
            answered: self.in_flight_answered.clone(),
        };
        let store = self.args.store.clone();
        let name = self.name.clone();
        let actor_type = actor_type.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let seq = saved.seq;
            let local = store.save(&name, saved.clone());
            let copies = futures::future::join_all(
                replicas
                    .into_iter()
                    .map(|r| copy_to(r, &name, saved.clone())),
            );
            let (local, copies) = tokio::join!(local, copies);
            let outcome = match local {
                Some(Err(f)) => SaveOutcome::Fenced(f.epoch),
                None => SaveOutcome::Failed("the journal commit failed".into()),
                Some(Ok(())) => {
                    let held = 1 + copies.iter().filter(|c| matches!(c, Copy::Kept)).count();
                    let mut missing: Vec<String> = copies
                        .iter()
                        .filter_map(|c| match c {
                            Copy::Missing(why) => Some(why.clone()),
                            _ => None,
                        })
                        .collect();
                    missing.extend(short);
                    match copies.into_iter().find_map(|c| match c {
                        Copy::Fenced(f) => Some(f),
                        _ => None,
                    }) {
                        Some(f) => SaveOutcome::Fenced(f.epoch),
                        None if !required || held >= quorum => {
                            if !missing.is_empty() {
                                tracing::debug!(actor = %name, reason = %missing.join("; "), "saved without every copy (best effort)");
                            }
                            SaveOutcome::Kept
                        }
                        None => SaveOutcome::NotCopied(format!(
                            "{held} of the {quorum} nodes it needs hold it, a majority of the {n} serving {actor_type}: {}",
                            missing.join("; ")
                        )),
                    }
                }
            };
            let _ = me.cast(ActivationMessage::Saved(seq, outcome));
        });
    }

    /// Writes the state in memory at this activation's epoch, above every seq written so
    /// far, to a write quorum before any reply goes out on it (`acked` stays below `seq`
    /// until then). Done as an activation starts (the state it read) and after a refused
    /// save (the state it rolls back to). Why: a refused save may sit on a store outside
    /// the quorum this activation read, or missed by the rollback; a later activation that
    /// reads that store would bring it back, after callers were answered from a state
    /// without it (a withdrawal refused for want of money, then the earlier withdrawal
    /// back). Once a quorum holds this epoch's state, every later read quorum sees it,
    /// and it is newer than the refused save, which so can never come back. (A quorum
    /// register's write-back, as in ABD.)
    fn establish(&mut self, myself: &ActorRef<ActivationMessage>) {
        self.seq += 1;
        self.establishing = true;
        self.save_next(myself);
    }

    /// A save was not copied to a quorum: every caller waiting on a save is refused, and
    /// the state goes back to the last one a quorum holds, in memory at once and, before
    /// any further reply, on a write quorum ([`Self::establish`]). Until that holds, a
    /// replica that took the refused save may still serve it to a later activation: a
    /// refused update is not acknowledged, and is known undone only once a later call on
    /// the key is answered.
    fn roll_back(&mut self, myself: &ActorRef<ActivationMessage>, why: &str) {
        tracing::warn!(actor = %self.name, reason = %why, "an actor's update was not copied to enough nodes; refused and rolled back");
        self.refuse_waiting(&format!(
            "its update could not be copied to enough nodes ({why}); it is not acknowledged, and a node that took the copy may still bring it back: try again with the same transaction id (it applies once)"
        ));
        match self.args.kind.load(Some(&self.durable)) {
            Ok(s) => self.state = s,
            Err(e) => {
                tracing::error!(actor = %self.name, error = %e, "cannot roll back to the saved state; deactivating");
                let why = format!("its state could not be rolled back: {e}");
                self.give_up(myself, why, reason::SAVE_FAILED);
                return;
            }
        }
        self.snapshot = self.durable.clone();
        self.answered = keep_sizes(self.durable_answered.clone());
        self.establish(myself);
    }

    /// Answers every caller waiting on a save "unavailable" (`reason`).
    fn refuse_waiting(&mut self, reason: &str) {
        for (_, reply, _) in self.waiting.drain(..) {
            let e = ActorCallError::Unavailable {
                actor: self.name.clone(),
                reason: reason.to_string(),
            };
            let _ = reply.send(Wire::new(Err(e)));
        }
    }

    /// Ends the activation, refusing its waiting callers and any message still in its
    /// mailbox "unavailable" (`why`; its host releases the lease).
    fn give_up(&mut self, myself: &ActorRef<ActivationMessage>, why: String, end: &str) {
        self.refuse_waiting(&why);
        self.refusing = Some(Refusal::Moving(why));
        self.end(myself, end);
    }

    /// Stops now if nothing waits for a save, else once it is done.
    fn stop_when_saved(&mut self, myself: &ActorRef<ActivationMessage>, why: &str) {
        if self.stop_after.is_none() {
            self.stop_after = Some(why.to_string());
        }
        if !self.saving && self.waiting.is_empty() {
            let why = self.stop_after.clone().unwrap_or_default();
            self.end(myself, &why);
        }
    }

    /// Ends the activation with `why` (for its host). Messages already in its mailbox are
    /// still handled (and answered: `refusing` says how), so no caller is left without an
    /// answer.
    fn end(&mut self, myself: &ActorRef<ActivationMessage>, why: &str) {
        *crate::locked(&self.args.stats.end) = Some(why.to_string());
        if self.refusing.is_none() {
            self.refusing = Some(Refusal::Moving("it is being deactivated".into()));
        }
        if myself.drain().is_err() {
            myself.stop(Some(why.to_string()));
        }
    }

    /// The handler failed or panicked: restore, count, maybe stop.
    fn restart(&mut self, myself: &ActorRef<ActivationMessage>, why: String) -> ActorCallError {
        self.restore();
        self.args.stats.restarts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(troupe_runtime::observe::metric::ACTOR_RESTARTS).increment(1);
        if self.intensity.allow(Instant::now()) {
            tracing::warn!(actor = %self.name, reason = %why, "actor handler failed; restarted from its saved state");
            return self.error(|actor| ActorCallError::Failed { actor, reason: why });
        }
        let l = self.args.limits;
        let stopped = format!(
            "its handler failed more than {} times within {} ms (last: {why}); it takes messages again after {} ms",
            l.max_restarts, l.restart_window_ms, l.stopped_for_ms
        );
        tracing::error!(actor = %self.name, reason = %stopped, "actor stopped");
        self.refusing = Some(Refusal::Stopped(stopped.clone()));
        self.stop_when_saved(myself, &format!("{}{stopped}", reason::STOPPED));
        self.error(|actor| ActorCallError::Stopped {
            actor,
            reason: stopped,
        })
    }
}

/// How a save's copy went.
enum Copy {
    /// The replica committed it (or holds a newer save of this activation).
    Kept,
    /// The replica holds a newer activation's save or fence.
    Fenced(Fenced),
    /// The replica did not confirm it: no answer in time, or an unreadable answer.
    Missing(String),
}

/// Sends `saved` to `replica` (a node, its host) and waits (at most [`COPY_WAIT`]) for it
/// to be committed.
async fn copy_to(
    (node, r): (String, ActorRef<ActorHostMessage>),
    actor: &str,
    saved: SavedState,
) -> Copy {
    let copy = StateCopy {
        actor: actor.to_string(),
        saved,
    };
    match r
        .call(
            |p| ActorHostMessage::KeepCopy(Wire::new(copy), p),
            Some(COPY_WAIT),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(w)) => match w.into_inner() {
            Ok(Ok(())) => Copy::Kept,
            Ok(Err(f)) => Copy::Fenced(f),
            Err(e) => Copy::Missing(format!("node {node} answered unreadably: {e}")),
        },
        _ => {
            metrics::counter!(troupe_runtime::observe::metric::ACTOR_COPY_TIMEOUTS).increment(1);
            Copy::Missing(format!(
                "node {node} did not confirm its copy within {} ms",
                COPY_WAIT.as_millis()
            ))
        }
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Saved replies with their sizes, as an activation keeps them.
/// The bytes an answer kept counts against [`ANSWERED_BYTES`].
fn answer_size(a: &Answered) -> usize {
    a.reply.as_ref().map_or(0, Vec::len) + a.refused.as_ref().map_or(0, String::len)
}

fn keep_sizes(answered: Vec<Answered>) -> VecDeque<(Answered, usize)> {
    answered
        .into_iter()
        .map(|a| {
            let n = answer_size(&a);
            (a, n)
        })
        .collect()
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .map(|m| format!("panicked: {m}"))
        .unwrap_or_else(|| "panicked".into())
}

impl Actor for Activation {
    type Msg = ActivationMessage;
    type State = ActivationState;
    type Arguments = ActivationArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ActivationArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let name = actor_name(&args.actor_type, &args.key);
        let state = args
            .kind
            .load(args.saved.as_ref().map(|s| s.state.as_slice()))
            .map_err(|e| format!("cannot load the saved state of {name}: {e}"))?;
        let snapshot = match &args.saved {
            Some(s) => s.state.clone(),
            None => args.kind.save(&state).map_err(|e| format!("{name}: {e}"))?,
        };
        let durable = snapshot.clone();
        let durable_answered = args
            .saved
            .as_ref()
            .map(|s| s.answered.clone())
            .unwrap_or_default();
        if let Some(saved) = &args.saved {
            // The hosts its last writer counted: N never falls below what that one used.
            args.known
                .learn(&args.actor_type, saved.hosts.iter().map(String::as_str));
        }
        let seq = args.saved.as_ref().map_or(0, |s| s.seq);
        *crate::locked(&args.stats.last_save) = args.saved.as_ref().map(|s| (s.epoch, s.seq));
        let ctx = ActorContext::new(&args.actor_type, &args.key, &args.node)
            .attach(args.epoch, args.link.clone());
        let intensity = RestartIntensity::new(
            args.limits.max_restarts,
            Duration::from_millis(args.limits.restart_window_ms),
        );
        tracing::debug!(actor = %name, epoch = args.epoch, seq, "activated");
        Ok(ActivationState {
            name,
            ctx,
            state,
            snapshot,
            seq,
            sent: seq,
            saving: false,
            in_flight: Vec::new(),
            durable,
            answered: keep_sizes(durable_answered.clone()),
            in_flight_answered: Vec::new(),
            durable_answered,
            acked: seq,
            establishing: false,
            waiting: VecDeque::new(),
            intensity,
            refusing: None,
            stop_after: None,
            args,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if st.args.quorum_required && st.args.kind.persistent() {
            st.establish(&myself);
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ActivationMessage::Handle(message, call_id, reply, deadline) => {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let e = st.error(|actor| ActorCallError::Unavailable {
                        actor,
                        reason: "its caller stopped waiting before it was handled; not applied"
                            .into(),
                    });
                    let _ = reply.send(Wire::new(Err(e)));
                    return Ok(());
                }
                if let Some(r) = &st.refusing {
                    let e = match r {
                        Refusal::Stopped(why) => st.error(|actor| ActorCallError::Stopped {
                            actor,
                            reason: why.clone(),
                        }),
                        Refusal::Moving(why) => st.error(|actor| ActorCallError::Unavailable {
                            actor,
                            reason: why.clone(),
                        }),
                    };
                    let _ = reply.send(Wire::new(Err(e)));
                    return Ok(());
                }
                let kind = st.args.kind.clone();
                if let Some(before) = call_id.and_then(|id| st.answered_before(id)) {
                    // A retry of a call this state holds already: its first reply again,
                    // once the state that holds it is durable.
                    if kind.persistent() && st.acked < st.seq {
                        st.waiting.push_back((st.seq, reply, before));
                        st.save_next(&myself);
                    } else {
                        let _ = reply.send(Wire::new(before));
                    }
                    return Ok(());
                }
                let outcome = st.run_handler(message).await;
                st.args.stats.handled.fetch_add(1, Ordering::Relaxed);
                let result = match outcome {
                    Ok(Ok(v)) => match kind.save(&st.state) {
                        Ok(bytes) => {
                            let changed = bytes != st.snapshot;
                            st.snapshot = bytes;
                            if kind.persistent() && (changed || st.acked < st.seq) {
                                // A message that changed nothing (a read) saves nothing,
                                // but waits behind the saves in flight: its reply may
                                // show their state, which must be durable first.
                                if changed {
                                    st.seq += 1;
                                    if let Some(id) = call_id {
                                        st.remember(id, deadline, Ok(&v));
                                    }
                                }
                                st.waiting.push_back((st.seq, reply, Ok(v)));
                                st.save_next(&myself);
                                return Ok(());
                            }
                            Ok(v)
                        }
                        Err(e) => {
                            Err(st.restart(&myself, format!("its state cannot be saved: {e}")))
                        }
                    },
                    Ok(Err(HandleError::BadMessage(reason))) => Err(ActorCallError::BadMessage {
                        actor_type: st.args.actor_type.clone(),
                        reason,
                    }),
                    Ok(Err(HandleError::Actor(ActorError::Refused(reason)))) => {
                        st.restore();
                        if let Some(id) = call_id {
                            // Every try of the call gets this answer: a later one (a
                            // step's attempt run again elsewhere while this one waited
                            // out a partition) is not applied on a state where it would
                            // pass. Persistent: saved, as a change is, before the answer.
                            st.remember(id, deadline, Err(&reason));
                            if kind.persistent() {
                                st.seq += 1;
                                let e = st.error(|actor| ActorCallError::Refused { actor, reason });
                                st.waiting.push_back((st.seq, reply, Err(e)));
                                st.save_next(&myself);
                                return Ok(());
                            }
                        }
                        let e = st.error(|actor| ActorCallError::Refused { actor, reason });
                        if kind.persistent() && st.acked < st.seq {
                            // Refused on a state not yet durable: the refusal waits too
                            // (were that state's save refused, so would this answer be).
                            st.waiting.push_back((st.seq, reply, Err(e)));
                            return Ok(());
                        }
                        Err(e)
                    }
                    Ok(Err(HandleError::Actor(ActorError::Failed(why)))) => {
                        Err(st.restart(&myself, why))
                    }
                    Err(p) => Err(st.restart(&myself, panic_message(p.as_ref()))),
                };
                let _ = reply.send(Wire::new(result));
            }
            ActivationMessage::Saved(seq, outcome) => {
                st.saving = false;
                match outcome {
                    SaveOutcome::Kept => {
                        *crate::locked(&st.args.stats.last_save) = Some((st.args.epoch, seq));
                        st.durable = std::mem::take(&mut st.in_flight);
                        st.durable_answered = std::mem::take(&mut st.in_flight_answered);
                        st.acked = st.acked.max(seq);
                        st.establishing = false;
                        while st.waiting.front().is_some_and(|(s, _, _)| *s <= seq) {
                            if let Some((_, reply, v)) = st.waiting.pop_front() {
                                let _ = reply.send(Wire::new(v));
                            }
                        }
                        st.save_next(&myself);
                        if let Some(why) = st.stop_after.clone() {
                            st.stop_when_saved(&myself, &why);
                        }
                    }
                    SaveOutcome::NotCopied(why) if st.establishing => {
                        // The state it starts from (or rolled back to) is not on a
                        // quorum: answer nothing from it; the next activation reads
                        // a quorum afresh.
                        *crate::locked(&st.args.stats.last_save) = Some((st.args.epoch, seq));
                        tracing::warn!(actor = %st.name, reason = %why, "an actor's state could not be written to enough nodes; deactivating it");
                        st.give_up(
                            &myself,
                            format!(
                                "its state could not be written to enough nodes ({why}); try again"
                            ),
                            reason::SAVE_FAILED,
                        );
                    }
                    SaveOutcome::NotCopied(why) => {
                        // This node committed it: it is the newest save here.
                        *crate::locked(&st.args.stats.last_save) = Some((st.args.epoch, seq));
                        st.roll_back(&myself, &why);
                        if let Some(why) = st.stop_after.clone() {
                            st.stop_when_saved(&myself, &why);
                        }
                    }
                    SaveOutcome::Fenced(epoch) => {
                        tracing::warn!(actor = %st.name, epoch = st.args.epoch, newer = epoch, "a newer activation exists; this one stops");
                        st.give_up(
                            &myself,
                            format!("it moved (a newer activation, epoch {epoch}, exists)"),
                            reason::FENCED,
                        );
                    }
                    SaveOutcome::Failed(why) => {
                        tracing::error!(actor = %st.name, error = %why, "cannot save an actor's state; deactivating it");
                        st.give_up(
                            &myself,
                            format!("its state could not be saved: {why}"),
                            reason::SAVE_FAILED,
                        );
                    }
                }
            }
            ActivationMessage::Stop => st.stop_when_saved(&myself, reason::RELEASED),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use troupe_runtime::job::spec::JobSpec;
    use troupe_runtime::task::{TaskError, TaskRegistry};

    struct NoJobs;

    impl ActorLink for NoJobs {
        fn run_job(
            &self,
            _spec: JobSpec,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Value, TaskError>> + Send>>
        {
            Box::pin(async { Err(TaskError::permanent("no jobs in this test")) })
        }
    }

    /// A counter activation at epoch 5 on node n1 (no other host exists in this process,
    /// so no replica is in view), on `store`.
    async fn counter(store: &ActorStore, quorum_required: bool) -> ActorRef<ActivationMessage> {
        let key = format!("k-{quorum_required}");
        counter_of(
            "troupe.counter",
            &key,
            store,
            KnownHosts::default(),
            quorum_required,
        )
        .await
    }

    /// A counter activation at epoch 5 on node n1, of type `actor_type` (a counter under
    /// another name: each test its own type, so that their fake hosts do not meet).
    async fn counter_of(
        actor_type: &str,
        key: &str,
        store: &ActorStore,
        known: KnownHosts,
        quorum_required: bool,
    ) -> ActorRef<ActivationMessage> {
        counter_from(actor_type, key, store, known, quorum_required, None).await
    }

    /// The built-in counter's type.
    fn counter_kind() -> Arc<dyn ErasedActor> {
        TaskRegistry::with_builtins()
            .actors()
            .get("troupe.counter")
            .expect("the built-in counter")
    }

    /// As [`counter_of`], starting from `saved` (what its host read).
    async fn counter_from(
        actor_type: &str,
        key: &str,
        store: &ActorStore,
        known: KnownHosts,
        quorum_required: bool,
        saved: Option<SavedState>,
    ) -> ActorRef<ActivationMessage> {
        let args = ActivationArgs {
            actor_type: actor_type.into(),
            key: key.into(),
            node: "n1".into(),
            epoch: 5,
            kind: counter_kind(),
            saved,
            quorum_required,
            known,
            store: store.clone(),
            link: Arc::new(NoJobs),
            limits: ActorsConfig::default(),
            stats: Arc::default(),
            tasks: crate::task_runtime::TaskRuntime::new("n1", 1).expect("a task runtime"),
        };
        Actor::spawn(None, Activation, args)
            .await
            .expect("the activation starts")
            .0
    }

    /// Sends `msg`; `None` if the activation is gone (it ended).
    async fn answer(
        a: &ActorRef<ActivationMessage>,
        msg: Value,
    ) -> Option<Result<Value, ActorCallError>> {
        answer_call(a, msg, None).await
    }

    /// Sends `msg` as a try of call `id`; `None` if the activation is gone.
    async fn answer_call(
        a: &ActorRef<ActivationMessage>,
        msg: Value,
        id: Option<u64>,
    ) -> Option<Result<Value, ActorCallError>> {
        let r = a
            .call(
                |p| ActivationMessage::Handle(msg, id, p, None),
                Some(Duration::from_secs(5)),
            )
            .await
            .ok()?;
        match r {
            ractor::rpc::CallResult::Success(w) => Some(w.into_inner().expect("a readable reply")),
            ractor::rpc::CallResult::SenderError => None,
            other => panic!("no reply: {other:?}"),
        }
    }

    async fn send(a: &ActorRef<ActivationMessage>, msg: Value) -> Result<Value, ActorCallError> {
        answer(a, msg).await.expect("the activation answers")
    }

    /// Sends `msg` to a counter's `state` directly (no activation).
    async fn apply(state: &mut ErasedState, msg: Value) -> Value {
        let ctx = ActorContext::new("troupe.counter", "k", "n1");
        counter_kind()
            .handle_json(&ctx, state, msg)
            .await
            .expect("the counter handles it")
    }

    /// The counter's total in a save.
    async fn total_in(saved: &SavedState) -> Value {
        let mut state = counter_kind()
            .load(Some(&saved.state))
            .expect("a readable state");
        apply(&mut state, json!({"op": "get"})).await["total"].clone()
    }

    /// What `store` holds for `actor`, as (epoch, seq, total).
    async fn held(store: &ActorStore, actor: &str) -> Option<(u64, u64, Value)> {
        let held = store
            .fetch_and_fence(actor, 0)
            .await
            .expect("a memory store reads")?;
        Some((held.epoch, held.seq, total_in(&held).await))
    }

    /// A leased activation with no replica in view answers nothing: the state it starts
    /// from cannot be written to a quorum, so the update is "unavailable", and so is the
    /// read after it (before, the read was answered from memory). Only the state it
    /// started from was written here, never the update's.
    #[tokio::test]
    async fn a_leased_activation_with_no_replica_in_view_answers_nothing() {
        let store = ActorStore::new(None);
        let a = counter(&store, true).await;
        match send(&a, json!({"op": "add", "n": 7})).await {
            Err(ActorCallError::Unavailable { reason, .. }) => {
                assert!(reason.contains("enough nodes"), "{reason}")
            }
            other => panic!("an update no replica holds was answered {other:?}"),
        }
        let read = answer(&a, json!({"op": "get"})).await;
        assert!(
            !matches!(read, Some(Ok(_))),
            "answered {read:?} from a state no quorum holds"
        );
        assert_eq!(
            held(&store, "troupe.counter/k-true").await,
            Some((5, 1, json!(0)))
        );
    }

    /// A retry of a call already applied gets the first reply and changes nothing;
    /// another call with the same message applies.
    #[tokio::test]
    async fn a_retried_call_is_answered_again_not_applied_twice() {
        let store = ActorStore::new(None);
        let a = counter(&store, false).await;
        let add = json!({"op": "add", "n": 7});
        let first = answer_call(&a, add.clone(), Some(41)).await;
        assert_eq!(first, Some(Ok(json!({"total": 7}))));
        assert_eq!(answer_call(&a, add.clone(), Some(41)).await, first);
        assert_eq!(
            send(&a, json!({"op": "get"})).await,
            Ok(json!({"total": 7}))
        );
        assert_eq!(
            answer_call(&a, add, Some(42)).await,
            Some(Ok(json!({"total": 14})))
        );
        a.stop(None);
    }

    /// Stops `a`, the counter `k-false` (see [`counter`]), and starts the next activation
    /// of it from what `store` holds; answers that save too.
    async fn next_activation(
        a: ActorRef<ActivationMessage>,
        store: &ActorStore,
    ) -> (Option<SavedState>, ActorRef<ActivationMessage>) {
        let _ = a.stop_and_wait(None, None).await;
        let saved = store
            .fetch_and_fence("troupe.counter/k-false", 0)
            .await
            .expect("a memory store reads");
        let next = counter_from(
            "troupe.counter",
            "k-false",
            store,
            KnownHosts::default(),
            false,
            saved.clone(),
        )
        .await;
        (saved, next)
    }

    /// The replies travel with the state: an activation started from a save that holds
    /// a call answers that call's retry without applying it (the first try's save was
    /// refused, say, yet reached the store the new activation read).
    #[tokio::test]
    async fn a_new_activation_answers_a_retry_of_a_call_its_saved_state_holds() {
        let store = ActorStore::new(None);
        let first = counter(&store, false).await;
        let add = json!({"op": "add", "n": 7});
        assert_eq!(
            answer_call(&first, add.clone(), Some(9)).await,
            Some(Ok(json!({"total": 7})))
        );
        let (saved, next) = next_activation(first, &store).await;
        assert_eq!(
            saved.map(|s| s.answered.len()),
            Some(1),
            "the call's reply is not saved with the state"
        );
        assert_eq!(
            answer_call(&next, add, Some(9)).await,
            Some(Ok(json!({"total": 7})))
        );
        assert_eq!(
            send(&next, json!({"op": "get"})).await,
            Ok(json!({"total": 7}))
        );
        next.stop(None);
    }

    /// A refused call's later tries are refused alike, even once the state changed so
    /// that it would pass, and a new activation reading the save does the same: a job
    /// step's attempt that arrives after another attempt was refused (its node was cut
    /// off meanwhile) must not be applied behind the back of a job that ended "refused".
    #[tokio::test]
    async fn a_call_refused_once_is_refused_on_every_try_even_after_the_state_changed() {
        let store = ActorStore::new(None);
        let a = counter(&store, false).await;
        let max = json!({"op": "add", "n": i64::MAX});
        assert_eq!(
            answer_call(&a, max, Some(1)).await,
            Some(Ok(json!({"total": i64::MAX})))
        );
        let one = json!({"op": "add", "n": 1});
        let refused = |r: Option<Result<Value, ActorCallError>>| match r {
            Some(Err(ActorCallError::Refused { reason, .. })) => reason,
            other => panic!("not refused: {other:?}"),
        };
        let first = refused(answer_call(&a, one.clone(), Some(2)).await);
        assert!(first.contains("overflow"), "{first}");
        // Now the same message would pass...
        assert_eq!(
            answer_call(&a, json!({"op": "add", "n": -10}), Some(3)).await,
            Some(Ok(json!({"total": i64::MAX - 10})))
        );
        // ...but a try of the refused call is refused again, and changes nothing.
        assert_eq!(refused(answer_call(&a, one.clone(), Some(2)).await), first);
        assert_eq!(
            send(&a, json!({"op": "get"})).await,
            Ok(json!({"total": i64::MAX - 10}))
        );
        // The refusal travels with the state.
        let (_, next) = next_activation(a, &store).await;
        assert_eq!(
            refused(answer_call(&next, one.clone(), Some(2)).await),
            first
        );
        // Another call with the same message applies.
        assert_eq!(
            answer_call(&next, one, Some(4)).await,
            Some(Ok(json!({"total": i64::MAX - 9})))
        );
        next.stop(None);
    }

    /// The memory is bounded: past [`ANSWERED_KEEP`] calls the oldest is forgotten.
    #[tokio::test]
    async fn only_the_last_calls_are_remembered() {
        let store = ActorStore::new(None);
        let a = counter(&store, false).await;
        for id in 0..=ANSWERED_KEEP as u64 {
            answer_call(&a, json!({"op": "add", "n": 1}), Some(id)).await;
        }
        let total = ANSWERED_KEEP as i64 + 1;
        // The newest is remembered, the oldest is not.
        let newest = answer_call(&a, json!({"op": "add", "n": 1}), Some(ANSWERED_KEEP as u64));
        assert_eq!(newest.await, Some(Ok(json!({ "total": total }))));
        let oldest = answer_call(&a, json!({"op": "add", "n": 1}), Some(0));
        assert_eq!(oldest.await, Some(Ok(json!({ "total": total + 1 }))));
        a.stop(None);
    }

    /// Without a core group's lease (a cluster too small for one) the replica is best
    /// effort: the local commit acknowledges.
    #[tokio::test]
    async fn without_a_lease_the_local_commit_acknowledges() {
        let store = ActorStore::new(None);
        let a = counter(&store, false).await;
        assert_eq!(
            send(&a, json!({"op": "add", "n": 7})).await,
            Ok(json!({"total": 7}))
        );
        a.stop(None);
    }

    /// A message whose sender stopped waiting is not applied (say, one that sat in a claim
    /// until a partition healed, after its caller had been told "unavailable").
    #[tokio::test]
    async fn a_message_whose_sender_stopped_waiting_is_not_applied() {
        let store = ActorStore::new(None);
        let a = counter(&store, false).await;
        let past = Instant::now()
            .checked_sub(Duration::from_millis(1))
            .expect("a past instant");
        let late = a
            .call(
                |p| ActivationMessage::Handle(json!({"op": "add", "n": 7}), None, p, Some(past)),
                Some(Duration::from_secs(5)),
            )
            .await
            .expect("the activation answers");
        match late {
            ractor::rpc::CallResult::Success(w) => match w.into_inner().expect("readable") {
                Err(ActorCallError::Unavailable { reason, .. }) => {
                    assert!(reason.contains("stopped waiting"), "{reason}")
                }
                other => panic!("a message past its deadline was answered {other:?}"),
            },
            other => panic!("no reply: {other:?}"),
        }
        assert_eq!(
            send(&a, json!({"op": "get"})).await,
            Ok(json!({"total": 0}))
        );
        a.stop(None);
    }

    /// Starts fake hosts `names` of `actor_type`, the first `answering` of them (in the
    /// rendezvous order of `actor_type/key`) answering, the others silent; returns their
    /// stores and switches in that order.
    async fn hosts_ranked(
        actor_type: &str,
        key: &str,
        names: &[&str],
        answering: usize,
    ) -> Vec<(ActorStore, Arc<std::sync::atomic::AtomicBool>)> {
        let ranked = troupe_runtime::merge::ranked(
            &troupe_runtime::actor::route::owner_key(actor_type, key),
            names.iter().copied(),
        );
        let mut stores = Vec::new();
        for (i, node) in ranked.into_iter().enumerate() {
            let (store, _, switch) =
                super::super::fake_host::start_switchable(node, actor_type, i < answering).await;
            stores.push((store, switch));
        }
        stores
    }

    /// With five hosts of the type (this node and four in view), an update only one other
    /// host holds is refused and rolled back: two of five stores are not a majority, and
    /// a new activation reading the three others would miss it. (Before quorums, the one
    /// replica's copy acknowledged it.) The rollback cannot reach a quorum either, so the
    /// activation answers nothing more: before, a read after the refused update was
    /// answered from memory while the refused save sat on a replica, from which a later
    /// activation could bring it back (answers that saw a state without it, then with it:
    /// money destroyed in the nemesis's 20-minute run).
    #[tokio::test]
    async fn an_update_fewer_than_a_majority_of_hosts_hold_is_refused_and_nothing_more_answered() {
        let t = "test.quorum-refused";
        let hosts = hosts_ranked(t, "k", &["r2", "r3", "r4", "r5"], 2).await;
        let store = ActorStore::new(None);
        let a = counter_of(t, "k", &store, KnownHosts::default(), true).await;
        assert_eq!(
            send(&a, json!({"op": "get"})).await,
            Ok(json!({"total": 0}))
        );
        hosts[1]
            .1
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match send(&a, json!({"op": "add", "n": 7})).await {
            Err(ActorCallError::Unavailable { reason, .. }) => {
                assert!(reason.contains("2 of the 3 nodes"), "{reason}")
            }
            other => panic!("an update two of five hosts hold was answered {other:?}"),
        }
        let read = answer(&a, json!({"op": "get"})).await;
        assert!(
            !matches!(read, Some(Ok(_))),
            "answered {read:?} from a rolled-back state no quorum holds"
        );
        // The replica that answered got the refused save, then the rollback over it.
        let actor = format!("{t}/k");
        assert_eq!(held(&hosts[0].0, &actor).await, Some((5, 3, json!(0))));
        let copy = hosts[0]
            .0
            .fetch_and_fence(&actor, 0)
            .await
            .expect("a memory store reads");
        assert_eq!(copy.map(|s| s.hosts.len()), Some(5), "the save names its N");
    }

    /// A new activation writes the state it read back to a quorum, at its own epoch,
    /// before it answers: a refused save of an older activation left on a store outside
    /// the quorum it read (epoch 3, seq 11 below) is then older than what every later
    /// read quorum finds, and never comes back after this answer.
    #[tokio::test]
    async fn a_new_activation_writes_what_it_read_back_to_a_quorum_before_it_answers() {
        let t = "test.quorum-write-back";
        let hosts = hosts_ranked(t, "k", &["w2", "w3", "w4", "w5"], 2).await;
        let kind = counter_kind();
        let mut state = kind.load(None).expect("a new state");
        apply(&mut state, json!({"op": "add", "n": 7})).await;
        let read = SavedState {
            epoch: 3,
            seq: 9,
            state: kind.save(&state).expect("encodes"),
            hosts: Vec::new(),
            answered: Vec::new(),
        };
        let store = ActorStore::new(None);
        let a = counter_from(t, "k", &store, KnownHosts::default(), true, Some(read)).await;
        assert_eq!(
            send(&a, json!({"op": "get"})).await,
            Ok(json!({"total": 7}))
        );
        let actor = format!("{t}/k");
        for (s, _) in &hosts[..2] {
            assert_eq!(held(s, &actor).await, Some((5, 10, json!(7))));
        }
        let refused_elsewhere = SavedState {
            epoch: 3,
            seq: 11,
            state: Vec::new(),
            hosts: Vec::new(),
            answered: Vec::new(),
        };
        let written = hosts[0]
            .0
            .fetch_and_fence(&actor, 0)
            .await
            .expect("reads")
            .expect("held");
        assert!(written.is_newer_than(&refused_elsewhere));
        a.stop(None);
    }

    /// With five hosts of the type, an update three hold (this node and the next two in
    /// the key's order) is acknowledged, though the two others are silent.
    #[tokio::test]
    async fn an_update_a_majority_of_hosts_hold_is_acknowledged() {
        let t = "test.quorum-acked";
        let hosts = hosts_ranked(t, "k", &["a2", "a3", "a4", "a5"], 2).await;
        let store = ActorStore::new(None);
        let a = counter_of(t, "k", &store, KnownHosts::default(), true).await;
        assert_eq!(
            send(&a, json!({"op": "add", "n": 7})).await,
            Ok(json!({"total": 7}))
        );
        // Seq 1 is the state it started from, written back; seq 2 the update.
        for (s, _) in &hosts[..2] {
            assert_eq!(held(s, &format!("{t}/k")).await, Some((5, 2, json!(7))));
        }
        a.stop(None);
    }

    /// Hosts once seen still count when they are out of view: a node cut off with one
    /// other of five hosts is not a majority, and acknowledges nothing.
    #[tokio::test]
    async fn hosts_out_of_view_still_count_towards_the_majority() {
        let t = "test.quorum-cut-off";
        hosts_ranked(t, "k", &["c2"], 1).await;
        let known = KnownHosts::default();
        known.learn(t, ["n1", "c2", "c3", "c4", "c5"]);
        let store = ActorStore::new(None);
        let a = counter_of(t, "k", &store, known, true).await;
        match send(&a, json!({"op": "add", "n": 7})).await {
            Err(ActorCallError::Unavailable { reason, .. }) => {
                assert!(reason.contains("only 1 other of the 5"), "{reason}")
            }
            other => panic!("an update two of five hosts hold was answered {other:?}"),
        }
    }
}
