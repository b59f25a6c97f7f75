//! Membership: who is in the cluster, and keeping a full mesh to them.
//!
//! ractor_cluster connects two nodes and exchanges their actors and process groups, but it
//! neither reconnects nor keeps a mesh (its transitive mode is a one-shot snapshot), and
//! process groups only show members of directly connected nodes. So this actor:
//!
//! - dials every seed and every node it has heard of until a session to it exists, on each
//!   tick (start order does not matter; a restarted peer is dialled again);
//! - tells every peer this node's [`NodeInfo`] (address, tasks, slots, load, known peers)
//!   when it changes (at most once a gossip interval; the load only when the node starts
//!   or stops having work waiting or a free slot), and at once to a peer that just joined
//!   the `troupe.membership` group, so a new node learns the whole cluster in one round
//!   trip. Nothing is sent to every node each round: an idle node's cost does not grow
//!   with the cluster;
//! - closes connections that have not passed the cookie handshake within
//!   `handshake_timeout_ms` (ractor_cluster has no such deadline);
//! - logs one line per cluster event: node joined, node left, connection refused;
//! - refuses a second process started under a live node's name (`name_claims`), so that the
//!   first keeps its sessions;
//! - announces a node lost when a new process of it joins before its old one was seen to
//!   leave (`incarnations`), so the old process's attempts run again;
//! - marks a peer down when its connection closes, or when its probes go unanswered (SWIM:
//!   one peer probed a tick, indirect probes through others, verdicts told to every node;
//!   the rules are the pure `detector::ProbeDetector`; this actor sends the probes, closes
//!   a down peer's connections and tells the others). Probes carry the prober's record
//!   and answers the prober's peer's, so load figures keep flowing between changes.

pub(crate) mod detector;
mod incarnations;
mod name_claims;
mod seed_names;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use ractor_cluster::NodeServerMessage;
use troupe_runtime::cluster::{is_client, member_of, node_name_of, SessionEvents};
use troupe_runtime::observe::{metric, ClusterEvent, EventKind, NodeEvent, Throttle};
use troupe_runtime::protocol::membership::{Probe, ProbeFor, Verdict, PROBE_WIRE_VERSION};
use troupe_runtime::protocol::{
    membership_name, EventHubMessage, JobManagerMessage, MembershipMessage, NodeInfo, NodeState,
    SessionEvent, SessionEventKind, MEMBERSHIP_GROUP,
};
use troupe_runtime::wire::{Wire, WireVersions};

use crate::{find_on, names, NodeContext};
use detector::{ProbeDetector, Round, Transition};
use incarnations::Incarnations;
pub(crate) use name_claims::new_incarnation;
use name_claims::NameClaims;
use seed_names::SeedNames;

/// How long a node that left stays listed as down before it drops out.
const FORGET_AFTER: Duration = Duration::from_secs(60);
/// How long to wait for a dial before trying the address again.
const DIAL_RETRY: Duration = Duration::from_secs(1);
/// Dials in flight at most (a dial lasts until its handshake ends). A node that learns a
/// hundred addresses at once (from its seed, or every node of a cluster started
/// together) dials them in batches: all at once and again every `DIAL_RETRY` while the
/// handshakes were slow, they passed their deadline and piled up on a small machine.
const MAX_DIALS: usize = 16;
/// An outgoing connection the peer closes within this time of opening, before any gossip
/// from it, was refused (a duplicate node name).
const REFUSAL_WINDOW: Duration = Duration::from_secs(2);

/// The membership actor.
pub(crate) struct Membership;

struct Session {
    opened: Instant,
    authenticated: bool,
    peer: Option<String>,
    /// The peer's process (`NAME~INCARNATION`, or a client's name), once authenticated.
    process: Option<String>,
    addr: String,
    is_server: bool,
}

struct Peer {
    info: NodeInfo,
    /// Its state; every change is told to the silence detector too.
    state: NodeState,
    since: Instant,
}

/// State of the membership actor.
pub(crate) struct MembershipState {
    ctx: NodeContext,
    address: String,
    seeds: Vec<String>,
    server_id: Option<ractor::ActorId>,
    sessions: HashMap<u64, Session>,
    peers: BTreeMap<String, Peer>,
    /// Addresses heard of through gossip, by the time they were last heard.
    heard: HashMap<String, Instant>,
    dialing: HashMap<String, Instant>,
    /// Addresses whose dial (connection and handshake) has not ended yet, since when
    /// (shared with the dial tasks, which drop a failed one; an authenticated or closed
    /// session drops its own): not dialled again meanwhile, whatever `DIAL_RETRY` says.
    dials_in_flight: Arc<std::sync::Mutex<HashMap<String, Instant>>>,
    /// Connections that closed before authenticating are logged at most once a second.
    unauthenticated_log: Throttle,
    /// Failed TLS handshakes with peers we dial, logged at most once a second.
    tls_log: Arc<Throttle>,
    /// Seeds we cannot join while no peer is up (unreachable, or refusing our cookie),
    /// logged at most once a second: a node that cannot join says so.
    seed_log: Arc<Throttle>,
    /// Each peer's probes, judged every tick.
    detector: ProbeDetector,
    /// Whether this process probes (it speaks wire version 2; else it gossips its record
    /// to every peer each interval, as version 1 did).
    probing: bool,
    /// The newest wire version each peer speaks (from its session's name).
    wire: HashMap<String, u32>,
    /// What the peers were last told of this node (its record, load reduced to whether
    /// work waits and a slot is free), and when.
    told: Option<(NodeInfo, Instant)>,
    /// Ticks so far (a gossip interval is two).
    ticks: u64,
    /// When this node last refuted a verdict on itself (once a tick answers them all).
    refuted: Option<Instant>,
    /// Peers another node found down that this node probes to confirm, with who found
    /// them (for the log line of a confirmed verdict).
    confirming: HashMap<String, String>,
    /// Peers whose connection closed while this node was stalled (most likely closed by
    /// the peer, for this node's silence), by when: not counted down unless they are
    /// still not back after `failure.down_after_ms` (see `settle_closed_in_stall`).
    closed_in_stall: HashMap<String, Instant>,
    /// Sessions refused for a duplicate node name (their close is not news).
    refused: Arc<std::sync::Mutex<HashSet<u64>>>,
    /// Which session holds which node name (shared with the session callback).
    claims: Arc<std::sync::Mutex<NameClaims>>,
    /// Our connections closed by the peer right after the handshake, logged at most once
    /// a second.
    dropped_log: Throttle,
    /// The process last seen for each peer: a new one means the old one is gone.
    incarnations: Incarnations,
    /// Named seeds and what they resolve to.
    seed_names: SeedNames,
    /// The node each address we dialled turned out to be, by address.
    dialled: HashMap<String, String>,
    /// Where this node listens (read once: named seeds' lookups leave out its own).
    listen: Option<std::net::SocketAddr>,
}

