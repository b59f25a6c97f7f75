//! Handlers of the JSON API, the event stream and `/metrics`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Json;
use futures::Stream;
use ractor::rpc::CallResult;
use ractor::{ActorRef, MessagingErr, RpcReplyPort};
use serde_json::{json, Value};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::StreamExt;
use troupe_actors::{find_on, names, NodeContext};
use troupe_runtime::job::status::{JobState, JobStatus};
use troupe_runtime::job::validate::validate_with;
use troupe_runtime::observe::{metric, EventKind};
use troupe_runtime::protocol::{
    cluster_jobs, submit as submit_job, JobAnswer, JobManagerMessage, JobQueryError,
    MembershipMessage, ResumeRequest, SubmitError, SubmitFailure, SubmitRequest,
};
use troupe_runtime::wire::Wire;
use troupe_runtime::JobSpec;

use super::ApiError;

/// How long a handler waits for the node's actors (or a job's owner) to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest job accepted by `POST /api/jobs`.
use troupe_runtime::job::spec::MAX_JOB_BYTES;
/// Default and largest page of `GET /api/jobs`.
const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 1000;

type ApiResult<T> = Result<T, ApiError>;

fn unavailable(what: &str) -> ApiError {
    ApiError(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("the node's {what} is not running (restarting?); ask again shortly"),
    )
}

