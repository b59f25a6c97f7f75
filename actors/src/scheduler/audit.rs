//! Attempts sent on a connection that closed.
//!
//! ractor_cluster sends a message to a peer's actor through the session of the connection
//! that actor was seen on. When that connection closes, what was written to it and not yet
//! read by the peer is gone, and so are sends to the session's remote actors until they
//! leave their groups. Membership marks the peer down, and the attempts there lost, only
//! if no other connection to the same process stands: a peer that closed a silent
//! connection and dialled again at once (this node was paused, the network stalled)
//! never counts as down, so an attempt lost with the old connection waited for ever (the
//! nemesis found one, seed 488519: a job's step never started and the job never ended).
//!
//! So after such a replacement the owner asks the peer which of the attempts it has sent
//! there (by the time it asks, shortly after the close) the peer holds ([`WorkerPoolMessage::Holds`]). The peer answers the
//! others and *fences* them: if one still arrives (on a connection it has not closed
//! yet), it is refused, so the answer stays true. The owner runs those again elsewhere as
//! new attempts, without using a retry. An attempt that ran there and whose result was
//! lost runs again too: a step runs at least once, as after a node's crash.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use troupe_runtime::protocol::{AttemptRef, JobManagerMessage, LostAttempt, WorkerPoolMessage};
use troupe_runtime::wire::Wire;

use super::Scheduler;

/// How many fenced attempts a node remembers: a fenced attempt matters only while a
/// message sent before its owner's question can still arrive, seconds after the close.
const KEPT: usize = 16_384;

/// How long after the close the owner asks: the closed session's remote actors leave
/// their groups and the new session's join by then.
const SETTLE: Duration = Duration::from_millis(500);

/// How long the owner waits for each answer (a lost question is asked again).
const ANSWER_WAIT: Duration = Duration::from_secs(2);

/// How long the owner keeps asking a peer that stays up but does not answer (an older
/// release drops the question): then it takes the attempts as lost and runs them again,
/// as a duplicate run is better than a job that never ends.
const PATIENCE: Duration = Duration::from_secs(30);

/// Attempts this node said it does not hold: they do not start here (see the module
/// docs). Bounded, the oldest forgotten first.
#[derive(Debug, Default)]
pub(crate) struct FencedAttempts {
    set: HashSet<AttemptRef>,
    order: VecDeque<AttemptRef>,
}

impl FencedAttempts {
    /// Fences `a`.
    pub(super) fn record(&mut self, a: AttemptRef) {
        if self.set.insert(a.clone()) {
            self.order.push_back(a);
        }
        while self.order.len() > KEPT {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Whether `a` is fenced.
    pub(crate) fn refuses(&self, a: &AttemptRef) -> bool {
        // Most nodes never fence anything: no hash on the attempt path then.
        !self.set.is_empty() && self.set.contains(a)
    }
}

/// A connection to `node` closed while another one to the same process stands: checks,
/// in the background, that `node` holds the attempts this node has sent it, and runs
/// again those it does not (see the module docs). Attempts sent after the close are
/// asked about too: until the closed session's actors leave their groups, a send may
/// still pick one of them.
pub(crate) fn after_connection_replaced(scheduler: Arc<Scheduler>, node: String) {
    tokio::spawn(async move {
        tokio::time::sleep(SETTLE).await;
        let sent = scheduler.placed_on_by(&node, Instant::now());
        if sent.is_empty() {
            return;
        }
        tracing::info!(node = %node, attempts = sent.len(), "a connection to the node was replaced; asking which of the attempts sent on it the node holds");
        let give_up = Instant::now() + PATIENCE;
        let unheld = loop {
            if scheduler.view.is_down(&node) {
                // Marked down meanwhile: its attempts are lost the usual way.
                return;
            }
            // Asked again each round: the pool of the connection open now.
            if let Some(pool) = scheduler.view.pool_of(&node) {
                match ractor::call_t!(
                    pool,
                    WorkerPoolMessage::Holds,
                    ANSWER_WAIT.as_millis() as u64,
                    Wire::new(sent.clone())
                ) {
                    Ok(a) => break a.into_inner().unwrap_or_default(),
                    Err(e) => {
                        tracing::debug!(node = %node, error = %e, "asking a node which attempts it holds failed; asking again")
                    }
                }
            }
            if Instant::now() >= give_up {
                tracing::warn!(node = %node, "a node up all along did not say which attempts it holds; running them again");
                break sent;
            }
            tokio::time::sleep(SETTLE).await;
        };
        let lost = scheduler.lost_on(&node, unheld);
        if lost.is_empty() {
            return;
        }
        tracing::warn!(node = %node, attempts = lost.len(), "attempts sent on a connection that closed never reached the node; they run again");
        let Some(jm) = crate::job_manager_of(&scheduler.view.node) else {
            return;
        };
        for attempt in lost {
            let lost = LostAttempt {
                attempt,
                reason: format!("sent to node {node} on a connection that closed, and lost"),
                counts: false,
            };
            let _ = jm.cast(JobManagerMessage::AttemptLost(Wire::new(lost)));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(n: u32) -> AttemptRef {
        AttemptRef {
            job: "j".into(),
            step: "s".into(),
            attempt: n,
        }
    }

    /// A fenced attempt is refused, others are not; the oldest are forgotten past the bound.
    #[test]
    fn fences_are_kept_up_to_the_bound() {
        let mut f = FencedAttempts::default();
        assert!(!f.refuses(&attempt(1)));
        f.record(attempt(1));
        f.record(attempt(1));
        assert!(f.refuses(&attempt(1)));
        assert!(!f.refuses(&attempt(2)));
        for n in 2..=KEPT as u32 + 1 {
            f.record(attempt(n));
        }
        assert!(!f.refuses(&attempt(1)), "the oldest is forgotten");
        assert!(f.refuses(&attempt(2)));
        assert_eq!(f.order.len(), KEPT);
        assert_eq!(f.set.len(), KEPT);
    }
}
