//! The node's TLS listener: accepts on the node's address, runs each TLS handshake under a
//! deadline, and hands finished sessions to ractor_cluster's node server.
//!
//! Why not ractor_cluster's own TLS listener: it runs the handshake inline in its accept
//! loop with no deadline, so one connection that never says hello stops every later
//! accept (see `troupe_runtime::tls`). Here each handshake is its own task: bounded in
//! time by `handshake_timeout_ms` and in number by `max_pending_handshakes` (a new
//! connection beyond that closes the oldest one still shaking hands, as for plaintext
//! nodes), so a flood of idle connections cannot lock out an honest peer. Only when TLS is
//! configured does the root start this actor; the node server's own listener is then bound
//! to an ephemeral loopback port, and also requires TLS.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::NodeServerMessage;
use ractor_cluster::RactorMessage;
use tokio::net::TcpListener;
use tokio::task::{AbortHandle, JoinHandle};
use troupe_runtime::observe::{metric, Throttle};
use troupe_runtime::tls::{self, AcceptError, TlsConfig};

use crate::{find_on, names, NodeContext};

/// Messages of the TLS listener.
#[derive(RactorMessage)]
pub(crate) enum TlsListenerMessage {
    /// The accept loop hit an error it cannot go on from; the actor fails, and the root
    /// supervisor restarts it (binding again).
    AcceptFailed(String),
}

/// The TLS listener actor (see the module docs).
pub(crate) struct TlsListener;

/// Its state: the accept loop, ended when the actor stops.
pub(crate) struct TlsListenerState {
    accept_loop: JoinHandle<()>,
}

impl Actor for TlsListener {
    type Msg = TlsListenerMessage;
    type State = TlsListenerState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let tls = ctx
            .tls
            .clone()
            .ok_or("the TLS listener needs TLS settings")?;
        let addr = ctx.config.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        tracing::info!(listen = %addr, "accepting TLS connections only (mutual, CA-signed certificates)");
        let accept_loop = tokio::spawn(accept_loop(listener, ctx, tls, myself));
        Ok(TlsListenerState { accept_loop })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.accept_loop.abort();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TlsListenerMessage::AcceptFailed(e) => Err(e.into()),
        }
    }
}

/// Accepts until the actor stops; each connection's handshake runs in its own task.
async fn accept_loop(
    listener: TcpListener,
    ctx: NodeContext,
    tls: TlsConfig,
    myself: ActorRef<TlsListenerMessage>,
) {
    let deadline = ctx.config.handshake_timeout();
    let max_pending = ctx.config.max_pending_handshakes.max(1);
    let log = Arc::new(Throttle::default());
    // Its own throttle: a peer refused every second must not hide that handshakes are
    // being evicted (a flood), nor the other way round.
    let evictions = Throttle::default();
    let mut pending: VecDeque<AbortHandle> = VecDeque::new();
    let mut errors_in_a_row = 0u32;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => {
                errors_in_a_row = 0;
                c
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin;
                // give up (and be restarted) only if it does not pass.
                errors_in_a_row += 1;
                log.warn(&format!("cannot accept a connection: {e}"), "-");
                if errors_in_a_row > 100 {
                    let _ = myself.cast(TlsListenerMessage::AcceptFailed(e.to_string()));
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let task = tokio::spawn(handshake(
            stream,
            peer,
            tls.clone(),
            deadline,
            ctx.config.name.clone(),
            log.clone(),
        ));
        pending.retain(|h| !h.is_finished());
        pending.push_back(task.abort_handle());
        while pending.len() > max_pending {
            if let Some(oldest) = pending.pop_front() {
                oldest.abort();
                metrics::counter!(metric::REFUSED, "reason" => "handshake_evicted").increment(1);
                evictions.warn(
                    &format!("closed the oldest connection still in its TLS handshake: {max_pending} handshakes in progress (max_pending_handshakes)"),
                    &peer.to_string(),
                );
            }
        }
    }
}

/// One connection: the TLS handshake, then the node server takes it (and runs the cookie
/// handshake inside TLS).
async fn handshake(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: TlsConfig,
    deadline: Duration,
    node: String,
    log: Arc<Throttle>,
) {
    match tls::accept(stream, &tls, deadline).await {
        Ok(stream) => {
            let Some(server) = find_on::<NodeServerMessage>(names::NODE_SERVER, &node) else {
                tracing::warn!(peer = %peer, "no node server to take a TLS connection (restarting?)");
                return;
            };
            let _ = server.cast(NodeServerMessage::ConnectionOpened {
                stream: Box::new(stream),
                is_server: true,
            });
        }
        Err(AcceptError::Closed) => {
            tracing::debug!(peer = %peer, "connection closed before the TLS handshake");
        }
        Err(e) => {
            let reason = match e {
                AcceptError::Plaintext => "tls_plaintext",
                AcceptError::Timeout(_) => "tls_timeout",
                _ => "tls_handshake",
            };
            metrics::counter!(metric::REFUSED, "reason" => reason).increment(1);
            log.warn(&e.to_string(), &peer.to_string());
        }
    }
}
