//! The runtime user code runs on, apart from the node's control plane.
//!
//! A node's actors (membership and its gossip, supervisors, Raft, the HTTP API) share one
//! tokio runtime, single-threaded by default. A task that computes for seconds without
//! yielding would stop all of them: peers would hear no gossip, declare the node down,
//! run its attempts again and take over its jobs. So task futures (and keyed actors'
//! handlers) run on this separate multi-threaded runtime, one worker thread per slot:
//! a CPU-bound task holds a thread of its own, never the control plane's. Results come
//! back over the same channels as before (ractor casts, oneshots), which work across
//! runtimes.
//!
//! Threads alone are not enough on a machine with few cores: two tasks spinning on two
//! cores leave the control plane's thread a third share of the CPU, and a health check
//! or a heartbeat can wait a whole scheduler period. So the task threads run at a lower
//! CPU priority (`task_nice`, [`TASK_NICE`] by default): the kernel runs the control plane
//! first whenever it has work, and user code gets every cycle it leaves (nearly all).

use std::future::Future;
use std::sync::Arc;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// How much lower than the node's the task threads' CPU priority is by default (a nice
/// increment, the `task_nice` setting). Five makes a task thread's share about a third of
/// a control-plane thread's when both want the CPU; alone, a task thread still gets all.
pub const TASK_NICE: i32 = troupe_runtime::config::DEFAULT_TASK_NICE;

/// Lowers the calling thread's CPU priority by `nice`.
///
/// Written with libc rather than a crate: it is two calls. On Linux a nice value belongs
/// to a thread, so `PRIO_PROCESS` with this thread's id changes only this thread.
/// Failing (a sandbox forbidding it) leaves the thread at the node's priority, as before.
fn lower_this_threads_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: plain system calls on this thread's own id, with no memory passed.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if libc::setpriority(libc::PRIO_PROCESS, tid, (now + nice).min(19)) != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "cannot lower a task thread's priority");
        }
    }
}

/// Why the task runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the runtime that runs tasks ({threads} threads): {source}. Lower `slots` or raise the process's thread limit")]
pub struct TaskRuntimeError {
    threads: usize,
    source: std::io::Error,
}

/// The runtime of user code: cheap to clone, shut down when the last clone goes.
#[derive(Clone, Debug)]
pub struct TaskRuntime {
    inner: Arc<Owned>,
}

/// Owns the runtime; dropping it (possibly from inside another runtime, where a blocking
/// shutdown would panic) shuts it down in the background.
#[derive(Debug)]
struct Owned {
    runtime: Option<Runtime>,
    handle: Handle,
    /// The runtime of the node's actors (the one `new` was called on), if any.
    control: Option<Handle>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl TaskRuntime {
    /// Starts a multi-threaded runtime with `threads` worker threads (at least one),
    /// named `troupe-task-NODE`, at [`TASK_NICE`]. Called on the node's own runtime, which
    /// it remembers as the control plane's.
    pub fn new(node: &str, threads: usize) -> Result<Self, TaskRuntimeError> {
        Self::with_nice(node, threads, TASK_NICE)
    }

    /// [`TaskRuntime::new`] with the task threads' priority lowered by `nice` (0: not).
    pub fn with_nice(node: &str, threads: usize, nice: i32) -> Result<Self, TaskRuntimeError> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name(format!("troupe-task-{node}"))
            .on_thread_start(move || lower_this_threads_priority(nice))
            .enable_all()
            .build()
            .map_err(|source| TaskRuntimeError { threads, source })?;
        let handle = runtime.handle().clone();
        Ok(Self {
            inner: Arc::new(Owned {
                runtime: Some(runtime),
                handle,
                control: Handle::try_current().ok(),
            }),
        })
    }

    /// Runs `fut` on the task runtime; its handle aborts nothing when dropped (see
    /// [`AbortOnDrop`]).
    pub(crate) fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.inner.handle.spawn(fut)
    }
}

impl TaskRuntime {
    /// Runs `fut` on the control plane's runtime (the node's actors'), wherever it is
    /// called from: bookkeeping started from inside user code (a slot handed on) stays
    /// off the task threads.
    pub(crate) fn spawn_control<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        match &self.inner.control {
            Some(h) => h.spawn(fut),
            None => tokio::spawn(fut),
        }
    }
}

/// A join handle that aborts its task when dropped (the caller stopped waiting: a cancel,
/// the attempt given up), so that user code stops at its next await point.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test(flavor = "current_thread")]
    async fn a_spinning_task_does_not_stop_the_callers_runtime() {
        let rt = TaskRuntime::new("t", 1).unwrap();
        let spin = rt.spawn(async {
            let end = Instant::now() + Duration::from_millis(300);
            while Instant::now() < end {
                std::hint::spin_loop();
            }
            7
        });
        // The caller's single thread goes on: a timer fires long before the spin ends.
        let began = Instant::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(began.elapsed() < Duration::from_millis(200));
        assert_eq!(spin.await.unwrap(), 7);
        drop(rt); // inside a runtime: must not panic
    }

    /// This thread's nice value.
    fn nice_here() -> i32 {
        // SAFETY: system calls on this thread's own id.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn task_threads_run_at_a_lower_priority_than_the_node() {
        let rt = TaskRuntime::new("t", 1).unwrap();
        let node = nice_here();
        let task = rt.spawn(async { nice_here() }).await.unwrap();
        assert_eq!(
            task,
            (node + TASK_NICE).min(19),
            "the node's thread is at {node}"
        );
        assert_eq!(nice_here(), node, "the caller's own priority changed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_comes_back_as_a_join_error() {
        let rt = TaskRuntime::new("t", 1).unwrap();
        let err = rt.spawn(async { panic!("on purpose") }).await.unwrap_err();
        assert!(err.is_panic());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn dropping_the_guard_aborts_the_task() {
        let rt = TaskRuntime::new("t", 1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let guard = AbortOnDrop(rt.spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            let _ = tx.send(());
        }));
        drop(guard);
        // The task was dropped, so its sender was too.
        assert!(rx.await.is_err());
    }
}
