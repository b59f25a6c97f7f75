//! A deterministic simulation of the cluster logic: the real pure cores (`JobRun` and its
//! replay, `Takeovers`, `Ownership`, `SilenceDetector`) on five simulated nodes, driven by
//! one seed through a simulated network and clock, with faults, and every invariant
//! checked after every step.
//!
//! Why: the tests on real processes see a few schedules per run; a bug that needs a
//! message lost at one moment and a node down at the next waits there for a user. Here
//! one seed fixes everything (delays, losses, duplicates, crashes, partitions, the jobs
//! submitted), thousands of seeds run in a minute, and a failing seed replays the same
//! run with a readable trace: `SIM_SEED=N cargo test -p troupe-actors --lib simulation`.
//! The style is raft-rs's and TigerBeetle's VOPR: pure cores under a harness network with
//! a seeded generator, rather than madsim or turmoil, which simulate tokio and sockets
//! under the whole node and would run its actors too (ractor's registry is process-wide).
//!
//! The core group is one linearizable state machine (the real [`Ownership`]), reachable
//! only from a node whose side of a partition holds a majority of its voters: that is
//! what Raft gives; Raft itself (openraft) is not simulated. What the simulation models
//! and what it leaves out is in ARCHITECTURE.md ("The deterministic simulation").

mod check;
mod host;
mod node;
#[cfg(test)]
mod tests;
mod wire;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use troupe_runtime::protocol::SavedState;
use troupe_runtime::vocab::Holder;

use crate::core::ownership::{CoreCommand, CoreDecision, Ownership};
use check::Checker;
use node::{Params, SimNode};
use wire::{CoreReply, CoreReq, Ms, Msg, Out, Timer};

pub(crate) use wire::Rules;

/// The nodes of the simulated cluster; the first three are the core group's voters.
const NODES: [&str; 5] = ["n1", "n2", "n3", "n4", "n5"];
const VOTERS: usize = 3;

/// How one run goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Config {
    /// The rules the nodes and the core group follow.
    pub rules: Rules,
    /// How long faults are made (simulated ms); then everything heals and settles.
    pub faults_for: Ms,
    /// How long the cluster settles after the faults.
    pub settle_for: Ms,
    /// Whether to keep a trace.
    pub trace: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            rules: Rules::default(),
            faults_for: 40_000,
            settle_for: 30_000,
            trace: false,
        }
    }
}

/// What a seed's run did.
#[derive(Debug, Clone, Default)]
pub struct SeedStats {
    /// Events handled.
    pub steps: u64,
    /// Jobs accepted.
    pub jobs: usize,
    /// Takeovers granted.
    pub takeovers: usize,
    /// Crashes made.
    pub crashes: u32,
    /// Partitions made.
    pub partitions: u32,
    /// Adds to keyed actors acknowledged.
    pub acked: usize,
}

/// A seed broke an invariant.
#[derive(Debug, Clone)]
pub(crate) struct Violation {
    /// The seed.
    pub seed: u64,
    /// When (simulated ms).
    pub at: Ms,
    /// What broke.
    pub what: String,
    /// The trace, when asked for.
    pub trace: Vec<String>,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for line in &self.trace {
            writeln!(f, "{line}")?;
        }
        write!(
            f,
            "seed {} broke an invariant at {} ms: {}\nreplay it with its trace: SIM_SEED={} \
             cargo test -p troupe-actors --lib simulation::tests::seeds -- --nocapture",
            self.seed, self.at, self.what, self.seed
        )
    }
}

/// Runs seed `seed` with the default rules (the entry point of the bench).
pub fn run_seed(seed: u64) -> Result<SeedStats, String> {
    run(seed, &Config::default()).map_err(|v| v.to_string())
}