impl MembershipState {
    /// Sets the `troupe_nodes{state}` gauges (this node counts as up); called whenever a
    /// peer's state changes, so that a scrape agrees with `nodes`.
    fn publish_node_counts(&self) {
        let up = 1 + self
            .peers
            .values()
            .filter(|p| p.state == NodeState::Up)
            .count();
        let down = self.peers.len() + 1 - up;
        metrics::gauge!(metric::NODES, "state" => "up").set(up as f64);
        metrics::gauge!(metric::NODES, "state" => "down").set(down as f64);
    }

    fn connected_names(&self) -> HashSet<String> {
        self.connected_peers().map(str::to_string).collect()
    }

    /// Whether an authenticated session to `node` stands. (Building the set of every
    /// connected name for one question was 4% of the CPU of 128 nodes forming their mesh:
    /// each record heard asked it.)
    fn is_connected(&self, node: &str) -> bool {
        self.connected_peers().any(|peer| peer == node)
    }

    /// The peers of authenticated sessions (a peer with two sessions comes twice).
    fn connected_peers(&self) -> impl Iterator<Item = &str> {
        self.sessions
            .values()
            .filter(|s| s.authenticated)
            .filter_map(|s| s.peer.as_deref())
    }

    fn my_info(&self) -> NodeInfo {
        NodeInfo {
            peers: self
                .peers
                .values()
                .map(|p| p.info.address.clone())
                .collect(),
            ..self.record()
        }
    }

    /// This node's record without its list of peers: what probes and answers carry (the
    /// list is built only for [`Self::my_info`]).
    fn record(&self) -> NodeInfo {
        let v = &self.ctx.view;
        NodeInfo {
            name: self.ctx.config.name.clone(),
            address: self.address.clone(),
            state: if v.is_draining() {
                NodeState::Draining
            } else {
                NodeState::Up
            },
            tasks: {
                let mut t = self.ctx.registry.names();
                t.extend(crate::gearman::lock(&self.ctx.view.gearman.board).functions());
                t.sort();
                t.dedup();
                t
            },
            slots: self.ctx.config.slots as u32,
            busy: self.ctx.scheduler.busy(),
            queued: self.ctx.scheduler.waiting(),
            peers: Vec::new(),
            task_props: self
                .ctx
                .registry
                .props()
                .into_iter()
                .filter(|(_, p)| *p != troupe_runtime::merge::TaskProps::PLAIN)
                .collect(),
            cache: v.cache.stats(),
            saturated: self.ctx.scheduler.saturated_tasks(),
            cluster: self.ctx.core.cluster_id(),
            over_target: self.ctx.scheduler.refresh_over_target().0,
        }
    }

    /// Sends this node's info to every peer.
    fn announce(&mut self, myself: &ActorRef<MembershipMessage>) {
        let hello = self.my_info();
        self.told = Some((summary(&hello), Instant::now()));
        for (_, r) in others(myself) {
            let _ = r.cast(MembershipMessage::Hello(Wire::new(hello.clone())));
        }
    }

    /// Once a tick: tells every peer this node's info if it changed since they were last
    /// told (at most once a gossip interval), and sends it every interval to the peers
    /// that speak only wire version 1 (they judge a peer by its silence). Without
    /// probing (this process speaks version 1 only), to every peer every interval.
    fn gossip(&mut self, myself: &ActorRef<MembershipMessage>) {
        self.ticks += 1;
        let interval_tick = self.ticks.is_multiple_of(2);
        if !self.probing {
            if interval_tick {
                self.announce(myself);
            }
            return;
        }
        // The record without its peer list: the summary leaves the list out, and building
        // it every tick was O(N) for nothing.
        let record = self.record();
        let interval = Duration::from_millis(self.ctx.config.gossip_interval_ms);
        let changed = self
            .told
            .as_ref()
            .is_none_or(|(told, at)| *told != summary(&record) && at.elapsed() >= interval);
        if changed {
            self.announce(myself);
        } else if interval_tick {
            let legacy: Vec<_> = others(myself)
                .into_iter()
                .filter(|(node, _)| self.is_legacy(node))
                .collect();
            if !legacy.is_empty() {
                let info = self.my_info();
                for (_, r) in legacy {
                    let _ = r.cast(MembershipMessage::Hello(Wire::new(info.clone())));
                }
            }
        }
    }

    /// Whether `node` is judged by its silence rather than probed: it (or this process)
    /// speaks only wire version 1.
    fn is_legacy(&self, node: &str) -> bool {
        !self.probing || self.wire.get(node).is_some_and(|v| *v < PROBE_WIRE_VERSION)
    }

    /// The process (`NAME~INCARNATION`) of peer `node` as its sessions name it.
    fn process_of(&self, node: &str) -> Option<String> {
        self.sessions
            .values()
            .find(|s| s.authenticated && s.peer.as_deref() == Some(node))
            .and_then(|s| s.process.clone())
    }

    /// Tells every other probing peer this node's verdict on `node`.
    fn tell_verdict(
        &self,
        myself: &ActorRef<MembershipMessage>,
        node: &str,
        down: bool,
        silent: Duration,
    ) {
        let verdict = Verdict {
            node: node.to_string(),
            process: self.process_of(node),
            down,
            by: self.ctx.config.name.clone(),
            silent_ms: silent.as_millis().try_into().unwrap_or(u64::MAX),
        };
        for (peer, r) in others(myself) {
            if peer != node && !self.is_legacy(&peer) {
                let _ = r.cast(MembershipMessage::Verdict(Wire::new(verdict.clone())));
            }
        }
    }

    /// A probe from a peer: its record is news from it; answered with ours.
    fn on_probe(&mut self, probe: Probe) {
        let from = probe.record.name.clone();
        let for_node = probe.for_node.clone();
        self.on_hello(probe.record);
        if let Some(r) = membership_of(&from) {
            let answer = Probe {
                record: self.record(),
                for_node,
            };
            let _ = r.cast(MembershipMessage::Ack(Wire::new(answer)));
        }
    }

    /// The answer to a probe: ours (news from the peer), or one a relay passes on to us
    /// (the peer lives, whatever our link to it), or one we pass on as a relay.
    fn on_ack(&mut self, ack: Probe) {
        let me = self.ctx.config.name.clone();
        match ack.for_node.clone() {
            Some(n) if n == me => {
                let node = ack.record.name;
                if let Some(Transition::Recovered { silent, .. }) =
                    self.detector.answered(&node, Instant::now())
                {
                    if let Some(p) = self.peers.get_mut(&node) {
                        if p.state == NodeState::Suspect {
                            p.state = NodeState::Up;
                        }
                    }
                    tracing::info!(node = %node, silent_ms = silent.as_millis() as u64, "node no longer suspect: it answered a probe through another node");
                    metrics::counter!(metric::MEMBERSHIP_EVENTS, "event" => "recovered")
                        .increment(1);
                }
            }
            Some(n) => {
                self.on_hello(ack.record.clone());
                if let Some(r) = membership_of(&n) {
                    let _ = r.cast(MembershipMessage::Ack(Wire::new(ack)));
                }
            }
            None => self.on_hello(ack.record),
        }
    }

    /// Another node asks this one to probe `target` for it.
    fn on_probe_for(&self, req: ProbeFor) {
        if let Some(r) = membership_of(&req.target) {
            let probe = Probe {
                record: self.record(),
                for_node: Some(req.from),
            };
            let _ = r.cast(MembershipMessage::Probe(Wire::new(probe)));
        }
    }