fn bad_request(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

/// Asks an actor and waits for its answer; a timeout or a stopped actor is a 503/504.
async fn ask<M, T>(actor: &ActorRef<M>, msg: impl FnOnce(RpcReplyPort<T>) -> M) -> ApiResult<T>
where
    M: ractor::Message,
    T: Send + 'static,
{
    match actor.call(msg, Some(ASK_TIMEOUT)).await {
        Ok(CallResult::Success(v)) => Ok(v),
        Ok(CallResult::Timeout) => Err(ApiError(
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer within {} s; ask again", ASK_TIMEOUT.as_secs()),
        )),
        Ok(CallResult::SenderError)
        | Err(MessagingErr::SendErr(_) | MessagingErr::ChannelClosed) => Err(unavailable("actor")),
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn job_manager(ctx: &NodeContext) -> ApiResult<ActorRef<JobManagerMessage>> {
    find_on(names::JOB_MANAGER, &ctx.config.name).ok_or_else(|| unavailable("job manager"))
}

/// Maps a job manager's answer about one job to HTTP.
fn job_answer(answer: JobAnswer) -> ApiResult<Json<JobStatus>> {
    match answer.into_inner() {
        Ok(Ok(st)) => Ok(Json(st)),
        Ok(Err(e)) => {
            let code = match e {
                JobQueryError::NotFound(_) => StatusCode::NOT_FOUND,
                JobQueryError::Conflict(_) => StatusCode::CONFLICT,
                JobQueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            };
            Err(ApiError(code, e.to_string()))
        }
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

fn check_job_id(id: &str) -> ApiResult<()> {
    if troupe_runtime::vocab::JobId::parse(id).is_err() {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("{id:?} is not a job id (ids look like NODE-BOOT-SEQ, e.g. n1-19a8f3c2b11-42)"),
        ));
    }
    Ok(())
}

/// `GET /api/nodes`: every node this node knows, as `troupe-node nodes --json` prints them.
pub(super) async fn nodes(State(ctx): State<NodeContext>) -> ApiResult<Json<Value>> {
    let m: ActorRef<MembershipMessage> =
        find_on(names::MEMBERSHIP, &ctx.config.name).ok_or_else(|| unavailable("membership"))?;
    let list = ask(&m, MembershipMessage::ListNodes)
        .await?
        .into_inner()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let nodes: Vec<Value> = list.iter().map(crate::commands::nodes::node_json).collect();
    Ok(Json(json!({ "nodes": nodes })))
}

/// `GET /api/actors`: the cluster's keyed-actor activations, as `troupe-node actors
/// --json` prints them.
pub(super) async fn actors(State(ctx): State<NodeContext>) -> ApiResult<Json<Value>> {
    let host: ActorRef<troupe_runtime::protocol::ActorHostMessage> =
        find_on(names::ACTOR_HOST, &ctx.config.name).ok_or_else(|| unavailable("actor host"))?;
    let list = ask(&host, troupe_runtime::protocol::ActorHostMessage::ListAll)
        .await?
        .into_inner()
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    Ok(Json(json!({ "actors": list })))
}

fn parse_state(s: &str) -> ApiResult<JobState> {
    s.parse().map_err(bad_request)
}

/// `GET /api/jobs?state=S&limit=N&offset=M`: the cluster's jobs, newest first.
pub(super) async fn jobs(Query(q): Query<HashMap<String, String>>) -> ApiResult<Json<Value>> {
    let mut state = None;
    let mut limit = DEFAULT_LIMIT;
    let mut offset = 0;
    for (k, v) in &q {
        match k.as_str() {
            "state" => state = Some(parse_state(v)?),
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| {
                        bad_request(format!("limit must be 1 to {MAX_LIMIT}, not {v:?}"))
                    })?
            }
            "offset" => {
                offset = v
                    .parse()
                    .map_err(|_| bad_request(format!("offset must be a number, not {v:?}")))?
            }
            other => {
                return Err(bad_request(format!(
                    "unknown parameter {other:?}; use state, limit, offset"
                )))
            }
        }
    }
    let page = cluster_jobs(state, offset, limit, ASK_TIMEOUT).await;
    Ok(Json(serde_json::to_value(page).unwrap_or(Value::Null)))
}

/// `GET /api/jobs/ID`: the status JSON, from the job's owner.
pub(super) async fn job(
    State(ctx): State<NodeContext>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    check_job_id(&id)?;
    let jm = job_manager(&ctx)?;
    job_answer(ask(&jm, |r| JobManagerMessage::Status(id, r)).await?)
}

/// `POST /api/jobs/ID/cancel`: cancels the job; answers its status.
pub(super) async fn cancel(
    State(ctx): State<NodeContext>,
    Path(id): Path<String>,
) -> ApiResult<Json<JobStatus>> {
    check_job_id(&id)?;
    let jm = job_manager(&ctx)?;
    job_answer(ask(&jm, |r| JobManagerMessage::Cancel(id, r)).await?)
}

/// `POST /api/jobs/ID/steps/STEP/resume`: resumes a step waiting for a user.
pub(super) async fn resume(
    State(ctx): State<NodeContext>,
    Path((id, step)): Path<(String, String)>,
) -> ApiResult<Json<JobStatus>> {
    check_job_id(&id)?;
    let jm = job_manager(&ctx)?;
    let req = Wire::new(ResumeRequest { job: id, step });
    job_answer(ask(&jm, |r| JobManagerMessage::Resume(req, r)).await?)
}

/// The longest `POST /api/jobs?wait=SECS` holds a request.
const MAX_WAIT_SECS: f64 = 300.0;

/// `wait` of `POST /api/jobs?wait=SECS`: seconds, fractions allowed, 0 to [`MAX_WAIT_SECS`].
fn wait_param(q: &HashMap<String, String>) -> ApiResult<Option<Duration>> {
    if let Some(bad) = q.keys().find(|k| k.as_str() != "wait") {
        return Err(bad_request(format!("unknown parameter {bad:?}; use wait")));
    }
    let Some(w) = q.get("wait") else {
        return Ok(None);
    };
    match w.parse::<f64>() {
        Ok(secs) if (0.0..=MAX_WAIT_SECS).contains(&secs) => {
            Ok(Some(Duration::from_secs_f64(secs)))
        }
        _ => Err(bad_request(format!(
            "wait={w:?}: give the seconds to wait for the job's end, 0 to {MAX_WAIT_SECS}"
        ))),
    }
}

/// `POST /api/jobs`: a job as JSON (the job file's fields); answers 201 `{"id": ...}`.
/// With `?wait=SECS`: 200 and the job's final status if it ends within SECS, else 202
/// `{"id": ..., "state": ...}` (ask `GET /api/jobs/ID` later), so a plain HTTP client needs
/// no event stream.
pub(super) async fn submit(
    State(ctx): State<NodeContext>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let wait = wait_param(&q)?;
    let text = body_text(&body, "the job", "")?;
    if !text.trim_start().starts_with('{') {
        return Err(bad_request(
            "the body must be a job as a JSON object, e.g. {\"steps\": [{\"id\": \"a\", \"task\": \"troupe.echo\"}]}",
        ));
    }
    let spec = parse_job(text, "request body.json", &ctx)?;
    let jm = job_manager(&ctx)?;
    // Subscribed before the submission, so that an end right after it is not missed.
    let events = wait.map(|w| (w, ctx.view.events.subscribe()));
    let id = submit_job(&jm, SubmitRequest::new(spec), submit_timeout(&ctx)).await?;
    let Some((wait, events)) = events else {
        return Ok((StatusCode::CREATED, Json(json!({ "id": id }))));
    };
    let mut ended = wait_for_ends(&jm, vec![id.clone()], wait, events).await;
    match ended.remove(&id).unwrap_or(Err(None)) {
        Ok(status) => Ok((
            StatusCode::OK,
            Json(serde_json::to_value(status).unwrap_or(Value::Null)),
        )),
        Err(state) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": id, "state": state.map(JobState::as_str) })),
        )),
    }
}

