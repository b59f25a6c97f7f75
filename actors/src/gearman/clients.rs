//! `GearmanClients`: receives the events of the jobs this node's Gearman clients wait on
//! (it is their watcher, in `troupe.client.gearman@NODE`) and writes them to the waiting
//! connections as `WORK_STATUS`, `WORK_DATA`, `WORK_WARNING`, `WORK_COMPLETE`,
//! `WORK_FAIL` or `WORK_EXCEPTION`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use troupe_runtime::gearman::data::{to_workload, EXCEPTION, WORK_FAIL};
use troupe_runtime::gearman::packet::{response, PacketType};
use troupe_runtime::protocol::{client_group, WatcherMessage};
use troupe_runtime::{JobEvent, JobState, JobStatus};

use super::{lock, GearmanShared, Outbox};
use crate::NodeContext;

/// The watcher group of node `node`'s Gearman clients.
pub(crate) fn watcher_group(node: &str) -> String {
    client_group(&format!("gearman@{node}"))
}

/// The actor (see the module docs).
pub(crate) struct GearmanClients;

/// Why a job did not succeed, in words.
pub(crate) fn failure_text(st: &JobStatus) -> String {
    st.steps
        .values()
        .find_map(|s| s.error.clone())
        .or_else(|| st.error.clone())
        .unwrap_or_else(|| format!("job {} {}", st.id, st.state.as_str()))
}

/// How a failed Gearman job's worker ended it.
enum WorkerEnd {
    /// `WORK_FAIL`.
    Fail,
    /// `WORK_EXCEPTION` with these bytes.
    Exception(Vec<u8>),
    /// Troupe's own reason (no worker, a lost node, a refused input): its text.
    Other,
}

/// What the first failed step's error says of its Gearman worker.
fn worker_end(st: &JobStatus) -> WorkerEnd {
    let Some(e) = st.steps.values().find_map(|s| s.error.as_deref()) else {
        return WorkerEnd::Other;
    };
    if e.contains(WORK_FAIL) {
        return WorkerEnd::Fail;
    }
    let carried = e.find(EXCEPTION).and_then(|at| {
        // The carried JSON, then whatever the supervisor appended (`(gave up ...)`).
        let rest = &e[at + EXCEPTION.len()..];
        let v = serde_json::Deserializer::from_str(rest)
            .into_iter::<serde_json::Value>()
            .next()?
            .ok()?;
        troupe_runtime::gearman::data::carried(&v)
    });
    carried.map_or(WorkerEnd::Other, WorkerEnd::Exception)
}

/// The packets that tell a client about `ev`, for a connection that did (`exceptions`)
/// or did not ask for exceptions.
pub(crate) fn packets_for(ev: &JobEvent, exceptions: bool) -> Vec<Bytes> {
    match ev {
        JobEvent::StepProgress {
            job,
            numerator,
            denominator,
            ..
        } => vec![response(
            PacketType::WORK_STATUS,
            &[
                job.as_bytes(),
                numerator.to_string().as_bytes(),
                denominator.to_string().as_bytes(),
            ],
        )],
        JobEvent::StepData {
            job, data, warning, ..
        } => {
            let kind = if *warning {
                PacketType::WORK_WARNING
            } else {
                PacketType::WORK_DATA
            };
            vec![response(kind, &[job.as_bytes(), data])]
        }
        JobEvent::JobFinished { status } => {
            let h = status.id.as_bytes();
            match status.state {
                JobState::Succeeded => {
                    let out = status.output.as_ref().map(to_workload).unwrap_or_default();
                    vec![response(PacketType::WORK_COMPLETE, &[h, &out])]
                }
                JobState::Failed => match worker_end(status) {
                    // As gearmand: the worker's WORK_FAIL as WORK_FAIL, its exception's
                    // bytes as they were to a client that asked for exceptions.
                    WorkerEnd::Fail => vec![response(PacketType::WORK_FAIL, &[h])],
                    WorkerEnd::Exception(data) if exceptions => {
                        vec![response(PacketType::WORK_EXCEPTION, &[h, &data])]
                    }
                    WorkerEnd::Other if exceptions => vec![response(
                        PacketType::WORK_EXCEPTION,
                        &[h, failure_text(status).as_bytes()],
                    )],
                    _ => vec![response(PacketType::WORK_FAIL, &[h])],
                },
                _ => vec![response(PacketType::WORK_FAIL, &[h])],
            }
        }
        _ => Vec::new(),
    }
}

/// Writes `ev` to `outbox`.
pub(crate) fn send_event(outbox: &Outbox, ev: &JobEvent) {
    for p in packets_for(ev, outbox.exceptions.load(Ordering::Relaxed)) {
        outbox.send(p);
    }
}

/// Writes `ev` to the connections waiting on its job (under the routes lock, so that
/// events reach each connection in order; see `Routes`).
pub(crate) fn deliver(shared: &GearmanShared, ev: &JobEvent) {
    let mut routes = lock(&shared.routes);
    for c in routes.deliver(ev, Instant::now()) {
        if let Some(o) = shared.outbox(c) {
            send_event(&o, ev);
        }
    }
}

impl Actor for GearmanClients {
    type Msg = WatcherMessage;
    type State = Arc<GearmanShared>;
    type Arguments = NodeContext;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        ctx: NodeContext,
    ) -> Result<Self::State, ActorProcessingErr> {
        ractor::pg::join(watcher_group(&ctx.view.node), vec![myself.get_cell()]);
        Ok(ctx.view.gearman.clone())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        shared: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let WatcherMessage::Event(ev) = msg;
        let ev = match ev.into_inner() {
            Ok(ev) => ev,
            Err(e) => {
                tracing::warn!(error = %e, "dropping an unreadable job event");
                return Ok(());
            }
        };
        deliver(shared, &ev);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ended(state: JobState, output: Option<serde_json::Value>) -> JobEvent {
        JobEvent::JobFinished {
            status: Box::new(JobStatus {
                id: "n1-1-1".into(),
                name: String::new(),
                state,
                steps: Default::default(),
                output,
                error: Some("boom".into()),
                stats: Default::default(),
                elapsed_ms: None,
                submitted_at_ms: 0,
            }),
        }
    }

    #[test]
    fn the_end_of_a_job_is_the_packet_gearman_clients_expect() {
        let p = packets_for(&ended(JobState::Succeeded, Some(json!("olleh"))), false);
        assert_eq!(&p[0][12..], b"n1-1-1\0olleh");
        assert_eq!(u32::from_be_bytes([p[0][4], p[0][5], p[0][6], p[0][7]]), 13);
        let p = packets_for(&ended(JobState::Failed, None), false);
        assert_eq!(u32::from_be_bytes([p[0][4], p[0][5], p[0][6], p[0][7]]), 14);
        let p = packets_for(&ended(JobState::Failed, None), true);
        assert_eq!(u32::from_be_bytes([p[0][4], p[0][5], p[0][6], p[0][7]]), 25);
        assert_eq!(&p[0][12..], b"n1-1-1\0boom");
        let p = packets_for(&ended(JobState::Cancelled, None), true);
        assert_eq!(u32::from_be_bytes([p[0][4], p[0][5], p[0][6], p[0][7]]), 14);
    }
}
