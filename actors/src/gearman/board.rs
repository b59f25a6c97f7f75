//! The board of a node's Gearman front door: who is connected, which functions each
//! external worker can do, the attempts waiting for those workers (in priority lanes),
//! and which worker holds which job handle.
//!
//! Plain data with no I/O, so that its rules are unit-tested: the connection tasks and
//! the [`super::workers::GearmanWorkers`] actor change it under one mutex and carry out
//! what its methods return (wake a worker, join or leave a task group, re-dispatch an
//! attempt that lost its worker).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use troupe_runtime::job::spec::Priority;
use troupe_runtime::protocol::{AbandonedRun, AttemptRef, StepRequest};

use super::STEP as GEARMAN_STEP;

/// A connection's number on this node (what `workers` lists as its file descriptor).
pub(crate) type ConnId = u64;

/// One connection, client or worker.
#[derive(Debug, Clone)]
pub struct Conn {
    /// The peer's address.
    pub addr: String,
    /// What `SET_CLIENT_ID` said, or `-`.
    pub client_id: String,
    /// Functions it can do, with a time limit per job in seconds (`CAN_DO_TIMEOUT`).
    pub abilities: BTreeMap<String, Option<u32>>,
    /// It said `PRE_SLEEP` and was not woken since.
    pub sleeping: bool,
    /// When it was sent `NOOP` for waiting work it has not grabbed yet: it counts as on
    /// its way to one of those jobs for [`WAKE_GRACE`].
    woken: Option<Instant>,
    /// Jobs it holds.
    pub held: usize,
}

/// An attempt waiting for an external worker.
#[derive(Debug, Clone)]
struct Queued {
    handle: String,
    request: StepRequest,
    order: u64,
}

/// An attempt a worker holds.
#[derive(Debug, Clone)]
pub(crate) struct Assignment {
    /// The attempt.
    pub request: StepRequest,
    /// The worker.
    pub conn: ConnId,
    /// When the worker's `CAN_DO_TIMEOUT` runs out.
    pub deadline: Option<Instant>,
}

/// A job handed to a worker by `GRAB_JOB`.
#[derive(Debug, Clone)]
pub struct Grabbed {
    /// The handle the worker reports on.
    pub handle: String,
    /// The attempt.
    pub request: StepRequest,
}

/// What a change of abilities means for the node.
#[derive(Debug, Default)]
pub struct AbilityChange {
    /// Functions the node now serves and did not (join their task groups).
    pub joined: Vec<String>,
    /// Functions no worker here does any more (leave their task groups).
    pub left: Vec<String>,
    /// Attempts that were waiting for those functions: they must go elsewhere.
    pub orphans: Vec<StepRequest>,
}

/// A line of the admin `status` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionStatus {
    /// The function.
    pub function: String,
    /// Jobs queued or running here.
    pub total: usize,
    /// Jobs running here.
    pub running: usize,
    /// Workers connected here that can do it.
    pub workers: usize,
    /// Jobs queued here by priority lane: high, normal, low.
    pub queued: [usize; 3],
}

fn lane(p: Priority) -> usize {
    match p {
        Priority::High => 0,
        Priority::Normal => 1,
        Priority::Low => 2,
    }
}

/// How long a worker woken for a waiting job counts as coming for it: while it does,
/// the job wakes no other sleeping worker. A worker that does not grab within it (slow,
/// or gone) no longer counts, and the next look at the board (a grab, a disconnect, the
/// workers actor's tick) wakes another.
pub(crate) const WAKE_GRACE: Duration = Duration::from_millis(100);

/// Most functions that may have a `maxqueue` limit at once (each is kept until lifted).
pub(crate) const MAX_QUEUE_LIMITS: usize = 1024;

/// The board (see the module docs).
#[derive(Debug, Default)]
pub struct Board {
    node: String,
    next_handle: u64,
    next_order: u64,
    conns: BTreeMap<ConnId, Conn>,
    queues: HashMap<String, [VecDeque<Queued>; 3]>,
    assigned: HashMap<String, Assignment>,
    by_attempt: HashMap<AttemptRef, String>,
    /// The handles of `by_attempt`.
    handles: HashSet<String>,
    max_queue: HashMap<String, usize>,
}

