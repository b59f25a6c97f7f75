//! The last minutes of throughput and job latency, and the last events, so that a
//! dashboard opened now shows what happened before it: a task follows the node's event
//! stream from the moment HTTP starts and keeps per-second step counts and job durations
//! for [`SPAN_S`] seconds and the newest [`RECENT_EVENTS`] events.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::broadcast::error::RecvError;
use troupe_actors::NodeContext;
use troupe_runtime::observe::{now_ms, ClusterEvent, EventKind};
use troupe_runtime::JobEvent;

/// Seconds of history kept.
pub(crate) const SPAN_S: u64 = 300;
/// Events kept for a page that opens.
pub(crate) const RECENT_EVENTS: usize = 100;

/// Rolling series of the cluster's finished steps and jobs.
#[derive(Default)]
pub(crate) struct History {
    inner: Mutex<Series>,
}

#[derive(Default)]
struct Series {
    /// (unix second, steps finished in it), oldest first.
    steps: VecDeque<(u64, u64)>,
    /// (unix ms at the end, job duration ms), oldest first.
    jobs: VecDeque<(u64, u64)>,
    /// The newest events, oldest first (a job's end without its steps and output):
    /// turned into JSON only when a page asks.
    recent: VecDeque<Arc<ClusterEvent>>,
}

impl Series {
    fn trim(&mut self, now_s: u64) {
        let cut = now_s.saturating_sub(SPAN_S);
        while self.steps.front().is_some_and(|(s, _)| *s < cut) {
            self.steps.pop_front();
        }
        while self.jobs.front().is_some_and(|(ms, _)| *ms / 1000 < cut) {
            self.jobs.pop_front();
        }
    }
}

/// `ev` as the event log keeps it: a job's end without its steps and output (a page
/// needs its state, error and time, and a large job's status would fill the memory).
fn slim(ev: Arc<ClusterEvent>) -> Arc<ClusterEvent> {
    let EventKind::Job(JobEvent::JobFinished { status: s }) = &ev.kind else {
        return ev;
    };
    let status = troupe_runtime::JobStatus {
        id: s.id.clone(),
        name: s.name.clone(),
        state: s.state,
        steps: Default::default(),
        output: None,
        error: s.error.clone(),
        stats: s.stats.clone(),
        elapsed_ms: s.elapsed_ms,
        submitted_at_ms: s.submitted_at_ms,
    };
    Arc::new(ClusterEvent {
        kind: EventKind::Job(JobEvent::JobFinished {
            status: Box::new(status),
        }),
        origin: ev.origin.clone(),
        ..*ev
    })
}

impl History {
    /// Starts following `ctx`'s event stream.
    pub(crate) fn follow(ctx: &NodeContext) -> Arc<History> {
        let h = Arc::new(History::default());
        let mut rx = ctx.view.events.subscribe();
        let weak = Arc::downgrade(&h);
        tokio::spawn(async move {
            loop {
                let ev = match rx.recv().await {
                    Ok(ev) => ev,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => return,
                };
                let Some(h) = weak.upgrade() else { return };
                let mut s = h.inner.lock().unwrap_or_else(|p| p.into_inner());
                match &ev.kind {
                    EventKind::Job(JobEvent::StepFinished { .. }) => {
                        let sec = ev.at_ms / 1000;
                        match s.steps.back_mut() {
                            Some((last, n)) if *last == sec => *n += 1,
                            _ => s.steps.push_back((sec, 1)),
                        }
                    }
                    EventKind::Job(JobEvent::JobFinished { status }) => {
                        if let Some(ms) = status.elapsed_ms {
                            s.jobs.push_back((ev.at_ms, ms));
                        }
                    }
                    _ => {}
                }
                s.trim(ev.at_ms / 1000);
                s.recent.push_back(slim(ev));
                while s.recent.len() > RECENT_EVENTS {
                    s.recent.pop_front();
                }
            }
        });
        h
    }

    /// `{"span_s", "steps_per_s": [[unix_s, n], ...], "jobs": [[unix_ms, duration_ms], ...],
    /// "events": [the newest events, oldest first]}`.
    pub(crate) fn json(&self) -> Value {
        let mut s = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        s.trim(now_ms() / 1000);
        json!({
            "span_s": SPAN_S,
            "steps_per_s": s.steps.iter().map(|(t, n)| [*t, *n]).collect::<Vec<_>>(),
            "jobs": s.jobs.iter().map(|(t, ms)| [*t, *ms]).collect::<Vec<_>>(),
            "events": s.recent.iter().map(|e| e.to_json()).collect::<Vec<_>>(),
        })
    }
}
