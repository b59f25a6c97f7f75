//! Errors that reach users. Each says what went wrong and, where it can, what to do.
//!
//! A leaf of the crate: it imports nothing of it, so every module can name these errors.
//! [`TaskError`] and [`ActorCallError`] are also exported where their users look for them
//! (`task::TaskError`, `actor::ActorCallError`).

use serde::{Deserialize, Serialize};

/// A job file that cannot be read or parsed.
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    /// The file could not be read.
    #[error("cannot read job file {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a job.
    #[error("job file {path} is not a valid TOML job: {message}")]
    Toml {
        /// The path given.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file is not valid JSON for a job.
    #[error("job file {path} is not a valid JSON job: {message}")]
    Json {
        /// The path given.
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// `--input` was not JSON.
    #[error("--input is not valid JSON: {0}")]
    Input(String),
    /// The file is larger than a job may be.
    #[error(
        "job file {path} is {size} bytes; a job may be at most {max} bytes \
         (put large data where tasks can fetch it, and pass a reference)"
    )]
    TooLarge {
        /// The path given.
        path: String,
        /// Its size (or the bytes read before giving up).
        size: u64,
        /// The limit.
        max: u64,
    },
}

/// A job whose step graph is not runnable. Each variant names the step at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// No steps at all.
    #[error("the job has no steps: add at least one [[steps]] entry")]
    NoSteps,
    /// A step id that is empty or uses a reserved character.
    #[error("step id {0:?} is not allowed: use letters, digits, '-', '_' or '.'")]
    BadStepId(String),
    /// Two steps share an id.
    #[error("duplicate step id {0:?}: step ids must be unique")]
    DuplicateStep(String),
    /// A step without a task.
    #[error("step {0:?} names no task (give it `task`, or `actor` and `key`)")]
    NoTask(String),
    /// A step with both a task and an actor.
    #[error("step {0:?} names both a task and an actor: give it one of them")]
    ActorAndTask(String),
    /// A step with an actor but no key.
    #[error("step {0:?} names an actor but no key: add `key = \"...\"` (the actor's key)")]
    ActorWithoutKey(String),
    /// A step with a key but no actor.
    #[error("step {0:?} has a key but no actor: add `actor = \"TYPE\"`")]
    KeyWithoutActor(String),
    /// `after` names a step that does not exist.
    #[error("step {step:?} depends on unknown step {missing:?}")]
    UnknownDependency {
        /// The step with the bad `after`.
        step: String,
        /// The id that does not exist.
        missing: String,
    },
    /// The dependencies form a cycle.
    #[error("the steps form a dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// `output` names a step that does not exist.
    #[error("output names unknown step {0:?}")]
    UnknownOutput(String),
    /// A retry policy that allows no attempt.
    #[error("step {0:?}: retry.max_attempts must be at least 1")]
    NoAttempts(String),
    /// A `when` or `for_each` that does not parse, or a `for_each` that is not a list.
    #[error("step {step:?}: {field} = {expr:?} {message}")]
    BadExpression {
        /// The step.
        step: String,
        /// `when` or `for_each`.
        field: &'static str,
        /// The expression.
        expr: String,
        /// What is wrong.
        message: String,
    },
    /// A `for_each` over more items than allowed.
    #[error("step {step:?}: for_each gives {count} items; the limit is {limit} (limits.max_for_each_items)")]
    TooManyItems {
        /// The step.
        step: String,
        /// Items.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A job with more steps than allowed.
    #[error("the job has {count} steps; the limit is {limit} (limits.max_steps)")]
    TooManySteps {
        /// Steps.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// A step's task is served by no node.
    #[error("step {step:?} uses task {task:?}, which no node in the cluster serves (waited {waited_ms} ms for one); known tasks: {known}")]
    UnknownTask {
        /// The step.
        step: String,
        /// Its task.
        task: String,
        /// How long the job manager waited for a worker group.
        waited_ms: u64,
        /// Task names that are served.
        known: String,
    },
}

/// What can go wrong between a client and the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No seed could be reached.
    #[error("cannot reach the cluster at {seeds}: {reason}. Check that a troupe-node runs there and --seeds is right")]
    Unreachable {
        /// The seeds tried.
        seeds: String,
        /// Why.
        reason: String,
    },
    /// The TLS handshake with every seed failed.
    #[error("cannot reach the cluster at {seeds} over TLS: {reason}. Check that --tls-ca is the CA that signed the nodes' certificates, and that they name the address in --seeds")]
    Tls {
        /// The seeds tried.
        seeds: String,
        /// Why.
        reason: String,
    },
    /// This client uses TLS and the nodes do not.
    #[error("the nodes at {seeds} do not use TLS (they hung up at the TLS handshake): drop --tls-cert, --tls-key and --tls-ca (and TROUPE_TLS_*), or start the nodes with TLS")]
    NotTls {
        /// The seeds tried.
        seeds: String,
    },
    /// The cluster refused the connection (wrong cookie, or no or wrong TLS certificate).
    #[error("the cluster at {seeds} refused this client: authentication failed. Check --cookie (or TROUPE_COOKIE) matches the nodes' cookie, and, if the nodes use TLS, that --tls-cert, --tls-key and --tls-ca are given and the certificate is signed by the nodes' CA")]
    Refused {
        /// The seeds tried.
        seeds: String,
    },
    /// The nodes speak no wire version this client speaks.
    #[error("the nodes at {seeds} speak wire version {theirs} and this troupe-node {ours}: use the nodes' release of troupe-node (troupe-node --version prints both versions)")]
    WireVersion {
        /// The seeds tried.
        seeds: String,
        /// The versions this client speaks.
        ours: String,
        /// The versions the nodes speak.
        theirs: String,
    },
    /// The job was refused as invalid.
    #[error("job refused: {0}")]
    Invalid(String),
    /// No job with this id.
    #[error("no job {0} is known to the cluster")]
    UnknownJob(String),
    /// The cluster refused the request (a job that is not waiting, an unknown step).
    #[error("{0}")]
    Rejected(String),
    /// A job the call depended on failed.
    #[error("job failed: {0}")]
    JobFailed(String),
    /// A request took too long.
    #[error("timed out after {0:?} waiting for the cluster")]
    Timeout(std::time::Duration),
    /// The connection to the node dropped or a reply was unreadable.
    #[error("lost the connection to the cluster: {0}")]
    Connection(String),
    /// A node was reached but cannot take the request now (its journal cannot commit, it
    /// is draining, no core group answers); another node, or a later try, may.
    #[error(
        "the cluster cannot take this now: {0}. Retry later; if it persists, check the node's log"
    )]
    Unavailable(String),
    /// Bad arguments from the caller.
    #[error("{0}")]
    BadInput(String),
    /// An actor gave no reply (refused, failed, stopped, unavailable).
    #[error("{0}")]
    Actor(ActorCallError),
    /// The cluster has too much work waiting and the client does not wait
    /// (`ClientOptions::overloaded_wait`).
    #[error("the cluster is overloaded: {message}; retry after {retry_after_ms} ms")]
    Overloaded {
        /// What the node said.
        message: String,
        /// When to try again.
        retry_after_ms: u64,
    },
}