impl Board {
    /// An empty board of node `node` (handles are the job's id for a Gearman client's
    /// job, as gearmand gives the worker the handle its client got, else `H:NODE:N`).
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            ..Self::default()
        }
    }

    /// A connection opened.
    pub fn connect(&mut self, id: ConnId, addr: String) {
        self.conns.insert(
            id,
            Conn {
                addr,
                client_id: "-".into(),
                abilities: BTreeMap::new(),
                sleeping: false,
                woken: None,
                held: 0,
            },
        );
    }

    /// `SET_CLIENT_ID`.
    pub fn set_client_id(&mut self, id: ConnId, name: String) {
        if let Some(c) = self.conns.get_mut(&id) {
            c.client_id = name;
        }
    }

    /// Functions some connected worker can do.
    pub fn functions(&self) -> BTreeSet<String> {
        self.conns
            .values()
            .flat_map(|c| c.abilities.keys().cloned())
            .collect()
    }

    /// True if a worker connected here can do `function`.
    pub fn serves(&self, function: &str) -> bool {
        self.conns
            .values()
            .any(|c| c.abilities.contains_key(function))
    }

    fn change(&mut self, id: ConnId, edit: impl FnOnce(&mut Conn)) -> AbilityChange {
        let before = self.functions();
        if let Some(c) = self.conns.get_mut(&id) {
            edit(c);
        }
        self.diff(before)
    }

    fn diff(&mut self, before: BTreeSet<String>) -> AbilityChange {
        let after = self.functions();
        let left: Vec<String> = before.difference(&after).cloned().collect();
        let mut orphans = Vec::new();
        for f in &left {
            if let Some(lanes) = self.queues.remove(f) {
                orphans.extend(lanes.into_iter().flatten().map(|q| {
                    self.by_attempt.remove(&attempt_of(&q.request));
                    self.handles.remove(&q.handle);
                    q.request
                }));
            }
        }
        AbilityChange {
            joined: after.difference(&before).cloned().collect(),
            left,
            orphans,
        }
    }

    /// `CAN_DO` / `CAN_DO_TIMEOUT`.
    pub fn can_do(&mut self, id: ConnId, function: &str, timeout_s: Option<u32>) -> AbilityChange {
        self.change(id, |c| {
            c.abilities.insert(function.to_string(), timeout_s);
        })
    }

    /// `CANT_DO`.
    pub fn cant_do(&mut self, id: ConnId, function: &str) -> AbilityChange {
        self.change(id, |c| {
            c.abilities.remove(function);
        })
    }

    /// `RESET_ABILITIES`.
    pub fn reset(&mut self, id: ConnId) -> AbilityChange {
        self.change(id, |c| c.abilities.clear())
    }

    /// The connection closed: its abilities go, and the attempts it held are lost.
    pub fn disconnect(&mut self, id: ConnId) -> (AbilityChange, Vec<StepRequest>) {
        let before = self.functions();
        self.conns.remove(&id);
        let handles: Vec<String> = self
            .assigned
            .iter()
            .filter(|(_, a)| a.conn == id)
            .map(|(h, _)| h.clone())
            .collect();
        let lost = handles
            .into_iter()
            .filter_map(|h| self.take_assignment(&h))
            .map(|a| a.request)
            .collect();
        (self.diff(before), lost)
    }

    fn take_assignment(&mut self, handle: &str) -> Option<Assignment> {
        let a = self.assigned.remove(handle)?;
        self.by_attempt.remove(&attempt_of(&a.request));
        self.handles.remove(handle);
        if let Some(c) = self.conns.get_mut(&a.conn) {
            c.held = c.held.saturating_sub(1);
        }
        Some(a)
    }

    /// True if an attempt for `function` given to this node waits behind at most one job
    /// per worker here: fewer jobs wait here than workers here can do it (as a node takes
    /// `scheduling.prefetch` attempts beyond its slots). Such an attempt starts within one
    /// job's time, without crossing to another node.
    pub fn has_room(&self, function: &str) -> bool {
        let able = self
            .conns
            .values()
            .filter(|c| c.abilities.contains_key(function))
            .count();
        able > self.waiting(function)
    }

    /// Jobs waiting here for `function`, in all lanes.
    fn waiting(&self, function: &str) -> usize {
        self.queues
            .get(function)
            .map_or(0, |l| l.iter().map(VecDeque::len).sum())
    }

    /// Functions connection `id` announced.
    pub fn abilities(&self, id: ConnId) -> usize {
        self.conns.get(&id).map_or(0, |c| c.abilities.len())
    }

    /// An attempt for an external worker. `Err` gives it back when no worker here can do
    /// its task. `Ok` holds the sleeping workers to wake with `NOOP` ([`Board::wakeups`]).
    // The `Err` hands the request back as it came; boxing it would allocate per attempt.
    #[allow(clippy::result_large_err)]
    pub fn enqueue(
        &mut self,
        request: StepRequest,
        now: Instant,
    ) -> Result<Vec<ConnId>, StepRequest> {
        if !self.serves(&request.task) {
            return Err(request);
        }
        self.next_order += 1;
        // A Gearman client's job has one step: its worker gets the handle the client got
        // (unless an attempt of it is here already, for a moment, after a loss).
        let handle = if request.step == GEARMAN_STEP && !self.handles.contains(&request.job) {
            request.job.clone()
        } else {
            self.next_handle += 1;
            format!("H:{}:{}", self.node, self.next_handle)
        };
        let task = request.task.clone();
        self.by_attempt.insert(attempt_of(&request), handle.clone());
        self.handles.insert(handle.clone());
        let l = lane(request.priority);
        self.queues.entry(task.clone()).or_default()[l].push_back(Queued {
            handle,
            request,
            order: self.next_order,
        });
        Ok(self.wake_for(&task, now))
    }

    /// The sleeping workers to wake with `NOOP` now: for each function with jobs waiting,
    /// one per waiting job that no worker woken within [`WAKE_GRACE`] is coming for.
    ///
    /// gearmand wakes every sleeping worker of the function for each job (unless started
    /// with `--worker-wakeup`): all of them grab, one gets the job, and the others get
    /// `NO_JOB` and sleep again, three packets each way for nothing. Called on the
    /// workers actor's tick, and for the functions of a worker that grabbed or left
    /// ([`Board::wakeups_of`]), so that no job waits for a worker that does not come
    /// while another sleeps.
    pub fn wakeups(&mut self, now: Instant) -> Vec<ConnId> {
        let waiting: Vec<String> = self.queues.keys().cloned().collect();
        self.wakeups_of(&waiting, now)
    }

    /// [`Board::wakeups`] for `functions` only.
    pub fn wakeups_of(&mut self, functions: &[String], now: Instant) -> Vec<ConnId> {
        functions
            .iter()
            .flat_map(|f| self.wake_for(f, now))
            .collect()
    }

    /// The functions connection `id` can do that have jobs waiting: those whose wake-ups
    /// change when it grabs or leaves (no allocation when none waits, the usual case).
    pub fn waiting_functions_of(&self, id: ConnId) -> Vec<String> {
        self.conns.get(&id).map_or_else(Vec::new, |c| {
            c.abilities
                .keys()
                .filter(|f| self.queues.contains_key(*f))
                .cloned()
                .collect()
        })
    }

    fn wake_for(&mut self, function: &str, now: Instant) -> Vec<ConnId> {
        let waiting = self.waiting(function);
        let coming = self
            .conns
            .values()
            .filter(|c| {
                c.woken.is_some_and(|t| now.duration_since(t) < WAKE_GRACE)
                    && c.abilities.contains_key(function)
            })
            .count();
        let mut wake = Vec::new();
        for (id, c) in self.conns.iter_mut() {
            if wake.len() + coming >= waiting {
                break;
            }
            if c.sleeping && c.abilities.contains_key(function) {
                c.sleeping = false;
                c.woken = Some(now);
                wake.push(*id);
            }
        }
        wake
    }

    /// `PRE_SLEEP`: true if work is waiting for this worker (wake it at once).
    pub fn pre_sleep(&mut self, id: ConnId, now: Instant) -> bool {
        let waiting = self.has_work_for(id);
        if let Some(c) = self.conns.get_mut(&id) {
            c.sleeping = !waiting;
            c.woken = waiting.then_some(now);
        }
        waiting
    }

    fn has_work_for(&self, id: ConnId) -> bool {
        self.conns.get(&id).is_some_and(|c| {
            c.abilities.keys().any(|f| {
                self.queues
                    .get(f)
                    .is_some_and(|lanes| lanes.iter().any(|q| !q.is_empty()))
            })
        })
    }

    /// `GRAB_JOB`: the waiting attempt this worker can do that comes first: the highest
    /// priority lane, then the oldest.
    pub fn grab(&mut self, id: ConnId, now: Instant) -> Option<Grabbed> {
        let conn = self.conns.get_mut(&id)?;
        conn.sleeping = false;
        conn.woken = None;
        let mut best: Option<(usize, u64, String)> = None;
        for f in conn.abilities.keys() {
            let Some(lanes) = self.queues.get(f) else {
                continue;
            };
            for (l, q) in lanes.iter().enumerate() {
                if let Some(front) = q.front() {
                    let key = (l, front.order);
                    if best.as_ref().is_none_or(|b| key < (b.0, b.1)) {
                        best = Some((l, front.order, f.clone()));
                    }
                    break;
                }
            }
        }
        let (l, _, f) = best?;
        let timeout = conn.abilities.get(&f).copied().flatten();
        let lanes = self.queues.get_mut(&f)?;
        let q = lanes[l].pop_front()?;
        if lanes.iter().all(VecDeque::is_empty) {
            self.queues.remove(&f);
        }
        self.assigned.insert(
            q.handle.clone(),
            Assignment {
                request: q.request.clone(),
                conn: id,
                deadline: timeout.map(|s| now + Duration::from_secs(s as u64)),
            },
        );
        if let Some(c) = self.conns.get_mut(&id) {
            c.held += 1;
        }
        Some(Grabbed {
            handle: q.handle,
            request: q.request,
        })
    }

    /// The attempt behind `handle` if worker `id` holds it (for `WORK_STATUS`, `WORK_DATA`).
    pub fn held(&self, id: ConnId, handle: &str) -> Option<&StepRequest> {
        self.assigned
            .get(handle)
            .filter(|a| a.conn == id)
            .map(|a| &a.request)
    }

    /// `WORK_COMPLETE`, `WORK_FAIL`, `WORK_EXCEPTION`: the attempt, if worker `id` held it
    /// (a handle given up meanwhile, by a cancel or a time limit, answers `None`).
    pub fn finish(&mut self, id: ConnId, handle: &str) -> Option<StepRequest> {
        self.held(id, handle)?;
        self.take_assignment(handle).map(|a| a.request)
    }

    /// Whether attempt `a` waits here or a worker holds it.
    pub fn holds(&self, a: &AttemptRef) -> bool {
        self.by_attempt.contains_key(a)
    }

    /// Drops an attempt (cancelled, or timed out at its supervisor): out of its queue, or
    /// its worker's later result is ignored. True if it was here.
    pub fn cancel(&mut self, attempt: &AttemptRef) -> bool {
        let Some(handle) = self.by_attempt.get(attempt).cloned() else {
            return false;
        };
        if self.take_assignment(&handle).is_some() {
            return true;
        }
        self.by_attempt.remove(attempt);
        self.handles.remove(&handle);
        for lanes in self.queues.values_mut() {
            for q in lanes.iter_mut() {
                q.retain(|x| x.handle != handle);
            }
        }
        self.queues
            .retain(|_, lanes| lanes.iter().any(|q| !q.is_empty()));
        true
    }

    /// Drops the waiting attempts of runs a newer one replaced (see
    /// [`AbandonedRun`]); a worker that holds one already finishes it, and its result is
    /// discarded by the owner. Answers how many were dropped.
    pub fn abandon(&mut self, run: &AbandonedRun) -> usize {
        let void: Vec<AttemptRef> = self
            .queues
            .values()
            .flat_map(|lanes| lanes.iter().flatten())
            .filter(|q| run.voids(&q.request))
            .map(|q| attempt_of(&q.request))
            .collect();
        void.iter().filter(|a| self.cancel(a)).count()
    }

    /// Attempts whose worker's `CAN_DO_TIMEOUT` ran out by `now` (given up here).
    pub fn expired(&mut self, now: Instant) -> Vec<(StepRequest, ConnId)> {
        let late: Vec<String> = self
            .assigned
            .iter()
            .filter(|(_, a)| a.deadline.is_some_and(|d| d <= now))
            .map(|(h, _)| h.clone())
            .collect();
        late.into_iter()
            .filter_map(|h| self.take_assignment(&h))
            .map(|a| (a.request, a.conn))
            .collect()
    }

    /// Admin `maxqueue FUNCTION N`: at most N attempts wait here for `function`
    /// (0: no limit). False (nothing set) if [`MAX_QUEUE_LIMITS`] functions have a limit.
    pub fn set_max_queue(&mut self, function: &str, max: usize) -> bool {
        if max == 0 {
            self.max_queue.remove(function);
        } else if self.max_queue.len() >= MAX_QUEUE_LIMITS && !self.max_queue.contains_key(function)
        {
            return false;
        } else {
            self.max_queue.insert(function.to_string(), max);
        }
        true
    }

    /// True if `function`'s queue here is at its `maxqueue` limit.
    pub fn queue_full(&self, function: &str) -> bool {
        self.max_queue
            .get(function)
            .is_some_and(|&max| self.waiting(function) >= max)
    }

    /// The admin `status` lines: every function with a worker or work here.
    pub fn status(&self) -> Vec<FunctionStatus> {
        let mut fs: BTreeSet<String> = self.functions();
        fs.extend(self.queues.keys().cloned());
        fs.into_iter()
            .map(|f| {
                let lanes: [usize; 3] = self
                    .queues
                    .get(&f)
                    .map(|l| [l[0].len(), l[1].len(), l[2].len()])
                    .unwrap_or_default();
                let queued: usize = lanes.iter().sum();
                let running = self
                    .assigned
                    .values()
                    .filter(|a| a.request.task == f)
                    .count();
                FunctionStatus {
                    queued: lanes,
                    total: queued + running,
                    running,
                    workers: self
                        .conns
                        .values()
                        .filter(|c| c.abilities.contains_key(&f))
                        .count(),
                    function: f,
                }
            })
            .collect()
    }

    /// The jobs waiting here for a worker or held by one, for the admin `show jobs`
    /// answer: (job handle, attempt, queued).
    pub fn jobs(&self) -> Vec<(String, u32, bool)> {
        let queued = self
            .queues
            .values()
            .flat_map(|lanes| lanes.iter().flatten())
            .map(|q| (q.request.job.clone(), q.request.attempt, true));
        let held = self
            .assigned
            .values()
            .map(|a| (a.request.job.clone(), a.request.attempt, false));
        queued.chain(held).collect()
    }

    /// Every connection, for the admin `workers` answer.
    pub fn connections(&self) -> impl Iterator<Item = (&ConnId, &Conn)> {
        self.conns.iter()
    }
}