    /// Another node's verdict on a silent peer. One on this node is refuted by telling
    /// every peer its record at once (and counts against its local health); one on an
    /// older process of a name is ignored; a verdict of down is confirmed by this node's
    /// own probe before it counts here.
    fn on_verdict(&mut self, myself: &ActorRef<MembershipMessage>, v: Verdict) {
        let now = Instant::now();
        if v.node == self.ctx.config.name {
            // Having to refute is a sign that this node is the slow one (Lifeguard); one
            // announcement a tick answers every verdict of that tick.
            self.detector.unhealthy();
            let tick =
                ProbeDetector::tick_of(Duration::from_millis(self.ctx.config.gossip_interval_ms));
            if self.refuted.is_some_and(|t| now.duration_since(t) < tick) {
                return;
            }
            self.refuted = Some(now);
            tracing::info!(by = %v.by, down = v.down, silent_ms = v.silent_ms, health = self.detector.health(), "a node gets no answer to its probes of this one; telling every node this one lives");
            self.announce(myself);
            return;
        }
        let Some(p) = self.peers.get(&v.node) else {
            return;
        };
        if v.process
            .as_deref()
            .is_some_and(|proc| !self.incarnations.is_current(proc))
        {
            return;
        }
        if v.down {
            // A question, not an order: probe the peer now and mark it down only if this
            // node gets no answer either (see `detector`).
            let Some(wait) = self.detector.confirm(&v.node, now) else {
                tracing::debug!(node = %v.node, by = %v.by, "a verdict of down not confirmed: heard from the node within the last tick, or down here already");
                return;
            };
            let node = v.node.clone();
            myself.send_after(wait, move || MembershipMessage::ConfirmDue(node));
            if let Some(r) = membership_of(&v.node) {
                let probe = Probe {
                    record: self.record(),
                    for_node: None,
                };
                let _ = r.cast(MembershipMessage::Probe(Wire::new(probe)));
            }
            self.confirming.insert(v.node.clone(), v.by.clone());
            if p.state == NodeState::Up {
                self.suspected_by(&v, "another node found it down; probing it to confirm");
            }
        } else if p.state == NodeState::Up && self.detector.suspect(&v.node) {
            self.suspected_by(&v, "it does not answer another node's probes");
        }
    }

    /// Shows the peer of verdict `v` as suspect (logged, and an event), for `why`.
    fn suspected_by(&mut self, v: &Verdict, why: &str) {
        let Some(p) = self.peers.get_mut(&v.node) else {
            return;
        };
        p.state = NodeState::Suspect;
        let address = p.info.address.clone();
        tracing::warn!(node = %v.node, address = %address, by = %v.by, silent_ms = v.silent_ms, "node suspect: {why}");
        report(
            &self.ctx.view.node,
            NodeEvent::NodeSuspect {
                node: v.node.clone(),
                address,
                silent_ms: v.silent_ms,
            },
        );
    }