impl ClientError {
    /// The process exit code DESIGN.md gives this error: 2 bad input, 3 unreachable/refused.
    pub fn exit_code(&self) -> u8 {
        match self {
            ClientError::Invalid(_)
            | ClientError::BadInput(_)
            | ClientError::UnknownJob(_)
            | ClientError::Rejected(_) => 2,
            ClientError::JobFailed(_) => 1,
            ClientError::Actor(e) => match e {
                ActorCallError::BadMessage { .. } | ActorCallError::UnknownType(_) => 2,
                e if e.is_transient() => 3,
                _ => 1,
            },
            _ => 3,
        }
    }
}

/// How a task failed, which decides what the job supervisor does next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum TaskError {
    /// Worth retrying (a timeout, a busy database): retried under the step's retry policy.
    #[error("transient error: {0}")]
    Transient(String),
    /// Retrying will not help (bad input, a bug, a panic): the step fails at once.
    #[error("permanent error: {0}")]
    Permanent(String),
    /// A person must act first (a revoked token, a missing approval): the step stops with
    /// this message and waits for `resume`.
    #[error("needs action: {0}")]
    NeedsAction(String),
}

impl TaskError {
    /// A transient error with this message.
    pub fn transient(msg: impl Into<String>) -> Self {
        TaskError::Transient(msg.into())
    }
    /// A permanent error with this message.
    pub fn permanent(msg: impl Into<String>) -> Self {
        TaskError::Permanent(msg.into())
    }
    /// A needs-action stop with this message for the user.
    pub fn needs_action(msg: impl Into<String>) -> Self {
        TaskError::NeedsAction(msg.into())
    }
    /// The message without the class.
    pub fn message(&self) -> &str {
        match self {
            TaskError::Transient(m) | TaskError::Permanent(m) | TaskError::NeedsAction(m) => m,
        }
    }
    /// True for errors that the retry policy may retry.
    pub fn is_transient(&self) -> bool {
        matches!(self, TaskError::Transient(_))
    }
}