/// What happens next in the world.
#[derive(Debug)]
enum Event {
    /// A message arrives at `to` (in boot `boot`).
    Deliver {
        from: usize,
        to: usize,
        boot: u32,
        msg: Msg,
    },
    /// A timer of node `node`'s boot `boot` fires.
    Timer {
        node: usize,
        boot: u32,
        timer: Timer,
    },
    /// A request reaches the core group.
    Core {
        from: usize,
        boot: u32,
        req: u64,
        cmd: CoreReq,
    },
    /// The core group's answer reaches the asker.
    Answer {
        to: usize,
        boot: u32,
        req: u64,
        reply: CoreReply,
    },
    /// Node `node` sees its connection to `peer` close.
    Disconnected { node: usize, boot: u32, peer: usize },
    /// A client submits a job.
    Submit,
    /// A client adds to a keyed actor.
    Add,
    /// The nemesis acts.
    Nemesis,
    /// Node `node` starts again.
    Restart { node: usize },
    /// Everything heals.
    HealAll,
}

struct Scheduled {
    at: Ms,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The network's faults, drawn per seed.
#[derive(Debug, Clone, Copy)]
struct Faults {
    drop: f64,
    duplicate: f64,
    slow: f64,
}

/// The simulated core group: the real state machine, a log index, and the ends it
/// recorded (the rule of [`Rules::core_refuses_ended`]).
#[derive(Debug, Default)]
struct Core {
    ownership: Ownership,
    index: u64,
    ended: BTreeMap<String, Holder>,
}

/// The world of one seed.
struct World {
    seed: u64,
    config: Config,
    now: Ms,
    seq: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    rng: StdRng,
    nodes: Vec<SimNode>,
    /// Each node's side of the partition (same number: they reach each other).
    side: [u8; NODES.len()],
    /// One-way cuts: messages from the first to the second are lost.
    cuts: Vec<(usize, usize)>,
    faults: Faults,
    core: Core,
    checker: Checker,
    stats: SeedStats,
    trace: Vec<String>,
    next_add: u64,
}

/// Runs one seed.
pub(crate) fn run(seed: u64, config: &Config) -> Result<SeedStats, Violation> {
    let mut w = World::new(seed, *config);
    let r = w.run();
    w.stats.jobs = w.checker.jobs();
    w.stats.takeovers = w.checker.takeovers();
    w.stats.acked = w.checker.acked();
    match r {
        Ok(()) => Ok(w.stats),
        Err(what) => Err(Violation {
            seed,
            at: w.now,
            what,
            trace: std::mem::take(&mut w.trace),
        }),
    }
}

impl World {
    fn new(seed: u64, config: Config) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let base = Instant::now();
        let all: Vec<String> = NODES.iter().map(|n| n.to_string()).collect();
        let nodes = NODES
            .iter()
            .map(|n| {
                let node_rng = StdRng::seed_from_u64(rng.random());
                SimNode::new(
                    n,
                    all.clone(),
                    config.rules,
                    Params::default(),
                    base,
                    node_rng,
                )
            })
            .collect();
        let faults = Faults {
            drop: rng.random_range(0.0..0.05),
            duplicate: rng.random_range(0.0..0.05),
            slow: rng.random_range(0.0..0.1),
        };
        World {
            seed,
            config,
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            rng,
            nodes,
            side: [0; NODES.len()],
            cuts: Vec::new(),
            faults,
            core: Core::default(),
            checker: Checker::default(),
            stats: SeedStats::default(),
            trace: Vec::new(),
            next_add: 0,
        }
    }

