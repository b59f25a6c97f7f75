//! Starting this process's ractor_cluster `NodeServer` and hearing about its sessions.
//!
//! One process is one cluster member (ractor's process groups are process-global), so
//! both nodes and clients call [`start_server`] once.

use std::net::IpAddr;

use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::node::{NodeConnectionMode, NodeServerSessionInformation};
use ractor_cluster::{NodeEventSubscription, NodeServer, NodeServerMessage, NodeSessionMessage};

use crate::protocol::{SessionEvent, SessionEventKind};

/// Registered name of the node server actor.
pub const NODE_SERVER_NAME: &str = "troupe.node_server";

/// How to start a node server.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The member's name (without `@host`).
    pub name: String,
    /// The host peers use to reach it (goes into `name@host`).
    pub host: String,
    /// The IP to bind.
    pub bind: IpAddr,
    /// The port to bind (0: any).
    pub port: u16,
    /// The cluster's cookie.
    pub cookie: String,
    /// Largest inbound frame.
    pub max_frame_bytes: u64,
    /// Mutual TLS: ractor_cluster's own listener then accepts TLS only. (Nodes accept on
    /// their own listener with a handshake deadline and bind this one to loopback.)
    pub tls: Option<crate::tls::TlsConfig>,
    /// The least wait between keep-alive pings on each session (`failure.session_ping_ms`);
    /// process-wide in ractor_cluster, so the last server started sets it.
    pub session_ping_ms: u64,
}

/// `failure.session_ping_ms`'s default, and a client's: a ping per connection every 30-60 s
/// (ractor_cluster's own 1-5 s, across a full mesh of 64 nodes, was 0.3% of a core per idle
/// node).
pub const DEFAULT_SESSION_PING_MS: u64 = 30_000;

/// Spawns the node server, linked to `supervisor` if given. Nodes register it as
/// [`NODE_SERVER_NAME`]; clients pass `None`, so that one process may hold several.
pub async fn start_server(
    opts: &ServerOptions,
    register_as: Option<&str>,
    supervisor: Option<ActorCell>,
) -> Result<ActorRef<NodeServerMessage>, ractor::SpawnErr> {
    ractor_cluster::set_session_ping_interval(
        std::time::Duration::from_millis(opts.session_ping_ms),
        std::time::Duration::from_millis(opts.session_ping_ms.saturating_mul(2)),
    );
    let server = NodeServer::new(
        opts.port,
        opts.cookie.clone(),
        opts.name.clone(),
        opts.host.clone(),
        opts.tls
            .as_ref()
            .map(|t| ractor_cluster::IncomingEncryptionMode::Tls(t.acceptor())),
        Some(NodeConnectionMode::Isolated),
    )
    .with_listen_addr(opts.bind)
    .with_max_inbound_frame_size(opts.max_frame_bytes);
    let name = register_as.map(str::to_string);
    let (r, _) = match supervisor {
        Some(s) => Actor::spawn_linked(name, server, (), s).await?,
        None => Actor::spawn(name, server, ()).await?,
    };
    Ok(r)
}

/// The node name in a ractor_cluster peer name (`name~incarnation@host`, or `name@host`
/// for a client).
pub fn node_name_of(peer: &str) -> &str {
    let member = member_of(peer);
    member
        .split_once(INCARNATION_SEP)
        .map(|(n, _)| n)
        .unwrap_or(member)
}

/// Between a node's name and its incarnation in its cluster name (`NAME~INCARNATION`); not
/// a character node names may hold.
pub const INCARNATION_SEP: char = '~';

/// The name a node's process goes by in ractor_cluster: its node name and an incarnation
/// that differs from process to process. Two processes started under one node name then
/// differ, so ractor_cluster does not take the second for a reconnection of the first
/// (dropping the live one's sessions); membership refuses the second instead.
pub fn member_name(node: &str, incarnation: &str) -> String {
    format!(
        "{node}{INCARNATION_SEP}{incarnation}{INCARNATION_SEP}{}",
        crate::wire::WireVersions::ours().tag()
    )
}