    /// Closes this node's connections to `node` (down for silence) and forgets them now,
    /// so that news already queued from it does not count as a rejoin.
    fn close_sessions_of(&mut self, node: &str) {
        let ids: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.peer.as_deref() == Some(node))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.sessions.remove(&id);
            if let Some(actor) = self.ctx.view.sessions().remove(&id) {
                actor.stop(Some("silent past failure.down_after_ms".into()));
            }
        }
    }

    fn subscribe_if_new_server(&mut self, myself: &ActorRef<MembershipMessage>) {
        let Some(server) = find_on::<NodeServerMessage>(names::NODE_SERVER, &self.ctx.view.node)
        else {
            return;
        };
        if self.server_id == Some(server.get_id()) {
            return;
        }
        self.server_id = Some(server.get_id());
        let me = myself.clone();
        let view = self.ctx.view.clone();
        let (max_conn, max_pending) = (
            self.ctx.config.max_connections.max(1),
            self.ctx.config.max_pending_handshakes.max(1),
        );
        let throttle = Throttle::default();
        let clash_log = Throttle::default();
        let version_log = Throttle::default();
        let ours = WireVersions::ours();
        let me_member =
            troupe_runtime::cluster::member_name(&self.ctx.config.name, &view.incarnation);
        // A new node server: the old one's sessions are gone.
        *crate::locked(&self.claims) = NameClaims::default();
        let claims = self.claims.clone();
        let relearn = (claims.clone(), me_member.clone());
        let refused = self.refused.clone();
        SessionEvents(move |ev: SessionEvent, actor| {
            match ev.kind {
                SessionEventKind::Opened => {
                    if !admit(&view, ev.node_id, actor, max_conn, max_pending, &throttle) {
                        return;
                    }
                }
                SessionEventKind::Authenticated => {
                    forget_pending(&view, ev.node_id);
                    // Here, inside the node server, so that a duplicate is stopped before
                    // anything is sent to it or through it.
                    if let Some(peer) = ev.peer_name.as_deref() {
                        let theirs = WireVersions::of_peer(peer);
                        if !ours.meets(&theirs) {
                            crate::locked(&refused).insert(ev.node_id);
                            view.sessions().remove(&ev.node_id);
                            // Closed a moment later, so that the peer finishes its side
                            // of the handshake and learns our versions (else it sees a
                            // connection closed mid-handshake, a wrong cookie's symptom).
                            // Nothing is sent to it: membership never hears of the session.
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(300)).await;
                                actor.stop(Some("wire version".into()));
                            });
                            metrics::counter!(metric::REFUSED, "reason" => "wire_version")
                                .increment(1);
                            version_log.warn(
                                &format!(
                                    "refused {what} {name}: it speaks wire version {theirs}, this node {ours} (troupe-node {release}); versions must overlap, so upgrade a cluster one release at a time",
                                    what = if is_client(peer) { "client" } else { "node" },
                                    name = node_name_of(peer),
                                    release = env!("CARGO_PKG_VERSION"),
                                ),
                                &ev.peer_addr,
                            );
                            return;
                        }
                        let claimed = crate::locked(&claims).claim(ev.node_id, peer, &me_member);
                        if let Err(clash) = claimed {
                            crate::locked(&refused).insert(ev.node_id);
                            view.sessions().remove(&ev.node_id);
                            actor.stop(Some("duplicate node name".into()));
                            metrics::counter!(metric::REFUSED, "reason" => "duplicate_name")
                                .increment(1);
                            clash_log.warn(&format!("refused a node: {clash}"), &ev.peer_addr);
                            return;
                        }
                    }
                    view.set_session_name(
                        ev.node_id,
                        ev.peer_name.as_deref().map(|p| node_name_of(p).to_string()),
                    );
                }
                SessionEventKind::Disconnected => {
                    forget_pending(&view, ev.node_id);
                    crate::locked(&claims).release(ev.node_id);
                    view.sessions().remove(&ev.node_id);
                }
                SessionEventKind::Ready => {
                    if crate::locked(&refused).contains(&ev.node_id) {
                        return;
                    }
                }
            }
            let _ = me.cast(MembershipMessage::Session(Wire::new(ev)));
        })
        .subscribe(&server, "troupe.membership");
        // Sessions that exist already (this actor restarted): learn them from the server.
        let me = myself.clone();
        let view = self.ctx.view.clone();
        tokio::spawn(async move {
            let Ok(ractor::rpc::CallResult::Success(sessions)) = server
                .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(2)))
                .await
            else {
                return;
            };
            let (claims, me_member) = relearn;
            for (id, s) in sessions {
                let peer = s.peer_name.as_ref().map(|p| p.name.clone());
                if let Some(p) = &peer {
                    // Sessions that stand hold their names (they passed this check).
                    let _ = crate::locked(&claims).claim(id, p, &me_member);
                }
                view.sessions().insert(id, s.actor.clone());
                view.set_session_name(id, peer.as_deref().map(|p| node_name_of(p).to_string()));
                for kind in [SessionEventKind::Opened, SessionEventKind::Authenticated] {
                    let ev = SessionEvent {
                        kind,
                        node_id: id,
                        peer_name: peer.clone(),
                        peer_addr: s.peer_addr.clone(),
                        is_server: s.is_server,
                    };
                    let _ = me.cast(MembershipMessage::Session(Wire::new(ev)));
                }
            }
        });
    }

    /// True if the node server still has an authenticated session with process `process`
    /// (`NAME~INCARNATION`: a duplicate connection that lost ractor_cluster's election
    /// closes while the other stands, and its events can arrive before the winner's; a new
    /// process under the name is no such session).
    async fn still_connected(this: &str, process: &str) -> bool {
        let Some(server) = find_on::<NodeServerMessage>(names::NODE_SERVER, this) else {
            return false;
        };
        match server
            .call(NodeServerMessage::GetSessions, Some(Duration::from_secs(1)))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(sessions)) => sessions.values().any(|s| {
                s.peer_name
                    .as_ref()
                    .is_some_and(|p| member_of(&p.name) == process)
            }),
            _ => false,
        }
    }

    async fn on_session(&mut self, ev: SessionEvent) {
        match ev.kind {
            SessionEventKind::Opened if self.sessions.contains_key(&ev.node_id) => {}
            SessionEventKind::Opened => {
                self.sessions.insert(
                    ev.node_id,
                    Session {
                        opened: Instant::now(),
                        authenticated: false,
                        peer: None,
                        process: None,
                        addr: ev.peer_addr,
                        is_server: ev.is_server,
                    },
                );
            }
            SessionEventKind::Authenticated | SessionEventKind::Ready => {
                if let Some(s) = self.sessions.get_mut(&ev.node_id) {
                    s.authenticated = true;
                    s.peer = ev.peer_name.as_deref().map(|p| node_name_of(p).to_string());
                    s.process = ev.peer_name.as_deref().map(|p| member_of(p).to_string());
                    if !s.is_server {
                        self.dialing.remove(&s.addr);
                        crate::locked(&self.dials_in_flight).remove(&s.addr);
                        if let Some(peer) = &s.peer {
                            self.dialled.insert(s.addr.clone(), peer.clone());
                        }
                    }
                }
                if let Some(peer) = ev.peer_name.as_deref() {
                    let newest = WireVersions::of_peer(peer).newest;
                    self.wire.insert(node_name_of(peer).to_string(), newest);
                    self.on_process(peer);
                }
            }
            SessionEventKind::Disconnected => {
                let refused = crate::locked(&self.refused).remove(&ev.node_id);
                let Some(s) = self.sessions.remove(&ev.node_id) else {
                    return;
                };
                self.ctx.view.set_session_name(ev.node_id, None);
                if !s.is_server {
                    self.dialing.remove(&s.addr);
                    crate::locked(&self.dials_in_flight).remove(&s.addr);
                }
                if refused {
                    return; // logged by the session callback, with the clash
                }
                if !s.authenticated {
                    let me = troupe_runtime::cluster::member_name(
                        &self.ctx.config.name,
                        &self.ctx.view.incarnation,
                    );
                    if let Some(clash) = ev
                        .peer_name
                        .as_deref()
                        .and_then(|p| crate::locked(&self.claims).clash(ev.node_id, p, &me))
                    {
                        // A duplicate's connection that lost to its refused twin.
                        metrics::counter!(metric::REFUSED, "reason" => "duplicate_name")
                            .increment(1);
                        tracing::debug!(peer = %s.addr, %clash, "connection of a refused duplicate closed during its handshake");
                        return;
                    }
                    if s.is_server {
                        metrics::counter!(metric::REFUSED, "reason" => "not_authenticated")
                            .increment(1);
                        self.unauthenticated_log.warn(
                            "connection closed before it authenticated: wrong cookie, garbage, or not a troupe peer",
                            &s.addr,
                        );
                    } else if self.alone() {
                        self.seed_log.warn(
                            "not joined yet: a node we dialled closed the connection during the handshake; most likely its cookie differs from ours (check --cookie or TROUPE_COOKIE), or one side uses TLS and the other does not",
                            &s.addr,
                        );
                    } else {
                        tracing::debug!(peer = %s.addr, "outgoing connection closed before it authenticated");
                    }
                    return;
                }
                let Some(name) = s.peer else { return };
                if s.process
                    .as_deref()
                    .is_some_and(|p| !self.incarnations.is_current(p))
                {
                    return; // an old process, marked down when its successor joined
                }
                if self.sessions.values().any(|o| {
                    o.authenticated && o.peer.as_ref() == Some(&name) && o.process == s.process
                }) {
                    // A duplicate session lost the election; the other one stands. What
                    // was sent on this one may be lost: ask the peer.
                    self.connection_replaced(name);
                    return;
                }
                if !s.is_server
                    && !self.peers.contains_key(&name)
                    && s.opened.elapsed() < REFUSAL_WINDOW
                {
                    // We dialled, it authenticated us, and closed before any gossip: what
                    // a node does to a second process under a live node's name.
                    metrics::counter!(metric::REFUSED, "reason" => "closed_by_peer").increment(1);
                    self.dropped_log.warn(
                        &format!(
                            "node {name} closed our connection right after the handshake: it refuses this process, most likely because a live node named {me} is already a member (duplicate node name); node names must be unique. Start this node under another --name; a restarted node is admitted once its old process is gone",
                            me = self.ctx.config.name
                        ),
                        &s.addr,
                    );
                    return;
                }
                if self
                    .peers
                    .get(&name)
                    .is_some_and(|p| p.state == NodeState::Up)
                    && Self::still_connected(
                        &self.ctx.view.node,
                        s.process.as_deref().unwrap_or(&name),
                    )
                    .await
                {
                    self.connection_replaced(name);
                    return;
                }
                let down_after = Duration::from_millis(self.ctx.config.failure.down_after_ms);
                let now = Instant::now();
                if self
                    .peers
                    .get(&name)
                    .is_some_and(|p| p.state == NodeState::Up)
                    && self.detector.stalled_lately(now, down_after)
                {
                    // This node was paused or starved: the peer closed the connection
                    // for our silence, and dials back. Counting it down would run again
                    // every attempt it holds for us.
                    tracing::info!(node = %name, "a connection closed while this node was stalled; waiting for the node to dial back before counting it down");
                    self.closed_in_stall.insert(name, now);
                    return;
                }
                if self.peers.contains_key(&name) {
                    self.mark_down(&name, "connection closed");
                } else {
                    tracing::debug!(client = %name, "client disconnected");
                }
            }
        }
    }

    /// A connection to member `name` closed while another one to the same process stands:
    /// the peer is not down, but what this node sent on the closed connection may be lost,
    /// so it checks that the peer holds the attempts sent to it (see
    /// [`crate::scheduler::audit`]).
    fn connection_replaced(&self, name: String) {
        if self.peers.contains_key(&name) {
            tracing::debug!(node = %name, "a connection to a member closed while another stands");
            crate::scheduler::audit::after_connection_replaced(self.ctx.scheduler.clone(), name);
        }
    }

    /// A session with process `peer` (`NAME~INC@host`) authenticated. A new process under
    /// the name of a member not yet seen to leave (killed and restarted at once): the old
    /// one is lost, its work goes elsewhere; the new one joins as any returning node.
    fn on_process(&mut self, peer: &str) {
        let Some(old) = self.incarnations.seen(peer) else {
            return;
        };
        let name = node_name_of(peer).to_string();
        if self
            .peers
            .get(&name)
            .is_some_and(|p| p.state != NodeState::Down)
        {
            let new = member_of(peer);
            self.mark_down(
                &name,
                &format!("restarted: its process {old} was replaced by {new}"),
            );
        }
    }

    fn on_hello(&mut self, info: NodeInfo) {
        if info.name == self.ctx.config.name || self.refuse_other_cluster(&info) {
            return;
        }
        let now = Instant::now();
        self.ctx.view.learn_props(info.task_props.clone());
        self.ctx
            .view
            .set_saturated(&info.name, info.saturated.iter().cloned().collect());
        self.ctx.view.set_peer_waiting(&info.name, info.queued);
        self.ctx.view.set_over_target(&info.name, info.over_target);
        self.ctx
            .scheduler
            .peer_load(&info.name, info.slots, info.busy, info.queued);
        let (name, queued) = (info.name.clone(), info.queued);
        for a in &info.peers {
            self.heard.insert(a.clone(), now);
        }
        let connected = self.is_connected(&info.name);
        let state = match (connected, info.state) {
            (true, NodeState::Draining) => NodeState::Draining,
            (true, _) => NodeState::Up,
            (false, _) => NodeState::Down,
        };
        let legacy = self.is_legacy(&info.name);
        match self.peers.get_mut(&info.name) {
            Some(p) => {
                let recovered = self.detector.heard(&info.name, now, state);
                self.detector.set_legacy(&info.name, legacy);
                if state == NodeState::Draining && p.state != NodeState::Draining {
                    tracing::info!(node = %info.name, "node is leaving (draining)");
                } else if let Some(Transition::Recovered { silent, .. }) = recovered {
                    tracing::info!(node = %info.name, silent_ms = silent.as_millis() as u64, "node no longer suspect: heard from again");
                    metrics::counter!(metric::MEMBERSHIP_EVENTS, "event" => "recovered")
                        .increment(1);
                } else if p.state != NodeState::Up && state == NodeState::Up {
                    tracing::info!(node = %info.name, address = %info.address, "node joined (rejoined)");
                    report(
                        &self.ctx.view.node,
                        NodeEvent::NodeUp {
                            node: info.name.clone(),
                            address: info.address.clone(),
                            rejoined: true,
                        },
                    );
                    p.since = now;
                }
                if state != NodeState::Down {
                    // Heard from it on a live connection: dispatchers may use it again.
                    self.ctx.view.set_down(&info.name, false);
                }
                p.state = state;
                p.info = info;
            }
            None => {
                self.detector.heard(&info.name, now, state);
                self.detector.set_legacy(&info.name, legacy);
                if state == NodeState::Up {
                    tracing::info!(node = %info.name, address = %info.address, tasks = info.tasks.len(), "node joined");
                    report(
                        &self.ctx.view.node,
                        NodeEvent::NodeUp {
                            node: info.name.clone(),
                            address: info.address.clone(),
                            rejoined: false,
                        },
                    );
                }
                self.peers.insert(
                    info.name.clone(),
                    Peer {
                        info,
                        state,
                        since: now,
                    },
                );
            }
        }
        // After the state above: a node this one held down and hears from again is
        // stolen from and handed work only once it is no longer down here.
        self.share_work_with(&name, queued);
        self.publish_node_counts();
    }

    /// Work moves between this node and peer `node`, whose record was just heard: if
    /// work waits there (`queued`), this node steals some when idle; if it has room,
    /// work waiting here goes to it (a node that just joined takes work now).
    fn share_work_with(&self, node: &str, queued: u32) {
        let scheduler = &self.ctx.scheduler;
        if queued > 0 {
            scheduler.steal();
        }
        let moved = scheduler.spill(node);
        if !moved.is_empty() {
            if let Some(jm) =
                crate::find_on::<JobManagerMessage>(crate::names::JOB_MANAGER, &self.ctx.view.node)
            {
                for m in moved {
                    let _ = jm.cast(JobManagerMessage::Moved(Wire::new(m)));
                }
            }
        }
    }

    /// True (and its sessions closed) if `info` comes from a node of another cluster: both
    /// know their cluster's id and the ids differ (two clusters sharing a cookie).
    fn refuse_other_cluster(&mut self, info: &NodeInfo) -> bool {
        let (Some(mine), Some(theirs)) = (self.ctx.core.cluster_id(), info.cluster.as_ref()) else {
            return false;
        };
        if mine == *theirs {
            return false;
        }
        self.unauthenticated_log.warn(
            &format!(
                "refused node {}: it belongs to cluster {theirs}, this node to cluster {mine} (give each cluster its own cookie)",
                info.name
            ),
            &info.name,
        );
        let sessions = self.ctx.view.sessions();
        for (id, s) in &self.sessions {
            if s.peer.as_deref() == Some(info.name.as_str()) {
                if let Some(a) = sessions.get(id) {
                    a.stop(Some("a node of another cluster".into()));
                }
            }
        }
        drop(sessions);
        self.mark_down(&info.name, "it belongs to another cluster");
        true
    }

    /// Marks a peer that was up (or suspect) down: its work goes elsewhere.
    fn mark_down(&mut self, name: &str, reason: &str) {
        let Some(p) = self.peers.get_mut(name) else {
            return;
        };
        if p.state == NodeState::Down {
            return;
        }
        p.state = NodeState::Down;
        p.since = Instant::now();
        self.detector.down(name);
        tracing::info!(node = %name, address = %p.info.address, reason, "node left: {reason}");
        report(
            &self.ctx.view.node,
            NodeEvent::NodeDown {
                node: name.to_string(),
                address: p.info.address.clone(),
                reason: reason.into(),
            },
        );
        self.ctx.view.set_down(name, true);
        self.ctx.scheduler.node_down(name);
        crate::core::peer_down(&self.ctx.view.node, name);
        // The job manager's copies of the node's jobs: their grace period starts now,
        // and they are asked for the moment it ends (not at a later periodic sweep).
        if let Some(jm) = crate::job_manager_of(&self.ctx.view.node) {
            let _ = jm.cast(JobManagerMessage::SweepCopies);
            let grace = Duration::from_millis(self.ctx.config.failure.takeover_after_ms);
            jm.send_after(grace + Duration::from_millis(5), || {
                JobManagerMessage::SweepCopies
            });
        }
        crate::merger::announce_node_down(&self.ctx.view.node, name);
        self.publish_node_counts();
    }

    /// The failure detector's tick: sends this tick's probe and the indirect ones, and
    /// carries out its verdicts (suspect, down: the peer's connections are closed, since
    /// ractor_cluster keeps a silent connection open for as long as TCP does, which is
    /// minutes), telling every other node. Skips a round in which this node itself
    /// stalled.
    fn detect_silent(&mut self, myself: &ActorRef<MembershipMessage>, now: Instant) {
        let transitions = match self.detector.tick(now) {
            Round::Stalled { late_by } => {
                tracing::warn!(
                    stalled_ms = late_by.as_millis() as u64,
                    "this node's membership work ran late (an overloaded or paused process); not judging peers this round"
                );
                return;
            }
            Round::Judged(transitions) => transitions,
        };
        let mut silent = Vec::new();
        for t in transitions {
            match t {
                Transition::Probe { node } => {
                    if let Some(r) = membership_of(&node) {
                        let probe = Probe {
                            record: self.record(),
                            for_node: None,
                        };
                        let _ = r.cast(MembershipMessage::Probe(Wire::new(probe)));
                    }
                }
                Transition::ProbeThrough { node, through } => {
                    tracing::debug!(node = %node, through = ?through, "no answer to a probe; probing through other nodes");
                    let req = ProbeFor {
                        from: self.ctx.config.name.clone(),
                        target: node,
                    };
                    for relay in through {
                        if let Some(r) = membership_of(&relay) {
                            let _ = r.cast(MembershipMessage::ProbeFor(Wire::new(req.clone())));
                        }
                    }
                }
                Transition::Suspect { node, silent } => {
                    let Some(p) = self.peers.get_mut(&node) else {
                        continue;
                    };
                    p.state = NodeState::Suspect;
                    tracing::warn!(node = %node, address = %p.info.address, silent_ms = silent.as_millis() as u64, "node suspect: not heard from");
                    report(
                        &self.ctx.view.node,
                        NodeEvent::NodeSuspect {
                            node: node.clone(),
                            address: p.info.address.clone(),
                            silent_ms: silent.as_millis() as u64,
                        },
                    );
                    if !self.is_legacy(&node) {
                        self.tell_verdict(myself, &node, false, silent);
                    }
                }
                Transition::Down {
                    node,
                    silent: quiet,
                    confirmed,
                } => silent.push((node, quiet, confirmed)),
                Transition::Recovered { .. } => {}
            }
        }
        for (name, quiet, confirmed) in silent {
            self.silent_down(myself, &name, quiet, confirmed);
        }
        metrics::gauge!(metric::LOCAL_HEALTH).set(f64::from(self.detector.health()));
    }

    /// The wait for the answer to a probe that confirms another node's verdict on `node`
    /// is over: down now if it is still unanswered.
    fn confirm_due(&mut self, node: &str) {
        if let Some(Transition::Down { silent, .. }) =
            self.detector.confirm_due(node, Instant::now())
        {
            self.mark_silent(node, silent, true);
        }
    }

    /// `name` is down for its silence: told to the others unless this node only
    /// confirmed another's verdict (or the peer speaks only wire version 1), then marked
    /// down and its sessions closed.
    fn silent_down(
        &mut self,
        myself: &ActorRef<MembershipMessage>,
        name: &str,
        quiet: Duration,
        confirmed: bool,
    ) {
        if !confirmed && !self.is_legacy(name) {
            self.tell_verdict(myself, name, true, quiet);
        }
        self.mark_silent(name, quiet, confirmed);
    }

    /// Marks `name` down for its silence and closes its sessions; the log line names who
    /// found it down when this node `confirmed` another's verdict.
    fn mark_silent(&mut self, name: &str, quiet: Duration, confirmed: bool) {
        let by = self.confirming.remove(name).filter(|_| confirmed);
        let reason = match by {
            Some(by) => format!(
                "silent for {} ms (found down by {by}, and no answer to this node's probe)",
                quiet.as_millis()
            ),
            None => format!("silent for {} ms", quiet.as_millis()),
        };
        self.mark_down(name, &reason);
        self.close_sessions_of(name);
    }

    /// Peers whose connection closed while this node was stalled: one connected again is
    /// asked which of the attempts sent to it it holds (as after any replaced
    /// connection); one still not back `failure.down_after_ms` after the close is down.
    fn settle_closed_in_stall(&mut self, now: Instant) {
        if self.closed_in_stall.is_empty() {
            return;
        }
        let down_after = Duration::from_millis(self.ctx.config.failure.down_after_ms);
        let pending: Vec<(String, Instant)> = self.closed_in_stall.drain().collect();
        for (name, since) in pending {
            let back = self
                .sessions
                .values()
                .any(|o| o.authenticated && o.peer.as_ref() == Some(&name));
            if back {
                tracing::info!(node = %name, "a node whose connection closed while this node was stalled is connected again");
                self.connection_replaced(name);
            } else if !self.peers.contains_key(&name) {
                // Gone another way (left, forgotten) meanwhile.
            } else if now.saturating_duration_since(since) >= down_after {
                self.mark_down(&name, "connection closed, not back after this node stalled");
            } else {
                self.closed_in_stall.insert(name, since);
            }
        }
    }

    fn tick(&mut self, myself: &ActorRef<MembershipMessage>) {
        self.subscribe_if_new_server(myself);
        let now = Instant::now();
        self.settle_closed_in_stall(now);
        self.detect_silent(myself, now);
        // Stretched by local health: a starved node (a cluster forming on a small machine)
        // that closes handshakes at the plain deadline only makes them start over.
        let deadline = self.ctx.config.handshake_timeout() * (1 + self.detector.health());

        // Connections stuck before authentication.
        let stalled: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.authenticated && now.duration_since(s.opened) > deadline)
            .map(|(id, _)| *id)
            .collect();
        for id in stalled {
            if let Some(s) = self.sessions.remove(&id) {
                tracing::warn!(peer = %s.addr, timeout_ms = deadline.as_millis() as u64, "closing a connection that did not finish the handshake in time");
                if let Some(actor) = self.ctx.view.sessions().remove(&id) {
                    actor.stop(Some("handshake timeout".into()));
                }
            }
        }

        // Peers marked down long enough drop out; so do addresses nobody mentions any more.
        // (Only down ones: a suspect or draining peer up for a minute was forgotten here
        // before its verdict, so a silent node was never declared down.)
        let detector = &mut self.detector;
        self.peers.retain(|name, p| {
            let keep = !forgotten(p.state, p.since, now);
            if !keep {
                detector.forget(name);
            }
            keep
        });
        let connected = self.connected_names();
        let peers = &self.peers;
        self.incarnations
            .retain(|n| peers.contains_key(n) || connected.contains(n));
        self.confirming.retain(|n, _| peers.contains_key(n));
        self.heard
            .retain(|_, t| now.duration_since(*t) < FORGET_AFTER);

        // Peers that are down still count as "seen" (we keep dialing them) until forgotten.
        for p in self.peers.values_mut() {
            if connected.contains(&p.info.name) && p.state == NodeState::Down {
                p.state = NodeState::Up;
                p.since = now;
                self.detector.heard(&p.info.name, now, NodeState::Up);
                self.ctx.view.set_down(&p.info.name, false);
                tracing::info!(node = %p.info.name, address = %p.info.address, "node joined (rejoined)");
                report(
                    &self.ctx.view.node,
                    NodeEvent::NodeUp {
                        node: p.info.name.clone(),
                        address: p.info.address.clone(),
                        rejoined: true,
                    },
                );
            }
        }

        self.publish_node_counts();

        // Dial what we should be connected to and are not.
        let mut connected_addrs: HashSet<String> = self
            .peers
            .values()
            .filter(|p| connected.contains(&p.info.name))
            .map(|p| p.info.address.clone())
            .collect();
        connected_addrs.extend(
            self.sessions
                .values()
                .filter(|s| !s.is_server && s.authenticated)
                .map(|s| s.addr.clone()),
        );
        // Seeds given as names are dialled at what they resolve to now (`seed_names`).
        let alone = self.alone();
        let listen = self.listen;
        let mut seed_addrs: HashSet<String> = HashSet::new();
        for seed in &self.seeds {
            if *seed == self.address || connected_addrs.contains(seed) {
                continue;
            }
            match listen {
                Some(listen) if seed_names::is_name(seed) => seed_addrs.extend(
                    self.seed_names
                        .addresses(seed, DIAL_RETRY, listen, alone, myself),
                ),
                _ => {
                    seed_addrs.insert(seed.clone());
                }
            }
        }
        // An address we dialled before and whose node is connected (by either side's
        // connection) needs no dial: a seed's IP address is not what its node advertises.
        seed_addrs.retain(|a| {
            self.dialled
                .get(a)
                .is_none_or(|name| !connected.contains(name))
        });
        // Seeds first, then the others in random order (so that nodes that learned the
        // same addresses do not all dial the same node first).
        let mut targets: Vec<String> = seed_addrs.iter().cloned().collect();
        targets.sort();
        let mut others: Vec<String> = self
            .peers
            .values()
            .map(|p| p.info.address.clone())
            .chain(self.heard.keys().cloned())
            .filter(|a| !seed_addrs.contains(a) && !connected_addrs.contains(a))
            .collect();
        others.sort();
        others.dedup();
        rand::seq::SliceRandom::shuffle(others.as_mut_slice(), &mut rand::rng());
        targets.extend(others);
        self.dialing
            .retain(|_, t| now.duration_since(*t) < DIAL_RETRY);
        let stale = deadline + DIAL_RETRY;
        let mut in_flight = {
            let mut dials = crate::locked(&self.dials_in_flight);
            dials.retain(|_, since| now.duration_since(*since) < stale);
            dials.len()
        };
        let Some(server) = find_on::<NodeServerMessage>(names::NODE_SERVER, &self.ctx.view.node)
        else {
            return;
        };
        for addr in targets {
            if in_flight >= MAX_DIALS {
                break;
            }
            if addr == self.address
                || connected_addrs.contains(&addr)
                || self.dialing.contains_key(&addr)
                || crate::locked(&self.dials_in_flight)
                    .insert(addr.clone(), now)
                    .is_some()
            {
                continue;
            }
            in_flight += 1;
            self.dialing.insert(addr.clone(), now);
            let dials = self.dials_in_flight.clone();
            let server = server.clone();
            let tls = self.ctx.tls.clone();
            let tls_log = self.tls_log.clone();
            // A node that has joined nobody says why; later, failed dials are routine
            // (a peer restarting) and the failure detector reports them.
            let seed_log = (alone && seed_addrs.contains(&addr)).then(|| self.seed_log.clone());
            tokio::spawn(async move {
                let dialled =
                    troupe_runtime::tls::dial(&server, &addr, tls.as_ref(), deadline).await;
                if dialled.is_err() {
                    crate::locked(&dials).remove(&addr);
                }
                match dialled {
                    Ok(()) => {}
                    Err(e) if e.is_tls() => tls_log.warn(
                        &format!("cannot join peer: {e}. Check that its certificate is signed by our --tls-ca and names the address we dial"),
                        &addr,
                    ),
                    Err(e) => match seed_log {
                        Some(log) => log.warn(
                            &format!("not joined yet: cannot reach seed ({e}); retrying. Check that a node runs there and that --seeds is right"),
                            &addr,
                        ),
                        None => tracing::debug!(peer = %addr, error = %e, "dial failed; will retry"),
                    },
                }
            });
        }

        self.gossip(myself);
    }

    /// True while no peer is up: this node has joined nobody (yet).
    fn alone(&self) -> bool {
        !self.peers.values().any(|p| p.state == NodeState::Up)
    }

    fn list(&self) -> Vec<NodeInfo> {
        let mut out = vec![self.my_info()];
        out.extend(self.peers.values().map(|p| NodeInfo {
            state: p.state,
            ..p.info.clone()
        }));
        out
    }
}

