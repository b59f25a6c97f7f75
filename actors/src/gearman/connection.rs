//! One Gearman connection: reads packets and admin lines, answers them, and cleans up
//! when it closes (a worker's held attempts are lost and run again elsewhere).
//!
//! Answers go out in the order of the requests, because Gearman clients match each
//! `JOB_CREATED` to their submissions by order. Submissions are pipelined: the connection
//! keeps reading and submitting while earlier submissions wait for their job ids (up to
//! [`MAX_PIPELINED`]), and answers them in order as they come back; any other request
//! first waits for the submissions before it (few clients mix them, and it keeps every
//! other request as simple as it was). Writes go through the connection's [`Outbox`],
//! drained by a writer task that batches whatever is queued into one write.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use ractor::rpc::CallResult;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;
use troupe_runtime::gearman::data::{carry, for_task, to_workload, EXCEPTION, WORK_FAIL};
use troupe_runtime::gearman::packet::{error_packet, response, PacketType, RawPacket, Submit};
use troupe_runtime::gearman::{CodecError, Frame, GearmanCodec, Request};
use troupe_runtime::job::spec::{JobSpec, RetryPolicy, StepSpec};
use troupe_runtime::observe::metric;
use troupe_runtime::protocol::{
    first_member, job_manager_group, submit as submit_job, unique_owner, JobManagerMessage,
    JobQueryError, ProgressKind, StepProgress, StepResult, SubmitError, SubmitFailure,
    SubmitRequest, UniqueJob, WatchRequest,
};
use troupe_runtime::task::TaskError;
use troupe_runtime::wire::Wire;
use troupe_runtime::{JobEvent, JobState, JobStatus};

use super::board::{attempt_of, ConnId};
use super::clients::{send_event, watcher_group};
use super::workers::{apply_change, report_lost};
use super::{admin, lock, Drain, GearmanShared, Outbox};
use crate::worker_pool::send_result;
use crate::NodeContext;

/// How long a submission or status question to a job manager may take (long: a
/// submission answered after it would exist without the client knowing).
const ASK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a submission the cluster refused as overloaded is retried before the client
/// gets `ERROR SERVER_BUSY`.
const OVERLOADED_WAIT: Duration = Duration::from_secs(60);
/// How long one write may wait for a peer that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest function name accepted (gearmand's limit).
pub(crate) const MAX_FUNCTION: usize = 512;
/// Longest unique id accepted (gearmand's limit).
pub(crate) const MAX_UNIQUE: usize = 64;
/// Longest client id accepted.
pub(crate) const MAX_CLIENT_ID: usize = 64;
/// Functions one worker connection may announce.
pub(crate) const MAX_ABILITIES: usize = 256;
/// Largest workload, result or data chunk, as the JSON it becomes (so that it fits in
/// a node-to-node message).
pub(crate) const MAX_DATA: usize = troupe_runtime::job::spec::MAX_JOB_BYTES as usize;
pub(crate) use super::STEP;
/// Most bytes the writer puts into one write.
const WRITE_BATCH: usize = 256 * 1024;
/// Most submissions of one connection waiting for their job ids at once; past it the
/// connection reads nothing more until the oldest is answered (backpressure).
pub(crate) const MAX_PIPELINED: usize = 256;

/// A submission on its way to a job manager, answered in order.
type Submitting = Pin<Box<dyn Future<Output = Submitted> + Send>>;

/// A submission's answer: its job id, or why it got none.
struct Submitted {
    background: bool,
    unique: bool,
    outcome: Result<String, Refusal>,
}