/// A client's name in ractor_cluster: `NAME~~w1-2`, no incarnation, its wire versions
/// after the name.
pub fn client_member_name(name: &str) -> String {
    format!(
        "{name}{INCARNATION_SEP}{INCARNATION_SEP}{}",
        crate::wire::WireVersions::ours().tag()
    )
}

/// True if a session's peer name is a client's (no incarnation), not a node's.
pub fn is_client(peer: &str) -> bool {
    member_of(peer)
        .split(INCARNATION_SEP)
        .nth(1)
        .is_none_or(str::is_empty)
}

/// A session's peer name without its `@host`: `NAME~INCARNATION~wA-B` for a node,
/// `NAME~~wA-B` for a client.
pub fn member_of(peer: &str) -> &str {
    peer.split_once('@').map(|(n, _)| n).unwrap_or(peer)
}

/// Turns the node server's callbacks into calls of `f` with a [`SessionEvent`] and the
/// session actor. The callbacks run inside the node server, so `f` must not block.
pub struct SessionEvents<F>(pub F);

impl<F> SessionEvents<F>
where
    F: Fn(SessionEvent, ActorRef<NodeSessionMessage>) + Send + 'static,
{
    fn emit(&self, kind: SessionEventKind, s: NodeServerSessionInformation) {
        let ev = SessionEvent {
            kind,
            node_id: s.node_id,
            peer_name: s.peer_name.as_ref().map(|p| p.name.clone()),
            peer_addr: s.peer_addr.clone(),
            is_server: s.is_server,
        };
        (self.0)(ev, s.actor);
    }

    /// Subscribes to `server` under `id`.
    pub fn subscribe(self, server: &ActorRef<NodeServerMessage>, id: &str) {
        // A send to a stopped server fails; the caller notices the server is gone anyway.
        let _ = server.cast(NodeServerMessage::SubscribeToEvents {
            id: id.to_string(),
            subscription: Box::new(self),
        });
    }
}

