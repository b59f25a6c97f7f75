//! Where a node keeps actor states: its own activations' and copies for other hosts, in
//! one table of the journal (redb, group commits), or in memory with `journal = false`.
//! Either way a save older than the one held, or older than the newest activation that
//! read the state here (its fence), is refused: that is the fence a stale activation runs
//! into.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use troupe_runtime::protocol::{Fenced, SavedState};

use crate::journal::Journal;

/// A store could not read and fence an actor's state (its journal commit failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the journal did not commit the read and fence of {actor} at epoch {epoch}; see the journal's error above")]
pub(crate) struct FenceFailed {
    /// `TYPE/KEY`.
    pub actor: String,
    /// The fence asked for.
    pub epoch: u64,
}

/// An actor's entry in memory: its newest save and its fence.
type MemoryEntry = (Option<SavedState>, u64);

/// A node's actor states.
#[derive(Clone, Debug)]
pub(crate) enum ActorStore {
    /// In the journal (durable).
    Journal(Journal),
    /// In memory (`journal = false`: states live as long as the node).
    Memory(Arc<Mutex<HashMap<String, MemoryEntry>>>),
}

impl ActorStore {
    /// The store of a node with this journal (none: memory).
    pub(crate) fn new(journal: Option<Journal>) -> Self {
        match journal {
            Some(j) => ActorStore::Journal(j),
            None => ActorStore::Memory(Arc::default()),
        }
    }

    /// Fences `actor` at `epoch` (0: no fence) and returns the newest state held, in one
    /// step: no save can land between the two. An error when the journal did not commit
    /// the fence: this store must not count as read (its fence may not hold).
    pub(crate) async fn fetch_and_fence(
        &self,
        actor: &str,
        epoch: u64,
    ) -> Result<Option<SavedState>, FenceFailed> {
        match self {
            ActorStore::Journal(j) => {
                j.fetch_and_fence(actor, epoch)
                    .await
                    .map_err(|_| FenceFailed {
                        actor: actor.to_string(),
                        epoch,
                    })
            }
            ActorStore::Memory(m) => {
                let mut m = crate::locked(m);
                let e = m.entry(actor.to_string()).or_default();
                e.1 = e.1.max(epoch);
                Ok(e.0.clone())
            }
        }
    }

    /// Saves `saved`; resolves once it is durable: `None` if the commit failed,
    /// `Some(Err)` if a newer activation's save or fence is held.
    pub(crate) async fn save(&self, actor: &str, saved: SavedState) -> Option<Result<(), Fenced>> {
        match self {
            ActorStore::Journal(j) => j.save_actor(actor, saved).await.ok(),
            ActorStore::Memory(m) => {
                let mut m = crate::locked(m);
                let e = m.entry(actor.to_string()).or_default();
                Some(saved.admit(e.0.as_ref(), e.1).map(|write| {
                    if write {
                        e.0 = Some(saved);
                    }
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(epoch: u64, seq: u64) -> SavedState {
        SavedState {
            epoch,
            seq,
            state: vec![seq as u8],
            hosts: Vec::new(),
            answered: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_store_refuses_saves_of_a_replaced_activation_once_fenced() {
        let dir = std::env::temp_dir().join(format!("troupe-store-{}", std::process::id()));
        let (journal, _) = Journal::open(
            &dir,
            10,
            None,
            Default::default(),
            std::time::Duration::from_millis(10),
        )
        .expect("journal opens");
        for store in [ActorStore::new(None), ActorStore::new(Some(journal))] {
            assert_eq!(store.save("t/k", save(3, 1)).await, Some(Ok(())));
            assert_eq!(store.save("t/k", save(3, 2)).await, Some(Ok(())));
            // The same save again is fine; the count going back within an epoch is not.
            assert_eq!(store.save("t/k", save(3, 2)).await, Some(Ok(())));
            assert_eq!(
                store.save("t/k", save(3, 1)).await,
                Some(Err(Fenced { epoch: 3 }))
            );
            // A new activation (epoch 7) reads the state and fences the key: the old one's
            // next save is refused before the new one ever saved.
            assert_eq!(store.fetch_and_fence("t/k", 7).await, Ok(Some(save(3, 2))));
            assert_eq!(
                store.save("t/k", save(3, 3)).await,
                Some(Err(Fenced { epoch: 7 }))
            );
            assert_eq!(store.save("t/k", save(7, 3)).await, Some(Ok(())));
            assert_eq!(store.fetch_and_fence("t/k", 0).await, Ok(Some(save(7, 3))));
            assert_eq!(store.fetch_and_fence("t/other", 0).await, Ok(None));
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
