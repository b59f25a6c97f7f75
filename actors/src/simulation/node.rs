//! One simulated node: the job manager's, supervisors' and membership's decisions around
//! the real pure cores (`JobRun`, `replay`, `Takeovers`, `ProbeDetector`), with what a
//! crash keeps ([`Disk`]: the journal, its copies) apart from what it loses (the rest).
//!
//! It does what the actors do with those cores' effects, in a simplified form: no
//! mailboxes, no group commits (a journaled input is on disk at once), one replica per job.
//! It never reads a clock or a global random source: time comes with each call, and its
//! random choices come from a generator the world seeded.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::json;
use troupe_runtime::job::spec::{JobSpec, RetryPolicy, StepSpec};
use troupe_runtime::job::status::JobEvent;
use troupe_runtime::job::validate::{validate_with, Limits};
use troupe_runtime::merge::ranked;
use troupe_runtime::protocol::{JobMoved, NodeState, ResultSource};
use troupe_runtime::task::TaskError;
use troupe_runtime::vocab::{Holder, JobId};

use super::host::{Host, Store, View};
use super::wire::{CoreReply, CoreReq, Ms, Msg, Obs, Out, Rules, Timer};
use crate::core::ownership::{CoreCommand, CoreDecision};
use crate::job_manager::takeover::{self, Effect, Takeovers, WriteKind, WriteVerdict};
use crate::job_supervisor::replay::{replay, JobRecord};
use crate::job_supervisor::run::{Action, Input, JobRun};
use crate::membership::detector::{ProbeDetector, Round, Transition};

/// How often a simulated node gossips (ms).
const GOSSIP: Ms = 500;

/// The deadlines of the simulated nodes (shorter than the defaults, so that a run of a
/// minute sees many takeovers).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Params {
    /// Silence before a peer is suspect.
    pub suspect_after: Ms,
    /// Silence before a peer is down.
    pub down_after: Ms,
    /// How long a copy's owner stays gone before a takeover is asked for.
    pub takeover_after: Ms,
    /// How long a request to the core group is waited for.
    pub core_timeout: Ms,
    /// The timeout of every step's attempts.
    pub step_timeout: Ms,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            suspect_after: 1_000,
            down_after: 2_000,
            takeover_after: 3_000,
            core_timeout: 3_000,
            step_timeout: 1_500,
        }
    }
}

/// A job this node owns, as its journal holds it.
#[derive(Debug, Clone)]
pub(crate) struct OwnEntry {
    /// How it started (with the epoch it runs at).
    pub record: JobRecord,
    /// Its journaled inputs.
    pub inputs: Vec<Input>,
    /// Its end, in short, once it ended here.
    pub end: Option<String>,
    /// Whether the end counts (the core group recorded it, or needs not).
    pub published: bool,
}

/// A copy of another node's job.
#[derive(Debug, Clone)]
pub(crate) struct CopyEntry {
    /// The owner that wrote it.
    pub holder: Holder,
    /// How the job started.
    pub record: JobRecord,
    /// The inputs received.
    pub inputs: Vec<Input>,
}

/// What survives a crash.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    /// This node's jobs.
    pub own: BTreeMap<String, OwnEntry>,
    /// Copies of other nodes' jobs.
    pub copies: BTreeMap<String, CopyEntry>,
    /// Keyed actors' saved states.
    pub store: Store,
    /// This node's jobs another node took over, and their holders (the journal's
    /// `moved`): a restart sends questions about them there.
    pub moved: BTreeMap<String, Holder>,
}

impl Disk {
    /// This node's job `job` belongs to `holder` now: its journal (its end here too) is
    /// dropped and the holder kept.
    fn moved_away(&mut self, job: &str, holder: Holder) {
        self.own.remove(job);
        self.moved.insert(job.to_string(), holder);
    }
}

/// A run of a job in memory.
#[derive(Debug)]
struct Live {
    run: JobRun,
    epoch: u64,
    /// The replica that has the whole journal.
    synced: Option<String>,
    /// Every node sent the job's journal in this run (the holders of its copies).
    holders: BTreeSet<String>,
    /// Resumed after a restart or taken over: only the core group confirms its end.
    core_only: bool,
}

/// An end owed to the holders of a job's copies.
#[derive(Debug)]
struct OwedEnd {
    epoch: u64,
    holders: BTreeSet<String>,
    since: Ms,
}

/// What a request to the core group was for.
#[derive(Debug, Clone)]
enum Waiting {
    Takeover(String),
    Owner(String, Holder),
    Ended(String),
    Owners(Vec<String>),
    Claim(String),
}

/// The memory of a node: lost at a crash.
#[derive(Debug)]
struct Memory {
    takeovers: Takeovers,
    /// Every peer judged by its silence, as a node of wire version 1 does (the simulated
    /// nodes gossip to each other every interval; probing is not simulated).
    detector: ProbeDetector,
    peers: BTreeMap<String, NodeState>,
    runs: BTreeMap<String, Live>,
    waiting: BTreeMap<u64, Waiting>,
    host: Host,
    /// Until the core group answered (or did not in time) at start: jobs not resumed yet.
    recovering: bool,
    /// Ends waiting for their holders' acks (see [`Rules::end_acked_by_holders`]).
    owed: BTreeMap<String, OwedEnd>,
}

