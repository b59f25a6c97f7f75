//! The supervisor handle: how programs (and the `submit`, `status`, `nodes` subcommands)
//! talk to a cluster.
//!
//! A [`Client`] is itself a small cluster member: it starts a ractor_cluster node server on
//! an ephemeral loopback port and dials the seeds with the cluster's cookie, so the cookie
//! handshake authenticates it like any node. It serves no tasks; it hosts one `Watcher`
//! actor, in its own process group, to which job managers push the events of the jobs it
//! follows.
//!
//! This file is the API ([`Client`], [`JobHandle`]); [`ClientOptions`] says how to reach
//! the cluster, `connection` opens the client's place in it (endpoint, seeds, sessions,
//! re-dialling) and `watcher` is the actor that receives the pushed events.
//!
//! ```no_run
//! # async fn demo() -> Result<(), troupe_runtime::ClientError> {
//! use troupe_runtime::{Client, ClientOptions, JobSpec, StepSpec};
//! let client = Client::connect(ClientOptions::new(["127.0.0.1:7340"], "secret")).await?;
//! let job = JobSpec::new("hello").step(StepSpec::new("a", "troupe.node"));
//! let mut handle = client.submit(job).await?;
//! let status = handle.wait().await?;
//! println!("{} ran on {:?}", status.id, status.output);
//! # Ok(()) }
//! ```

mod connection;
mod options;
mod watcher;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{ActorRef, RpcReplyPort};
use tokio::sync::mpsc;

use crate::error::ClientError;
use crate::job::spec::{JobSpec, StepSpec};
use crate::job::status::{JobEvent, JobState, JobStatus};
use crate::observe::JobsPage;
use crate::protocol::actor_host::{ActivationInfo, ActorHostMessage};
use crate::protocol::event_hub::{ClusterJobsQuery, EventHubMessage};
use crate::protocol::groups::{
    client_group, first_member, job_manager_group, ACTOR_HOSTS_GROUP, EVENT_HUBS_GROUP,
    MEMBERSHIP_GROUP,
};
use crate::protocol::job_manager::{
    submit, InvalidateRequest, JobManagerMessage, JobQueryError, ResumeRequest, SubmitError,
    SubmitFailure, SubmitRequest, WatchRequest,
};
use crate::protocol::membership::{MembershipMessage, NodeInfo, NodeState};
use crate::vocab::JobId;
use crate::wire::Wire;
use connection::Connection;

pub use options::ClientOptions;
pub use watcher::event_job;

/// A connection to a cluster. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    connection: Arc<Connection>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("name", &self.connection.name)
            .finish()
    }
}

impl Client {
    /// Connects to the seeds; returns once one node accepted this client.
    pub async fn connect(opts: ClientOptions) -> Result<Client, ClientError> {
        Ok(Client {
            connection: Connection::open(opts).await?,
        })
    }

    /// This client's member name.
    pub fn name(&self) -> &str {
        &self.connection.name
    }

    /// Names of the nodes this client has a session with.
    pub fn connected_nodes(&self) -> Vec<String> {
        self.connection.connected_nodes()
    }

    /// The job manager of `node`, if this client sees it.
    fn job_manager_of(&self, node: &str) -> Option<ActorRef<JobManagerMessage>> {
        first_member(&job_manager_group(node))
    }

    /// A job manager to talk to: `prefer`'s if connected, else the first connected node's.
    fn pick_job_manager(
        &self,
        prefer: Option<&str>,
    ) -> Result<(String, ActorRef<JobManagerMessage>), ClientError> {
        let nodes = self.connected_nodes();
        let order = prefer
            .filter(|p| nodes.iter().any(|n| n == p))
            .map(|p| p.to_string())
            .into_iter()
            .chain(nodes);
        for n in order {
            if let Some(jm) = self.job_manager_of(&n) {
                return Ok((n, jm));
            }
        }
        Err(ClientError::Connection(format!(
            "no job manager reachable (connected to {:?})",
            self.connected_nodes()
        )))
    }

