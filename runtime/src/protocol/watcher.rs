//! The messages of a client's watcher (in `troupe.client.NAME`): the events of the jobs the
//! client follows, pushed by their job supervisors.

use ractor_cluster::RactorClusterMessage;

use crate::job::status::JobEvent;
use crate::wire::Wire;

/// Messages of a client's watcher.
#[derive(RactorClusterMessage)]
pub enum WatcherMessage {
    /// An event of a watched job.
    Event(Wire<JobEvent>),
}