/// One simulated node.
#[derive(Debug)]
pub(crate) struct SimNode {
    /// Its name.
    pub name: String,
    /// Whether it runs.
    pub up: bool,
    /// How many times it started.
    pub boot: u32,
    /// Its journal.
    pub disk: Disk,
    all: Vec<String>,
    rules: Rules,
    params: Params,
    base: Instant,
    rng: StdRng,
    mem: Memory,
    seq: u64,
    next_req: u64,
}

impl SimNode {
    /// Node `name` of a cluster of `all`, started at `now`.
    pub(crate) fn new(
        name: &str,
        all: Vec<String>,
        rules: Rules,
        params: Params,
        base: Instant,
        rng: StdRng,
    ) -> Self {
        let mem = Self::fresh(name, &params, base);
        SimNode {
            name: name.to_string(),
            up: true,
            boot: 1,
            disk: Disk::default(),
            all,
            rules,
            params,
            base,
            rng,
            mem,
            seq: 0,
            next_req: 0,
        }
    }

    fn fresh(name: &str, params: &Params, at: Instant) -> Memory {
        Memory {
            takeovers: Takeovers::new(name, Duration::from_millis(params.takeover_after), 1024),
            detector: ProbeDetector::new(
                Duration::from_millis(GOSSIP),
                Duration::from_millis(params.suspect_after),
                Duration::from_millis(params.down_after),
                at,
            ),
            peers: BTreeMap::new(),
            runs: BTreeMap::new(),
            waiting: BTreeMap::new(),
            host: Host::default(),
            recovering: false,
            owed: BTreeMap::new(),
        }
    }

    fn at(&self, now: Ms) -> Instant {
        self.base + Duration::from_millis(now)
    }