/// A request's body as text, at most [`MAX_JOB_BYTES`] (413 naming `what` and the limit,
/// then `hint`, past it).
fn body_text<'a>(body: &'a Bytes, what: &str, hint: &str) -> ApiResult<&'a str> {
    if body.len() as u64 > MAX_JOB_BYTES {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{what} is {} bytes; at most {MAX_JOB_BYTES} are accepted{hint}",
                body.len()
            ),
        ));
    }
    std::str::from_utf8(body).map_err(|_| bad_request("the body is not UTF-8 text"))
}

/// A job's JSON text (`name` says where it came from in errors), parsed and validated.
fn parse_job(text: &str, name: &str, ctx: &NodeContext) -> ApiResult<JobSpec> {
    let spec = JobSpec::parse(text, name).map_err(|e| bad_request(e.to_string()))?;
    validate_with(&spec, &ctx.config.limits)
        .map_err(|e| bad_request(format!("invalid job: {e}")))?;
    Ok(spec)
}

/// How long a submission may take: unknown tasks wait up to `task_wait_ms` inside the job
/// manager.
fn submit_timeout(ctx: &NodeContext) -> Duration {
    ASK_TIMEOUT + Duration::from_millis(ctx.config.task_wait_ms)
}

/// Most jobs one `POST /api/jobs/batch` takes.
pub(super) const MAX_BATCH_JOBS: usize = 1000;

/// `POST /api/jobs/batch`: a JSON array of jobs (each as for `POST /api/jobs`), submitted
/// together: the node's job manager takes them one after another while their answers
/// (each job's durable acknowledgement) are awaited side by side, so a batch costs about
/// one submission's wait, not one per job. Answers 200 `{"jobs": [...]}`, one entry per
/// job in the request's order: `{"id": ...}` for an accepted job, `{"error": ...,
/// "status": CODE}` (the code `POST /api/jobs` would have answered) for a refused one; a
/// refused job does not stop the others. With `?wait=SECS` an accepted job's entry is its
/// final status if it ends within SECS (one deadline for the whole batch), else `{"id":
/// ..., "state": ...}`.
pub(super) async fn submit_batch(
    State(ctx): State<NodeContext>,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let wait = wait_param(&q)?;
    let text = body_text(&body, "the batch", " in one request (send it in parts)")?;
    let jobs: Vec<&serde_json::value::RawValue> = serde_json::from_str(text).map_err(|e| {
        bad_request(format!(
            "the body must be a JSON array of jobs, e.g. [{{\"steps\": [{{\"id\": \"a\", \"task\": \"troupe.echo\"}}]}}]: {e}"
        ))
    })?;
    if jobs.is_empty() || jobs.len() > MAX_BATCH_JOBS {
        return Err(bad_request(format!(
            "a batch holds 1 to {MAX_BATCH_JOBS} jobs, this one {}",
            jobs.len()
        )));
    }
    let jm = job_manager(&ctx)?;
    let events = wait.map(|w| (w, ctx.view.events.subscribe()));
    let timeout = submit_timeout(&ctx);
    let submissions = jobs.iter().enumerate().map(|(i, raw)| {
        let parsed = parse_job(raw.get(), &format!("request body.json, job {i}"), &ctx);
        let jm = jm.clone();
        async move {
            let spec = parsed?;
            Ok::<_, ApiError>(submit_job(&jm, SubmitRequest::new(spec), timeout).await?)
        }
    });
    let answers: Vec<ApiResult<String>> = futures::future::join_all(submissions).await;
    let ids: Vec<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok().cloned())
        .collect();
    let mut ended = match events {
        Some((wait, events)) => wait_for_ends(&jm, ids, wait, events).await,
        None => HashMap::new(),
    };
    let entries: Vec<Value> = answers
        .into_iter()
        .map(|a| match a {
            Err(ApiError(code, msg)) => json!({ "error": msg, "status": code.as_u16() }),
            Ok(id) => match ended.remove(&id) {
                Some(Ok(status)) => serde_json::to_value(status).unwrap_or(Value::Null),
                Some(Err(state)) => json!({ "id": id, "state": state.map(JobState::as_str) }),
                None => json!({ "id": id }),
            },
        })
        .collect();
    Ok(Json(json!({ "jobs": entries })))
}