/// Applies the connection limits to a session that just opened: false (and the session
/// closed) if the node has `max_conn` connections already; past `max_pending` sessions in
/// their handshake, the oldest of those is closed to make room.
fn admit(
    view: &crate::ClusterView,
    id: u64,
    actor: ActorRef<ractor_cluster::NodeSessionMessage>,
    max_conn: usize,
    max_pending: usize,
    throttle: &Throttle,
) -> bool {
    let mut sessions = view.sessions();
    if sessions.len() >= max_conn {
        drop(sessions);
        actor.stop(Some("too many connections".into()));
        metrics::counter!(metric::REFUSED, "reason" => "too_many_connections").increment(1);
        throttle.warn(
            &format!("refused a connection: {max_conn} open already (max_connections)"),
            &format!("session {id}"),
        );
        return false;
    }
    sessions.insert(id, actor);
    let mut pending = view
        .pending_handshakes
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    pending.push_back(id);
    while pending.len() > max_pending {
        let Some(old) = pending.pop_front() else {
            break;
        };
        if let Some(a) = sessions.remove(&old) {
            a.stop(Some("handshake slots full".into()));
        }
        metrics::counter!(metric::REFUSED, "reason" => "handshake_evicted").increment(1);
        throttle.warn(
            &format!(
                "closed the oldest connection still in its handshake: {max_pending} handshakes in progress (max_pending_handshakes)"
            ),
            &format!("session {old}"),
        );
    }
    true
}

