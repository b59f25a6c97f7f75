//! Where a node keeps actor states: its own activations' and copies for other hosts, in
//! one table of the journal (redb, group commits), or in memory with `journal = false`.
//! Either way a save older than the one held (an activation that was replaced) is
//! refused: that is the fence a stale activation runs into.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use troupe_runtime::protocol::{Fenced, SavedState};

use crate::journal::Journal;

/// A node's actor states.
#[derive(Clone, Debug)]
pub enum ActorStore {
    /// In the journal (durable).
    Journal(Journal),
    /// In memory (`journal = false`: states live as long as the node).
    Memory(Arc<Mutex<HashMap<String, SavedState>>>),
}

impl ActorStore {
    /// The store of a node with this journal (none: memory).
    pub fn new(journal: Option<Journal>) -> Self {
        match journal {
            Some(j) => ActorStore::Journal(j),
            None => ActorStore::Memory(Arc::default()),
        }
    }

    /// The newest state held of `actor`.
    pub fn get(&self, actor: &str) -> Option<SavedState> {
        match self {
            ActorStore::Journal(j) => j.actor_state(actor).unwrap_or_else(|e| {
                tracing::error!(actor, error = %e, "cannot read an actor's saved state");
                None
            }),
            ActorStore::Memory(m) => crate::locked(m).get(actor).cloned(),
        }
    }

    /// Saves `saved`; resolves once it is durable: `None` if the commit failed,
    /// `Some(Err)` if a newer activation's save is held.
    pub async fn save(&self, actor: &str, saved: SavedState) -> Option<Result<(), Fenced>> {
        match self {
            ActorStore::Journal(j) => j.save_actor(actor, saved).await.ok(),
            ActorStore::Memory(m) => {
                let mut m = crate::locked(m);
                Some(saved.admit(m.get(actor)).map(|write| {
                    if write {
                        m.insert(actor.to_string(), saved);
                    }
                }))
            }
        }
    }
}