/// Waits up to `wait` for the jobs `ids` to end, on this node's event stream (which
/// carries the events of every node's jobs while the node serves HTTP): each job's final
/// status, or the state last known. The stream is shared by every waiter and by `GET
/// /api/events`: a waiter that falls behind asks the jobs' owners instead. (One
/// subscription per waiter costs a filter per event and waiter; fine for long polls, and
/// it needs no watcher group of its own.)
async fn wait_for_ends(
    jm: &ActorRef<JobManagerMessage>,
    ids: Vec<String>,
    wait: Duration,
    mut events: tokio::sync::broadcast::Receiver<
        std::sync::Arc<troupe_runtime::observe::ClusterEvent>,
    >,
) -> HashMap<String, Result<JobStatus, Option<JobState>>> {
    use tokio::sync::broadcast::error::RecvError;
    let deadline = tokio::time::Instant::now() + wait;
    let mut open: HashMap<String, Option<JobState>> =
        ids.into_iter().map(|id| (id, None)).collect();
    let mut out = HashMap::new();
    // Asks each open job's owner (side by side); the ended ones move to `out`.
    async fn ask_owners(
        jm: &ActorRef<JobManagerMessage>,
        open: &mut HashMap<String, Option<JobState>>,
        out: &mut HashMap<String, Result<JobStatus, Option<JobState>>>,
    ) {
        let asks = open.keys().cloned().map(|id| async move {
            let answer = ask(jm, |r| JobManagerMessage::Status(id.clone(), r)).await;
            (id, answer.ok().and_then(|a| job_answer(a).ok()))
        });
        for (id, answer) in futures::future::join_all(asks).await {
            match answer {
                Some(Json(st)) if st.state.is_terminal() => {
                    open.remove(&id);
                    out.insert(id, Ok(st));
                }
                Some(Json(st)) => {
                    open.insert(id, Some(st.state));
                }
                None => {}
            }
        }
    }
    while !open.is_empty() {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(ev)) => match &ev.kind {
                EventKind::Job(troupe_runtime::JobEvent::JobFinished { status })
                    if open.contains_key(&status.id) =>
                {
                    open.remove(&status.id);
                    out.insert(status.id.clone(), Ok((**status).clone()));
                }
                EventKind::Job(e) => {
                    if let Some(last) = open.get_mut(troupe_runtime::client::event_job(e)) {
                        *last = ev.job_state.or(*last);
                    }
                }
                _ => {}
            },
            Ok(Err(RecvError::Lagged(_))) => ask_owners(jm, &mut open, &mut out).await,
            Ok(Err(RecvError::Closed)) | Err(_) => {
                // Time is up (or the stream closed): the owners' word is the last one.
                ask_owners(jm, &mut open, &mut out).await;
                break;
            }
        }
    }
    out.extend(open.into_iter().map(|(id, last)| (id, Err(last))));
    out
}

/// A refusal from the job manager, as HTTP answers it.
impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Invalid(e) => bad_request(format!("invalid job: {e}")),
            SubmitError::Unavailable(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, e),
            SubmitError::Overloaded {
                message,
                retry_after_ms,
            } => ApiError(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("overloaded: {message}; retry after {retry_after_ms} ms"),
            ),
        }
    }
}

