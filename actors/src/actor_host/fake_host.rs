//! A stand-in for another node's actor host, for unit tests of quorums: registered under
//! the host name of a made-up node and in the group of one actor type, it keeps copies in
//! a store of its own and answers state reads, or, silent, drops every request (its
//! caller counts it as not answering). A test may silence it half-way ([`start_switchable`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_runtime::protocol::{
    actor_host_name, actor_type_group, ActorHostMessage, ACTOR_HOSTS_GROUP,
};
use troupe_runtime::wire::Wire;

use super::store::ActorStore;

/// A made-up host.
pub(crate) struct FakeHost;

/// Its settings: whether it answers, and its store.
pub(crate) struct FakeHostState {
    answers: Arc<AtomicBool>,
    store: ActorStore,
}

/// Starts a fake host of `actor_type` named for `node`; `answers` false makes it silent.
/// Returns its store (to look at what it holds and its fences) and the actor.
pub(crate) async fn start(
    node: &str,
    actor_type: &str,
    answers: bool,
) -> (ActorStore, ActorRef<ActorHostMessage>) {
    let (store, host, _) = start_switchable(node, actor_type, answers).await;
    (store, host)
}

/// As [`start`], with the switch that says whether it answers (true: it answers).
pub(crate) async fn start_switchable(
    node: &str,
    actor_type: &str,
    answers: bool,
) -> (ActorStore, ActorRef<ActorHostMessage>, Arc<AtomicBool>) {
    let answers = Arc::new(AtomicBool::new(answers));
    let store = ActorStore::new(None);
    let (host, _) = Actor::spawn(
        Some(actor_host_name(node)),
        FakeHost,
        FakeHostState {
            answers: answers.clone(),
            store: store.clone(),
        },
    )
    .await
    .expect("the fake host starts");
    ractor::pg::join(actor_type_group(actor_type), vec![host.get_cell()]);
    ractor::pg::join(ACTOR_HOSTS_GROUP.to_string(), vec![host.get_cell()]);
    (store, host, answers)
}

impl Actor for FakeHost {
    type Msg = ActorHostMessage;
    type State = FakeHostState;
    type Arguments = FakeHostState;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: FakeHostState,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if !st.answers.load(Ordering::Relaxed) {
            return Ok(());
        }
        match msg {
            ActorHostMessage::KeepCopy(copy, reply) => {
                let copy = copy.into_inner()?;
                if let Some(r) = st.store.save(&copy.actor, copy.saved).await {
                    let _ = reply.send(Wire::new(r));
                }
            }
            ActorHostMessage::FetchState(actor, epoch, reply) => {
                if let Ok(held) = st.store.fetch_and_fence(&actor, epoch).await {
                    let _ = reply.send(Wire::new(held));
                }
            }
            _ => {}
        }
        Ok(())
    }
}
