//! The actor host: a node's supervisor of keyed-actor activations, and the door through
//! which messages reach them.
//!
//! Every message for (T, K) comes here as [`ActorHostMessage::Deliver`]. If the actor is
//! active on this node, the message goes to its [`Activation`] (a child of this actor).
//! If not, and another host owns the key by rendezvous in this node's view, it is
//! forwarded there (at most [`MAX_ACTOR_HOPS`] times, so views that disagree cannot bounce
//! a message forever). Otherwise this host *claims* the actor from the core group (Raft):
//! the claim is granted if nobody holds the actor's lease, if this node does, or if this
//! node names the holder (and its epoch) after seeing it go down; the grant's log index
//! is the activation's epoch. Messages
//! that arrive meanwhile queue in order. A claim denied because another live host holds
//! the lease sends the messages there. So two hosts that both think they own a key (a
//! node joining, views differing for a moment) never both activate it.
//!
//! Granted, the host gathers the newest saved state of the actor, from its own store and
//! from every other host it reaches (a replica holds the copies of a host that died),
//! fencing each store at the new epoch as it reads it, and starts the activation from it
//! only once it has read a majority of the N hosts of T ([`quorum`]; N never shrinks when
//! hosts are cut off). Saves are acknowledged once a majority of the N hosts hold them
//! ([`activation`]), so this read sees every acknowledged save, and the stores it fenced
//! leave the old activation (on the other side of a partition, say) too few to
//! acknowledge anything more. If it cannot read a majority within the claim's time, the
//! claim fails ("can read only k of N stores of T"), the lease is given back and callers
//! get "unavailable": a keyed actor is unavailable while a majority of its type's hosts
//! cannot be reached, rather than losing acknowledged updates. In a cluster too small for
//! a core group (no lease) the host reads what it reaches and one replica is written,
//! best effort. Every second it stops activations that have been idle
//! for `actors.idle_ms` and those whose key now belongs to another host (a node joined):
//! they finish their saves, stop, and the host releases their lease, then passes on any
//! message that arrived meanwhile.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::core::{CoreCommand, CoreDecision};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use troupe_runtime::actor::route::{self, Claim, ClaimOutcome};
use troupe_runtime::actor::{actor_name, ActivationInfo, ActorCallError, ActorLink};
use troupe_runtime::job::spec::JobSpec;
use troupe_runtime::job::status::JobState;
use troupe_runtime::protocol::{
    actor_type_group, submit, ActorEnvelope, ActorHostMessage, ActorReply, JobManagerMessage,
    SavedState, SubmitRequest, ACTOR_HOSTS_GROUP, CORE_VOTERS_GROUP, MAX_ACTOR_HOPS,
};
use troupe_runtime::task::TaskError;
use troupe_runtime::wire::Wire;

use crate::NodeContext;

pub(crate) mod activation;
#[cfg(test)]
pub(crate) mod fake_host;
pub(crate) mod quorum;
pub(crate) mod store;

use activation::{reason, Activation, ActivationArgs, ActivationMessage, ActivationStats};
use quorum::{read_quorum, KnownHosts};
use store::ActorStore;

/// How long a claim keeps asking the core group (an election, a group still forming),
/// at most: a claim ends a little before the first waiting caller gives up
/// ([`claim_deadline`]), so that caller hears why rather than a bare timeout.
const CLAIM_FOR: Duration = Duration::from_secs(5);
/// How long a claim is given at least, however close its first caller's deadline.
const CLAIM_AT_LEAST: Duration = Duration::from_secs(1);
/// How long before its first caller's deadline a claim gives up (time for the answer
/// to travel back).
const CLAIM_MARGIN: Duration = Duration::from_millis(300);
/// How long gathering an actor's state waits for each other host.
const FETCH_WAIT: Duration = Duration::from_secs(1);
/// How long a new node waits before it concludes that no core group exists.
const NEW_NODE: Duration = Duration::from_secs(3);
/// How often the host looks for idle and moved activations.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The replicas of (T, K) for a save by `me`: the first `count` other hosts of T among
/// `hosts` (those in view) in the key's rendezvous order (the first is the one that owns
/// the key if `me` goes). Fewer if fewer are in view.
pub(crate) fn replicas(
    actor_type: &str,
    key: &str,
    me: &str,
    hosts: &[(String, ActorRef<ActorHostMessage>)],
    count: usize,
) -> Vec<(String, ActorRef<ActorHostMessage>)> {
    let mut ranked = troupe_runtime::merge::ranked(
        &route::owner_key(actor_type, key),
        hosts.iter().map(|(n, _)| n.as_str()),
    );
    // A node seen twice (a session being replaced) is one replica.
    ranked.dedup();
    ranked
        .into_iter()
        .filter(|n| *n != me)
        .take(count)
        .filter_map(|n| hosts.iter().find(|(h, _)| h == n).cloned())
        .collect()
}

/// A message waiting for its activation, with when its sender stops waiting.
type Pending = (ActorEnvelope, RpcReplyPort<ActorReply>, Option<Instant>);

struct Active {
    actor: ActorRef<ActivationMessage>,
    actor_type: String,
    key: String,
    epoch: u64,
    last_used: Instant,
    stats: Arc<ActivationStats>,
}

enum Slot {
    /// Claiming the lease, or releasing it: messages wait.
    Waiting(Vec<Pending>),
    /// Running.
    Active(Active),
    /// Told to stop: messages wait for it to end.
    Leaving(Active, Vec<Pending>),
}