    /// The jobs this node runs now, with their epochs.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (&str, u64)> {
        self.mem.runs.iter().map(|(j, l)| (j.as_str(), l.epoch))
    }

    /// Its timers that start it: the first tick and gossip.
    pub(crate) fn boot_timers(&self) -> Vec<Out> {
        vec![
            Out::After {
                delay: 250,
                timer: Timer::Tick,
            },
            Out::After {
                delay: 1,
                timer: Timer::Gossip,
            },
        ]
    }

    /// The process dies: its memory is gone, its disk stays.
    pub(crate) fn crash(&mut self) {
        self.up = false;
    }

    /// The process starts again from its disk at `now`: it asks the core group who owns
    /// its journaled jobs before resuming them.
    pub(crate) fn restart(&mut self, now: Ms) -> Vec<Out> {
        self.up = true;
        self.boot += 1;
        self.mem = Self::fresh(&self.name, &self.params, self.at(now));
        let mut out = self.boot_timers();
        for (job, e) in self.disk.own.iter().filter(|(_, e)| e.end.is_some()) {
            self.mem.takeovers.ended_before_restart(job, e.record.epoch);
        }
        for (job, c) in &self.disk.copies {
            self.mem
                .takeovers
                .copy_recovered(job.clone(), c.holder.clone());
        }
        for (job, h) in &self.disk.moved {
            self.mem
                .takeovers
                .taken_while_away(JobMoved::new(job.clone(), h.clone()));
        }
        let jobs: Vec<String> = self
            .disk
            .own
            .iter()
            .filter(|(_, e)| e.end.is_none())
            .map(|(j, _)| j.clone())
            .collect();
        self.mem.recovering = true;
        let req = self.ask(
            &mut out,
            CoreReq::Command(CoreCommand::Owners { jobs: jobs.clone() }),
        );
        self.mem.waiting.insert(req, Waiting::Owners(jobs));
        out
    }

    fn ask(&mut self, out: &mut Vec<Out>, cmd: CoreReq) -> u64 {
        ask(&mut self.next_req, self.params.core_timeout, out, cmd)
    }

    /// Calls `f` with this node's view for the actor host, the host, its store, and a way
    /// to ask the core group.
    fn with_host<R>(
        &mut self,
        f: impl FnOnce(&View, &mut Host, &mut Store, &mut dyn FnMut(&mut Vec<Out>, CoreReq) -> u64) -> R,
    ) -> R {
        let live = self.live_sorted();
        let down = self.down_peers();
        let v = View {
            me: &self.name,
            live: &live,
            down: &down,
            cluster: self.all.len(),
            rules: self.rules,
        };
        let (next_req, wait) = (&mut self.next_req, self.params.core_timeout);
        let mut asker = |o: &mut Vec<Out>, c: CoreReq| ask(next_req, wait, o, c);
        f(&v, &mut self.mem.host, &mut self.disk.store, &mut asker)
    }

    /// The peers seen go down, for the host.
    fn down_peers(&self) -> Vec<String> {
        self.mem
            .peers
            .iter()
            .filter(|(_, s)| **s == NodeState::Down)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// The live nodes, sorted, for the host.
    fn live_sorted(&self) -> Vec<String> {
        let mut live: Vec<String> = self.live().into_iter().collect();
        live.sort();
        live
    }

    /// A client's add to `actor` reached this node.
    pub(crate) fn actor_add(&mut self, actor: &str, add: u64, hops: u32) -> Vec<Out> {
        let mut out = Vec::new();
        let req = self
            .with_host(|v, host, store, ask| host.add(v, store, actor, add, hops, &mut out, ask));
        if let Some(req) = req {
            self.mem
                .waiting
                .insert(req, Waiting::Claim(actor.to_string()));
        }
        out
    }

    /// The claim of `actor` was answered (`None`: not in time).
    fn actor_claimed(&mut self, actor: &str, answer: Option<CoreDecision>, out: &mut Vec<Out>) {
        let req =
            self.with_host(|v, host, store, ask| host.claimed(v, store, actor, answer, out, ask));
        if let Some(req) = req {
            self.mem
                .waiting
                .insert(req, Waiting::Claim(actor.to_string()));
        }
    }

    /// The nodes this node counts as live (itself included).
    fn live(&self) -> HashSet<String> {
        let mut live: HashSet<String> = self
            .mem
            .peers
            .iter()
            .filter(|(_, s)| **s != NodeState::Down)
            .map(|(n, _)| n.clone())
            .collect();
        live.insert(self.name.clone());
        live
    }

    /// The replica of `job` as this node sees the cluster.
    fn replica(&self, job: &str) -> Option<String> {
        let live = self.live();
        ranked(job, live.iter().map(String::as_str))
            .into_iter()
            .find(|n| *n != self.name)
            .map(str::to_string)
    }

    /// A client submits a job here.
    pub(crate) fn submit(&mut self, now: Ms) -> Vec<Out> {
        let mut out = Vec::new();
        self.seq += 1;
        let job = JobId::new(&self.name, &format!("{:x}", self.boot), self.seq)
            .as_str()
            .to_string();
        let t = self.params.step_timeout;
        let mut spec = JobSpec::new("sim")
            .step(StepSpec::new("a", "t").timeout_ms(t))
            .step(StepSpec::new("b", "t").after(["a"]).timeout_ms(t))
            .step(StepSpec::new("c", "t").after(["a"]).timeout_ms(t));
        spec.retry = RetryPolicy {
            max_attempts: 3,
            backoff_ms: 100,
        };
        let limits = Limits::default();
        let Ok(graph) = validate_with(&spec, &limits) else {
            out.push(Out::Note(
                "the simulation's job file does not validate".into(),
            ));
            return out;
        };
        let record = JobRecord {
            id: job.clone(),
            spec: spec.clone(),
            limits,
            epoch: 0,
            submitted_at_ms: 0,
        };
        self.disk.own.insert(
            job.clone(),
            OwnEntry {
                record,
                inputs: Vec::new(),
                end: None,
                published: false,
            },
        );
        let run = JobRun::with_limits(job.clone(), spec, graph, limits);
        self.mem.runs.insert(
            job.clone(),
            Live {
                run,
                epoch: 0,
                synced: None,
                holders: BTreeSet::new(),
                core_only: false,
            },
        );
        self.mem.takeovers.run_started(&job, 0);
        out.push(Out::Observe(Obs::Accepted { job: job.clone() }));
        self.sync_replica(&job, &mut out);
        self.feed(&job, Input::Start, now, &mut out);
        out
    }

    /// Sends the whole journal of `job` to its replica if that replica does not have it.
    fn sync_replica(&mut self, job: &str, out: &mut Vec<Out>) {
        let replica = self.replica(job);
        let Some(live) = self.mem.runs.get_mut(job) else {
            return;
        };
        if replica.is_none() || live.synced == replica {
            return;
        }
        live.synced = replica.clone();
        let (Some(to), Some(entry)) = (replica, self.disk.own.get(job)) else {
            return;
        };
        live.holders.insert(to.clone());
        out.push(Out::Send {
            to,
            msg: Msg::Write {
                job: job.to_string(),
                epoch: live.epoch,
                kind: WriteKind::Start,
                record: Some(entry.record.clone()),
                inputs: entry.inputs.clone(),
            },
        });
    }

    /// Feeds one input to this node's run of `job`, journals and copies it if it is
    /// journaled, and carries out the actions.
    fn feed(&mut self, job: &str, input: Input, now: Ms, out: &mut Vec<Out>) {
        let at = self.at(now);
        let Some(live) = self.mem.runs.get_mut(job) else {
            return;
        };
        let epoch = live.epoch;
        // As the job supervisor does: an input that ends the job (or comes after its end)
        // is not journaled; the end holds what a replay needs.
        let journaled =
            (input.is_journaled() && !live.run.state().is_terminal()).then(|| input.clone());
        let actions = live.run.step(input, at);
        let ended = live.run.state().is_terminal();
        if let Some(input) = journaled.filter(|_| !ended) {
            if let Some(e) = self.disk.own.get_mut(job) {
                e.inputs.push(input.clone());
            }
            if let Some(to) = live.synced.clone() {
                out.push(Out::Send {
                    to,
                    msg: Msg::Write {
                        job: job.to_string(),
                        epoch,
                        kind: WriteKind::Input,
                        record: None,
                        inputs: vec![input],
                    },
                });
            }
        }
        for a in actions {
            match a {
                Action::Dispatch(d) => {
                    let live = self.live();
                    let key = format!("{job}/{}/{}", d.step, d.attempt);
                    let worker = ranked(&key, live.iter().map(String::as_str))
                        .first()
                        .map_or_else(|| self.name.clone(), |w| w.to_string());
                    if let Some(t) = d.timeout {
                        out.push(Out::After {
                            delay: t.as_millis() as Ms,
                            timer: Timer::Feed {
                                job: job.to_string(),
                                epoch,
                                input: Input::TimedOut {
                                    step: d.step.clone(),
                                    attempt: d.attempt,
                                },
                            },
                        });
                    }
                    out.push(Out::Send {
                        to: worker,
                        msg: Msg::Run {
                            job: job.to_string(),
                            epoch,
                            step: d.step,
                            attempt: d.attempt,
                        },
                    });
                }
                Action::RetryLater {
                    step,
                    attempt,
                    delay,
                } => out.push(Out::After {
                    delay: delay.as_millis() as Ms,
                    timer: Timer::Feed {
                        job: job.to_string(),
                        epoch,
                        input: Input::RetryDue { step, attempt },
                    },
                }),
                Action::Notify(JobEvent::StepFinished { step, .. }) => {
                    out.push(Out::Observe(Obs::StepEnded {
                        job: job.to_string(),
                        epoch,
                        step,
                    }))
                }
                Action::Notify(_) | Action::CancelAttempt { .. } | Action::Reply { .. } => {}
            }
        }
        if ended {
            self.job_ended(job, now, out);
        }
    }

    /// This node's run of `job` ended: journal the end, copy it to the replica, and make
    /// it count (at once, or once the core group recorded it).
    fn job_ended(&mut self, job: &str, now: Ms, out: &mut Vec<Out>) {
        let Some(live) = self.mem.runs.remove(job) else {
            return;
        };
        self.mem.takeovers.run_ended(job);
        let status = live.run.status();
        let summary = format!("{:?} {}", status.state, json!(status.output));
        if let Some(e) = self.disk.own.get_mut(job) {
            e.end = Some(summary.clone());
        }
        if !self.rules.core_refuses_ended {
            end_write(job, live.epoch, live.synced, out);
        }
        let by_acks = !live.core_only || !self.rules.resumed_ends_need_core;
        if self.rules.core_refuses_ended && self.rules.end_acked_by_holders && by_acks {
            if live.holders.is_empty() {
                self.count(job, out);
            } else {
                end_owed(job, live.epoch, &live.holders, out);
                self.mem.owed.insert(
                    job.to_string(),
                    OwedEnd {
                        epoch: live.epoch,
                        holders: live.holders,
                        since: now,
                    },
                );
            }
        } else if self.rules.core_refuses_ended {
            self.publish(job, out);
        } else {
            if let Some(e) = self.disk.own.get_mut(job) {
                e.published = true;
            }
            out.push(Out::Observe(Obs::Published {
                job: job.to_string(),
                node: self.name.clone(),
                epoch: live.epoch,
                summary,
            }));
        }
    }

    /// The end of `job` counts: every holder of a copy acked it.
    fn count(&mut self, job: &str, out: &mut Vec<Out>) {
        self.mem.owed.remove(job);
        let Some(e) = self.disk.own.get_mut(job).filter(|e| !e.published) else {
            return;
        };
        let Some(summary) = e.end.clone() else {
            return;
        };
        e.published = true;
        out.push(Out::Observe(Obs::Published {
            job: job.to_string(),
            node: self.name.clone(),
            epoch: e.record.epoch,
            summary,
        }));
    }

    /// Asks the core group to record the end of `job`, unless a request is out.
    fn publish(&mut self, job: &str, out: &mut Vec<Out>) {
        let asked = self
            .mem
            .waiting
            .values()
            .any(|w| matches!(w, Waiting::Ended(j) if j == job));
        let Some(e) = self.disk.own.get(job) else {
            return;
        };
        if asked || e.published || e.end.is_none() {
            return;
        }
        let cmd = CoreReq::Ended {
            job: job.to_string(),
            node: self.name.clone(),
            epoch: e.record.epoch,
        };
        let req = self.ask(out, cmd);
        self.mem
            .waiting
            .insert(req, Waiting::Ended(job.to_string()));
    }

    /// A timer of this boot fired.
    pub(crate) fn timer(&mut self, now: Ms, timer: Timer) -> Vec<Out> {
        let mut out = Vec::new();
        match timer {
            Timer::Tick => {
                self.tick(now, &mut out);
                out.push(Out::After {
                    delay: 250,
                    timer: Timer::Tick,
                });
            }
            Timer::Gossip => {
                for p in self.all.iter().filter(|p| **p != self.name) {
                    out.push(Out::Send {
                        to: p.clone(),
                        msg: Msg::Gossip,
                    });
                }
                out.push(Out::After {
                    delay: GOSSIP,
                    timer: Timer::Gossip,
                });
            }
            Timer::Feed { job, epoch, input } => {
                if self.mem.runs.get(&job).is_some_and(|l| l.epoch == epoch) {
                    self.feed(&job, input, now, &mut out);
                }
            }
            Timer::WorkDone {
                owner,
                job,
                epoch,
                step,
                attempt,
            } => {
                let result = if self.rng.random_bool(0.1) {
                    Err(TaskError::transient("busy"))
                } else {
                    Ok(json!(format!("{step} by {}", self.name)))
                };
                out.push(Out::Send {
                    to: owner,
                    msg: Msg::StepDone {
                        job,
                        epoch,
                        step,
                        attempt,
                        result,
                    },
                });
            }
            Timer::CopyWait { actor, epoch, seq } => {
                self.with_host(|v, host, store, _| {
                    host.copied(v, store, &actor, epoch, seq, None, &mut out)
                });
            }
            Timer::GatherWait { actor, epoch } => {
                self.with_host(|v, host, store, _| {
                    host.gathered(v, store, &actor, epoch, None, None, &mut out)
                });
            }
            Timer::CoreTimeout { req } => {
                if let Some(w) = self.mem.waiting.remove(&req) {
                    match w {
                        Waiting::Takeover(job) | Waiting::Owner(job, _) => {
                            let effects = self
                                .mem
                                .takeovers
                                .decided(&job, Err("the core group did not answer".into()));
                            self.effects(effects, now, &mut out);
                        }
                        Waiting::Owners(jobs) if self.rules.resume_waits_for_core => {
                            let cmd = CoreReq::Command(CoreCommand::Owners { jobs: jobs.clone() });
                            let req = self.ask(&mut out, cmd);
                            self.mem.waiting.insert(req, Waiting::Owners(jobs));
                        }
                        Waiting::Owners(jobs) => {
                            // As the job manager does: resume without the answer.
                            out.push(Out::Note("no answer to Owners: resuming".into()));
                            self.resume(jobs, now, &mut out);
                        }
                        Waiting::Ended(_) => {}
                        Waiting::Claim(actor) => self.actor_claimed(&actor, None, &mut out),
                    }
                }
            }
        }
        out
    }

    /// Membership's tick, then the takeover rules', then the journal writer's re-check of
    /// replicas and this node's unrecorded ends.
    fn tick(&mut self, now: Ms, out: &mut Vec<Out>) {
        let at = self.at(now);
        if let Round::Judged(transitions) = self.mem.detector.tick(at) {
            for t in transitions {
                match t {
                    Transition::Suspect { node, .. } => {
                        self.mem.peers.insert(node, NodeState::Suspect);
                    }
                    Transition::Recovered { node, .. } => {
                        self.mem.peers.insert(node, NodeState::Up);
                    }
                    Transition::Down { node, .. } => {
                        out.push(Out::Note(format!("{node} is down (silent)")));
                        self.peer_down(&node, now, out);
                    }
                    // Only legacy peers here: none is probed.
                    Transition::Probe { .. } | Transition::ProbeThrough { .. } => {}
                }
            }
        }
        let live = self.live();
        let effects = self.mem.takeovers.tick(at, &live);
        self.effects(effects, now, out);
        let jobs: Vec<String> = self.mem.runs.keys().cloned().collect();
        for job in jobs {
            self.sync_replica(&job, out);
        }
        // Ends owed to holders go again; those not all acked within 1 s (and every
        // other end not counted yet) go to the core group.
        for (job, o) in &self.mem.owed {
            end_owed(job, o.epoch, &o.holders, out);
        }
        let owed = &self.mem.owed;
        let ends: Vec<String> = self
            .disk
            .own
            .iter()
            .filter(|(_, e)| e.end.is_some() && !e.published)
            .filter(|(j, _)| owed.get(*j).is_none_or(|o| now >= o.since + 1_000))
            .map(|(j, _)| j.clone())
            .collect();
        for job in ends {
            self.publish(&job, out);
        }
        self.with_host(|v, host, _, _| host.sweep(v, out));
    }

    /// Peer `node` is down (its connection closed, or it was silent): the attempts it ran
    /// run again.
    pub(crate) fn peer_down(&mut self, node: &str, now: Ms, out: &mut Vec<Out>) {
        self.mem.peers.insert(node.to_string(), NodeState::Down);
        self.mem.detector.down(node);
        let jobs: Vec<String> = self.mem.runs.keys().cloned().collect();
        for job in jobs {
            let inputs = self
                .mem
                .runs
                .get(&job)
                .map(|l| l.run.node_lost_inputs(node))
                .unwrap_or_default();
            for input in inputs {
                self.feed(&job, input, now, out);
            }
        }
    }

    /// A connection to `node` closed.
    pub(crate) fn disconnected(&mut self, node: &str, now: Ms) -> Vec<Out> {
        let mut out = Vec::new();
        if self.mem.peers.get(node) != Some(&NodeState::Down) {
            self.peer_down(node, now, &mut out);
        }
        out
    }

    /// A message from `from` arrived.
    pub(crate) fn receive(&mut self, now: Ms, from: &str, msg: Msg) -> Vec<Out> {
        let mut out = Vec::new();
        match msg {
            Msg::Gossip => {
                let before = self.mem.peers.get(from).copied();
                let _ = self.mem.detector.heard(from, self.at(now), NodeState::Up);
                self.mem.detector.set_legacy(from, true);
                self.mem.peers.insert(from.to_string(), NodeState::Up);
                if before.is_none() || before == Some(NodeState::Down) {
                    let effects = self.mem.takeovers.node_up(from);
                    self.effects(effects, now, &mut out);
                }
            }
            Msg::Run {
                job,
                epoch,
                step,
                attempt,
            } => {
                let delay = self.rng.random_range(5..300);
                out.push(Out::After {
                    delay,
                    timer: Timer::WorkDone {
                        owner: from.to_string(),
                        job,
                        epoch,
                        step,
                        attempt,
                    },
                });
            }
            Msg::StepDone {
                job,
                epoch,
                step,
                attempt,
                result,
            } => {
                let current = self.mem.runs.get(&job).map(|l| l.epoch);
                if current == Some(epoch) || (current.is_some() && !self.rules.result_fencing) {
                    let input = Input::Finished {
                        step,
                        attempt,
                        node: from.to_string(),
                        result,
                        source: ResultSource::Executed,
                    };
                    self.feed(&job, input, now, &mut out);
                }
            }
            Msg::Write {
                job,
                epoch,
                kind,
                record,
                inputs,
            } => match self.mem.takeovers.replica_write(from, &job, epoch, kind) {
                WriteVerdict::Fenced(holder) => out.push(moved_to(from, job, holder)),
                WriteVerdict::Later => {}
                WriteVerdict::Keep => match kind {
                    WriteKind::Start => {
                        if let Some(record) = record {
                            let holder = Holder {
                                node: from.to_string(),
                                epoch,
                            };
                            self.disk.copies.insert(
                                job,
                                CopyEntry {
                                    holder,
                                    record,
                                    inputs,
                                },
                            );
                        }
                    }
                    WriteKind::Input => {
                        if let Some(c) = self.disk.copies.get_mut(&job) {
                            if c.holder.node == from && c.holder.epoch == epoch {
                                c.inputs.extend(inputs);
                            }
                        }
                    }
                    WriteKind::End => {
                        self.disk.copies.remove(&job);
                    }
                    // The simulated owner writes its end before it sends it.
                    WriteKind::EndAhead => {}
                },
            },
            Msg::Moved(m) => {
                // An end here not counted yet gives way to the holder's.
                let held =
                    self.disk.own.get(&m.job).is_some_and(|e| {
                        e.end.is_some() && !e.published && e.record.epoch < m.epoch
                    });
                if held && m.owner != self.name {
                    self.disk.moved_away(&m.job, m.holder());
                    self.mem.owed.remove(&m.job);
                }
                let effects = self.mem.takeovers.job_moved(m);
                self.effects(effects, now, &mut out);
            }
            Msg::EndOwed { job, epoch } => {
                match self
                    .mem
                    .takeovers
                    .replica_write(from, &job, epoch, WriteKind::End)
                {
                    WriteVerdict::Fenced(holder) => {
                        if !self.rules.fenced_ends_unacked {
                            out.push(Out::Send {
                                to: from.to_string(),
                                msg: Msg::EndAcked { job: job.clone() },
                            });
                        }
                        out.push(moved_to(from, job, holder));
                    }
                    WriteVerdict::Later => {}
                    WriteVerdict::Keep => {
                        self.disk.copies.remove(&job);
                        out.push(Out::Send {
                            to: from.to_string(),
                            msg: Msg::EndAcked { job },
                        });
                    }
                }
            }
            Msg::EndAcked { job } => {
                let all = match self.mem.owed.get_mut(&job) {
                    Some(o) => {
                        o.holders.remove(from);
                        o.holders.is_empty()
                    }
                    None => false,
                };
                if all {
                    self.count(&job, &mut out);
                }
            }
            Msg::ActorAdd { actor, add, hops } => out = self.actor_add(&actor, add, hops),
            Msg::FetchState { actor, epoch } => out.push(Out::Send {
                to: from.to_string(),
                msg: Host::fetch(&mut self.disk.store, &actor, epoch),
            }),
            Msg::StateIs {
                actor,
                epoch,
                saved,
            } => {
                self.with_host(|v, host, store, _| {
                    host.gathered(v, store, &actor, epoch, Some(from), saved, &mut out)
                });
            }
            Msg::KeepCopy { actor, saved } => out.push(Out::Send {
                to: from.to_string(),
                msg: Host::keep(&mut self.disk.store, &actor, saved),
            }),
            Msg::CopyKept {
                actor,
                epoch,
                seq,
                ok,
            } => {
                self.with_host(|v, host, store, _| {
                    host.copied(v, store, &actor, epoch, seq, Some(ok), &mut out)
                });
            }
        }
        out
    }

    /// The core group answered request `req`.
    pub(crate) fn core_reply(&mut self, now: Ms, req: u64, reply: CoreReply) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(w) = self.mem.waiting.remove(&req) else {
            return out;
        };
        match (w, reply) {
            (Waiting::Takeover(job), CoreReply::Decision(d)) => {
                let decision = match d {
                    CoreDecision::Granted { epoch } => Ok(Holder {
                        node: self.name.clone(),
                        epoch,
                    }),
                    CoreDecision::Denied { owner } => Ok(owner),
                    other => Err(format!("unexpected answer {other:?}")),
                };
                let effects = self.mem.takeovers.decided(&job, decision);
                self.effects(effects, now, &mut out);
            }
            (Waiting::Takeover(job), CoreReply::AlreadyEnded { holder }) => {
                let effects = self
                    .mem
                    .takeovers
                    .decided(&job, Err("the job has ended".into()));
                self.effects(effects, now, &mut out);
                // The core group's answer stands for the end write this copy missed.
                let _ = self.mem.takeovers.replica_write(
                    &holder.node,
                    &job,
                    holder.epoch,
                    WriteKind::End,
                );
                self.disk.copies.remove(&job);
            }
            (Waiting::Ended(job), CoreReply::EndRecorded { ok, holder }) => {
                self.mem.owed.remove(&job);
                if ok {
                    // The replica hears of the end once it counts.
                    let replica = self.replica(&job);
                    if let Some(e) = self.disk.own.get_mut(&job) {
                        e.published = true;
                        end_write(&job, e.record.epoch, replica, &mut out);
                    }
                } else {
                    self.disk.moved_away(&job, holder.clone());
                    let m = JobMoved {
                        job,
                        owner: holder.node,
                        epoch: holder.epoch,
                    };
                    self.tell_holder(&m, &mut out);
                    let effects = self.mem.takeovers.job_moved(m);
                    self.effects(effects, now, &mut out);
                }
            }
            (Waiting::Owners(jobs), CoreReply::Decision(CoreDecision::Owners(owners))) => {
                let moved = takeover::taken_from(&self.name, jobs.clone(), owners);
                let gone: HashSet<String> = moved.iter().map(|m| m.job.clone()).collect();
                for m in moved {
                    self.disk.moved_away(&m.job, m.holder());
                    self.tell_holder(&m, &mut out);
                    self.mem.takeovers.taken_while_away(m);
                }
                let rest = jobs.into_iter().filter(|j| !gone.contains(j)).collect();
                self.resume(rest, now, &mut out);
            }
            (Waiting::Owner(job, from), CoreReply::Decision(CoreDecision::Owners(owners))) => {
                let holder = owners.into_iter().next().flatten().unwrap_or(from);
                let effects = self.mem.takeovers.decided(&job, Ok(holder));
                self.effects(effects, now, &mut out);
            }
            (Waiting::Claim(actor), CoreReply::Decision(d)) => {
                self.actor_claimed(&actor, Some(d), &mut out);
            }
            (w, r) => out.push(Out::Note(format!("unexpected answer {r:?} to {w:?}"))),
        }
        out
    }

    /// Tells the node a job moved to that it holds it (it may not know: the core group's
    /// answer to its takeover can be lost).
    fn tell_holder(&self, m: &JobMoved, out: &mut Vec<Out>) {
        if self.rules.adopt_when_told && m.owner != self.name {
            out.push(Out::Send {
                to: m.owner.clone(),
                msg: Msg::Moved(m.clone()),
            });
        }
    }

    /// Resumes the journaled jobs `jobs` at start (only once, and only those still in
    /// the journal and not ended).
    fn resume(&mut self, jobs: Vec<String>, now: Ms, out: &mut Vec<Out>) {
        if !self.mem.recovering {
            return;
        }
        self.mem.recovering = false;
        for job in jobs {
            let Some(e) = self.disk.own.get(&job).filter(|e| e.end.is_none()) else {
                continue;
            };
            let epoch = e.record.epoch;
            let Ok(run) = replay(e.record.clone(), e.inputs.clone(), self.at(now), 0) else {
                continue;
            };
            self.start_run(&job, run, epoch, "the owner restarted", now, out);
        }
        let ends: Vec<String> = self.disk.own.keys().cloned().collect();
        for job in ends {
            self.publish(&job, out);
        }
    }

    /// Runs a rebuilt `run` of `job` at `epoch`: feeds its recovery inputs.
    fn start_run(
        &mut self,
        job: &str,
        run: JobRun,
        epoch: u64,
        why: &str,
        now: Ms,
        out: &mut Vec<Out>,
    ) {
        let recovery = run.recovery_inputs(why);
        let ended = run.state().is_terminal();
        self.mem.runs.insert(
            job.to_string(),
            Live {
                run,
                epoch,
                synced: None,
                holders: BTreeSet::new(),
                core_only: true,
            },
        );
        self.mem.takeovers.run_started(job, epoch);
        if ended {
            self.job_ended(job, now, out);
            return;
        }
        self.sync_replica(job, out);
        for input in recovery {
            self.feed(job, input, now, out);
        }
    }

    /// Carries out the takeover rules' effects, as the job manager does. Effects about
    /// different jobs come in hash-map order: sorted by job (stably, keeping each job's
    /// order) so that a seed replays the same run.
    fn effects(&mut self, mut effects: Vec<Effect>, now: Ms, out: &mut Vec<Out>) {
        effects.sort_by(|a, b| effect_job(a).cmp(effect_job(b)));
        for e in effects {
            match e {
                Effect::AskCore { job, from } => {
                    let cmd = CoreCommand::Takeover {
                        job: job.clone(),
                        from: from.node,
                        epoch: from.epoch,
                        to: self.name.clone(),
                    };
                    let req = self.ask(out, CoreReq::Command(cmd));
                    self.mem.waiting.insert(req, Waiting::Takeover(job));
                }
                Effect::AskOwner { job, from } => {
                    let cmd = CoreCommand::Owners {
                        jobs: vec![job.clone()],
                    };
                    let req = self.ask(out, CoreReq::Command(cmd));
                    self.mem.waiting.insert(req, Waiting::Owner(job, from));
                }
                Effect::Adopt { job, epoch } => {
                    let _ = self.mem.takeovers.take_copy(&job);
                    let Some(copy) = self.disk.copies.remove(&job) else {
                        out.push(Out::Note(format!("{job}: granted, but no copy to adopt")));
                        continue;
                    };
                    let mut record = copy.record;
                    record.epoch = epoch;
                    let Ok(run) = replay(record.clone(), copy.inputs.clone(), self.at(now), 0)
                    else {
                        continue;
                    };
                    self.disk.own.insert(
                        job.clone(),
                        OwnEntry {
                            record,
                            inputs: copy.inputs,
                            end: None,
                            published: false,
                        },
                    );
                    for p in self.all.iter().filter(|p| **p != self.name) {
                        out.push(Out::Send {
                            to: p.clone(),
                            msg: Msg::Moved(JobMoved {
                                job: job.clone(),
                                owner: self.name.clone(),
                                epoch,
                            }),
                        });
                    }
                    self.start_run(&job, run, epoch, "taken over", now, out);
                }
                Effect::Denied { .. } | Effect::Undecided { .. } => {}
                Effect::StopRun { job, holder } => {
                    self.mem.runs.remove(&job);
                    self.disk.moved_away(&job, holder);
                }
                Effect::ForgetCopy { job } => {
                    self.disk.copies.remove(&job);
                }
                Effect::TellMoved { to, job, holder } => out.push(Out::Send {
                    to,
                    msg: Msg::Moved(JobMoved {
                        job,
                        owner: holder.node,
                        epoch: holder.epoch,
                    }),
                }),
            }
        }
    }
}