/// Serves one connection until it closes.
pub(crate) async fn serve(stream: TcpStream, peer: SocketAddr, ctx: NodeContext) {
    let _ = stream.set_nodelay(true);
    let shared = ctx.view.gearman.clone();
    let (outbox, drain) = Outbox::new();
    let id = shared.open(outbox.clone());
    lock(&shared.board).connect(id, peer.to_string());
    metrics::gauge!(metric::GEARMAN_CONNECTIONS).increment(1.0);
    let (rd, wr) = stream.into_split();
    tokio::spawn(write_loop(wr, drain));
    let mut frames = FramedRead::new(rd, GearmanCodec::new(ctx.config.max_message_bytes));
    let mut conn = Connection {
        id,
        peer,
        ctx,
        shared: shared.clone(),
        given: VecDeque::new(),
        overloaded: Arc::default(),
        outbox,
    };
    let mut submitting: FuturesOrdered<Submitting> = FuturesOrdered::new();
    loop {
        tokio::select! {
            _ = conn.outbox.closed().cancelled() => {
                shared.throttle.warn("closed a Gearman connection that does not read its answers", &peer.to_string());
                break;
            }
            Some(done) = submitting.next(), if !submitting.is_empty() => conn.submitted(done),
            f = frames.next(), if submitting.len() < MAX_PIPELINED => match f {
                None => {
                    conn.answer_submissions(&mut submitting).await;
                    break;
                }
                Some(Ok(Frame::Packet(p))) => conn.packet(p, &mut submitting).await,
                Some(Ok(Frame::Admin(line))) => {
                    conn.answer_submissions(&mut submitting).await;
                    conn.admin(&line).await
                }
                Some(Err(e)) => {
                    conn.answer_submissions(&mut submitting).await;
                    conn.framing_error(e);
                    break;
                }
            }
        }
    }
    conn.closed();
}

/// Writes what the outbox holds, batching packets queued together into one write.
/// A peer that does not read for `WRITE_TIMEOUT` is given up (the task ends and the
/// socket closes).
async fn write_loop(mut wr: OwnedWriteHalf, mut drain: Drain) {
    let mut buf = BytesMut::new();
    while let Some(p) = drain.rx.recv().await {
        buf.extend_from_slice(&p);
        while buf.len() < WRITE_BATCH {
            match drain.rx.try_recv() {
                Ok(p) => buf.extend_from_slice(&p),
                Err(_) => break,
            }
        }
        match tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&buf)).await {
            Ok(Ok(())) => {}
            _ => {
                drain.give_up();
                return;
            }
        }
        drain.written(buf.len());
        buf.clear();
    }
    let _ = tokio::time::timeout(WRITE_TIMEOUT, wr.shutdown()).await;
}

/// The carried form of a workload (its bytes, exactly: `gearman::data`), if it is not
/// over the size of a job.
fn workload(data: &[u8]) -> Option<serde_json::Value> {
    (data.len() <= MAX_DATA).then(|| carry(data))
}

/// The nodes that run a job manager and are not down, for rendezvous choices.
fn job_nodes(ctx: &NodeContext) -> Vec<String> {
    let mut nodes: Vec<String> = ractor::pg::which_groups()
        .iter()
        .filter_map(|g| g.strip_prefix("troupe.job_manager."))
        .filter(|n| !ctx.view.is_down(n))
        .map(str::to_string)
        .collect();
    nodes.sort();
    nodes
}

fn status_numbers(st: &JobStatus) -> (bool, bool, u64, u64) {
    let known = !st.state.is_terminal();
    let running = known && st.state == JobState::Running;
    // A job that ended is unknown to gearmand, with no progress: `0 0 0 0`.
    let [n, d] = match known {
        true => st.steps.values().find_map(|s| s.progress).unwrap_or([0, 0]),
        false => [0, 0],
    };
    (known, running, n, d)
}

fn flag(b: bool) -> &'static [u8] {
    if b {
        b"1"
    } else {
        b"0"
    }
}

struct Connection {
    id: ConnId,
    peer: SocketAddr,
    ctx: NodeContext,
    shared: Arc<GearmanShared>,
    outbox: Outbox,
    /// The last [`GIVEN_KEPT`] handles given to this worker, held or not.
    given: VecDeque<String>,
    /// Held by the submission that retries after an "overloaded" refusal, so that the
    /// connection's refused submissions ask again one at a time, in order.
    overloaded: Arc<tokio::sync::Mutex<()>>,
}

