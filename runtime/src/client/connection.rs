//! A client's place in the cluster: its endpoint (a ractor_cluster node server on an
//! ephemeral loopback port), the seeds it dials with the cookie, the sessions that are
//! ready, the closing of sessions to nodes gone silent, and the re-dialling of seeds
//! whose session closed.
//!
//! A node cut off by the network sends no close: without a check, the client's session
//! to it would stand forever, with its actors in this process's groups, and every call
//! routed there (an actor whose owner it is) would wait out its timeout. Nodes find a
//! silent peer with their failure detector; a client, which has none, asks each node's
//! membership actor a small question every second and closes the session of a node that
//! has not answered for [`SILENT_FOR`]. Its actors leave the groups, and calls go to the
//! nodes that took its work over.
//!
//! The client is a cluster member like a node, so the cookie handshake (and TLS, when the
//! nodes use it) authenticates it; it serves no tasks and hosts only its watcher.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServerMessage, NodeSessionMessage};
use tokio::sync::mpsc;

use super::options::ClientOptions;
use super::watcher::{Subscriptions, Watcher};
use crate::cluster::{node_name_of, start_server, ServerOptions, SessionEvents};
use crate::error::ClientError;
use crate::protocol::groups::{client_group, membership_name, MEMBERSHIP_GROUP};
use crate::protocol::membership::{MembershipMessage, SessionEvent, SessionEventKind};
use crate::protocol::watcher::WatcherMessage;
use crate::wire::WireVersions;

/// How often a client checks its sessions and looks for seeds whose session closed.
const REDIAL_EVERY: Duration = Duration::from_secs(1);
/// How long a node may leave the client's question unanswered before its session is
/// closed (longer than a node's own failure detector takes, `failure.down_after_ms`).
const SILENT_FOR: Duration = Duration::from_secs(4);

/// A session of this client's endpoint.
struct Live {
    /// The address dialled or dialled from.
    addr: String,
    /// The node's name, once it authenticated.
    node: Option<String>,
    /// The session actor (stopping it closes the session).
    actor: ActorRef<NodeSessionMessage>,
}

/// An open connection to a cluster; dropping it stops the endpoint and the watcher.
pub(crate) struct Connection {
    /// This client's member name (`client-PID-RANDOM`).
    pub(crate) name: String,
    /// How it was opened.
    pub(crate) opts: ClientOptions,
    server: ActorRef<NodeServerMessage>,
    watcher: ActorRef<WatcherMessage>,
    /// The jobs this client follows.
    pub(crate) subs: Subscriptions,
    /// Node names with a ready session, in the order they became ready.
    ready: Arc<Mutex<Vec<String>>>,
    /// Round-robin counter of submissions.
    pub(crate) next_submit: AtomicUsize,
    /// Until when the cluster asked this client to hold its submissions (it refused one
    /// as overloaded): every waiting submission holds, so that one probe, not all of
    /// them, asks again each time.
    pub(crate) overloaded_until: Mutex<Option<std::time::Instant>>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.watcher.stop(None);
        self.server.stop(None);
    }
}

impl Connection {
    /// Starts the endpoint and the watcher, dials the seeds and returns once one node
    /// accepted this client.
    pub(crate) async fn open(opts: ClientOptions) -> Result<Arc<Connection>, ClientError> {
        if opts.seeds.is_empty() {
            return Err(ClientError::BadInput(
                "no seeds given: pass --seeds HOST:PORT (or set TROUPE_SEEDS)".into(),
            ));
        }
        let seeds_text = opts.seeds.join(",");
        let name = format!("client-{}-{:x}", std::process::id(), rand::random::<u32>());
        let server = start_server(
            &ServerOptions {
                name: crate::cluster::client_member_name(&name),
                host: "127.0.0.1".into(),
                bind: [127, 0, 0, 1].into(),
                port: 0,
                cookie: opts.cookie.clone(),
                max_frame_bytes: ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
                tls: opts.tls.clone(),
                session_ping_ms: crate::cluster::DEFAULT_SESSION_PING_MS,
            },
            None,
            None,
        )
        .await
        .map_err(|e| ClientError::Connection(format!("cannot start the client's endpoint: {e}")))?;

        let subs = Subscriptions::default();
        let (watcher, _) = Actor::spawn(None, Watcher, subs.clone())
            .await
            .map_err(|e| ClientError::Connection(format!("cannot start the watcher: {e}")))?;
        ractor::pg::join(client_group(&name), vec![watcher.get_cell()]);

        let ready: Arc<Mutex<Vec<String>>> = Arc::default();
        // Live sessions by session id (to check them, and to re-dial seeds without one).
        let live: Arc<Mutex<HashMap<u64, Live>>> = Arc::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let ready = ready.clone();
            let live = live.clone();
            SessionEvents(move |ev: SessionEvent, actor| {
                {
                    let mut l = live.lock().unwrap_or_else(|p| p.into_inner());
                    match ev.kind {
                        SessionEventKind::Disconnected => {
                            l.remove(&ev.node_id);
                        }
                        _ => {
                            l.insert(
                                ev.node_id,
                                Live {
                                    addr: ev.peer_addr.clone(),
                                    node: ev.peer_name.as_deref().map(|p| node_name_of(p).into()),
                                    actor,
                                },
                            );
                        }
                    }
                }
                if let Some(peer) = &ev.peer_name {
                    let node = node_name_of(peer).to_string();
                    let mut r = ready.lock().unwrap_or_else(|p| p.into_inner());
                    match ev.kind {
                        SessionEventKind::Ready if !r.contains(&node) => r.push(node),
                        SessionEventKind::Disconnected => r.retain(|n| *n != node),
                        _ => {}
                    }
                }
                let _ = tx.send(ev);
            })
            .subscribe(&server, "troupe.client");
        }