/// Whether a peer in `state` since `since` drops out of the list at `now`: only one down
/// for [`FORGET_AFTER`]. A suspect or draining peer stays, whatever its age: one forgotten
/// before its verdict was never declared down (the nemesis lost jobs of a node cut off a
/// minute after the cluster started).
fn forgotten(state: NodeState, since: Instant, now: Instant) -> bool {
    state == NodeState::Down && now.duration_since(since) >= FORGET_AFTER
}

/// What peers are told again when it changes: the record, its load reduced to whether
/// work waits and whether a slot is free (what stealing and spilling act on), without
/// the merger's counters and the list of peers.
fn summary(info: &NodeInfo) -> NodeInfo {
    NodeInfo {
        busy: u32::from(info.busy < info.slots),
        queued: u32::from(info.queued > 0),
        cache: Default::default(),
        peers: Vec::new(),
        ..info.clone()
    }
}

/// The membership actors of the other nodes this process sees, with their nodes.
fn others(myself: &ActorRef<MembershipMessage>) -> Vec<(String, ActorRef<MembershipMessage>)> {
    let prefix = membership_name("");
    ractor::pg::get_members(&MEMBERSHIP_GROUP.to_string())
        .into_iter()
        .filter(|m| m.get_id() != myself.get_id())
        .filter_map(|m| {
            let node = m.get_name()?.strip_prefix(&prefix)?.to_string();
            Some((node, m.into()))
        })
        .collect()
}