/// What a caller of an actor gets instead of a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "snake_case")]
pub enum ActorCallError {
    /// The handler refused the message; nothing changed.
    #[error("{actor} refused the message: {reason}")]
    Refused {
        /// `TYPE/KEY`.
        actor: String,
        /// The handler's reason.
        reason: String,
    },
    /// The handler failed or panicked; the activation restarted from the state after the
    /// last message that succeeded.
    #[error("{actor} failed on the message: {reason} (the actor restarted from its saved state)")]
    Failed {
        /// `TYPE/KEY`.
        actor: String,
        /// What went wrong.
        reason: String,
    },
    /// The actor restarted too often and is stopped for a while.
    #[error("{actor} is stopped: {reason}")]
    Stopped {
        /// `TYPE/KEY`.
        actor: String,
        /// Why, and until when.
        reason: String,
    },
    /// The message does not fit the actor type's message type.
    #[error("the message does not fit actor type {actor_type}: {reason}")]
    BadMessage {
        /// The type.
        actor_type: String,
        /// The decoding error.
        reason: String,
    },
    /// No node serves this actor type.
    #[error("no node serves actor type {0:?}: register it on a node (TaskRegistry::register_actor) or check the name")]
    UnknownType(String),
    /// The actor could not be reached just now (it is moving, its node went down, the
    /// core group is electing): worth trying again.
    #[error("{actor} is unavailable: {reason}")]
    Unavailable {
        /// `TYPE/KEY`.
        actor: String,
        /// Why.
        reason: String,
    },
}

impl ActorCallError {
    /// Worth trying again (the actor is moving or its host is unreachable).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ActorCallError::Unavailable { .. } | ActorCallError::UnknownType(_)
        )
    }

    /// The error a job step that called the actor fails with.
    pub fn into_task_error(self) -> TaskError {
        if self.is_transient() {
            TaskError::transient(self.to_string())
        } else {
            TaskError::permanent(self.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_say_whether_to_try_again() {
        let moving = ActorCallError::Unavailable {
            actor: "t/k".into(),
            reason: "moving".into(),
        };
        assert!(moving.clone().into_task_error().is_transient());
        let refused = ActorCallError::Refused {
            actor: "t/k".into(),
            reason: "no".into(),
        };
        assert!(!refused.is_transient());
        assert!(!refused.into_task_error().is_transient());
        assert!(moving.to_string().contains("t/k"));
    }
}