/// The actor host.
pub(crate) struct ActorHost;

/// The host's state.
pub(crate) struct HostState {
    ctx: NodeContext,
    store: ActorStore,
    /// The hosts of each type this node has seen: the N of its quorums.
    known: KnownHosts,
    link: Arc<dyn ActorLink>,
    slots: HashMap<String, Slot>,
    by_cell: HashMap<ActorId, String>,
    stopped: HashMap<String, (Instant, String)>,
    /// Set when the node leaves: it activates nothing more; answered once no
    /// activation is left, with how many there were.
    leaving: Option<(Option<RpcReplyPort<u64>>, u64)>,
}

impl HostState {
    /// The hosts of `actor_type` in view, without those on nodes membership declared down.
    /// A down node's host can stay in its process group for a while (its connection is
    /// closed, but a cut link carries no close), and routing to it would send every call
    /// of its keys into a timeout instead of to the host that takes them over.
    fn live_hosts(&self, actor_type: &str) -> Vec<(String, ActorRef<ActorHostMessage>)> {
        let mut hosts = route::hosts(actor_type);
        hosts.retain(|(n, _)| !self.ctx.view.is_down(n));
        hosts
    }

    fn me(&self) -> &str {
        &self.ctx.config.name
    }

    /// Routes one message: to its activation, to the owner, or into a claim.
    fn deliver(
        &mut self,
        myself: &ActorRef<ActorHostMessage>,
        env: ActorEnvelope,
        reply: RpcReplyPort<ActorReply>,
        deadline: Option<Instant>,
    ) {
        let id = actor_name(&env.actor_type, &env.key);
        // The common case first: the actor runs here.
        if let Some(Slot::Active(a)) = self.slots.get_mut(&id) {
            a.last_used = Instant::now();
            if let Err(ractor::MessagingErr::SendErr(ActivationMessage::Handle(_, _, reply, _))) =
                a.actor.cast(ActivationMessage::Handle(
                    env.message,
                    env.call_id,
                    reply,
                    deadline,
                ))
            {
                // It is ending; its host hears of it next and routes anew.
                fail_all_ports(vec![reply], &id, "it is being deactivated");
            }
            return;
        }
        if self.ctx.registry.actors().get(&env.actor_type).is_none() {
            // Not served here: on to its owner among the nodes that serve it (a client
            // connected only to this node routes through it).
            if env.hops < MAX_ACTOR_HOPS {
                let hosts = self.live_hosts(&env.actor_type);
                if let Some((_, host)) = route::owner(&env.actor_type, &env.key, &hosts) {
                    relay(host.clone(), env, reply, deadline);
                    return;
                }
            }
            let _ = reply.send(Wire::new(Err(ActorCallError::UnknownType(env.actor_type))));
            return;
        }
        if let Some((until, why)) = self.stopped.get(&id) {
            if Instant::now() < *until {
                let e = ActorCallError::Stopped {
                    actor: id.clone(),
                    reason: why.clone(),
                };
                let _ = reply.send(Wire::new(Err(e)));
                return;
            }
            self.stopped.remove(&id);
        }
        match self.slots.get_mut(&id) {
            Some(Slot::Waiting(p)) | Some(Slot::Leaving(_, p)) => p.push((env, reply, deadline)),
            Some(Slot::Active(_)) => {} // handled above
            None if self.leaving.is_some() => {
                // Leaving: activate nothing; the owner among the hosts that stay takes it.
                let hosts = self.live_hosts(&env.actor_type);
                match route::owner(&env.actor_type, &env.key, &hosts) {
                    Some((owner, host)) if owner != self.me() => {
                        relay(host.clone(), env, reply, deadline)
                    }
                    _ => fail_all_ports(vec![reply], &id, "its node is leaving"),
                }
            }
            None => {
                let hosts = self.live_hosts(&env.actor_type);
                if env.hops < MAX_ACTOR_HOPS {
                    if let Some((owner, host)) = route::owner(&env.actor_type, &env.key, &hosts) {
                        if owner != self.me() {
                            relay(host.clone(), env, reply, deadline);
                            return;
                        }
                    }
                }
                self.slots
                    .insert(id.clone(), Slot::Waiting(vec![(env, reply, deadline)]));
                let (ctx, store, me) = (self.ctx.clone(), self.store.clone(), myself.clone());
                let known = self.known.clone();
                let give_up = claim_deadline(deadline, Instant::now());
                tokio::spawn(async move {
                    let outcome = claim(&ctx, &store, &known, &id, give_up).await;
                    let _ = me.cast(ActorHostMessage::Claimed(Wire::new(Claim {
                        actor: id,
                        outcome,
                    })));
                });
            }
        }
    }