/// The membership actor of `node`, if this process sees it.
fn membership_of(node: &str) -> Option<ActorRef<MembershipMessage>> {
    let name = membership_name(node);
    ractor::pg::get_members(&MEMBERSHIP_GROUP.to_string())
        .into_iter()
        .find(|m| m.get_name().as_deref() == Some(name.as_str()))
        .map(Into::into)
}

fn forget_pending(view: &crate::ClusterView, id: u64) {
    view.pending_handshakes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|x| *x != id);
}

/// Counts a membership change and hands it to this node's event hub.
fn report(node: &str, ev: NodeEvent) {
    let label = match &ev {
        NodeEvent::NodeUp {
            rejoined: false, ..
        } => "up",
        NodeEvent::NodeUp { rejoined: true, .. } => "rejoined",
        NodeEvent::NodeSuspect { .. } => "suspect",
        NodeEvent::NodeDown { .. } => "down",
    };
    metrics::counter!(metric::MEMBERSHIP_EVENTS, "event" => label).increment(1);
    if let NodeEvent::NodeUp { node: peer, .. } = &ev {
        // The job manager tells a node that comes back which of its jobs moved.
        if let Some(jm) = troupe_runtime::protocol::first_member::<
            troupe_runtime::protocol::JobManagerMessage,
        >(&troupe_runtime::protocol::job_manager_group(node))
        {
            let _ = jm.cast(troupe_runtime::protocol::JobManagerMessage::NodeUp(
                peer.clone(),
            ));
        }
    }
    if let Some(hub) = crate::find_on::<EventHubMessage>(crate::names::EVENT_HUB, node) {
        let _ = hub.cast(EventHubMessage::Publish(Wire::new(ClusterEvent::now(
            node,
            EventKind::Node(ev),
        ))));
    }
}

