//! User actors: keyed, virtual, supervised, and (opt-in) persistent.
//!
//! A user implements [`KeyedActor`] for an actor *type* (its state, message and reply
//! types, and a handler) and registers it by name with
//! [`TaskRegistry::register_actor`](crate::TaskRegistry::register_actor). An actor of type
//! T with key K exists as soon as somebody sends to it (the Orleans model): the node that
//! owns (T, K) activates it, gives it its last saved state, and hands it its messages one
//! at a time. Nodes host activations under a supervisor (`troupe_actors::actor_host`);
//! [`route`] finds where an actor lives from anywhere in the cluster.
//!
//! The handler gets `&mut State`. A message either applies wholly or not at all: when the
//! handler refuses ([`ActorError::Refused`]), fails ([`ActorError::Failed`]) or panics,
//! the state goes back to what it was after the last message that succeeded; a failure or
//! panic also counts as a restart of the activation (OTP restart intensity).

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::error::TaskError;
use crate::job::spec::{JobSpec, StepSpec};

pub mod route;

pub use crate::error::ActorCallError;
pub use crate::protocol::actor_host::ActivationInfo;
pub use route::actor_name;

/// How a handler turns a message down.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ActorError {
    /// The message is refused (an overdraft, an unknown account): the state is left as it
    /// was and the activation carries on. The caller gets the message.
    #[error("refused: {0}")]
    Refused(String),
    /// The handler hit a fault: the activation restarts from the state after the last
    /// message that succeeded (and stops after too many restarts, see
    /// `actors.max_restarts`).
    #[error("failed: {0}")]
    Failed(String),
}

impl ActorError {
    /// A refusal with this message.
    pub fn refused(msg: impl Into<String>) -> Self {
        ActorError::Refused(msg.into())
    }
    /// A failure with this message.
    pub fn failed(msg: impl Into<String>) -> Self {
        ActorError::Failed(msg.into())
    }
}

/// How an actor's handler reaches the rest of the cluster: the node implements it.
pub trait ActorLink: Send + Sync + 'static {
    /// Runs `spec` as a job owned by the hosting node and waits for its output.
    fn run_job(
        &self,
        spec: JobSpec,
    ) -> Pin<Box<dyn Future<Output = Result<Value, TaskError>> + Send>>;
}

/// What a handler knows about the activation it runs in, and how it reaches the cluster.
#[derive(Clone)]
pub struct ActorContext {
    /// The actor's type.
    pub actor_type: String,
    /// The actor's key.
    pub key: String,
    /// The node hosting the activation.
    pub node: String,
    /// The activation's fencing epoch.
    pub epoch: u64,
    link: Option<Arc<dyn ActorLink>>,
}

impl std::fmt::Debug for ActorContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorContext")
            .field("actor_type", &self.actor_type)
            .field("key", &self.key)
            .field("node", &self.node)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl ActorContext {
    /// A context with no cluster behind it (for unit tests of a handler): calls fail.
    pub fn new(actor_type: &str, key: &str, node: &str) -> Self {
        Self {
            actor_type: actor_type.into(),
            key: key.into(),
            node: node.into(),
            epoch: 0,
            link: None,
        }
    }

    /// Connects the context to its node (used by the node, not by handlers).
    #[doc(hidden)]
    pub fn attach(mut self, epoch: u64, link: Arc<dyn ActorLink>) -> Self {
        self.epoch = epoch;
        self.link = Some(link);
        self
    }

    /// Sends `message` to actor `key` of type `actor_type` and waits for its reply. Do not
    /// call the actor itself (or a chain of actors that calls back into it): its messages
    /// are handled one at a time, so the call would wait for itself until it times out.
    pub async fn call_actor(
        &self,
        actor_type: &str,
        key: &str,
        message: impl Serialize,
    ) -> Result<Value, ActorCallError> {
        let message = serde_json::to_value(message).map_err(|e| ActorCallError::BadMessage {
            actor_type: actor_type.into(),
            reason: e.to_string(),
        })?;
        if self.link.is_none() {
            return Err(ActorCallError::Unavailable {
                actor: actor_name(actor_type, key),
                reason: "this handler runs outside a cluster".into(),
            });
        }
        route::call(actor_type, key, message, route::CALL_TIMEOUT).await
    }

    /// Runs `spec` as a job (owned by the hosting node) and returns its output.
    pub async fn run_job(&self, spec: JobSpec) -> Result<Value, TaskError> {
        match &self.link {
            Some(l) => l.run_job(spec).await,
            None => Err(TaskError::permanent(
                "this handler runs outside a cluster: jobs are not available",
            )),
        }
    }

    /// Calls `task` with `input` somewhere in the cluster (a one-step job) and returns its
    /// output.
    pub async fn call(&self, task: &str, input: impl Serialize) -> Result<Value, TaskError> {
        let input = serde_json::to_value(input)
            .map_err(|e| TaskError::permanent(format!("call input is not JSON: {e}")))?;
        let spec = JobSpec::new(format!("{}.call", self.actor_type))
            .step(StepSpec::new("call", task).input(input));
        self.run_job(spec).await
    }
}