/// The attempt a request is.
pub(crate) fn attempt_of(r: &StepRequest) -> AttemptRef {
    AttemptRef {
        job: r.job.clone(),
        step: r.step.clone(),
        attempt: r.attempt,
    }
}

/// A step request of a Gearman job, for tests.
#[cfg(test)]
pub(crate) fn test_request(job: &str, task: &str, priority: Priority) -> StepRequest {
    StepRequest {
        job: job.into(),
        step: "gearman".into(),
        attempt: 1,
        task: task.into(),
        input: serde_json::json!("x"),
        deps: Default::default(),
        owner: "n1".into(),
        epoch: 0,
        resumed: false,
        cache: Default::default(),
        key: None,
        merger: None,
        trace: Default::default(),
        priority,
        stage: Default::default(),
        near: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(job: &str, task: &str, priority: Priority) -> StepRequest {
        super::test_request(job, task, priority)
    }

    #[test]
    fn a_worker_joins_and_leaves_a_function_and_its_queue_goes_elsewhere() {
        let mut b = Board::new("n1");
        b.connect(1, "127.0.0.1:1".into());
        b.connect(2, "127.0.0.1:2".into());
        let c = b.can_do(1, "rev", None);
        assert_eq!(c.joined, vec!["rev".to_string()]);
        assert!(b.can_do(2, "rev", None).joined.is_empty());
        assert!(b
            .enqueue(req("j1", "rev", Priority::Normal), Instant::now())
            .is_ok());
        assert!(b
            .enqueue(req("j2", "nope", Priority::Normal), Instant::now())
            .is_err());
        assert!(b.cant_do(1, "rev").left.is_empty());
        let (c, lost) = b.disconnect(2);
        assert_eq!(c.left, vec!["rev".to_string()]);
        assert_eq!(c.orphans.len(), 1);
        assert!(lost.is_empty());
        assert!(b.status().is_empty());
    }

    #[test]
    fn high_goes_before_normal_before_low_and_each_lane_is_fifo() {
        let mut b = Board::new("n1");
        b.connect(1, "w".into());
        b.can_do(1, "f", None);
        b.can_do(1, "g", None);
        for (j, t, p) in [
            ("low", "f", Priority::Low),
            ("n1", "g", Priority::Normal),
            ("high", "f", Priority::High),
            ("n2", "f", Priority::Normal),
        ] {
            b.enqueue(req(j, t, p), Instant::now()).unwrap();
        }
        let now = Instant::now();
        let order: Vec<String> = std::iter::from_fn(|| b.grab(1, now))
            .map(|g| g.request.job)
            .collect();
        assert_eq!(order, ["high", "n1", "n2", "low"]);
    }

    #[test]
    fn sleeping_workers_are_woken_once_and_pre_sleep_sees_waiting_work() {
        let mut b = Board::new("n1");
        b.connect(1, "w1".into());
        b.connect(2, "w2".into());
        b.can_do(1, "f", None);
        b.can_do(2, "other", None);
        assert!(!b.pre_sleep(1, Instant::now()));
        assert!(!b.pre_sleep(2, Instant::now()));
        assert_eq!(
            b.enqueue(req("a", "f", Priority::Normal), Instant::now())
                .unwrap(),
            vec![1]
        );
        // Already woken: not woken again before it sleeps again.
        assert!(b
            .enqueue(req("b", "f", Priority::Normal), Instant::now())
            .unwrap()
            .is_empty());
        assert!(b.pre_sleep(1, Instant::now()), "work waits: wake at once");
    }

    /// Three sleeping workers of `f` on a board.
    fn three_sleepers(now: Instant) -> Board {
        let mut b = Board::new("n1");
        for id in 1..=3 {
            b.connect(id, format!("w{id}"));
            b.can_do(id, "f", None);
            assert!(!b.pre_sleep(id, now));
        }
        b
    }

    #[test]
    fn each_waiting_job_wakes_one_sleeping_worker_not_all_of_them() {
        let now = Instant::now();
        let mut b = three_sleepers(now);
        assert_eq!(
            b.enqueue(req("a", "f", Priority::Normal), now).unwrap(),
            vec![1]
        );
        assert_eq!(
            b.enqueue(req("b", "f", Priority::Normal), now).unwrap(),
            vec![2]
        );
        assert!(b.wakeups(now).is_empty(), "two jobs, two workers coming");
        // Worker 1 takes a job: one waits, worker 2 is coming for it.
        assert!(b.grab(1, now).is_some());
        assert!(b.wakeups(now).is_empty());
        assert!(b.grab(2, now).is_some());
        assert!(
            b.grab(3, now).is_none(),
            "nothing left for the one not woken"
        );
    }

    #[test]
    fn a_woken_worker_that_does_not_come_is_replaced_after_the_grace() {
        let now = Instant::now();
        let mut b = three_sleepers(now);
        assert_eq!(
            b.enqueue(req("a", "f", Priority::Normal), now).unwrap(),
            vec![1]
        );
        assert!(b.wakeups(now + WAKE_GRACE / 2).is_empty());
        assert_eq!(
            b.wakeups(now + WAKE_GRACE),
            vec![2],
            "1 did not grab in time"
        );
        // A worker woken and gone: the next look wakes another at once.
        let mut b = three_sleepers(now);
        assert_eq!(
            b.enqueue(req("a", "f", Priority::Normal), now).unwrap(),
            vec![1]
        );
        let functions = b.waiting_functions_of(1);
        b.disconnect(1);
        assert_eq!(b.wakeups_of(&functions, now), vec![2]);
    }

    #[test]
    fn a_worker_woken_for_one_function_that_takes_another_leaves_the_first_to_a_sleeper() {
        let now = Instant::now();
        let mut b = Board::new("n1");
        b.connect(1, "both".into());
        b.can_do(1, "f", None);
        b.can_do(1, "g", None);
        b.connect(2, "only f".into());
        b.can_do(2, "f", None);
        assert!(!b.pre_sleep(1, now));
        assert!(!b.pre_sleep(2, now));
        b.enqueue(req("high", "g", Priority::High), now).unwrap();
        // Worker 1 was woken for g's job; f's job finds it woken (counted as coming).
        let woken = b.enqueue(req("f-job", "f", Priority::Normal), now).unwrap();
        assert!(woken.is_empty(), "{woken:?}");
        let g = b.grab(1, now).expect("a job");
        assert_eq!(g.request.job, "high");
        // What the connection asks after a grab: the grabber's functions only.
        let functions = b.waiting_functions_of(1);
        assert_eq!(functions, ["f"]);
        assert_eq!(
            b.wakeups_of(&functions, now),
            vec![2],
            "f's job still waits"
        );
    }

    #[test]
    fn results_count_only_from_the_worker_holding_the_handle() {
        let mut b = Board::new("n1");
        b.connect(1, "w1".into());
        b.connect(2, "w2".into());
        b.can_do(1, "f", None);
        b.enqueue(req("a", "f", Priority::Normal), Instant::now())
            .unwrap();
        assert!(!b.has_room("f"), "a waits for the one worker");
        let g = b.grab(1, Instant::now()).unwrap();
        assert_eq!(
            g.handle, "a",
            "a Gearman client's job: the handle its client got"
        );
        // A second attempt of the same job, while the first is held, and a job file's
        // step get handles of the board's own.
        b.enqueue(
            StepRequest {
                attempt: 2,
                ..req("a", "f", Priority::Normal)
            },
            Instant::now(),
        )
        .unwrap();
        b.enqueue(
            StepRequest {
                step: "resize".into(),
                ..req("b", "f", Priority::Normal)
            },
            Instant::now(),
        )
        .unwrap();
        let handles: Vec<String> = b.jobs().into_iter().map(|(h, _, _)| h).collect();
        assert_eq!(handles.len(), 3);
        b.connect(3, "w3".into());
        b.can_do(3, "f", None);
        let g2 = b.grab(3, Instant::now()).unwrap();
        let g3 = b.grab(3, Instant::now()).unwrap();
        assert!(g2.handle.starts_with("H:n1:") && g3.handle.starts_with("H:n1:"));
        assert_ne!(g2.handle, g3.handle);
        assert!(
            b.has_room("f"),
            "nothing waits for its two workers: a new job waits behind their own at most"
        );
        assert!(!b.has_room("g"), "no worker for g");
        b.enqueue(req("c", "f", Priority::Normal), Instant::now())
            .unwrap();
        assert!(b.has_room("f"), "one job waits for two workers");
        b.enqueue(req("d", "f", Priority::Normal), Instant::now())
            .unwrap();
        assert!(!b.has_room("f"), "a job waits for each worker");
        assert!(b.finish(2, &g.handle).is_none());
        assert!(b.finish(1, &g.handle).is_some());
        assert!(b.finish(1, &g.handle).is_none(), "one result per handle");
    }

    #[test]
    fn a_disconnect_loses_held_attempts_and_cancel_and_timeouts_give_up_handles() {
        let mut b = Board::new("n1");
        b.connect(1, "w1".into());
        b.connect(2, "w2".into());
        b.can_do(1, "f", Some(1));
        b.can_do(2, "f", None);
        for j in ["a", "b", "c"] {
            b.enqueue(req(j, "f", Priority::Normal), Instant::now())
                .unwrap();
        }
        let t0 = Instant::now();
        let a = b.grab(1, t0).unwrap();
        let bb = b.grab(2, t0).unwrap();
        assert_eq!(b.expired(t0 + Duration::from_millis(500)).len(), 0);
        let late = b.expired(t0 + Duration::from_secs(2));
        assert_eq!(late.len(), 1);
        assert_eq!(late[0].0.job, a.request.job);
        assert!(b.finish(1, &a.handle).is_none());
        assert!(b.cancel(&attempt_of(&req("c", "f", Priority::Normal))));
        assert!(
            b.cancel(&attempt_of(&bb.request)),
            "a held attempt is cancelled"
        );
        assert_eq!(b.conns[&2].held, 0, "its worker is free again");
        assert!(
            b.finish(2, &bb.handle).is_none(),
            "its late result is ignored"
        );
        assert!(b.grab(1, t0).is_none(), "c was cancelled");
        let (_, lost) = b.disconnect(2);
        assert!(lost.is_empty(), "it held nothing any more");
    }

    /// A run replaced by a newer one loses its waiting attempts; the new run's stay.
    #[test]
    fn an_abandoned_runs_waiting_attempts_leave_the_board() {
        let mut b = Board::new("n1");
        b.connect(1, "w".into());
        b.can_do(1, "f", None);
        b.enqueue(req("j", "f", Priority::Normal), Instant::now())
            .unwrap();
        let mut successor = req("j", "f", Priority::Normal);
        (successor.owner, successor.epoch, successor.attempt) = ("n2".into(), 3, 2);
        b.enqueue(successor, Instant::now()).unwrap();
        let run = AbandonedRun {
            job: "j".into(),
            below_epoch: 3,
        };
        assert_eq!(b.abandon(&run), 1);
        let left = b.grab(1, Instant::now()).expect("the successor's attempt");
        assert_eq!(left.request.owner, "n2");
        assert_eq!(b.abandon(&run), 0);
    }

    #[test]
    fn maxqueue_bounds_a_functions_queue() {
        let mut b = Board::new("n1");
        b.connect(1, "w1".into());
        b.can_do(1, "f", None);
        assert!(b.set_max_queue("f", 1));
        assert!(!b.queue_full("f"));
        for i in 1..MAX_QUEUE_LIMITS {
            assert!(b.set_max_queue(&format!("g{i}"), 5));
        }
        assert!(
            !b.set_max_queue("one-too-many", 5),
            "the limits are bounded"
        );
        assert!(b.set_max_queue("f", 2), "an existing limit can change");
        b.enqueue(req("a", "f", Priority::Normal), Instant::now())
            .unwrap();
        b.enqueue(req("b", "f", Priority::Normal), Instant::now())
            .unwrap();
        assert!(b.queue_full("f"));
        let s = b.status();
        assert_eq!(
            s,
            vec![FunctionStatus {
                function: "f".into(),
                total: 2,
                running: 0,
                workers: 1,
                queued: [0, 2, 0],
            }]
        );
    }
}
