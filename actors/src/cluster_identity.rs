//! Which cluster a node's data folder belongs to.
//!
//! The core group's log, the journal and the actor states in a data folder only make sense
//! inside the cluster that wrote them: a node started with another cluster's folder would
//! believe it votes in a Raft group whose other voters do not exist. So the cluster gets an
//! id when its core group forms (decided once, in the group's log), and every node writes
//! it to `cluster.json` in its folder with a hash of the id and the cookie (never the
//! cookie). A node that starts on a folder whose hash does not match its cookie refuses
//! to start and names the folder. The id is also this node's memory that a core group
//! exists: a node that knows one never forms a group, and never grants itself a keyed
//! actor without the group's lease.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::locked;

/// The file, in the data folder, that names the folder's cluster.
pub(crate) const FILE: &str = "cluster.json";

/// Why the data folder cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The folder was written by another cluster (or with another cookie).
    #[error(
        "the data folder {dir} belongs to another cluster ({cluster}, written with another cookie): \
         start this node with that cluster's cookie, or give it a fresh folder with --data"
    )]
    Foreign {
        /// The folder.
        dir: PathBuf,
        /// The cluster id written there.
        cluster: String,
    },
    /// The identity file cannot be read or parsed.
    #[error(
        "cannot read {path}: {why}. Remove the file only if the folder holds nothing of value"
    )]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// The identity file cannot be written.
    #[error("cannot write {path}: {source}. Check that the data folder is writable")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// What `cluster.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct IdentityFile {
    /// The cluster id.
    cluster: String,
    /// SHA-256 of the id and the cookie, hex.
    cookie_hash: String,
}

/// SHA-256 of `cluster` and `cookie`, hex: ties a folder to a cookie without keeping it.
fn cookie_hash(cluster: &str, cookie: &str) -> String {
    let d = Sha256::new()
        .chain_update(b"troupe-cluster-id\0")
        .chain_update(cluster.as_bytes())
        .chain_update(b"\0")
        .chain_update(cookie.as_bytes())
        .finalize();
    troupe_runtime::wire::hex(&d)
}

/// A new random cluster id (128 bits, hex).
pub(crate) fn new_cluster_id() -> String {
    let n: u128 = rand::random();
    format!("{n:032x}")
}

/// This node's knowledge of its cluster's id, backed by the data folder (shared by the
/// core member and whoever asks whether a core group exists).
#[derive(Clone, Debug)]
pub struct Identity {
    dir: PathBuf,
    cookie: String,
    cluster: Arc<Mutex<Option<String>>>,
}

impl Identity {
    /// Reads the folder's identity, refusing a folder of another cluster.
    pub fn load(dir: &Path, cookie: &str) -> Result<Identity, IdentityError> {
        let path = dir.join(FILE);
        let cluster = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(IdentityError::Unreadable {
                    path,
                    why: e.to_string(),
                })
            }
            Ok(bytes) => {
                let f: IdentityFile =
                    serde_json::from_slice(&bytes).map_err(|e| IdentityError::Unreadable {
                        path: path.clone(),
                        why: e.to_string(),
                    })?;
                if f.cookie_hash != cookie_hash(&f.cluster, cookie) {
                    return Err(IdentityError::Foreign {
                        dir: dir.to_path_buf(),
                        cluster: f.cluster,
                    });
                }
                Some(f.cluster)
            }
        };
        Ok(Identity {
            dir: dir.to_path_buf(),
            cookie: cookie.to_string(),
            cluster: Arc::new(Mutex::new(cluster)),
        })
    }

    /// The cluster id, once known.
    pub fn cluster(&self) -> Option<String> {
        locked(&self.cluster).clone()
    }

    /// Records `cluster` as this folder's cluster (durably, before it counts). A folder
    /// that already has another id keeps it: the caller is told which one it has.
    pub(crate) fn adopt(&self, cluster: &str) -> Result<String, IdentityError> {
        let mut held = locked(&self.cluster);
        if let Some(c) = held.as_ref() {
            return Ok(c.clone());
        }
        let f = IdentityFile {
            cluster: cluster.to_string(),
            cookie_hash: cookie_hash(cluster, &self.cookie),
        };
        let path = self.dir.join(FILE);
        write_durably(&self.dir, &path, &f).map_err(|source| IdentityError::Write {
            path: path.clone(),
            source,
        })?;
        *held = Some(cluster.to_string());
        Ok(cluster.to_string())
    }
}

/// Writes `f` to `path` through a temporary file, renamed once synced.
fn write_durably(dir: &Path, path: &Path, f: &IdentityFile) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(f).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "troupe-identity-{tag}-{}-{:x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_folder_is_refused_with_another_cookie_and_named() {
        let dir = temp_dir("foreign");
        let id = Identity::load(&dir, "cookie-a").unwrap();
        assert_eq!(id.cluster(), None);
        id.adopt("c1").unwrap();
        // Same cookie: the id is read back.
        let again = Identity::load(&dir, "cookie-a").unwrap();
        assert_eq!(again.cluster().as_deref(), Some("c1"));
        // Another cookie: refused, naming the folder.
        let e = Identity::load(&dir, "cookie-b").unwrap_err();
        assert!(matches!(e, IdentityError::Foreign { .. }), "{e}");
        assert!(e.to_string().contains(&dir.display().to_string()), "{e}");
        // The cookie itself is never written.
        let text = std::fs::read_to_string(dir.join(FILE)).unwrap();
        assert!(!text.contains("cookie-a"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_folder_keeps_its_first_cluster() {
        let dir = temp_dir("keep");
        let id = Identity::load(&dir, "k").unwrap();
        assert_eq!(id.adopt("c1").unwrap(), "c1");
        assert_eq!(id.adopt("c2").unwrap(), "c1");
        assert_eq!(
            Identity::load(&dir, "k").unwrap().cluster().as_deref(),
            Some("c1")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unreadable_file_is_named() {
        let dir = temp_dir("garbage");
        std::fs::write(dir.join(FILE), b"not json").unwrap();
        let e = Identity::load(&dir, "k").unwrap_err();
        assert!(e.to_string().contains(FILE), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