/// A keyed actor type.
///
/// ```
/// use troupe_runtime::actor::{ActorContext, ActorError, KeyedActor};
/// struct Tally;
/// impl KeyedActor for Tally {
///     type State = i64;
///     type Message = i64;
///     type Reply = i64;
///     const PERSISTENT: bool = true;
///     async fn handle(&self, _ctx: &ActorContext, total: &mut i64, n: i64) -> Result<i64, ActorError> {
///         *total += n;
///         Ok(*total)
///     }
/// }
/// ```
pub trait KeyedActor: Send + Sync + 'static {
    /// The state of one actor (one key); a new key starts from `Default`.
    type State: Serialize + DeserializeOwned + Default + Send + 'static;
    /// A message, decoded from JSON.
    type Message: DeserializeOwned + Send;
    /// A reply, encoded as JSON.
    type Reply: Serialize + Send;
    /// Save the state (rmp-serde, journaled on the host and copied to a replica) after
    /// every message, and answer only once it is saved: a reply, once given, is never
    /// lost. Off: the state lives in the activation only.
    const PERSISTENT: bool = false;
    /// Handles one message. Messages to one key are handled one at a time.
    fn handle(
        &self,
        ctx: &ActorContext,
        state: &mut Self::State,
        msg: Self::Message,
    ) -> impl Future<Output = Result<Self::Reply, ActorError>> + Send;
}

/// One actor's state with its type erased (the activation holds it).
pub type ErasedState = Box<dyn Any + Send>;

/// A boxed handler future.
pub type HandleFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, HandleError>> + Send + 'a>>;

/// Why an erased handler gave no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleError {
    /// The message did not decode.
    BadMessage(String),
    /// The handler's own error.
    Actor(ActorError),
}

/// A [`KeyedActor`] with its types erased, as the registry stores it.
pub trait ErasedActor: Send + Sync + 'static {
    /// Whether its state is saved.
    fn persistent(&self) -> bool;
    /// The state from saved bytes (`None`: a new actor).
    fn load(&self, saved: Option<&[u8]>) -> Result<ErasedState, String>;
    /// The state as bytes (rmp-serde).
    fn save(&self, state: &ErasedState) -> Result<Vec<u8>, String>;
    /// Decodes `msg`, handles it, encodes the reply.
    fn handle_json<'a>(
        &'a self,
        ctx: &'a ActorContext,
        state: &'a mut ErasedState,
        msg: Value,
    ) -> HandleFuture<'a>;
}

struct TypedActor<A>(A);

impl<A: KeyedActor> ErasedActor for TypedActor<A> {
    fn persistent(&self) -> bool {
        A::PERSISTENT
    }

