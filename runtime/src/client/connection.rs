//! A client's place in the cluster: its endpoint (a ractor_cluster node server on an
//! ephemeral loopback port), the seeds it dials with the cookie, the sessions that are
//! ready, and the re-dialling of seeds whose session closed.
//!
//! The client is a cluster member like a node, so the cookie handshake (and TLS, when the
//! nodes use it) authenticates it; it serves no tasks and hosts only its watcher.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::NodeServerMessage;
use tokio::sync::mpsc;

use super::options::ClientOptions;
use super::watcher::{Subscriptions, Watcher};
use crate::cluster::{node_name_of, start_server, ServerOptions, SessionEvents};
use crate::error::ClientError;
use crate::protocol::groups::client_group;
use crate::protocol::membership::{SessionEvent, SessionEventKind};
use crate::protocol::watcher::WatcherMessage;

/// How often a client looks for seeds whose session closed.
const REDIAL_EVERY: Duration = Duration::from_secs(1);

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
                name: name.clone(),
                host: "127.0.0.1".into(),
                bind: [127, 0, 0, 1].into(),
                port: 0,
                cookie: opts.cookie.clone(),
                max_frame_bytes: ractor_cluster::DEFAULT_MAX_INBOUND_FRAME_SIZE,
                tls: opts.tls.clone(),
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
        // Addresses with a live session, by session id (for re-dialling seeds).
        let live_addrs: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let ready = ready.clone();
            let live_addrs = live_addrs.clone();
            SessionEvents(move |ev: SessionEvent, _| {
                {
                    let mut a = live_addrs.lock().unwrap_or_else(|p| p.into_inner());
                    match ev.kind {
                        SessionEventKind::Disconnected => {
                            a.remove(&ev.node_id);
                        }
                        _ => {
                            a.insert(ev.node_id, ev.peer_addr.clone());
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
        });

        let mut failures: Vec<String> = Vec::new();
        let mut tls_failures = 0;
        for seed in &opts.seeds {
            let dial = crate::tls::dial(&server, seed, opts.tls.as_ref(), opts.connect_timeout);
            if let Err(e) = dial.await {
                tls_failures += usize::from(e.is_tls());
                failures.push(format!("{seed}: {e}"));
            }
        }
        if failures.len() == opts.seeds.len() {
            let reason = failures.join("; ");
            return Err(if tls_failures > 0 {
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
                    authenticated.insert(ev.node_id);
                }
                SessionEventKind::Ready => {
                    redial_lost_seeds(Arc::downgrade(&connection), live_addrs);
                    return Ok(connection);
                }
                SessionEventKind::Disconnected if !authenticated.contains(&ev.node_id) => {
                    refused += 1;
                    if refused >= dialled {
                        return Err(ClientError::Refused { seeds: seeds_text });
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

/// Keeps dialling the seeds that have no session (a node that restarted, or one that was
/// down when the client connected), while the connection lives. By hand: ractor_cluster
/// does not reconnect a session that closed.
fn redial_lost_seeds(connection: Weak<Connection>, live_addrs: Arc<Mutex<HashMap<u64, String>>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REDIAL_EVERY).await;
            let Some(connection) = connection.upgrade() else {
                return;
            };
            let live: HashSet<String> = live_addrs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .cloned()
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