    async fn claimed(&mut self, myself: &ActorRef<ActorHostMessage>, claim: Claim) {
        let Some(Slot::Waiting(pending)) = self.slots.remove(&claim.actor) else {
            return;
        };
        let Some((actor_type, key)) = claim
            .actor
            .split_once('/')
            .map(|(t, k)| (t.to_string(), k.to_string()))
        else {
            fail_all(pending, &claim.actor, "its name is not TYPE/KEY");
            return;
        };
        let (actor_type, key) = (actor_type.as_str(), key.as_str());
        match claim.outcome {
            ClaimOutcome::Granted {
                epoch,
                state,
                leased,
            } => {
                let Some(kind) = self.ctx.registry.actors().get(actor_type) else {
                    fail_all(pending, &claim.actor, "this node does not serve its type");
                    return;
                };
                let stats = Arc::new(ActivationStats::default());
                let args = ActivationArgs {
                    actor_type: actor_type.to_string(),
                    key: key.to_string(),
                    node: self.me().to_string(),
                    epoch,
                    kind,
                    saved: state,
                    quorum_required: leased,
                    known: self.known.clone(),
                    store: self.store.clone(),
                    link: self.link.clone(),
                    limits: self.ctx.config.actors,
                    stats: stats.clone(),
                    tasks: self.ctx.tasks.clone(),
                };
                match Actor::spawn_linked(None, Activation, args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        metrics::counter!(troupe_runtime::observe::metric::ACTOR_ACTIVATIONS)
                            .increment(1);
                        self.by_cell.insert(actor.get_id(), claim.actor.clone());
                        for (env, reply, deadline) in pending {
                            let _ = actor.cast(ActivationMessage::Handle(
                                env.message,
                                env.call_id,
                                reply,
                                deadline,
                            ));
                        }
                        let a = Active {
                            actor,
                            actor_type: actor_type.to_string(),
                            key: key.to_string(),
                            epoch,
                            last_used: Instant::now(),
                            stats,
                        };
                        let slot = if self.leaving.is_some() {
                            // Granted as the node started leaving: hand it off at once.
                            let _ = a.actor.cast(ActivationMessage::Stop);
                            Slot::Leaving(a, Vec::new())
                        } else {
                            Slot::Active(a)
                        };
                        self.slots.insert(claim.actor, slot);
                        self.gauge();
                    }
                    Err(e) => {
                        tracing::error!(actor = %claim.actor, error = %e, "cannot activate an actor");
                        fail_all(
                            pending,
                            &claim.actor,
                            &format!("it cannot be activated: {e}"),
                        );
                        self.release(myself, claim.actor.clone(), epoch, None, Vec::new());
                    }
                }
            }
            ClaimOutcome::Held { node } => {
                let host = route::hosts(actor_type)
                    .into_iter()
                    .find(|(n, _)| *n == node);
                match host {
                    // The holder is the authority: it handles them whatever its view.
                    Some((_, host)) => {
                        for (mut env, reply, deadline) in pending {
                            env.hops = MAX_ACTOR_HOPS;
                            relay(host.clone(), env, reply, deadline);
                        }
                    }
                    None => fail_all(
                        pending,
                        &claim.actor,
                        &format!("it runs on {node}, which cannot be reached"),
                    ),
                }
            }
            ClaimOutcome::Failed(why) => fail_all(pending, &claim.actor, &why),
        }
        self.answer_leave();
    }

    /// Releases `actor`'s lease (its last save was `saved`), then passes on `pending`
    /// (cast back as `Ended`).
    fn release(
        &mut self,
        myself: &ActorRef<ActorHostMessage>,
        actor: String,
        epoch: u64,
        saved: Option<(u64, u64)>,
        pending: Vec<Pending>,
    ) {
        self.slots.insert(actor.clone(), Slot::Waiting(pending));
        let (me, node) = (myself.clone(), self.me().to_string());
        tokio::spawn(async move {
            let cmd = CoreCommand::ReleaseActor {
                actor: actor.clone(),
                node: node.clone(),
                epoch,
                saved,
            };
            if let Err(e) = crate::core::decide(&node, cmd).await {
                // The lease stays ours: a claim elsewhere is sent here, and claimed anew.
                tracing::debug!(actor = %actor, error = %e, "could not release an actor's lease");
            }
            let _ = me.cast(ActorHostMessage::Ended(actor));
        });
    }

    /// An activation ended with `why`.
    fn ended(
        &mut self,
        myself: &ActorRef<ActorHostMessage>,
        cell: &ActorCell,
        why: Option<String>,
    ) {
        let Some(id) = self.by_cell.remove(&cell.get_id()) else {
            return;
        };
        let (a, pending) = match self.slots.remove(&id) {
            Some(Slot::Active(a)) => (a, Vec::new()),
            Some(Slot::Leaving(a, p)) => (a, p),
            Some(other) => {
                self.slots.insert(id, other);
                return;
            }
            None => return,
        };
        self.gauge();
        let why = crate::locked(&a.stats.end)
            .take()
            .or(why)
            .unwrap_or_default();
        if let Some(stopped) = why.strip_prefix(reason::STOPPED) {
            let until =
                Instant::now() + Duration::from_millis(self.ctx.config.actors.stopped_for_ms);
            self.stopped
                .insert(id.clone(), (until, stopped.to_string()));
        }
        if why == reason::FENCED {
            self.slots.insert(id.clone(), Slot::Waiting(pending));
            let _ = myself.cast(ActorHostMessage::Ended(id));
        } else {
            let saved = *crate::locked(&a.stats.last_save);
            self.release(myself, id, a.epoch, saved, pending);
        }
    }

    /// The lease is released (or was not ours): pass on what waited.
    fn reroute(&mut self, myself: &ActorRef<ActorHostMessage>, actor: &str) {
        if let Some(Slot::Waiting(pending)) = self.slots.remove(actor) {
            for (mut env, reply, deadline) in pending {
                // Routed afresh: a message once relayed to the holder must not make this
                // node claim the key again after it let it go.
                env.hops = 0;
                self.deliver(myself, env, reply, deadline);
            }
        }
        self.answer_leave();
    }

    /// Starts leaving: out of the actor types' groups (senders route elsewhere), every
    /// activation told to stop; `reply` is answered once none is left.
    fn leave(&mut self, myself: &ActorRef<ActorHostMessage>, reply: RpcReplyPort<u64>) {
        for t in self.ctx.registry.actors().names() {
            ractor::pg::leave(actor_type_group(&t), vec![myself.get_cell()]);
        }
        let ids: Vec<String> = self.slots.keys().cloned().collect();
        let mut n = 0;
        for id in ids {
            if let Some(Slot::Active(a)) = self.slots.remove(&id) {
                let _ = a.actor.cast(ActivationMessage::Stop);
                self.slots.insert(id, Slot::Leaving(a, Vec::new()));
            }
            n += 1;
        }
        tracing::info!(activations = n, "leaving: handing actors off");
        self.leaving = Some((Some(reply), n));
        self.answer_leave();
    }

    /// Answers the drain once no activation, claim or release is left.
    fn answer_leave(&mut self) {
        if !self.slots.is_empty() {
            return;
        }
        if let Some((reply @ Some(_), n)) = self.leaving.as_mut() {
            if let Some(r) = reply.take() {
                tracing::info!(activations = *n, "actors handed off");
                let _ = r.send(*n);
            }
        }
    }

    /// Stops idle activations and those whose key another host owns now; learns the
    /// hosts of every type in view (the N of the quorums).
    fn sweep(&mut self) {
        for t in self.ctx.registry.actors().names() {
            self.known
                .learn(&t, route::hosts(&t).into_iter().map(|(n, _)| n));
        }
        let idle = Duration::from_millis(self.ctx.config.actors.idle_ms);
        let me = self.me().to_string();
        let mut hosts_of: HashMap<String, Vec<(String, ActorRef<ActorHostMessage>)>> =
            HashMap::new();
        let ids: Vec<String> = self.slots.keys().cloned().collect();
        for id in ids {
            let Some(Slot::Active(a)) = self.slots.get(&id) else {
                continue;
            };
            let hosts = match hosts_of.get(&a.actor_type) {
                Some(h) => h,
                None => {
                    let h = self.live_hosts(&a.actor_type);
                    hosts_of.entry(a.actor_type.clone()).or_insert(h)
                }
            };
            let moved = hosts.iter().any(|(n, _)| *n == me)
                && route::owner(&a.actor_type, &a.key, hosts).is_some_and(|(o, _)| *o != me);
            if a.last_used.elapsed() < idle && !moved {
                continue;
            }
            if let Some(Slot::Active(a)) = self.slots.remove(&id) {
                tracing::debug!(actor = %id, moved, "deactivating");
                let _ = a.actor.cast(ActivationMessage::Stop);
                self.slots.insert(id, Slot::Leaving(a, Vec::new()));
            }
        }
        let now = Instant::now();
        self.stopped.retain(|_, (until, _)| *until > now);
    }

    fn list(&self) -> Vec<ActivationInfo> {
        self.slots
            .values()
            .filter_map(|s| match s {
                Slot::Active(a) | Slot::Leaving(a, _) => Some(ActivationInfo {
                    actor_type: a.actor_type.clone(),
                    key: a.key.clone(),
                    node: self.me().to_string(),
                    epoch: a.epoch,
                    handled: a.stats.handled.load(Ordering::Relaxed),
                    restarts: a.stats.restarts.load(Ordering::Relaxed),
                }),
                Slot::Waiting(_) => None,
            })
            .collect()
    }

    fn gauge(&self) {
        let n = self.by_cell.len();
        metrics::gauge!(troupe_runtime::observe::metric::ACTORS_ACTIVE).set(n as f64);
    }
}