/// Handles a connection remembers having been given (see [`Connection::work_end`]).
const GIVEN_KEPT: usize = 256;

impl Connection {
    fn send(&self, p: Bytes) {
        self.outbox.send(p);
    }

    /// A worker's packet about a job it does not hold (never given, given up at its
    /// timeout, cancelled, or ended): `ERROR JOB_NOT_FOUND`, as gearmand answers it.
    fn not_held(&self, handle: &str) {
        self.refuse(
            "JOB_NOT_FOUND",
            "unknown_handle",
            &format!("{handle} is not a job this worker holds"),
        );
    }

    fn refuse(&self, code: &str, reason: &'static str, text: &str) {
        metrics::counter!(metric::GEARMAN_ERRORS, "reason" => reason).increment(1);
        self.send(response(
            PacketType::ERROR,
            &[code.as_bytes(), text.as_bytes()],
        ));
    }

    fn framing_error(&self, e: CodecError) {
        if matches!(e, CodecError::Io(_)) {
            return;
        }
        metrics::counter!(metric::GEARMAN_ERRORS, "reason" => e.reason()).increment(1);
        self.shared.throttle.warn(
            &format!("closed a Gearman connection: {e}"),
            &self.peer.to_string(),
        );
        let code = match e {
            CodecError::BadMagic(_) => "INVALID_MAGIC",
            _ => "INVALID_PACKET",
        };
        self.send(response(
            PacketType::ERROR,
            &[code.as_bytes(), e.to_string().as_bytes()],
        ));
    }

    /// Answers an admin line (`status`, `workers`, `show jobs` for the whole cluster).
    async fn admin(&self, line: &str) {
        let trusted = self.ctx.config.gearman_admin_allows(self.peer.ip());
        if let Some(handle) = admin::cancel_target(line) {
            let reply = admin::cancel_job(&self.ctx.view.node, handle, trusted).await;
            self.send(Bytes::from(reply));
            return;
        }
        let facts = admin::gather(line, &self.shared, &job_nodes(&self.ctx)).await;
        let a = admin::answer(line, &facts, trusted);
        let mut board = lock(&self.shared.board);
        let mut reply = a.text;
        if let Some((f, n)) = a.max_queue {
            if !board.set_max_queue(&f, n) {
                reply = format!(
                    "ERR TOO_MANY_LIMITS {}+functions+have+a+maxqueue+already;+lift+one+with+maxqueue+FUNCTION+0\r\n",
                    super::board::MAX_QUEUE_LIMITS
                );
            }
        }
        drop(board);
        self.send(Bytes::from(reply));
        if a.shutdown {
            tracing::info!(peer = %self.peer, "Gearman admin asked the node to shut down");
            self.ctx.view.shutdown.notify_one();
        }
    }

    /// Serves one packet: a submission joins `submitting`; anything else is answered once
    /// the submissions before it are.
    async fn packet(&mut self, p: RawPacket, submitting: &mut FuturesOrdered<Submitting>) {
        let parsed = Request::parse(&p);
        if let Ok(Request::Submit(s)) = parsed {
            submitting.push_back(self.start_submit(s));
            return;
        }
        self.answer_submissions(submitting).await;
        match parsed {
            Err(e) => {
                metrics::counter!(metric::GEARMAN_ERRORS, "reason" => e.reason()).increment(1);
                self.shared.throttle.warn(
                    &format!("refused a Gearman packet: {e}"),
                    &self.peer.to_string(),
                );
                self.send(error_packet(&e));
            }
            Ok(r) => self.request(r).await,
        }
    }