impl<F> NodeEventSubscription for SessionEvents<F>
where
    F: Fn(SessionEvent, ActorRef<NodeSessionMessage>) + Send + 'static,
{
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        self.emit(SessionEventKind::Opened, ses)
    }
    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.emit(SessionEventKind::Disconnected, ses)
    }
    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.emit(SessionEventKind::Authenticated, ses)
    }
    fn node_session_ready(&self, ses: NodeServerSessionInformation) {
        self.emit(SessionEventKind::Ready, ses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reports the group changes and spawns it hears as a world listener, as a cluster
    /// session listens.
    struct Listener;

    impl ractor::Actor for Listener {
        type Msg = ();
        type State = tokio::sync::mpsc::UnboundedSender<String>;
        type Arguments = tokio::sync::mpsc::UnboundedSender<String>;

        async fn pre_start(
            &self,
            myself: ractor::ActorRef<()>,
            heard: Self::Arguments,
        ) -> Result<Self::State, ractor::ActorProcessingErr> {
            ractor::pg::monitor_scope(
                ractor::pg::ALL_SCOPES_NOTIFICATION.to_string(),
                myself.get_cell(),
            );
            ractor::registry::pid_registry::monitor(myself.get_cell());
            Ok(heard)
        }

        async fn handle_supervisor_evt(
            &self,
            _: ractor::ActorRef<()>,
            event: ractor::SupervisionEvent,
            heard: &mut Self::State,
        ) -> Result<(), ractor::ActorProcessingErr> {
            let what = match event {
                ractor::SupervisionEvent::ProcessGroupChanged(change) => {
                    format!("group {}", change.get_group())
                }
                ractor::SupervisionEvent::PidLifecycleEvent(
                    ractor::registry::PidLifecycleEvent::Spawn(who),
                ) => format!("spawn {}", who.get_name().unwrap_or_default()),
                _ => return Ok(()),
            };
            let _ = heard.send(what);
            Ok(())
        }
    }

    /// An actor that does nothing, with messages of type `M`: whether other nodes can
    /// reach it is whether `M` serializes.
    struct Idle<M>(std::marker::PhantomData<fn() -> M>);

    impl<M: ractor::Message> ractor::Actor for Idle<M> {
        type Msg = M;
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _: ractor::ActorRef<M>,
            _: (),
        ) -> Result<(), ractor::ActorProcessingErr> {
            Ok(())
        }
    }

    /// Messages no other node can send (they do not serialize; `()` would, as ractor makes
    /// every `BytesConvertable` type a remotable message).
    struct LocalMessage;

    impl ractor::Message for LocalMessage {}

    /// Messages other nodes can send.
    #[derive(ractor_cluster::RactorClusterMessage)]
    enum RemotableMessage {
        Nothing,
    }

    /// The patched ractor (runtime/vendor/ractor/TROUPE-PATCH.md) tells listeners of every
    /// group, and of spawns, only about actors other nodes can reach. Upstream told them of
    /// every actor, which made forming a mesh cost O(N²) per node. Fails if the patch is lost.
    #[tokio::test]
    async fn world_listeners_hear_only_of_actors_other_nodes_can_reach() {
        let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let (listener, _) = ractor::Actor::spawn(None, Listener, tx)
            .await
            .expect("the listener starts");
        let (local, _) = ractor::Actor::spawn(
            Some("local-only".into()),
            Idle::<LocalMessage>(std::marker::PhantomData),
            (),
        )
        .await
        .expect("a local-only actor starts");
        ractor::pg::join("local-group".into(), vec![local.get_cell()]);
        let (remotable, _) = ractor::Actor::spawn(
            Some("remotable".into()),
            Idle::<RemotableMessage>(std::marker::PhantomData),
            (),
        )
        .await
        .expect("a remotable actor starts");
        ractor::pg::join("remotable-group".into(), vec![remotable.get_cell()]);

        let mut got = Vec::new();
        while got.len() < 2 {
            match tokio::time::timeout(std::time::Duration::from_secs(5), heard.recv()).await {
                Ok(Some(what)) => got.push(what),
                _ => break,
            }
        }
        // Anything about the local-only actor would have been sent before these two.
        assert_eq!(got, ["spawn remotable", "group remotable-group"]);
        for actor in [local.get_cell(), remotable.get_cell(), listener.get_cell()] {
            actor.stop(None);
        }
    }

    #[tokio::test]
    async fn a_server_spaces_its_session_pings_as_configured() {
        let opts = |ms| ServerOptions {
            name: "ping-test".into(),
            host: "127.0.0.1".into(),
            bind: [127, 0, 0, 1].into(),
            port: 0,
            cookie: "c".into(),
            max_frame_bytes: 1 << 20,
            tls: None,
            session_ping_ms: ms,
        };
        let ms = std::time::Duration::from_millis;
        let server = start_server(&opts(1_234), None, None)
            .await
            .expect("a server on an ephemeral loopback port");
        assert_eq!(
            ractor_cluster::session_ping_interval(),
            (ms(1_234), ms(2_468))
        );
        server.stop(None);
        let server = start_server(&opts(0), None, None)
            .await
            .expect("a second server");
        assert_eq!(ractor_cluster::session_ping_interval(), (ms(0), ms(0)));
        server.stop(None);
    }

    #[test]
    fn node_names_come_out_of_peer_names_with_or_without_an_incarnation() {
        let peer = format!("{}@127.0.0.1", member_name("n2", "1a2b"));
        assert_eq!(node_name_of(&peer), "n2");
        assert!(member_of(&peer).starts_with("n2~1a2b~w"), "{peer}");
        assert!(!is_client(&peer));
        assert_eq!(node_name_of("client-7@127.0.0.1"), "client-7");
        assert_eq!(node_name_of("n3"), "n3");
        let client = format!("{}@127.0.0.1", client_member_name("client-7"));
        assert_eq!(node_name_of(&client), "client-7");
        assert!(is_client(&client) && is_client("client-7@127.0.0.1"));
    }
}
