//! The event hub's messages (one per node, in `troupe.event_hub.NODE` and
//! `troupe.event_hubs`): the cluster's event stream and jobs list, and [`cluster_jobs`],
//! which gathers the jobs list from every hub.

use std::time::Duration;

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};

use super::groups::{event_hub_group, first_member, node_of_event_hub_group};
use crate::job::status::JobState;
use crate::observe::{newest_first, ClusterEvent, JobList, JobQuery, JobsPage};
use crate::wire::Wire;

/// Messages of a node's event hub (in `troupe.event_hub.NODE` and `troupe.event_hubs`).
#[derive(RactorClusterMessage)]
pub enum EventHubMessage {
    /// Something happened on this node (local).
    Publish(Wire<ClusterEvent>),
    /// The hub of node NAME wants this node's events for a while (renewed every second).
    Subscribe(String),
    /// Events from another node's hub.
    Forward(Wire<Vec<ClusterEvent>>),
    /// The newest jobs this node owns that match.
    #[rpc]
    ListJobs(Wire<JobQuery>, RpcReplyPort<Wire<JobList>>),
    /// A page of the whole cluster's jobs, gathered by this hub from every hub it
    /// sees (for clients, which see only the nodes they are connected to).
    #[rpc]
    ListClusterJobs(Wire<ClusterJobsQuery>, RpcReplyPort<Wire<JobsPage>>),
    /// Send what waits for subscribers (local timer, armed by the first event waiting).
    Tick,
    /// Renew this node's subscriptions at the other hubs (local timer, HTTP nodes only).
    Renew,
    /// Job NAME left this node without ending here (another node took it over): its
    /// summary goes (local, from the job manager).
    JobLeft(String),
}

/// A question for [`EventHubMessage::ListClusterJobs`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterJobsQuery {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Jobs to skip (newest first).
    pub offset: usize,
    /// Page size.
    pub limit: usize,
}

/// Asks every node's event hub for its newest jobs in `state` and merges them into one
/// page, newest first. A hub that does not answer within `timeout` is named in
/// [`JobsPage::unanswered`] rather than failing the whole list.
pub async fn cluster_jobs(
    state: Option<JobState>,
    offset: usize,
    limit: usize,
    timeout: Duration,
) -> JobsPage {
    let hubs = ractor::pg::which_groups()
        .into_iter()
        .filter_map(|g| node_of_event_hub_group(&g).map(str::to_string))
        .filter_map(|node| {
            first_member::<EventHubMessage>(&event_hub_group(&node)).map(|h| (node, h))
        });
    let query = JobQuery {
        state,
        limit: offset.saturating_add(limit),
    };
    let asks = hubs.map(|(node, hub)| {
        let q = query.clone();
        async move {
            let r = hub
                .call(
                    |reply| EventHubMessage::ListJobs(Wire::new(q), reply),
                    Some(timeout),
                )
                .await;
            match r {
                Ok(ractor::rpc::CallResult::Success(w)) => w.into_inner().map_err(|_| node),
                _ => Err(node),
            }
        }
    });
    let mut page = JobsPage {
        offset,
        limit,
        ..Default::default()
    };
    let mut all = Vec::new();
    for r in futures::future::join_all(asks).await {
        match r {
            Ok(list) => {
                // Saturating: the counts come from peers.
                page.total = page.total.saturating_add(list.total);
                for (k, n) in list.by_state {
                    let c = page.by_state.entry(k).or_insert(0);
                    *c = c.saturating_add(n);
                }
                all.extend(list.jobs);
            }
            Err(node) => page.unanswered.push(node),
        }
    }
    all.sort_by(newest_first);
    page.jobs = all.into_iter().skip(offset).take(limit).collect();
    page
}