/// Sends `cmd` to the core group as request number `*next + 1`, with its timeout.
fn ask(next: &mut u64, wait: Ms, out: &mut Vec<Out>, cmd: CoreReq) -> u64 {
    *next += 1;
    let req = *next;
    out.push(Out::Core { req, cmd });
    out.push(Out::After {
        delay: wait,
        timer: Timer::CoreTimeout { req },
    });
    req
}

/// Tells `to`, a former owner whose write was fenced, that `holder` holds `job` now.
fn moved_to(to: &str, job: String, holder: Holder) -> Out {
    Out::Send {
        to: to.to_string(),
        msg: Msg::Moved(JobMoved {
            job,
            owner: holder.node,
            epoch: holder.epoch,
        }),
    }
}

/// The end of `job` at `epoch`, to each of its copies' `holders`.
fn end_owed(job: &str, epoch: u64, holders: &BTreeSet<String>, out: &mut Vec<Out>) {
    for to in holders {
        out.push(Out::Send {
            to: to.clone(),
            msg: Msg::EndOwed {
                job: job.to_string(),
                epoch,
            },
        });
    }
}

/// The end of `job` at `epoch`, to its replica.
fn end_write(job: &str, epoch: u64, replica: Option<String>, out: &mut Vec<Out>) {
    if let Some(to) = replica {
        out.push(Out::Send {
            to,
            msg: Msg::Write {
                job: job.to_string(),
                epoch,
                kind: WriteKind::End,
                record: None,
                inputs: Vec::new(),
            },
        });
    }
}

/// The job an effect is about.
fn effect_job(e: &Effect) -> &str {
    match e {
        Effect::AskCore { job, .. }
        | Effect::AskOwner { job, .. }
        | Effect::Adopt { job, .. }
        | Effect::Denied { job, .. }
        | Effect::Undecided { job, .. }
        | Effect::StopRun { job, .. }
        | Effect::ForgetCopy { job }
        | Effect::TellMoved { job, .. } => job,
    }
}