fn fail_all(pending: Vec<Pending>, actor: &str, why: &str) {
    fail_all_ports(pending.into_iter().map(|(_, r, _)| r).collect(), actor, why);
}

/// Answers each caller that `actor` is unavailable, `why` (they try again).
fn fail_all_ports(replies: Vec<RpcReplyPort<ActorReply>>, actor: &str, why: &str) {
    for reply in replies {
        let e = ActorCallError::Unavailable {
            actor: actor.to_string(),
            reason: why.to_string(),
        };
        let _ = reply.send(Wire::new(Err(e)));
    }
}

/// Until when the sender of `env`, arrived at `now` (`wall_ms` on this node's clock),
/// waits for its reply (`None`: no limit). The sender's "still waits N ms" counts from
/// the arrival, and also from its send time give or take [`route::CLOCK_SKEW`], which
/// catches a message that a partition held past its sender's wait; an absurd N is no
/// limit.
fn deadline_of(env: &ActorEnvelope, now: Instant, wall_ms: u64) -> Option<Instant> {
    let wait = env.wait_ms?;
    let from_arrival = now.checked_add(Duration::from_millis(wait));
    // Checked: `sent_ms` comes from the network (an absurd one is no limit either).
    let from_send = env.sent_ms.and_then(|sent| {
        let until = sent
            .saturating_add(wait)
            .saturating_add(route::CLOCK_SKEW.as_millis() as u64);
        now.checked_add(Duration::from_millis(until.saturating_sub(wall_ms)))
    });
    match (from_arrival, from_send) {
        (Some(a), Some(s)) => Some(a.min(s)),
        (a, s) => a.or(s),
    }
}