impl Actor for Membership {
    type Msg = MembershipMessage;
    type State = MembershipState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let address = ctx.config.advertised()?;
        let ctx_listen = ctx.config.listen_addr().ok();
        // Normalized by the configuration, as advertised addresses are: the two compare.
        let seeds = ctx.config.seeds.clone();
        ractor::pg::join(MEMBERSHIP_GROUP.to_string(), vec![myself.get_cell()]);
        ractor::pg::monitor(MEMBERSHIP_GROUP.to_string(), myself.get_cell());
        let gossip = Duration::from_millis(ctx.config.gossip_interval_ms.max(10));
        let detector = ProbeDetector::new(
            gossip,
            Duration::from_millis(ctx.config.failure.suspect_after_ms),
            Duration::from_millis(ctx.config.failure.down_after_ms),
            Instant::now(),
        );
        myself.send_interval(ProbeDetector::tick_of(gossip), || MembershipMessage::Tick);
        let mut state = MembershipState {
            ctx,
            address,
            seeds,
            server_id: None,
            sessions: HashMap::new(),
            peers: BTreeMap::new(),
            heard: HashMap::new(),
            dialing: HashMap::new(),
            dials_in_flight: Arc::default(),
            unauthenticated_log: Throttle::default(),
            tls_log: Arc::default(),
            seed_log: Arc::default(),
            detector,
            probing: WireVersions::ours().newest >= PROBE_WIRE_VERSION,
            wire: HashMap::new(),
            told: None,
            refuted: None,
            confirming: HashMap::new(),
            closed_in_stall: HashMap::new(),
            ticks: 0,
            refused: Arc::default(),
            claims: Arc::default(),
            dropped_log: Throttle::default(),
            incarnations: Incarnations::default(),
            seed_names: SeedNames::default(),
            dialled: HashMap::new(),
            listen: ctx_listen,
        };
        state.tick(&myself);
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            MembershipMessage::Tick => state.tick(&myself),
            MembershipMessage::Announce => state.announce(&myself),
            MembershipMessage::Session(ev) => match ev.into_inner() {
                Ok(ev) => state.on_session(ev).await,
                Err(e) => tracing::warn!(error = %e, "unreadable session event"),
            },
            MembershipMessage::Hello(info) => match info.into_inner() {
                Ok(info) => state.on_hello(info),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable gossip from a peer; is it the same troupe version?")
                }
            },
            MembershipMessage::Probe(p) => match p.into_inner() {
                Ok(p) => state.on_probe(p),
                Err(e) => tracing::warn!(error = %e, "unreadable probe from a peer"),
            },
            MembershipMessage::Ack(p) => match p.into_inner() {
                Ok(p) => state.on_ack(p),
                Err(e) => tracing::warn!(error = %e, "unreadable probe answer from a peer"),
            },
            MembershipMessage::ProbeFor(p) => match p.into_inner() {
                Ok(p) => state.on_probe_for(p),
                Err(e) => tracing::warn!(error = %e, "unreadable probe request from a peer"),
            },
            MembershipMessage::Verdict(v) => match v.into_inner() {
                Ok(v) => state.on_verdict(&myself, v),
                Err(e) => tracing::warn!(error = %e, "unreadable verdict from a peer"),
            },
            MembershipMessage::ConfirmDue(node) => state.confirm_due(&node),
            MembershipMessage::ListNodes(reply) => {
                let _ = reply.send(Wire::new(state.list()));
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Join(_, _, members)) = evt
        {
            // A node just became visible: introduce ourselves at once rather than next tick.
            let hello = state.my_info();
            for m in members {
                if m.get_id() != myself.get_id() {
                    let r: ActorRef<MembershipMessage> = m.into();
                    let _ = r.cast(MembershipMessage::Hello(Wire::new(hello.clone())));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_peer_down_for_a_minute_is_forgotten() {
        let since = Instant::now();
        let later = since + FORGET_AFTER + Duration::from_secs(1);
        assert!(forgotten(NodeState::Down, since, later));
        assert!(!forgotten(
            NodeState::Down,
            since,
            since + Duration::from_secs(1)
        ));
        for state in [NodeState::Up, NodeState::Suspect, NodeState::Draining] {
            assert!(!forgotten(state, since, later), "{state:?} was forgotten");
        }
    }
}