    async fn call<M: ractor::Message, T: Send + 'static>(
        &self,
        to: &ActorRef<M>,
        msg: impl FnOnce(RpcReplyPort<Wire<T>>) -> M,
    ) -> Result<T, ClientError> {
        let timeout = self.connection.opts.request_timeout;
        rpc_reply(to.call(msg, Some(timeout)).await, timeout)
    }

    /// A handle on `job`, with the events that arrived for it before.
    fn handle_for(&self, job: &str) -> JobHandle {
        JobHandle {
            id: job.to_string(),
            client: self.clone(),
            events: self.connection.subs.follow(job),
            last: None,
        }
    }

    /// Submits a job; the handle follows it. Submissions go round-robin to the nodes this
    /// client is connected to (every node accepts jobs, and owns the jobs it accepts); if
    /// one cannot be reached the next is tried.
    ///
    /// When the cluster is overloaded (`admission.max_waiting_steps`), it waits and submits
    /// again, as the cluster says, for up to `ClientOptions::overloaded_wait`.
    pub async fn submit(&self, spec: JobSpec) -> Result<JobHandle, ClientError> {
        let wait = self.connection.opts.overloaded_wait;
        let give_up = Instant::now() + wait;
        let hold = &self.connection.overloaded_until;
        loop {
            if !wait.is_zero() {
                // Another submission of this client was refused: hold with it, then
                // try once more (at the latest when the wait runs out).
                let until = *hold.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(until) = until.filter(|u| *u > Instant::now()) {
                    tokio::time::sleep_until(until.min(give_up).into()).await;
                }
            }
            match self.submit_once(spec.clone()).await {
                Err(ClientError::Overloaded { retry_after_ms, .. })
                    if Instant::now() + Duration::from_millis(retry_after_ms) <= give_up =>
                {
                    let until = Instant::now() + Duration::from_millis(retry_after_ms.max(1));
                    let mut h = hold.lock().unwrap_or_else(|p| p.into_inner());
                    *h = Some(h.map_or(until, |u| u.max(until)));
                }
                other => return other,
            }
        }
    }

    /// Submits to one connected node after another until one accepts; waits up to
    /// [`NEXT_NODE_WAIT`] for more nodes' sessions when every node so far refused.
    async fn submit_once(&self, spec: JobSpec) -> Result<JobHandle, ClientError> {
        crate::job::validate::validate(&spec).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let size = crate::wire::encode(&spec)
            .map(|b| b.len() as u64)
            .unwrap_or(0);
        let max = 2 * crate::job::spec::MAX_JOB_BYTES;
        if size > max {
            return Err(ClientError::Invalid(format!(
                "the job is {size} bytes encoded; a job may be at most {max} \
                 (put large data where tasks can fetch it, and pass a reference)"
            )));
        }
        if self.connected_nodes().is_empty() {
            return Err(ClientError::Connection("not connected to any node".into()));
        }
        let first = self.connection.next_submit.fetch_add(1, Ordering::Relaxed);
        let mut last_err = None;
        let mut tried = std::collections::HashSet::new();
        // A client that just connected may have one node's session ready, and that node
        // may be leaving (a rolling restart): give the other seeds' sessions a moment.
        let wait_until = tokio::time::Instant::now() + NEXT_NODE_WAIT;
        loop {
            let nodes = self.connected_nodes();
            for k in 0..nodes.len() {
                let node = &nodes[(first + k) % nodes.len()];
                if !tried.insert(node.clone()) {
                    continue;
                }
                let Some(jm) = self.job_manager_of(node) else {
                    continue;
                };
                let req = SubmitRequest {
                    watch: Some(WatchRequest {
                        job: String::new(),
                        group: client_group(&self.connection.name),
                        progress: self.connection.opts.progress,
                        reports_only: false,
                    }),
                    ..SubmitRequest::new(spec.clone())
                };
                match submit(&jm, req, self.connection.opts.request_timeout)
                    .await
                    .map_err(ClientError::from)
                {
                    Ok(id) => return Ok(self.handle_for(&id)),
                    // Not reached, or it cannot take jobs now: the next node may.
                    Err(e @ (ClientError::Connection(_) | ClientError::Unavailable(_))) => {
                        last_err = Some(e)
                    }
                    Err(e) => return Err(e),
                }
            }
            // Only while some seed has no ready session yet (an overloaded cluster's
            // refusal goes back to the caller's own retry at once).
            if nodes.len() >= self.connection.opts.seeds.len()
                || tokio::time::Instant::now() >= wait_until
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(last_err.unwrap_or_else(|| ClientError::Connection("no job manager reachable".into())))
    }

    /// Drops the cached result of `task` on `input` (a pure task's) at its key's owner,
    /// through any node; true if it was cached. The next identical request runs again.
    pub async fn invalidate(
        &self,
        task: &str,
        input: &serde_json::Value,
    ) -> Result<bool, ClientError> {
        let (_, jm) = self.pick_job_manager(None)?;
        let req = InvalidateRequest {
            task: task.to_string(),
            input: input.clone(),
        };
        let timeout = self.connection.opts.request_timeout;
        match jm
            .call(
                |r| JobManagerMessage::Invalidate(Wire::new(req), r),
                Some(timeout),
            )
            .await
        {
            Ok(ractor::rpc::CallResult::Success(had)) => Ok(had),
            Ok(ractor::rpc::CallResult::Timeout) => Err(ClientError::Timeout(timeout)),
            Ok(ractor::rpc::CallResult::SenderError) => Err(ClientError::Connection(
                "the node dropped the request".into(),
            )),
            Err(e) => Err(ClientError::Connection(e.to_string())),
        }
    }

    /// The status of a job, from any node.
    pub async fn status(&self, job: &str) -> Result<JobStatus, ClientError> {
        let owner = JobId::owner_of(job).ok_or_else(|| {
            ClientError::BadInput(format!(
                "{job:?} is not a job id (ids look like NODE-BOOT-SEQ)"
            ))
        })?;
        let (_, jm) = self.pick_job_manager(Some(owner))?;
        let job_id = job.to_string();
        self.call(&jm, |reply| JobManagerMessage::Status(job_id, reply))
            .await?
            .map_err(|e| query_error(job, e))
    }

    /// The job file `job` was submitted with (`rerun`). Only its owner keeps it: while
    /// the job runs, and with its status once it ended (not across the owner's restart).
    pub async fn spec(&self, job: &str) -> Result<JobSpec, ClientError> {
        let owner = parse_owner(job)?;
        // Any node's job manager forwards the question to the job's owner.
        let (_, jm) = self.pick_job_manager(Some(owner))?;
        let id = job.to_string();
        self.call(&jm, |reply| JobManagerMessage::Spec(id, reply))
            .await?
            .map_err(|e| query_error(job, e))
    }

    /// The cluster's jobs, newest first: a page of `limit` after `offset`, only those in
    /// `state` if given. A node that does not answer is named in the page's
    /// `unanswered` list.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        offset: usize,
        limit: usize,
    ) -> Result<JobsPage, ClientError> {
        // A client sees only the nodes it is connected to; one of their hubs gathers.
        let hubs = ractor::pg::get_members(&EVENT_HUBS_GROUP.to_string());
        let mut last = ClientError::Connection("no node's event hub is visible".into());
        for hub in hubs {
            let hub: ActorRef<EventHubMessage> = hub.into();
            let q = ClusterJobsQuery {
                state,
                offset,
                limit,
            };
            match self
                .call(&hub, |reply| {
                    EventHubMessage::ListClusterJobs(Wire::new(q), reply)
                })
                .await
            {
                Ok(page) => return Ok(page),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Cancels a job (from any node); answers its status after the cancel.
    pub async fn cancel(&self, job: &str) -> Result<JobStatus, ClientError> {
        let owner = parse_owner(job)?;
        let (_, jm) = self.pick_job_manager(Some(owner))?;
        let id = job.to_string();
        self.call(&jm, |reply| JobManagerMessage::Cancel(id, reply))
            .await?
            .map_err(|e| ClientError::Rejected(e.to_string()))
    }

    /// Resumes a step that waits for a user's action.
    pub async fn resume(&self, job: &str, step: &str) -> Result<JobStatus, ClientError> {
        let owner = parse_owner(job)?;
        let (_, jm) = self.pick_job_manager(Some(owner))?;
        let req = ResumeRequest {
            job: job.to_string(),
            step: step.to_string(),
        };
        self.call(&jm, |reply| {
            JobManagerMessage::Resume(Wire::new(req), reply)
        })
        .await?
        .map_err(|e| ClientError::Rejected(e.to_string()))
    }

    /// An ordered distributed map (seed 004): runs `task` on every input across the
    /// cluster, as one job with a `for_each` step, and returns the outputs in input order
    /// with the node that computed each.
    pub async fn dmap(
        &self,
        task: &str,
        inputs: Vec<serde_json::Value>,
    ) -> Result<Vec<(serde_json::Value, String)>, ClientError> {
        let n = inputs.len();
        let spec = JobSpec::new("dmap")
            .with_input(serde_json::Value::Array(inputs))
            .step(StepSpec::new("map", task).for_each("input"));
        let mut h = self.submit(spec).await?;
        let st = h.wait().await?;
        if st.state != JobState::Succeeded {
            return Err(ClientError::JobFailed(st.error.unwrap_or_else(|| {
                format!("dmap job {} {}", st.id, st.state.as_str())
            })));
        }
        let outputs = match st.output {
            Some(serde_json::Value::Array(v)) if v.len() == n => v,
            other => {
                return Err(ClientError::Connection(format!(
                    "dmap job answered {other:?}"
                )))
            }
        };
        Ok(outputs
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    v,
                    st.steps
                        .get(&format!("map[{i}]"))
                        .and_then(|s| s.node.clone())
                        .unwrap_or_default(),
                )
            })
            .collect())
    }

    /// A handle on a job submitted earlier (by anyone). Events flow if this client is
    /// connected to the job's owner; [`JobHandle::wait`] works either way.
    pub async fn watch(&self, job: &str) -> Result<JobHandle, ClientError> {
        let owner = JobId::owner_of(job).ok_or_else(|| {
            ClientError::BadInput(format!(
                "{job:?} is not a job id (ids look like NODE-BOOT-SEQ)"
            ))
        })?;
        let mut handle = self.handle_for(job);
        if let Some(jm) = self.job_manager_of(owner) {
            let req = WatchRequest {
                job: job.to_string(),
                group: client_group(&self.connection.name),
                progress: self.connection.opts.progress,
                reports_only: false,
            };
            let st = self
                .call(&jm, |reply| JobManagerMessage::Watch(Wire::new(req), reply))
                .await?
                .map_err(|e| query_error(job, e))?;
            handle.last = Some(st);
        } else {
            handle.last = Some(self.status(job).await?);
        }
        Ok(handle)
    }

    /// Every node the cluster knows, as the first connected node sees it.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, ClientError> {
        let members = ractor::pg::get_members(&MEMBERSHIP_GROUP.to_string());
        let m: ActorRef<MembershipMessage> =
            members.into_iter().next().map(Into::into).ok_or_else(|| {
                ClientError::Connection("no node's membership actor is visible".into())
            })?;
        let timeout = self.connection.opts.request_timeout;
        rpc_reply(
            m.call(MembershipMessage::ListNodes, Some(timeout)).await,
            timeout,
        )
    }

    /// Sends `message` to actor `key` of type `actor_type` and returns its reply. The
    /// actor is activated if it is not running; while it is moving (its node went down,
    /// a node joined) the call tries again, for up to the client's request timeout.
    pub async fn call_actor(
        &self,
        actor_type: &str,
        key: &str,
        message: serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        crate::actor::route::call(
            actor_type,
            key,
            message,
            self.connection.opts.request_timeout,
        )
        .await
        .map_err(ClientError::Actor)
    }

    /// The activations of keyed actors on every node, as one node gathers them (the next
    /// node is asked if one does not answer).
    pub async fn actors(&self) -> Result<Vec<ActivationInfo>, ClientError> {
        let timeout = self.connection.opts.request_timeout;
        let mut last = ClientError::Connection("no node's actor host is visible".into());
        for host in ractor::pg::get_members(&ACTOR_HOSTS_GROUP.to_string()) {
            let host: ActorRef<ActorHostMessage> = host.into();
            match rpc_reply(
                host.call(ActorHostMessage::ListAll, Some(timeout)).await,
                timeout,
            ) {
                Ok(list) => return Ok(list),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Waits until at least `n` nodes are up, as the cluster sees it.
    pub async fn wait_for_nodes(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<NodeInfo>, ClientError> {
        let start = Instant::now();
        loop {
            let nodes = self.nodes().await?;
            let up = nodes.iter().filter(|i| i.state == NodeState::Up).count();
            if up >= n {
                return Ok(nodes);
            }
            if start.elapsed() > timeout {
                return Err(ClientError::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A refusal from the job manager, as a client reports it: an invalid job is the caller's
/// fault, a node that cannot take jobs is as good as unreachable (the next node is tried).
impl From<SubmitError> for ClientError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(m) => ClientError::Invalid(m),
            SubmitError::Unavailable(m) => ClientError::Unavailable(m),
            SubmitError::Overloaded {
                message,
                retry_after_ms,
            } => ClientError::Overloaded {
                message,
                retry_after_ms,
            },
        }
    }
}

/// A submission without a job id, as a client reports it (the same errors as any other
/// request of the client's).
impl From<SubmitFailure> for ClientError {
    fn from(e: SubmitFailure) -> Self {
        match e {
            SubmitFailure::Refused(e) => e.into(),
            SubmitFailure::Timeout(t) => ClientError::Timeout(t),
            SubmitFailure::Dropped => ClientError::Connection(DROPPED.into()),
            SubmitFailure::Unreachable(m) => ClientError::Connection(m),
            SubmitFailure::Unreadable(e) => ClientError::Connection(e.to_string()),
        }
    }
}

/// What a client says of a request its node dropped.
/// How long a submission refused by every ready node waits for the sessions of other
/// seeds (see [`Client::submit_once`]).
const NEXT_NODE_WAIT: Duration = Duration::from_secs(2);

const DROPPED: &str = "the node dropped the request (its session closed)";

fn parse_owner(job: &str) -> Result<&str, ClientError> {
    JobId::owner_of(job).ok_or_else(|| {
        ClientError::BadInput(format!(
            "{job:?} is not a job id (ids look like NODE-BOOT-SEQ)"
        ))
    })
}

/// The payload of an RPC reply, or what went wrong on the way.
fn rpc_reply<T, E: std::fmt::Display>(
    r: Result<ractor::rpc::CallResult<Wire<T>>, E>,
    timeout: Duration,
) -> Result<T, ClientError> {
    match r {
        Ok(ractor::rpc::CallResult::Success(w)) => w
            .into_inner()
            .map_err(|e| ClientError::Connection(e.to_string())),
        Ok(ractor::rpc::CallResult::Timeout) => Err(ClientError::Timeout(timeout)),
        Ok(ractor::rpc::CallResult::SenderError) => Err(ClientError::Connection(DROPPED.into())),
        Err(e) => Err(ClientError::Connection(e.to_string())),
    }
}

/// A node's refusal to answer about `job`, as the client error a user acts on: an unknown
/// job is bad input (exit 2), an owner out of reach is for later (exit 3).
fn query_error(job: &str, e: JobQueryError) -> ClientError {
    match e {
        JobQueryError::NotFound(_) => ClientError::UnknownJob(job.to_string()),
        JobQueryError::Conflict(m) => ClientError::Rejected(m),
        JobQueryError::Unavailable(m) => ClientError::Unavailable(m),
    }
}

/// A job being followed.
pub struct JobHandle {
    id: String,
    client: Client,
    events: mpsc::UnboundedReceiver<JobEvent>,
    last: Option<JobStatus>,
}

impl std::fmt::Debug for JobHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle").field("id", &self.id).finish()
    }
}

/// How often [`JobHandle::wait`] asks for the status when no event arrives (a safety net
/// for events lost with a dropped connection).
const POLL_EVERY: Duration = Duration::from_secs(2);

impl JobHandle {
    /// The job id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The next event, or `None` once the job finished and every event was read.
    pub async fn next_event(&mut self) -> Option<JobEvent> {
        if matches!(&self.last, Some(s) if s.state.is_terminal()) && self.events.is_empty() {
            return None;
        }
        loop {
            tokio::select! {
                ev = self.events.recv() => {
                    let ev = ev?;
                    if let JobEvent::JobFinished { status } = &ev {
                        self.last = Some((**status).clone());
                    }
                    return Some(ev);
                }
                _ = tokio::time::sleep(POLL_EVERY) => {
                    if let Ok(st) = self.client.status(&self.id).await {
                        if st.state.is_terminal() {
                            self.last = Some(st.clone());
                            return Some(JobEvent::JobFinished { status: Box::new(st) });
                        }
                    }
                }
            }
        }
    }

    /// Waits for the job to end and returns its final status.
    pub async fn wait(&mut self) -> Result<JobStatus, ClientError> {
        loop {
            if let Some(s) = &self.last {
                if s.state.is_terminal() {
                    return Ok(s.clone());
                }
            }
            match self.next_event().await {
                Some(JobEvent::JobFinished { status }) => return Ok(*status),
                Some(_) => {}
                None => return self.client.status(&self.id).await,
            }
        }
    }

    /// Asks the status now.
    pub async fn status(&self) -> Result<JobStatus, ClientError> {
        self.client.status(&self.id).await
    }

    /// Cancels the job; running tasks are told to stop.
    pub async fn cancel(&self) -> Result<JobStatus, ClientError> {
        self.client.cancel(&self.id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client reports a refused or unanswered submission as it reports any request:
    /// the node that cannot take jobs now as a lost connection (so the next node is
    /// tried), the rest with the texts users and tests know.
    #[test]
    fn submit_failures_become_the_client_errors_they_always_were() {
        let e = |f: SubmitFailure| ClientError::from(f).to_string();
        assert_eq!(
            e(SubmitError::Invalid("step \"a\": bad".into()).into()),
            "job refused: step \"a\": bad"
        );
        assert!(matches!(
            ClientError::from(SubmitFailure::Refused(SubmitError::Unavailable("busy".into()))),
            ClientError::Unavailable(m) if m == "busy"
        ));
        assert!(matches!(
            ClientError::from(SubmitFailure::Refused(SubmitError::Overloaded {
                message: "admission.max_waiting_steps".into(),
                retry_after_ms: 100,
            })),
            ClientError::Overloaded {
                retry_after_ms: 100,
                ..
            }
        ));
        assert!(matches!(
            ClientError::from(SubmitFailure::Timeout(Duration::from_secs(10))),
            ClientError::Timeout(t) if t == Duration::from_secs(10)
        ));
        assert_eq!(
            e(SubmitFailure::Dropped),
            "lost the connection to the cluster: the node dropped the request (its session closed)"
        );
        assert!(matches!(
            ClientError::from(SubmitFailure::Unreachable("closed".into())),
            ClientError::Connection(m) if m == "closed"
        ));
    }
}