        // Built before dialling: an early return drops it, which stops the endpoint.
        let connection = Arc::new(Connection {
            name,
            opts: opts.clone(),
            server: server.clone(),
            watcher,
            subs,
            ready,
            next_submit: AtomicUsize::new(0),
            overloaded_until: Mutex::new(None),
        });

        let mut failures: Vec<String> = Vec::new();
        let mut tls_failures = 0;
        let mut not_tls = 0;
        for seed in &opts.seeds {
            let dial = crate::tls::dial(&server, seed, opts.tls.as_ref(), opts.connect_timeout);
            if let Err(e) = dial.await {
                tls_failures += usize::from(e.is_tls());
                not_tls += usize::from(matches!(e, crate::tls::DialError::NotTls));
                failures.push(format!("{seed}: {e}"));
            }
        }
        if failures.len() == opts.seeds.len() {
            let reason = failures.join("; ");
            return Err(if not_tls == failures.len() {
                ClientError::NotTls { seeds: seeds_text }
            } else if tls_failures > 0 {
                ClientError::Tls {
                    seeds: seeds_text,
                    reason,
                }
            } else {
                ClientError::Unreachable {
                    seeds: seeds_text,
                    reason,
                }
            });
        }
        let dialled = opts.seeds.len() - failures.len();
        let mut authenticated = HashSet::new();
        let mut refused = 0usize;
        let ours = WireVersions::ours();
        let mut mismatched = None;
        let deadline = tokio::time::Instant::now() + opts.connect_timeout;
        loop {
            let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(_) => {
                    return Err(ClientError::Unreachable {
                        seeds: seeds_text,
                        reason: format!(
                            "no node finished the handshake within {:?}",
                            opts.connect_timeout
                        ),
                    })
                }
            };
            match ev.kind {
                SessionEventKind::Authenticated => {
                    let theirs = ev.peer_name.as_deref().map(WireVersions::of_peer);
                    match theirs.filter(|t| !ours.meets(t)) {
                        // Closed here; its close counts it refused below.
                        Some(theirs) => {
                            if let Some(l) = live
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get(&ev.node_id)
                            {
                                l.actor.stop(Some("wire version".into()));
                            }
                            mismatched = Some(theirs);
                        }
                        None => {
                            authenticated.insert(ev.node_id);
                        }
                    }
                }
                SessionEventKind::Ready if !authenticated.contains(&ev.node_id) => {}
                SessionEventKind::Ready => {
                    keep_sessions(Arc::downgrade(&connection), live);
                    return Ok(connection);
                }
                SessionEventKind::Disconnected if !authenticated.contains(&ev.node_id) => {
                    refused += 1;
                    if refused >= dialled {
                        if let Some(theirs) = mismatched {
                            return Err(ClientError::WireVersion {
                                seeds: seeds_text,
                                ours: ours.to_string(),
                                theirs: theirs.to_string(),
                            });
                        }
                        return Err(match wrong_port(&opts.seeds).await {
                            Some(what) => ClientError::BadInput(format!(
                                "{what}, not a Troupe node's cluster port. Point --seeds at a node's listen address (troupe-node start --listen, 127.0.0.1:7340 by default)"
                            )),
                            None => ClientError::Refused { seeds: seeds_text },
                        });
                    }
                }
                _ => {}
            }
        }
        Err(ClientError::Unreachable {
            seeds: seeds_text,
            reason: "the client's endpoint stopped".into(),
        })
    }

    /// Names of the nodes with a ready session, in the order they became ready.
    pub(crate) fn connected_nodes(&self) -> Vec<String> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// While the connection lives: closes the sessions of nodes silent for [`SILENT_FOR`],