/// Passes a message to another host (with the time its sender still waits) and its reply
/// back.
fn relay(
    host: ActorRef<ActorHostMessage>,
    mut env: ActorEnvelope,
    reply: RpcReplyPort<ActorReply>,
    deadline: Option<Instant>,
) {
    env.hops += 1;
    env.wait_ms = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        left.as_millis().try_into().unwrap_or(u64::MAX)
    });
    env.sent_ms = Some(troupe_runtime::observe::now_ms());
    tokio::spawn(async move {
        let r = route::deliver(&host, env, route::CALL_TIMEOUT).await;
        let _ = reply.send(Wire::new(r));
    });
}

/// When a claim started `now` for a caller waiting until `deadline` gives up: shortly
/// before that caller does, within [`CLAIM_AT_LEAST`]..[`CLAIM_FOR`].
fn claim_deadline(deadline: Option<Instant>, now: Instant) -> Instant {
    let left = deadline.map_or(CLAIM_FOR, |d| {
        d.saturating_duration_since(now)
            .saturating_sub(CLAIM_MARGIN)
    });
    now + left.clamp(CLAIM_AT_LEAST, CLAIM_FOR)
}

/// Asks the core group for `actor`'s lease and, granted, gathers its newest state from a
/// read quorum of the type's stores, until `give_up`.
async fn claim(
    ctx: &NodeContext,
    store: &ActorStore,
    known: &KnownHosts,
    actor: &str,
    give_up: Instant,
) -> ClaimOutcome {
    let me = ctx.config.name.clone();
    let began = Instant::now();
    let mut replaces = None;
    let (epoch, at_least) = loop {
        let cmd = CoreCommand::ClaimActor {
            actor: actor.to_string(),
            node: me.clone(),
            replaces: replaces.clone(),
        };
        let asked = tokio::time::timeout_at(give_up.into(), crate::core::decide(&me, cmd)).await;
        let Ok(decided) = asked else {
            return ClaimOutcome::Failed(format!(
                "the core group gave no lease within {} ms (is this node cut off from the core group's majority?)",
                began.elapsed().as_millis()
            ));
        };
        match decided {
            Ok(CoreDecision::ActorGranted { epoch, at_least }) => break (Some(epoch), at_least),
            // Its holder went down: claim it from that holder (compare-and-set).
            Ok(CoreDecision::Denied { owner })
                if ctx.view.is_down(&owner.node) && replaces.as_ref() != Some(&owner) =>
            {
                tracing::info!(actor, from = %owner.node, "taking over an actor whose node is down");
                replaces = Some(owner);
            }
            Ok(CoreDecision::Denied { owner }) => return ClaimOutcome::Held { node: owner.node },
            Ok(other) => return ClaimOutcome::Failed(format!("the core group answered {other:?}")),
            Err(e) if no_core_expected(ctx) => {
                tracing::debug!(actor, error = %e, "no core group in a cluster this small: the owner activates on its own");
                break (None, None);
            }
            Err(e) if Instant::now() >= give_up => {
                return ClaimOutcome::Failed(format!(
                    "the core group gave no lease within {} ms: {e}",
                    began.elapsed().as_millis()
                ))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    // Leased, the activation starts only from a read quorum of the type's stores (see
    // `quorum`), and (the activation that released the actor last saved `at_least`; a
    // node that just joined may not see every host yet) from a state that new. Both are
    // waited for until `give_up`. Without a core group, what is in view is read.
    let fence = epoch.unwrap_or(0);
    let actor_type = actor.split_once('/').map_or(actor, |(t, _)| t);
    // Stores read in earlier rounds count too: each stays fenced at this epoch, so what
    // it held when read is still its newest save of any older activation.
    let mut gathered: Option<Gathered> = None;
    let state = loop {
        let round = newest_state(store, known, actor_type, actor, &me, fence).await;
        let g = match gathered.take() {
            Some(mut before) => {
                before.merge(round);
                gathered.insert(before)
            }
            None => gathered.insert(round),
        };
        let found = g.newest.as_ref().map(|s| (s.epoch, s.seq));
        let short = epoch.and_then(|_| g.too_few(actor_type).err());
        let why = match (short, at_least) {
            (Some(short), _) => short.to_string(),
            (None, Some(need)) if found < Some(need) => format!(
                "its newest state (epoch {}, save {}) is on a node this one cannot reach yet",
                need.0, need.1
            ),
            (None, _) => break g.newest.take(),
        };
        if Instant::now() >= give_up {
            // Give the lease back (keeping what the core group knows of the last save):
            // the next message claims it again.
            if let Some(epoch) = epoch {
                let cmd = CoreCommand::ReleaseActor {
                    actor: actor.to_string(),
                    node: me.clone(),
                    epoch,
                    saved: None,
                };
                let _ = crate::core::decide(&me, cmd).await;
            }
            tracing::warn!(actor, reason = %why, "not activating an actor");
            return ClaimOutcome::Failed(why);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Without a core group the epoch is the newest save's: saves go on from there.
    let leased = epoch.is_some();
    let epoch = epoch.unwrap_or_else(|| state.as_ref().map_or(0, |s| s.epoch));
    ClaimOutcome::Granted {
        epoch,
        state,
        leased,
    }
}

/// True when no core group exists and none will form (fewer nodes than `core.size`, none
/// named): the cluster is too small for one, and the owner by rendezvous activates alone.
/// A node that started moments ago does not judge: it may not see the group yet; nor does
/// a node that knows a group exists (its folder names the cluster): it may be cut off.
fn no_core_expected(ctx: &NodeContext) -> bool {
    let cfg = &ctx.config.core;
    ctx.view.started.elapsed() > NEW_NODE
        && cfg.nodes.is_empty()
        && !ctx.core.group_exists()
        && ractor::pg::get_members(&CORE_VOTERS_GROUP.to_string()).is_empty()
        && crate::live_nodes(&ctx.view).len() < cfg.size
}

/// Too few of an actor type's stores answered for a new activation to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "can read only {read} of {hosts} stores of {actor_type} ({needed} needed, so \
     that no acknowledged update is missed); it activates once a majority of its hosts can be reached"
)]
pub(crate) struct TooFewStores {
    /// The actor type.
    pub actor_type: String,
    /// Stores read and fenced (this node's included).
    pub read: usize,
    /// The hosts of the type (N).
    pub hosts: usize,
    /// The read quorum of N.
    pub needed: usize,
}

/// What a new activation read: the newest state, and which stores were read and fenced.
#[derive(Debug)]
struct Gathered {
    /// The newest save among the stores read.
    newest: Option<SavedState>,
    /// The nodes whose store answered (read and fenced).
    read: std::collections::BTreeSet<String>,
    /// The hosts of the type: those known, and those named in the states read (N).
    hosts: std::collections::BTreeSet<String>,
}

impl Gathered {
    /// Adds a later round of reads (at the same epoch) to this one.
    fn merge(&mut self, later: Gathered) {
        self.read.extend(later.read);
        self.hosts.extend(later.hosts);
        if let Some(l) = later.newest {
            if self.newest.as_ref().is_none_or(|n| l.is_newer_than(n)) {
                self.newest = Some(l);
            }
        }
    }

    /// Whether a read quorum of the type's hosts answered.
    fn too_few(&self, actor_type: &str) -> Result<(), TooFewStores> {
        let read = self.read.intersection(&self.hosts).count();
        let needed = read_quorum(self.hosts.len());
        if read >= needed {
            Ok(())
        } else {
            Err(TooFewStores {
                actor_type: actor_type.to_string(),
                read,
                hosts: self.hosts.len(),
                needed,
            })
        }
    }
}

/// The newest state of `actor` here and on the other hosts this node sees, each store
/// fenced at `epoch` first (the new activation's: from then on they refuse the saves of
/// any older one, so none can be acknowledged after this read and lost). `me` counts as
/// a host of `actor_type` (it is about to run the actor).
async fn newest_state(
    store: &ActorStore,
    known: &KnownHosts,
    actor_type: &str,
    actor: &str,
    me: &str,
    epoch: u64,
) -> Gathered {
    // Every host, not only those of the type: a node that is leaving has left the type's
    // group but still holds the states it saved.
    let asks = ractor::pg::get_members(&ACTOR_HOSTS_GROUP.to_string())
        .into_iter()
        .filter_map(|c| {
            let node = troupe_runtime::protocol::node_of_actor_host(&c.get_name()?)?.to_string();
            (node != me).then_some((node, c))
        })
        .map(|(node, cell)| {
            let host: ActorRef<ActorHostMessage> = cell.into();
            let actor = actor.to_string();
            async move {
                match host
                    .call(
                        |r| ActorHostMessage::FetchState(actor, epoch, r),
                        Some(FETCH_WAIT),
                    )
                    .await
                {
                    Ok(ractor::rpc::CallResult::Success(w)) => {
                        w.into_inner().ok().map(|held| (node, held))
                    }
                    _ => None,
                }
            }
        });
    let (theirs, mine) = tokio::join!(
        futures::future::join_all(asks),
        store.fetch_and_fence(actor, epoch)
    );
    let mine = match mine {
        Ok(held) => Some((me.to_string(), held)),
        Err(e) => {
            tracing::warn!(actor, error = %e, "cannot read this node's store for a new activation");
            None
        }
    };
    let answers: Vec<(String, Option<SavedState>)> =
        theirs.into_iter().flatten().chain(mine).collect();
    let in_view = route::hosts(actor_type).into_iter().map(|(n, _)| n);
    let named = answers
        .iter()
        .filter_map(|(_, s)| s.as_ref())
        .flat_map(|s| s.hosts.iter().cloned());
    let hosts = known.learn(
        actor_type,
        in_view.chain(named).chain(std::iter::once(me.to_string())),
    );
    let read = answers.iter().map(|(n, _)| n.clone()).collect();
    let newest =
        answers
            .into_iter()
            .filter_map(|(_, s)| s)
            .reduce(|a, b| if b.is_newer_than(&a) { b } else { a });
    Gathered {
        newest,
        read,
        hosts,
    }
}

/// Jobs for handlers: submitted to this node's job manager, followed by status.
struct NodeJobs {
    node: String,
}

impl ActorLink for NodeJobs {
    fn run_job(
        &self,
        spec: JobSpec,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<serde_json::Value, TaskError>> + Send>,
    > {
        let node = self.node.clone();
        Box::pin(async move {
            let jm = crate::find_on::<JobManagerMessage>(crate::names::JOB_MANAGER, &node)
                .ok_or_else(|| TaskError::transient("this node's job manager is not running"))?;
            let id = submit(&jm, SubmitRequest::new(spec), route::CALL_TIMEOUT).await?;
            // Followed by polling its status: a handler's job is rare next to its
            // messages, and this keeps the host free of a watcher of its own.
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let answer = jm
                    .call(
                        |r| JobManagerMessage::Status(id.clone(), r),
                        Some(route::CALL_TIMEOUT),
                    )
                    .await;
                let Ok(ractor::rpc::CallResult::Success(w)) = answer else {
                    continue;
                };
                let status = match w.into_inner() {
                    Ok(Ok(status)) => status,
                    Ok(Err(e)) => {
                        return Err(TaskError::transient(format!(
                            "job {id} is no longer known: {e:?}"
                        )))
                    }
                    Err(_) => continue,
                };
                match status.state {
                    JobState::Succeeded => return Ok(status.output.unwrap_or_default()),
                    s if s.is_terminal() => {
                        return Err(TaskError::permanent(format!(
                            "job {id} {}: {}",
                            s.as_str(),
                            status.error.unwrap_or_default()
                        )))
                    }
                    _ => {}
                }
            }
        })
    }
}

impl Actor for ActorHost {
    type Msg = ActorHostMessage;
    type State = HostState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(ACTOR_HOSTS_GROUP.to_string(), vec![myself.get_cell()]);
        for t in ctx.registry.actors().names() {
            ractor::pg::join(actor_type_group(&t), vec![myself.get_cell()]);
        }
        myself.send_interval(SWEEP_EVERY, || ActorHostMessage::Sweep);
        Ok(HostState {
            store: ActorStore::new(ctx.journal.clone()),
            known: KnownHosts::default(),
            link: Arc::new(NodeJobs {
                node: ctx.config.name.clone(),
            }),
            ctx,
            slots: HashMap::new(),
            by_cell: HashMap::new(),
            stopped: HashMap::new(),
            leaving: None,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ActorHostMessage::Deliver(env, reply) => match env.into_inner() {
                Ok(env) => {
                    let deadline =
                        deadline_of(&env, Instant::now(), troupe_runtime::observe::now_ms());
                    st.deliver(&myself, env, reply, deadline)
                }
                Err(e) => {
                    let e = ActorCallError::BadMessage {
                        actor_type: "?".into(),
                        reason: e.to_string(),
                    };
                    let _ = reply.send(Wire::new(Err(e)));
                }
            },
            ActorHostMessage::KeepCopy(copy, reply) => {
                let Ok(copy) = copy.into_inner() else {
                    return Ok(());
                };
                let store = st.store.clone();
                tokio::spawn(async move {
                    if let Some(r) = store.save(&copy.actor, copy.saved).await {
                        let _ = reply.send(Wire::new(r));
                    }
                });
            }
            ActorHostMessage::FetchState(actor, epoch, reply) => {
                let store = st.store.clone();
                tokio::spawn(async move {
                    match store.fetch_and_fence(&actor, epoch).await {
                        Ok(held) => {
                            let _ = reply.send(Wire::new(held));
                        }
                        // No answer: the asker must not count this store as fenced.
                        Err(e) => {
                            tracing::warn!(actor = %actor, error = %e, "cannot fence an actor's state for a new activation")
                        }
                    }
                });
            }
            ActorHostMessage::List(reply) => {
                let _ = reply.send(Wire::new(st.list()));
            }
            ActorHostMessage::ListAll(reply) => {
                let mine = st.list();
                let me = myself.get_id();
                let others: Vec<ActorRef<ActorHostMessage>> =
                    ractor::pg::get_members(&ACTOR_HOSTS_GROUP.to_string())
                        .into_iter()
                        .filter(|c| c.get_id() != me)
                        .map(Into::into)
                        .collect();
                tokio::spawn(async move {
                    let asks = others.into_iter().map(|h| async move {
                        match h.call(ActorHostMessage::List, Some(FETCH_WAIT * 2)).await {
                            Ok(ractor::rpc::CallResult::Success(w)) => {
                                w.into_inner().unwrap_or_default()
                            }
                            _ => Vec::new(),
                        }
                    });
                    let mut all = mine;
                    all.extend(futures::future::join_all(asks).await.into_iter().flatten());
                    all.sort_by(|a, b| {
                        (&a.actor_type, &a.key, &a.node).cmp(&(&b.actor_type, &b.key, &b.node))
                    });
                    let _ = reply.send(Wire::new(all));
                });
            }
            ActorHostMessage::Claimed(claim) => {
                if let Ok(claim) = claim.into_inner() {
                    st.claimed(&myself, claim).await;
                }
            }
            ActorHostMessage::Ended(actor) => st.reroute(&myself, &actor),
            ActorHostMessage::Sweep => st.sweep(),
            ActorHostMessage::Leave(reply) => st.leave(&myself, reply),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, why) => st.ended(&myself, &cell, why),
            SupervisionEvent::ActorFailed(cell, e) => {
                tracing::error!(error = %e, "an activation crashed; its next message activates it again");
                st.ended(&myself, &cell, None)
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message's wait counts from its arrival and from its send time (give or take the
    /// clock skew): one a partition held past its sender's wait is not started.
    #[test]
    fn a_message_held_past_its_senders_wait_has_no_time_left() {
        let env = |wait_ms, sent_ms| ActorEnvelope {
            actor_type: "t".into(),
            key: "k".into(),
            message: serde_json::Value::Null,
            hops: 0,
            wait_ms,
            call_id: None,
            sent_ms,
        };
        let now = Instant::now();
        let wall = 1_000_000_000;
        let skew = route::CLOCK_SKEW.as_millis() as u64;
        // Sent just now: the wait counts from the arrival.
        assert_eq!(
            deadline_of(&env(Some(800), Some(wall)), now, wall),
            Some(now + Duration::from_millis(800))
        );
        // Sent the skew and 2 s ago, with 10 s to wait: 8 s left.
        assert_eq!(
            deadline_of(&env(Some(10_000), Some(wall - skew - 2_000)), now, wall),
            Some(now + Duration::from_millis(8_000))
        );
        // Held past its wait and the skew: nothing left.
        assert_eq!(
            deadline_of(&env(Some(10_000), Some(wall - skew - 60_000)), now, wall),
            Some(now)
        );
        // An old sender (no send time), and no limit.
        assert_eq!(
            deadline_of(&env(Some(800), None), now, wall),
            Some(now + Duration::from_millis(800))
        );
        assert_eq!(
            deadline_of(&env(None, Some(wall - 60_000)), now, wall),
            None
        );
        // A send time from far in the future does not overflow.
        assert_eq!(
            deadline_of(&env(Some(800), Some(u64::MAX)), now, wall),
            Some(now + Duration::from_millis(800))
        );
    }

    /// A claim ends shortly before its first caller gives up, so that caller is told why
    /// (a node cut off from the core group: "no lease"), not just that time ran out.
    #[test]
    fn a_claim_gives_up_before_its_first_caller_does() {
        let now = Instant::now();
        let secs = |s: f64| Duration::from_secs_f64(s);
        assert_eq!(claim_deadline(Some(now + secs(4.0)), now), now + secs(3.7));
        assert_eq!(claim_deadline(None, now), now + CLAIM_FOR);
        assert_eq!(claim_deadline(Some(now + secs(60.0)), now), now + CLAIM_FOR);
        // However close (or past) the deadline, the claim gets a moment.
        assert_eq!(claim_deadline(Some(now), now), now + CLAIM_AT_LEAST);
    }

    fn saved(epoch: u64, seq: u64, hosts: &[&str]) -> SavedState {
        SavedState {
            epoch,
            seq,
            state: vec![seq as u8],
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            answered: Vec::new(),
        }
    }

    /// A new activation starts only from a majority of its type's stores, each fenced at
    /// its epoch: with two of five answering (this node's and one other) it does not start,
    /// saying how many it could read; with three it starts from the newest of them.
    #[tokio::test]
    async fn a_new_activation_reads_and_fences_a_majority_of_the_stores_first() {
        let (t, actor) = ("test.read-quorum", "test.read-quorum/k");
        let known = KnownHosts::default();
        known.learn(t, ["n1", "q2", "q3", "q4", "q5"]);
        let mine = ActorStore::new(None);
        let (q2, _) = fake_host::start("q2", t, true).await;
        assert_eq!(q2.save(actor, saved(3, 4, &[])).await, Some(Ok(())));

        let two = newest_state(&mine, &known, t, actor, "n1", 9).await;
        assert_eq!(
            two.too_few(t),
            Err(TooFewStores {
                actor_type: t.into(),
                read: 2,
                hosts: 5,
                needed: 3,
            })
        );
        assert!(two
            .too_few(t)
            .expect_err("too few")
            .to_string()
            .contains("can read only 2 of 5 stores of test.read-quorum"));

        let (q3, _) = fake_host::start("q3", t, true).await;
        let three = newest_state(&mine, &known, t, actor, "n1", 9).await;
        assert_eq!(three.too_few(t), Ok(()));
        assert_eq!(three.newest, Some(saved(3, 4, &[])));
        // Every store read is fenced: the activation at epoch 3 can save there no more.
        for s in [&mine, &q2, &q3] {
            assert_eq!(
                s.save(actor, saved(3, 5, &[])).await,
                Some(Err(troupe_runtime::protocol::Fenced { epoch: 9 }))
            );
        }
    }

    /// A node that has just started and sees few hosts learns N from the hosts named in
    /// the states it reads, so it does not take a minority for a majority.
    #[tokio::test]
    async fn hosts_named_in_a_saved_state_count_towards_the_majority() {
        let (t, actor) = ("test.named-hosts", "test.named-hosts/k");
        let known = KnownHosts::default();
        let mine = ActorStore::new(None);
        let five = ["n1", "h2", "h3", "h4", "h5"];
        assert_eq!(mine.save(actor, saved(3, 4, &five)).await, Some(Ok(())));
        fake_host::start("h2", t, true).await;
        let read = newest_state(&mine, &known, t, actor, "n1", 9).await;
        assert_eq!(read.hosts.len(), 5);
        assert!(
            read.too_few(t).is_err(),
            "2 of 5 stores were taken for a majority"
        );
    }

    /// Stores read in two rounds of a claim count together (each stays fenced at the
    /// epoch): one store answering only in the first round, another only in the second,
    /// make a majority with this node's.
    #[tokio::test]
    async fn stores_read_in_earlier_rounds_count_towards_the_majority() {
        let (t, actor) = ("test.read-rounds", "test.read-rounds/k");
        let known = KnownHosts::default();
        known.learn(t, ["n1", "m2", "m3", "m4", "m5"]);
        let mine = ActorStore::new(None);
        let (_, m2) = fake_host::start("m2", t, true).await;
        let mut first = newest_state(&mine, &known, t, actor, "n1", 9).await;
        m2.stop_and_wait(None, None)
            .await
            .expect("the fake host stops");
        let (m3, _) = fake_host::start("m3", t, true).await;
        assert_eq!(m3.save(actor, saved(3, 4, &[])).await, Some(Ok(())));
        let second = newest_state(&mine, &known, t, actor, "n1", 9).await;
        assert!(second.too_few(t).is_err(), "two of five are not a majority");
        first.merge(second);
        assert_eq!(first.too_few(t), Ok(()));
        assert_eq!(first.newest, Some(saved(3, 4, &[])));
    }
}
