//! The core group's Raft messages, carried as [`CoreMessage::Raft`] calls to the peer's
//! core member over the node's ractor_cluster sessions (no second port to open or secure:
//! the cookie handshake and TLS of the cluster cover it).

use std::time::Duration;

use super::{CoreTypes, RaftRpc, RaftRpcReply};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, RPCTypes};
use troupe_runtime::protocol::{core_group, first_member};

use super::CoreMessage;
use troupe_runtime::wire::Wire;

/// Makes a [`PeerLink`] per core peer.
pub(crate) struct CoreNetwork {
    /// This node's Raft id.
    pub(crate) me: u64,
}

impl RaftNetworkFactory<CoreTypes> for CoreNetwork {
    type Network = PeerLink;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> PeerLink {
        PeerLink {
            me: self.me,
            target,
            name: node.addr.clone(),
        }
    }
}

/// Raft's line to one peer (`BasicNode::addr` holds the peer's node name).
pub(crate) struct PeerLink {
    me: u64,
    target: u64,
    name: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct LinkError(String);

type Rpc<R, E = openraft::error::Infallible> =
    Result<R, RPCError<u64, BasicNode, RaftError<u64, E>>>;

impl PeerLink {
    async fn call<E: std::error::Error>(
        &self,
        rpc: RaftRpc,
        kind: RPCTypes,
        ttl: Duration,
    ) -> Result<RaftRpcReply, RPCError<u64, BasicNode, RaftError<u64, E>>> {
        let Some(peer) = first_member::<CoreMessage>(&core_group(&self.name)) else {
            return Err(RPCError::Unreachable(Unreachable::new(&LinkError(
                format!("core node {} is not connected", self.name),
            ))));
        };
        match peer
            .call(|r| CoreMessage::Raft(Wire::new(rpc), r), Some(ttl))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(w)) => w
                .into_inner()
                .map_err(|e| RPCError::Network(NetworkError::new(&LinkError(e.to_string())))),
            Ok(ractor::rpc::CallResult::Timeout) => Err(RPCError::Timeout(Timeout {
                action: kind,
                id: self.me,
                target: self.target,
                timeout: ttl,
            })),
            Ok(ractor::rpc::CallResult::SenderError) => {
                Err(RPCError::Unreachable(Unreachable::new(&LinkError(
                    format!("core node {} dropped the call", self.name),
                ))))
            }
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&LinkError(
                e.to_string(),
            )))),
        }
    }

    // openraft's RPC error type is what its network trait requires; it is not ours to box.
    #[allow(clippy::result_large_err)]
    fn remote<R, E: std::error::Error>(&self, r: Result<R, RaftError<u64, E>>) -> Rpc<R, E> {
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }

    fn unexpected<E: std::error::Error>(&self) -> RPCError<u64, BasicNode, RaftError<u64, E>> {
        RPCError::Network(NetworkError::new(&AnyError::error(format!(
            "core node {} answered a different Raft message",
            self.name
        ))))
    }
}

impl RaftNetwork<CoreTypes> for PeerLink {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<CoreTypes>,
        option: RPCOption,
    ) -> Rpc<AppendEntriesResponse<u64>> {
        match self
            .call(
                RaftRpc::AppendEntries(rpc),
                RPCTypes::AppendEntries,
                option.hard_ttl(),
            )
            .await?
        {
            RaftRpcReply::AppendEntries(r) => self.remote(r),
            _ => Err(self.unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<CoreTypes>,
        option: RPCOption,
    ) -> Rpc<InstallSnapshotResponse<u64>, InstallSnapshotError> {
        match self
            .call(
                RaftRpc::InstallSnapshot(rpc),
                RPCTypes::InstallSnapshot,
                option.hard_ttl(),
            )
            .await?
        {
            RaftRpcReply::InstallSnapshot(r) => self.remote(r),
            _ => Err(self.unexpected()),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<u64>, option: RPCOption) -> Rpc<VoteResponse<u64>> {
        match self
            .call(RaftRpc::Vote(rpc), RPCTypes::Vote, option.hard_ttl())
            .await?
        {
            RaftRpcReply::Vote(r) => self.remote(r),
            _ => Err(self.unexpected()),
        }
    }
}