    async fn request(&mut self, r: Request) {
        let node = self.ctx.view.node.clone();
        match r {
            Request::Echo(d) => self.send(response(PacketType::ECHO_RES, &[&d])),
            Request::Option(o) => {
                // gearmand matches the option's name in any case and echoes it.
                if o.eq_ignore_ascii_case("exceptions") {
                    self.outbox.exceptions.store(true, Ordering::Relaxed);
                    self.send(response(PacketType::OPTION_RES, &[o.as_bytes()]));
                } else {
                    self.refuse(
                        "UNKNOWN_OPTION",
                        "argument",
                        &format!("unknown option {o:?} (Troupe knows \"exceptions\")"),
                    );
                }
            }
            Request::SetClientId(n) if n.len() > MAX_CLIENT_ID => self.refuse(
                "INVALID_ARGUMENT",
                "argument",
                &format!("client id over {MAX_CLIENT_ID} bytes"),
            ),
            Request::SetClientId(n) => lock(&self.shared.board).set_client_id(self.id, n),
            Request::CanDo(f, _) if f.is_empty() || f.len() > MAX_FUNCTION => self.refuse(
                "INVALID_ARGUMENT",
                "argument",
                &format!("a function name is 1 to {MAX_FUNCTION} bytes"),
            ),
            Request::CanDo(f, t) => {
                let mut board = lock(&self.shared.board);
                if board.abilities(self.id) >= MAX_ABILITIES {
                    drop(board);
                    self.refuse(
                        "TOO_MANY_FUNCTIONS",
                        "argument",
                        &format!("a worker may announce at most {MAX_ABILITIES} functions"),
                    );
                    return;
                }
                let c = board.can_do(self.id, &f, t);
                drop(board);
                apply_change(c, &node);
            }
            Request::CantDo(f) => {
                let c = lock(&self.shared.board).cant_do(self.id, &f);
                apply_change(c, &node);
            }
            Request::ResetAbilities => {
                let c = lock(&self.shared.board).reset(self.id);
                apply_change(c, &node);
            }
            Request::PreSleep => {
                if lock(&self.shared.board).pre_sleep(self.id, Instant::now()) {
                    self.send(response(PacketType::NOOP, &[]));
                }
            }
            Request::GrabJob | Request::GrabJobUniq | Request::GrabJobAll => {
                let (grabbed, wake) = {
                    let mut board = lock(&self.shared.board);
                    let now = Instant::now();
                    let grabbed = board.grab(self.id, now);
                    // A worker woken for one function may have taken another's job.
                    let functions = board.waiting_functions_of(self.id);
                    (grabbed, board.wakeups_of(&functions, now))
                };
                self.shared.wake(wake);
                let Some(g) = grabbed else {
                    self.send(response(PacketType::NO_JOB, &[]));
                    return;
                };
                if self.given.len() == GIVEN_KEPT {
                    self.given.pop_front();
                }
                self.given.push_back(g.handle.clone());
                let h = g.handle.as_bytes();
                let f = g.request.task.as_bytes();
                let data = to_workload(&g.request.input);
                let unique = format!("{}/{}", g.request.job, g.request.step);
                // `GRAB_JOB_ALL` gets `JOB_ASSIGN_UNIQ` as from gearmand, which sends
                // `JOB_ASSIGN_ALL` only for map-reduce jobs (Troupe has none).
                let p = match r {
                    Request::GrabJob => response(PacketType::JOB_ASSIGN, &[h, f, &data]),
                    _ => response(
                        PacketType::JOB_ASSIGN_UNIQ,
                        &[h, f, unique.as_bytes(), &data],
                    ),
                };
                self.send(p);
            }
            Request::WorkComplete(h, d) => {
                let result = workload(&d).ok_or_else(|| {
                    TaskError::permanent(format!(
                        "the Gearman worker's result of {} bytes is over the limit of {MAX_DATA}",
                        d.len()
                    ))
                });
                self.work_end(&h, result)
            }
            Request::WorkFail(h) => self.work_end(&h, Err(TaskError::transient(WORK_FAIL))),
            // The exception's bytes ride in the step's error, carried exactly, so that the
            // client gets them as the worker sent them (`clients::packets_for`).
            Request::WorkException(h, d) => self.work_end(
                &h,
                Err(TaskError::transient(format!("{EXCEPTION}{}", carry(&d)))),
            ),
            Request::WorkStatus {
                handle,
                numerator,
                denominator,
            } => self.progress(
                &handle,
                ProgressKind::Status {
                    numerator,
                    denominator,
                },
            ),
            Request::WorkData(h, _) | Request::WorkWarning(h, _) if matches!(&r, Request::WorkData(_, d) | Request::WorkWarning(_, d) if d.len() > MAX_DATA / 2) =>
            {
                self.refuse(
                    "INVALID_ARGUMENT",
                    "too_large",
                    &format!("{h}: data chunks are at most {} bytes", MAX_DATA / 2),
                );
            }
            Request::WorkData(h, d) => self.progress(&h, ProgressKind::Data(d.to_vec())),
            Request::WorkWarning(h, d) => self.progress(&h, ProgressKind::Warning(d.to_vec())),
            // Handled by `packet` (pipelined).
            Request::Submit(s) => {
                let done = self.start_submit(s).await;
                self.submitted(done)
            }
            Request::GetStatus(h) => {
                let (known, running, n, d) = match ask_status(&node, &h).await {
                    Some(st) => status_numbers(&st),
                    None => (false, false, 0, 0),
                };
                self.send(response(
                    PacketType::STATUS_RES,
                    &[
                        h.as_bytes(),
                        flag(known),
                        flag(running),
                        n.to_string().as_bytes(),
                        d.to_string().as_bytes(),
                    ],
                ));
            }
            Request::GetStatusUnique(u) => {
                let found = self.find_unique(&u).await;
                let (known, running, n, d, clients) = match found {
                    Some(j) => match ask_status(&node, &j.job).await {
                        Some(st) => {
                            let (k, r, n, d) = status_numbers(&st);
                            (k, r, n, d, if k { j.submitters } else { 0 })
                        }
                        None => (false, false, 0, 0, 0),
                    },
                    None => (false, false, 0, 0, 0),
                };
                self.send(response(
                    PacketType::STATUS_RES_UNIQUE,
                    &[
                        u.as_bytes(),
                        flag(known),
                        flag(running),
                        n.to_string().as_bytes(),
                        d.to_string().as_bytes(),
                        clients.to_string().as_bytes(),
                    ],
                ));
            }
            // A gearmand extension that gearmand itself does not take from workers.
            Request::AllYours => {
                self.refuse("INVALID_COMMAND", "unsupported", "Command not expected")
            }
        }
    }