/// A submission without a job id, as HTTP answers it: no answer is a 503, an unreadable
/// one a 500.
impl From<SubmitFailure> for ApiError {
    fn from(e: SubmitFailure) -> Self {
        match e {
            SubmitFailure::Refused(e) => e.into(),
            SubmitFailure::Unreadable(e) => {
                ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            SubmitFailure::Timeout(_) | SubmitFailure::Dropped | SubmitFailure::Unreachable(_) => {
                unavailable("job manager")
            }
        }
    }
}

/// `GET /api/events[?job=ID]`: server-sent events, one JSON object per event (its `event`
/// field says what happened), job events of every node and this node's membership
/// changes. A client that falls behind by more than the buffer gets a `lagged` event
/// saying how many it missed.
pub(super) async fn events(
    State(ctx): State<NodeContext>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    if let Some(bad) = q.keys().find(|k| k.as_str() != "job") {
        return Err(bad_request(format!("unknown parameter {bad:?}; use job")));
    }
    let only = q.get("job").cloned();
    let rx = ctx.view.events.subscribe();
    let stream = BroadcastStream::new(rx).filter_map(move |item| match item {
        Ok(ev) => {
            if let Some(j) = &only {
                match &ev.kind {
                    EventKind::Job(e) if troupe_runtime::client::event_job(e) == j => {}
                    _ => return None,
                }
            }
            Some(Ok(Event::default().data(ev.to_json().to_string())))
        }
        Err(BroadcastStreamRecvError::Lagged(n)) => Some(Ok(
            Event::default().data(json!({"event": "lagged", "missed": n}).to_string())
        )),
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// `GET /healthz`: 200 `{"ok": true}` while the node's actors run, else 503 with the
/// reasons (for a liveness probe).
pub(super) async fn healthz(State(ctx): State<NodeContext>) -> (StatusCode, Json<Value>) {
    let why = troupe_actors::health::unhealthy(&ctx);
    if why.is_empty() {
        (StatusCode::OK, Json(json!({"ok": true})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ok": false, "reasons": why})),
        )
    }
}

/// `GET /readyz`: 200 `{"ready": true}` once the node has joined, knows its core group
/// and is not draining, else 503 `{"ready": false, "reasons": [...]}` (for a readiness
/// probe).
pub(super) async fn readyz(State(ctx): State<NodeContext>) -> (StatusCode, Json<Value>) {
    let why = troupe_actors::health::not_ready(&ctx);
    if why.is_empty() {
        (StatusCode::OK, Json(json!({"ready": true})))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"ready": false, "reasons": why})),
        )
    }
}

/// `GET /metrics`: Prometheus text.
pub(super) async fn metrics(State(ctx): State<NodeContext>) -> impl IntoResponse {
    // Gauges read off the node's scheduler when scraped.
    let s = &ctx.scheduler;
    metrics::gauge!(metric::SLOTS).set(s.slot_count() as f64);
    metrics::gauge!(metric::SLOTS_BUSY).set(s.busy() as f64);
    for (lane, depth) in s.depths().into_iter().enumerate() {
        metrics::gauge!(metric::QUEUE_DEPTH, "lane" => troupe_actors::scheduler::lanes::lane_name(lane))
            .set(depth as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        troupe_actors::telemetry::render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `POST /api/jobs` answers a refused or unanswered submission with the status and
    /// text it always gave: 400 for an invalid job, 503 when the node cannot take it or
    /// does not answer, 500 for an unreadable answer.
    #[test]
    fn submit_failures_keep_their_statuses_and_texts() {
        let answer = |f: SubmitFailure| {
            let ApiError(code, text) = ApiError::from(f);
            (code, text)
        };
        assert_eq!(
            answer(SubmitError::Invalid("step \"a\": bad".into()).into()),
            (
                StatusCode::BAD_REQUEST,
                "invalid job: step \"a\": bad".into()
            )
        );
        assert_eq!(
            answer(SubmitError::Unavailable("draining".into()).into()),
            (StatusCode::SERVICE_UNAVAILABLE, "draining".into())
        );
        assert_eq!(
            answer(
                SubmitError::Overloaded {
                    message: "too much waits".into(),
                    retry_after_ms: 100,
                }
                .into()
            ),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded: too much waits; retry after 100 ms".into()
            )
        );
        for missing in [
            SubmitFailure::Timeout(Duration::from_secs(5)),
            SubmitFailure::Dropped,
            SubmitFailure::Unreachable("closed".into()),
        ] {
            assert_eq!(
                answer(missing),
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the node's job manager is not running (restarting?); ask again shortly".into()
                )
            );
        }
    }
}