/// and keeps dialling the seeds that have no session (a node that restarted, one that was
/// down when the client connected, one whose silent session was closed). By hand:
/// ractor_cluster neither detects a silent peer nor reconnects a session that closed.
fn keep_sessions(connection: Weak<Connection>, live: Arc<Mutex<HashMap<u64, Live>>>) {
    let heard: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    tokio::spawn(async move {
        let mut last_tick = Instant::now();
        loop {
            tokio::time::sleep(REDIAL_EVERY).await;
            let Some(connection) = connection.upgrade() else {
                return;
            };
            if last_tick.elapsed() > 2 * REDIAL_EVERY {
                // This process itself stalled (a blocked runtime, no CPU): answers may be
                // waiting unread, so no node is blamed for the gap.
                let now = Instant::now();
                for t in heard.lock().unwrap_or_else(|p| p.into_inner()).values_mut() {
                    *t = now;
                }
            }
            last_tick = Instant::now();
            close_silent_sessions(&live, &heard);
            let live: HashSet<String> = live
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .map(|l| l.addr.clone())
                .collect();
            for seed in &connection.opts.seeds {
                let addr = crate::config::resolve(seed)
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| seed.clone());
                if live.contains(&addr) || live.contains(seed) {
                    continue;
                }
                let dial = crate::tls::dial(
                    &connection.server,
                    seed,
                    connection.opts.tls.as_ref(),
                    connection.opts.connect_timeout,
                );
                if let Err(e) = dial.await {
                    tracing::debug!(seed = %seed, error = %e, "seed still unreachable");
                }
            }
        }
    });
}

/// Asks each authenticated session's node a small question (its node list), in the
/// background, and closes the sessions whose node has answered none for [`SILENT_FOR`].
fn close_silent_sessions(
    live: &Arc<Mutex<HashMap<u64, Live>>>,
    heard: &Arc<Mutex<HashMap<u64, Instant>>>,
) {
    let now = Instant::now();
    let sessions: Vec<(u64, String, ActorRef<NodeSessionMessage>)> = live
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|(id, l)| Some((*id, l.node.clone()?, l.actor.clone())))
        .collect();
    let mut heard_now = heard.lock().unwrap_or_else(|p| p.into_inner());
    heard_now.retain(|id, _| sessions.iter().any(|(s, _, _)| s == id));
    let members = ractor::pg::get_members(&MEMBERSHIP_GROUP.to_string());
    for (id, node, session) in sessions {
        let last = *heard_now.entry(id).or_insert(now);
        if now.duration_since(last) > SILENT_FOR {
            tracing::warn!(node = %node, silent_ms = now.duration_since(last).as_millis() as u64, "closing the session of a node that stopped answering; its work is reached through the other nodes");
            heard_now.remove(&id);
            session.stop(Some("silent".into()));
            continue;
        }
        // This session's shim of the node's membership actor (its id names the session).
        let name = membership_name(&node);
        let Some(m) = members
            .iter()
            .find(|c| c.get_id().node() == id && c.get_name().as_deref() == Some(name.as_str()))
        else {
            // Not announced yet (or not a node): nothing to ask, nothing to blame.
            heard_now.insert(id, now);
            continue;
        };
        let m: ActorRef<MembershipMessage> = m.clone().into();
        let heard = heard.clone();
        tokio::spawn(async move {
            if let Ok(ractor::rpc::CallResult::Success(_)) =
                m.call(MembershipMessage::ListNodes, Some(SILENT_FOR)).await
            {
                heard
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, Instant::now());
            }
        });
    }
}

/// What answers at `seeds` if it is not a node's cluster port: a handshake refused there
/// may be a client pointed at a node's HTTP or Gearman port, not a wrong cookie. Asks
/// each seed as an HTTP client, then as a Gearman admin would; a cluster port answers
/// neither (it waits for its handshake), so `None` leaves the cookie as the suspect.
async fn wrong_port(seeds: &[String]) -> Option<String> {
    let mut found = Vec::new();
    for seed in seeds {
        if ask(seed, b"GET / HTTP/1.0\r\n\r\n")
            .await
            .is_some_and(|a| a.starts_with(b"HTTP/"))
        {
            found.push(format!("{seed} is an HTTP server (a node's --http port?)"));
        } else if ask(seed, b"version\n")
            .await
            .is_some_and(|a| a.starts_with(b"OK ") || a.starts_with(b"ERR "))
        {
            found.push(format!(
                "{seed} is a Gearman server (a node's --gearman port?)"
            ));
        }
    }
    (!found.is_empty()).then(|| found.join("; "))
}

/// Sends `question` to `addr` on a fresh connection and returns the first bytes of the
/// answer, if any come within a second.
async fn ask(addr: &str, question: &[u8]) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let wait = Duration::from_secs(1);
    let mut s = tokio::time::timeout(wait, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(question).await.ok()?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(wait, s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| buf[..n].to_vec())
}