    /// A worker's result for `handle`. One for a job it was given but holds no more (a
    /// second end, a job given up at its timeout or cancelled) is ignored: Perl's
    /// Gearman::Worker sends `WORK_FAIL` after the `WORK_EXCEPTION` of a `die`, and dies
    /// on the `ERROR` gearmand answers. One for a handle never given is refused.
    fn work_end(&self, handle: &str, result: Result<serde_json::Value, TaskError>) {
        let held = lock(&self.shared.board).finish(self.id, handle);
        let Some(req) = held else {
            if self.given.iter().any(|h| h == handle) {
                metrics::counter!(metric::GEARMAN_ERRORS, "reason" => "ended_handle").increment(1);
                tracing::debug!(
                    handle,
                    conn = self.id,
                    "a result for a job this worker holds no more; ignored"
                );
            } else {
                self.not_held(handle);
            }
            return;
        };
        // A Gearman client's job keeps the worker's bytes exactly; a job file's step or a
        // task's call gets JSON by the rule (bytes that are not text stay carried).
        let result = match req.step.as_str() {
            STEP => result,
            _ => result.map(|v| for_task(v.clone()).unwrap_or(v)),
        };
        send_result(
            &self.ctx.view,
            StepResult {
                job: req.job.clone(),
                step: req.step.clone(),
                attempt: req.attempt,
                node: self.ctx.view.node.clone(),
                result,
                source: Default::default(),
                epoch: req.epoch,
                ran_us: None,
            },
            &req.owner,
        );
    }