    fn load(&self, saved: Option<&[u8]>) -> Result<ErasedState, String> {
        let state: A::State = match saved {
            Some(b) => rmp_serde::from_slice(b).map_err(|e| e.to_string())?,
            None => A::State::default(),
        };
        Ok(Box::new(state))
    }

    fn save(&self, state: &ErasedState) -> Result<Vec<u8>, String> {
        let state = state
            .downcast_ref::<A::State>()
            .ok_or_else(|| "the state has another type".to_string())?;
        rmp_serde::to_vec_named(state).map_err(|e| e.to_string())
    }

    fn handle_json<'a>(
        &'a self,
        ctx: &'a ActorContext,
        state: &'a mut ErasedState,
        msg: Value,
    ) -> HandleFuture<'a> {
        Box::pin(async move {
            let msg: A::Message =
                serde_json::from_value(msg).map_err(|e| HandleError::BadMessage(e.to_string()))?;
            let state = state.downcast_mut::<A::State>().ok_or_else(|| {
                HandleError::Actor(ActorError::failed("the state has another type"))
            })?;
            let reply = self
                .0
                .handle(ctx, state, msg)
                .await
                .map_err(HandleError::Actor)?;
            serde_json::to_value(reply).map_err(|e| {
                HandleError::Actor(ActorError::failed(format!("the reply is not JSON: {e}")))
            })
        })
    }
}

/// Actor types by name. Part of a [`TaskRegistry`](crate::TaskRegistry).
#[derive(Clone, Default)]
pub struct ActorTypes {
    types: BTreeMap<String, Arc<dyn ErasedActor>>,
}

impl std::fmt::Debug for ActorTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.types.keys()).finish()
    }
}

impl ActorTypes {
    /// Registers `actor` under `name`, replacing a type of the same name.
    ///
    /// # Panics
    /// If `name` is empty or contains `/` (`TYPE/KEY` names an actor): a mistake in the
    /// node binary's code, reported when it starts, like an invalid route in axum.
    pub fn register<A: KeyedActor>(&mut self, name: impl Into<String>, actor: A) {
        let name = name.into();
        assert!(
            !name.is_empty() && !name.contains('/'),
            "actor type name {name:?} must be non-empty and must not contain '/'"
        );
        self.types.insert(name, Arc::new(TypedActor(actor)));
    }

    /// The type registered under `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn ErasedActor>> {
        self.types.get(name).cloned()
    }

    /// Names of the registered types, sorted.
    pub fn names(&self) -> Vec<String> {
        self.types.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tally;
    impl KeyedActor for Tally {
        type State = i64;
        type Message = i64;
        type Reply = i64;
        const PERSISTENT: bool = true;
        async fn handle(
            &self,
            _ctx: &ActorContext,
            total: &mut i64,
            n: i64,
        ) -> Result<i64, ActorError> {
            if n < 0 {
                return Err(ActorError::refused("negative"));
            }
            *total += n;
            Ok(*total)
        }
    }

    #[tokio::test]
    async fn an_erased_actor_handles_json_and_saves_its_state() {
        let mut types = ActorTypes::default();
        types.register("tally", Tally);
        let a = types.get("tally").expect("registered");
        let ctx = ActorContext::new("tally", "k", "n1");
        let mut s = a.load(None).expect("new state");
        assert_eq!(
            a.handle_json(&ctx, &mut s, Value::from(5)).await,
            Ok(Value::from(5))
        );
        let saved = a.save(&s).expect("saves");
        let mut again = a.load(Some(&saved)).expect("loads");
        assert_eq!(
            a.handle_json(&ctx, &mut again, Value::from(2)).await,
            Ok(Value::from(7))
        );
        assert!(matches!(
            a.handle_json(&ctx, &mut again, Value::from("x")).await,
            Err(HandleError::BadMessage(_))
        ));
        assert_eq!(
            a.handle_json(&ctx, &mut again, Value::from(-1)).await,
            Err(HandleError::Actor(ActorError::refused("negative")))
        );
        assert!(a.persistent());
        assert_eq!(types.names(), vec!["tally".to_string()]);
    }
}
