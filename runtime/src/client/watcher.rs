//! The client's `Watcher` actor: job managers push the events of the jobs the client
//! follows to it (group `troupe.client.NAME`), and it routes each to the job's handle, or
//! keeps it until the handle exists (an event can arrive before the submission's answer).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::mpsc;

use crate::job::status::JobEvent;
use crate::protocol::watcher::WatcherMessage;

/// Where the watcher sends a job's events: the handle, or a buffer until the handle exists.
enum Sub {
    Buffer(Vec<JobEvent>),
    Handle(mpsc::UnboundedSender<JobEvent>),
}

/// The followed jobs, by id, shared by the watcher and the client. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Subscriptions(Arc<Mutex<HashMap<String, Sub>>>);

impl Subscriptions {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Sub>> {
        // A poisoned map only means a panic elsewhere while routing; the map itself is fine.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The events of `job` from now on, after those that arrived before this call.
    pub(crate) fn follow(&self, job: &str) -> mpsc::UnboundedReceiver<JobEvent> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut map = self.lock();
        let mut ended = false;
        if let Some(Sub::Buffer(buffered)) = map.remove(job) {
            for ev in buffered {
                ended |= matches!(ev, JobEvent::JobFinished { .. });
                let _ = tx.send(ev);
            }
        }
        if !ended {
            map.insert(job.to_string(), Sub::Handle(tx));
        }
        rx
    }

    /// Hands `ev` to its job's handle, or keeps it until the handle exists.
    fn route(&self, ev: JobEvent) {
        let job = event_job(&ev).to_string();
        let mut map = self.lock();
        match map.get_mut(&job) {
            Some(Sub::Handle(tx)) => {
                let ended = matches!(ev, JobEvent::JobFinished { .. });
                if tx.send(ev).is_err() || ended {
                    map.remove(&job);
                }
            }
            Some(Sub::Buffer(b)) => b.push(ev),
            None => {
                map.insert(job, Sub::Buffer(vec![ev]));
            }
        }
    }
}

/// The client's actor that receives pushed job events.
pub(crate) struct Watcher;

impl Actor for Watcher {
    type Msg = WatcherMessage;
    type State = Subscriptions;
    type Arguments = Subscriptions;

    async fn pre_start(
        &self,
        _me: ActorRef<Self::Msg>,
        subs: Subscriptions,
    ) -> Result<Subscriptions, ActorProcessingErr> {
        Ok(subs)
    }

    async fn handle(
        &self,
        _me: ActorRef<Self::Msg>,
        msg: Self::Msg,
        subs: &mut Subscriptions,
    ) -> Result<(), ActorProcessingErr> {
        let WatcherMessage::Event(ev) = msg;
        match ev.into_inner() {
            Ok(ev) => subs.route(ev),
            Err(e) => tracing::warn!(error = %e, "dropping an unreadable job event"),
        }
        Ok(())
    }
}

/// The job an event is about.
pub fn event_job(ev: &JobEvent) -> &str {
    match ev {
        JobEvent::Queued { job, .. }
        | JobEvent::StepStarted { job, .. }
        | JobEvent::StepRetrying { job, .. }
        | JobEvent::StepNeedsAction { job, .. }
        | JobEvent::StepProgress { job, .. }
        | JobEvent::StepData { job, .. }
        | JobEvent::StepFinished { job, .. } => job,
        JobEvent::JobFinished { status } => &status.id,
    }
}