    /// A worker's progress, data or warning for `handle`, sent to the job's owner.
    fn progress(&self, handle: &str, kind: ProgressKind) {
        let held = lock(&self.shared.board)
            .held(self.id, handle)
            .map(|r| (attempt_of(r), r.owner.clone()));
        let Some((attempt, owner)) = held else {
            self.not_held(handle);
            return;
        };
        if let Some(jm) = first_member::<JobManagerMessage>(&job_manager_group(&owner)) {
            let p = StepProgress { attempt, kind };
            let _ = jm.cast(JobManagerMessage::Progress(Wire::new(p)));
        }
    }

    /// The job manager that coalesces unique id `unique` (and the node it is on).
    fn unique_manager(&self, unique: &str) -> Option<ractor::ActorRef<JobManagerMessage>> {
        let nodes = job_nodes(&self.ctx);
        let owner = unique_owner(unique, nodes.iter().map(String::as_str))?;
        first_member(&job_manager_group(owner))
    }

    /// Answers the submissions in flight, in order.
    async fn answer_submissions(&mut self, submitting: &mut FuturesOrdered<Submitting>) {
        while let Some(done) = submitting.next().await {
            self.submitted(done);
        }
    }

    /// Checks a submission and starts it; the future answers its job id or its refusal.
    /// (The `maxqueue` check counts the jobs queued when it is read, so a pipelined burst
    /// may pass a limit by up to [`MAX_PIPELINED`].)
    fn start_submit(&self, s: Submit) -> Submitting {
        let (background, unique) = (s.background, !s.unique.is_empty());
        let refused = |code, reason, text: String| -> Submitting {
            let outcome = Err(Refusal { code, reason, text });
            Box::pin(std::future::ready(Submitted {
                background,
                unique,
                outcome,
            }))
        };
        if s.function.is_empty() || s.function.len() > MAX_FUNCTION || s.unique.len() > MAX_UNIQUE {
            return refused(
                "INVALID_ARGUMENT",
                "argument",
                format!(
                    "a function name is 1 to {MAX_FUNCTION} bytes and a unique id at most {MAX_UNIQUE}"
                ),
            );
        }
        let Some(input) = workload(&s.data) else {
            return refused(
                "INVALID_ARGUMENT",
                "too_large",
                format!("the workload is over the limit of {MAX_DATA} bytes (as JSON)"),
            );
        };
        if lock(&self.shared.board).queue_full(&s.function) {
            return refused(
                "QUEUE_FULL",
                "queue_full",
                format!(
                    "the queue of {} on this node is full (maxqueue)",
                    s.function
                ),
            );
        }
        let node = self.ctx.view.node.clone();
        let spec = JobSpec::new(format!("gearman {}", s.function))
            .with_priority(s.priority)
            .step(
                StepSpec::new(STEP, &s.function)
                    .input(input)
                    .retry(RetryPolicy {
                        max_attempts: 1,
                        backoff_ms: 0,
                    }),
            );
        let req = SubmitRequest {
            spec,
            watch: (!s.background).then(|| WatchRequest {
                job: String::new(),
                group: watcher_group(&node),
                progress: true,
                reports_only: true,
            }),
            unique: unique.then(|| format!("gearman\0{}\0{}", s.unique, s.function)),
            wait_for_workers: true,
            waited: false,
            // A foreground job's result goes back over this connection only: a crash of
            // the node that owns it (this one, for a job without a unique id) closes the
            // connection, so its journal would serve nobody (`gearman_journal_foreground`).
            journaled: s.background || unique || self.ctx.config.gearman_journal_foreground,
            // Bounded by `maxqueue`, per function, as in gearmand.
            counted_per_client: false,
        };
        let jm = if unique {
            self.unique_manager(&s.unique)
        } else {
            first_member::<JobManagerMessage>(&job_manager_group(&node))
        };
        let Some(jm) = jm else {
            return refused(
                "SERVER_BUSY",
                "unavailable",
                "no job manager is reachable; try again".into(),
            );
        };
        let gate = self.overloaded.clone();
        Box::pin(async move {
            // Gearman clients have no "retry after": the submission waits here, as it
            // would in gearmand's queue, and the connection reads on until
            // MAX_PIPELINED of them wait (backpressure).
            let give_up = Instant::now() + OVERLOADED_WAIT;
            // While another submission of this connection was refused and waits to try
            // again, the node is overloaded: wait with it rather than be refused too
            // (each refusal costs the node a round trip).
            if gate.try_lock().is_err() {
                drop(gate.lock().await);
            }
            let mut retrying = None;
            let outcome = loop {
                match submit_job(&jm, req.clone(), ASK_TIMEOUT).await {
                    Err(SubmitFailure::Refused(SubmitError::Overloaded {
                        retry_after_ms, ..
                    })) if Instant::now() + Duration::from_millis(retry_after_ms) < give_up => {
                        if retrying.is_none() {
                            if let Ok(g) = gate.clone().try_lock_owned() {
                                retrying = Some(g);
                            } else {
                                // Another one was retrying and got through: try now.
                                retrying = Some(gate.clone().lock_owned().await);
                                continue;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(retry_after_ms.max(1))).await;
                    }
                    other => break other.map_err(Refusal::from),
                }
            };
            Submitted {
                background,
                unique,
                outcome,
            }
        })
    }

    /// Answers a submission: `JOB_CREATED` (and, for a foreground job, the events it
    /// missed meanwhile), or the `ERROR` that says why it got no job.
    fn submitted(&self, done: Submitted) {
        let id = match done.outcome {
            Ok(id) => id,
            Err(refusal) => {
                self.refuse(refusal.code, refusal.reason, &refusal.text);
                return;
            }
        };
        let mode = if done.background {
            "background"
        } else {
            "foreground"
        };
        metrics::counter!(metric::GEARMAN_JOBS, "mode" => mode).increment(1);
        self.send(response(PacketType::JOB_CREATED, &[id.as_bytes()]));
        if done.background {
            return;
        }
        // Replayed under the routes lock, so that no later event of the job (delivered
        // by GearmanClients under the same lock) is written before the missed ones.
        let ended = {
            let mut routes = lock(&self.shared.routes);
            let missed = routes.add(&id, self.id);
            for ev in &missed {
                send_event(&self.outbox, ev);
            }
            missed
                .iter()
                .any(|e| matches!(e, JobEvent::JobFinished { .. }))
        };
        if !ended && done.unique {
            // A submission that coalesced into a job may have joined it just as it ended
            // (its watcher added after the last event): ask once.
            let (ctx, shared) = (self.ctx.clone(), self.shared.clone());
            tokio::spawn(async move {
                if let Some(st) = ask_status(&ctx.view.node, &id).await {
                    if st.state.is_terminal() {
                        let ev = JobEvent::JobFinished {
                            status: Box::new(st),
                        };
                        super::clients::deliver(&shared, &ev);
                    }
                }
            });
        }
    }

    async fn find_unique(&self, unique: &str) -> Option<UniqueJob> {
        let jm = self.unique_manager(unique)?;
        let prefix = format!("gearman\0{unique}\0");
        match jm
            .call(
                |r| JobManagerMessage::FindUnique(prefix, r),
                Some(ASK_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(w)) => w.into_inner().ok().flatten(),
            _ => None,
        }
    }

    /// The connection closed: forget it; attempts its worker held run again elsewhere.
    fn closed(self) {
        metrics::gauge!(metric::GEARMAN_CONNECTIONS).decrement(1.0);
        self.shared.close(self.id);
        lock(&self.shared.routes).drop_conn(self.id);
        let (change, lost, wake) = {
            let mut board = lock(&self.shared.board);
            // It may have been woken for a job another sleeping worker must take.
            let functions = board.waiting_functions_of(self.id);
            let (change, lost) = board.disconnect(self.id);
            (change, lost, board.wakeups_of(&functions, Instant::now()))
        };
        self.shared.wake(wake);
        let node = self.ctx.view.node.clone();
        for r in &lost {
            tracing::info!(job = %r.job, step = %r.step, peer = %self.peer, "a Gearman worker disconnected holding an attempt; it runs again");
            report_lost(
                r,
                format!("the Gearman worker at {} disconnected mid-job", self.peer),
                true,
            );
        }
        apply_change(change, &node);
    }
}

/// The `ERROR` packet for a submission that got no job id: its code, the reason it is
/// counted under in `troupe_gearman_errors_total`, and its text.
struct Refusal {
    code: &'static str,
    reason: &'static str,
    text: String,
}

/// A refusal from the job manager, as a Gearman client is told it.
impl From<SubmitError> for Refusal {
    fn from(e: SubmitError) -> Self {
        let (code, reason, text) = match e {
            SubmitError::Invalid(m) => ("INVALID_JOB", "invalid_job", m),
            SubmitError::Overloaded { message, .. } => ("SERVER_BUSY", "overloaded", message),
            SubmitError::Unavailable(m) => ("SERVER_BUSY", "unavailable", m),
        };
        Refusal { code, reason, text }
    }
}

/// A submission without a job id, as a Gearman client is told it: the server is busy.
impl From<SubmitFailure> for Refusal {
    fn from(e: SubmitFailure) -> Self {
        let text = match e {
            SubmitFailure::Refused(e) => return e.into(),
            SubmitFailure::Unreadable(e) => e.to_string(),
            SubmitFailure::Timeout(_) | SubmitFailure::Dropped | SubmitFailure::Unreachable(_) => {
                "the job manager did not answer in time; try again".to_string()
            }
        };
        Refusal {
            code: "SERVER_BUSY",
            reason: "unavailable",
            text,
        }
    }
}

/// The status of `job`, asked of node `node`'s job manager (which forwards to the owner).
async fn ask_status(node: &str, job: &str) -> Option<JobStatus> {
    let jm = first_member::<JobManagerMessage>(&job_manager_group(node))?;
    match jm
        .call(
            |r| JobManagerMessage::Status(job.to_string(), r),
            Some(ASK_TIMEOUT),
        )
        .await
    {
        Ok(CallResult::Success(w)) => match w.into_inner() {
            Ok(Ok(st)) => Some(st),
            Ok(Err(JobQueryError::NotFound(_))) | Ok(Err(_)) | Err(_) => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Gearman client is told of a refused or unanswered submission with the `ERROR`
    /// code, counted reason and text it always got.
    #[test]
    fn submit_failures_keep_their_error_codes_and_texts() {
        let told = |f: SubmitFailure| {
            let r = Refusal::from(f);
            (r.code, r.reason, r.text)
        };
        assert_eq!(
            told(SubmitError::Invalid("bad".into()).into()),
            ("INVALID_JOB", "invalid_job", "bad".into())
        );
        assert_eq!(
            told(
                SubmitError::Overloaded {
                    message: "full".into(),
                    retry_after_ms: 100,
                }
                .into()
            ),
            ("SERVER_BUSY", "overloaded", "full".into())
        );
        assert_eq!(
            told(SubmitError::Unavailable("draining".into()).into()),
            ("SERVER_BUSY", "unavailable", "draining".into())
        );
        assert_eq!(
            told(SubmitFailure::Timeout(ASK_TIMEOUT)),
            (
                "SERVER_BUSY",
                "unavailable",
                "the job manager did not answer in time; try again".into()
            )
        );
    }
}