    fn at(&mut self, delay: Ms, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at: self.now + delay,
            seq: self.seq,
            event,
        }));
    }

    /// Schedules `event` again after a random delay in `delays`, while faults last.
    fn again(&mut self, delays: std::ops::Range<Ms>, event: Event) {
        if self.now < self.config.faults_for {
            let d = self.rng.random_range(delays);
            self.at(d, event);
        }
    }

    /// A node that is up, drawn at random (`None` if all are down).
    fn random_up(&mut self) -> Option<usize> {
        let up: Vec<usize> = (0..NODES.len()).filter(|&i| self.nodes[i].up).collect();
        (!up.is_empty()).then(|| up[self.rng.random_range(0..up.len())])
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.config.trace {
            let line = line();
            self.trace.push(format!("{:>6} {line}", self.now));
        }
    }

    fn run(&mut self) -> Result<(), String> {
        let (seed, faults) = (self.seed, self.faults);
        self.note(|| format!("seed {seed} faults {faults:?}"));
        for i in 0..self.nodes.len() {
            let outs = self.nodes[i].boot_timers();
            self.apply(i, outs)?;
        }
        self.at(100, Event::Submit);
        self.at(150, Event::Add);
        self.at(1_000, Event::Nemesis);
        self.at(self.config.faults_for, Event::HealAll);
        let end = self.config.faults_for + self.config.settle_for;
        while let Some(Reverse(s)) = self.queue.pop() {
            if s.at > end {
                break;
            }
            self.now = s.at;
            self.stats.steps += 1;
            self.step(s.event)?;
            self.check_runs()?;
        }
        self.checker.all_ended()?;
        let mut newest: BTreeMap<String, SavedState> = BTreeMap::new();
        for n in &self.nodes {
            for (actor, s) in n.disk.store.states() {
                if newest.get(actor).is_none_or(|b| s.is_newer_than(b)) {
                    newest.insert(actor.clone(), s.clone());
                }
            }
        }
        let newest = newest
            .into_iter()
            .map(|(a, s)| (a, host::adds_of(&s)))
            .collect();
        self.checker.nothing_lost(&newest)
    }

    fn up(&self, i: usize, boot: u32) -> bool {
        self.nodes[i].up && self.nodes[i].boot == boot
    }

    /// Whether a message from `a` reaches `b` now.
    fn reaches(&self, a: usize, b: usize) -> bool {
        self.side[a] == self.side[b] && !self.cuts.contains(&(a, b))
    }

    /// Whether node `i` reaches a majority of the core group's voters (itself counted if
    /// it is one).
    fn core_reachable(&self, i: usize) -> bool {
        let reached = (0..VOTERS)
            .filter(|&v| self.nodes[v].up && (v == i || (self.reaches(i, v) && self.reaches(v, i))))
            .count();
        reached * 2 > VOTERS
    }

    fn delay(&mut self) -> Ms {
        if self.rng.random_bool(self.faults.slow) {
            self.rng.random_range(100..1_500)
        } else {
            self.rng.random_range(1..20)
        }
    }

    fn step(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::Deliver {
                from,
                to,
                boot,
                msg,
            } => {
                if !self.up(to, boot) || !self.reaches(from, to) {
                    return Ok(());
                }
                if !matches!(msg, Msg::Gossip) {
                    self.note(|| format!("{} <- {}: {msg:?}", NODES[to], NODES[from]));
                }
                let outs = self.nodes[to].receive(self.now, NODES[from], msg);
                self.apply(to, outs)
            }
            Event::Timer { node, boot, timer } => {
                if !self.up(node, boot) {
                    return Ok(());
                }
                if !matches!(timer, Timer::Tick | Timer::Gossip) {
                    self.note(|| format!("{}: timer {timer:?}", NODES[node]));
                }
                let outs = self.nodes[node].timer(self.now, timer);
                self.apply(node, outs)
            }
            Event::Core {
                from,
                boot,
                req,
                cmd,
            } => {
                if !self.core_reachable(from) {
                    self.note(|| format!("core: lost {cmd:?} from {}", NODES[from]));
                    return Ok(());
                }
                let reply = self.decide(from, &cmd)?;
                self.note(|| format!("core: {} asked {cmd:?}: {reply:?}", NODES[from]));
                let d = self.delay();
                self.at(
                    d,
                    Event::Answer {
                        to: from,
                        boot,
                        req,
                        reply,
                    },
                );
                Ok(())
            }
            Event::Answer {
                to,
                boot,
                req,
                reply,
            } => {
                if !self.up(to, boot) || !self.core_reachable(to) {
                    return Ok(());
                }
                let outs = self.nodes[to].core_reply(self.now, req, reply);
                self.apply(to, outs)
            }
            Event::Disconnected { node, boot, peer } => {
                if !self.up(node, boot) {
                    return Ok(());
                }
                self.note(|| format!("{}: connection to {} closed", NODES[node], NODES[peer]));
                let outs = self.nodes[node].disconnected(NODES[peer], self.now);
                self.apply(node, outs)
            }
            Event::Submit => {
                if self.now >= self.config.faults_for {
                    return Ok(());
                }
                if let Some(i) = self.random_up() {
                    let outs = self.nodes[i].submit(self.now);
                    self.apply(i, outs)?;
                }
                self.again(200..1_500, Event::Submit);
                Ok(())
            }
            Event::Add => {
                if self.now >= self.config.faults_for {
                    return Ok(());
                }
                if let Some(i) = self.random_up() {
                    let actor = format!("counter/k{}", self.rng.random_range(0..3));
                    self.next_add += 1;
                    let add = self.next_add;
                    self.note(|| format!("{}: client adds {add} to {actor}", NODES[i]));
                    let outs = self.nodes[i].actor_add(&actor, add, 0);
                    self.apply(i, outs)?;
                }
                self.again(50..600, Event::Add);
                Ok(())
            }
            Event::Nemesis => {
                if self.now >= self.config.faults_for {
                    return Ok(());
                }
                self.nemesis();
                self.again(500..5_000, Event::Nemesis);
                Ok(())
            }
            Event::Restart { node } => {
                if self.nodes[node].up {
                    return Ok(());
                }
                self.note(|| format!("{}: restarts", NODES[node]));
                let outs = self.nodes[node].restart(self.now);
                self.apply(node, outs)
            }
            Event::HealAll => {
                self.note(|| "heal all; restart every node".into());
                self.side = [0; NODES.len()];
                self.cuts.clear();
                for i in 0..NODES.len() {
                    if !self.nodes[i].up {
                        self.at(0, Event::Restart { node: i });
                    }
                }
                Ok(())
            }
        }
    }

    /// The core group applies `cmd` from node `from`.
    fn decide(&mut self, from: usize, cmd: &CoreReq) -> Result<CoreReply, String> {
        self.core.index += 1;
        let index = self.core.index;
        let rules = self.config.rules;
        match cmd {
            CoreReq::Command(c) => {
                if let CoreCommand::Takeover { job, .. } = c {
                    if rules.core_refuses_ended {
                        if let Some(holder) = self.core.ended.get(job) {
                            return Ok(CoreReply::AlreadyEnded {
                                holder: holder.clone(),
                            });
                        }
                    }
                }
                let d = self.core.ownership.apply(index, c);
                match (c, &d) {
                    (CoreCommand::Takeover { job, to, .. }, CoreDecision::Granted { epoch }) => {
                        self.checker.granted(job, to, *epoch)?;
                    }
                    (
                        CoreCommand::ClaimActor { actor, .. },
                        CoreDecision::ActorGranted { epoch, .. },
                    ) => {
                        self.checker.leased(actor, *epoch)?;
                    }
                    _ => {}
                }
                Ok(CoreReply::Decision(d))
            }
            CoreReq::Ended { job, node, epoch } => {
                let owner = self.core.ownership.owner(job);
                let current =
                    !rules.ended_owner_check || (owner.node == *node && owner.epoch == *epoch);
                if !current {
                    return Ok(CoreReply::EndRecorded {
                        ok: false,
                        holder: owner,
                    });
                }
                if !self.core.ended.contains_key(job) {
                    let summary = self.nodes[from]
                        .disk
                        .own
                        .get(job)
                        .and_then(|e| e.end.clone())
                        .unwrap_or_default();
                    self.checker.ended(job, node, *epoch, &summary)?;
                    self.core.ended.insert(
                        job.clone(),
                        Holder {
                            node: node.clone(),
                            epoch: *epoch,
                        },
                    );
                }
                Ok(CoreReply::EndRecorded {
                    ok: true,
                    holder: owner,
                })
            }
        }
    }

    /// Carries out what node `i` asked for.
    fn apply(&mut self, i: usize, outs: Vec<Out>) -> Result<(), String> {
        let boot = self.nodes[i].boot;
        for o in outs {
            match o {
                Out::Send { to, msg } => {
                    let Some(to) = NODES.iter().position(|n| *n == to) else {
                        continue;
                    };
                    let to_boot = self.nodes[to].boot;
                    if to == i {
                        self.at(
                            0,
                            Event::Deliver {
                                from: i,
                                to,
                                boot: to_boot,
                                msg,
                            },
                        );
                        continue;
                    }
                    if self.rng.random_bool(self.faults.drop) {
                        self.note(|| format!("net: dropped {msg:?} {} -> {}", NODES[i], NODES[to]));
                        continue;
                    }
                    if self.rng.random_bool(self.faults.duplicate) {
                        let d = self.delay();
                        let msg = msg.clone();
                        self.at(
                            d,
                            Event::Deliver {
                                from: i,
                                to,
                                boot: to_boot,
                                msg,
                            },
                        );
                    }
                    let d = self.delay();
                    self.at(
                        d,
                        Event::Deliver {
                            from: i,
                            to,
                            boot: to_boot,
                            msg,
                        },
                    );
                }
                Out::Core { req, cmd } => {
                    if !self.core_reachable(i) {
                        continue;
                    }
                    let d = self.delay();
                    self.at(
                        d,
                        Event::Core {
                            from: i,
                            boot,
                            req,
                            cmd,
                        },
                    );
                }
                Out::After { delay, timer } => {
                    self.at(
                        delay,
                        Event::Timer {
                            node: i,
                            boot,
                            timer,
                        },
                    );
                }
                Out::Observe(obs) => {
                    self.note(|| format!("{}: {obs:?}", NODES[i]));
                    self.checker.observe(&obs)?;
                }
                Out::Note(line) => self.note(|| format!("{}: {line}", NODES[i])),
            }
        }
        Ok(())
    }

    /// After every step: each live node runs only jobs at epochs that are its own.
    fn check_runs(&self) -> Result<(), String> {
        for n in self.nodes.iter().filter(|n| n.up) {
            for (job, epoch) in n.runs() {
                self.checker.runs(&n.name, job, epoch)?;
            }
        }
        Ok(())
    }

    /// One act of the nemesis: a crash, a partition, an isolated node, a one-way cut, or
    /// healing.
    fn nemesis(&mut self) {
        let n = NODES.len();
        match self.rng.random_range(0..10) {
            0..=3 => {
                let up: Vec<usize> = (0..n).filter(|&i| self.nodes[i].up).collect();
                if up.len() <= 1 {
                    return;
                }
                let i = up[self.rng.random_range(0..up.len())];
                self.nodes[i].crash();
                self.stats.crashes += 1;
                self.note(|| format!("nemesis: {} crashes", NODES[i]));
                for p in 0..n {
                    if p != i && self.nodes[p].up && self.reaches(p, i) {
                        let boot = self.nodes[p].boot;
                        let d = self.rng.random_range(1..10);
                        self.at(
                            d,
                            Event::Disconnected {
                                node: p,
                                boot,
                                peer: i,
                            },
                        );
                    }
                }
                let back = self.rng.random_range(200..12_000);
                self.at(back, Event::Restart { node: i });
            }
            4..=5 => {
                for s in self.side.iter_mut() {
                    *s = self.rng.random_range(0..2);
                }
                self.stats.partitions += 1;
                let side = self.side;
                self.note(|| format!("nemesis: partition {side:?}"));
            }
            6 => {
                let i = self.rng.random_range(0..n);
                self.side = [0; NODES.len()];
                self.side[i] = 1;
                self.stats.partitions += 1;
                self.note(|| format!("nemesis: {} isolated", NODES[i]));
            }
            7 => {
                let a = self.rng.random_range(0..n);
                let b = (a + self.rng.random_range(1..n)) % n;
                self.cuts.push((a, b));
                self.stats.partitions += 1;
                self.note(|| format!("nemesis: one-way cut {} -> {}", NODES[a], NODES[b]));
            }
            _ => {
                self.side = [0; NODES.len()];
                self.cuts.clear();
                self.note(|| "nemesis: heal".into());
            }
        }
    }
}
