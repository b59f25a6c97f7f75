//! `GearmanListener`: accepts Gearman connections on `--gearman HOST:PORT` and serves
//! each in its own task, at most `max_connections` at once (more are closed at once and
//! counted).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use troupe_runtime::observe::metric;

use super::connection;
use crate::NodeContext;

/// Messages of the listener.
#[derive(RactorMessage)]
pub(crate) enum GearmanListenerMessage {
    /// The accept loop cannot go on; the actor fails and its supervisor restarts it.
    AcceptFailed(String),
}

/// The listener (see the module docs).
pub(crate) struct GearmanListener;

/// Its state: the accept loop, ended with the actor.
pub(crate) struct GearmanListenerState {
    accept_loop: JoinHandle<()>,
}

/// The address of `--gearman`.
pub(crate) fn gearman_addr(ctx: &NodeContext) -> Result<SocketAddr, String> {
    let a = ctx
        .config
        .gearman
        .as_deref()
        .ok_or("the Gearman listener needs --gearman HOST:PORT")?;
    troupe_runtime::config::resolve(a).map_err(|e| format!("--gearman: {e}"))
}

async fn accept_loop(
    listener: TcpListener,
    ctx: NodeContext,
    myself: ActorRef<GearmanListenerMessage>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => {
                tracing::warn!(error = %e, "Gearman accept failed; going on");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => {
                let _ = myself.cast(GearmanListenerMessage::AcceptFailed(e.to_string()));
                return;
            }
        };
        if open.load(Ordering::Relaxed) >= ctx.config.max_connections {
            metrics::counter!(metric::REFUSED, "reason" => "too_many_connections").increment(1);
            ctx.view.gearman.throttle.warn(
                "refused a Gearman connection: max_connections are open",
                &peer.to_string(),
            );
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (ctx, open) = (ctx.clone(), open.clone());
        tokio::spawn(async move {
            connection::serve(stream, peer, ctx).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Accept errors that concern one connection or a passing shortage (file descriptors).
fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(24)
        || e.raw_os_error() == Some(23)
}

impl Actor for GearmanListener {
    type Msg = GearmanListenerMessage;
    type State = GearmanListenerState;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        let addr = gearman_addr(&ctx)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen for Gearman on {addr}: {e}"))?;
        tracing::info!(gearman = %addr, "serving the Gearman protocol");
        let accept_loop = tokio::spawn(accept_loop(listener, ctx, myself));
        Ok(GearmanListenerState { accept_loop })
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
            GearmanListenerMessage::AcceptFailed(e) => {
                Err(format!("the Gearman accept loop stopped: {e}").into())
            }
        }
    }
}
