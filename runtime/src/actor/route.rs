//! Where an actor lives, and sending it a message from anywhere (a client, a job step, another
//! actor).
//!
//! The owner of (T, K) is chosen by rendezvous hashing of `actor:T/K` over the nodes whose
//! actor host serves T (the members of [`actor_type_group`]), the same rule as for merged
//! requests: every process computes the same owner from the same membership, and when a
//! node leaves or joins only the keys it loses or wins move. The sender sends straight to
//! the owner it computes; a host whose view differs forwards (see
//! `troupe_actors::actor_host`), and which host really runs the actor is settled by the
//! core group, not by this rule, so views that differ for a moment cost a hop, never a
//! second activation.

use std::time::{Duration, Instant};

use ractor::ActorRef;
use serde_json::Value;

use crate::error::ActorCallError;
use crate::protocol::actor_host::{ActorEnvelope, ActorHostMessage};
use crate::protocol::groups::{
    actor_type_group, first_member, node_of_actor_host, ACTOR_HOSTS_GROUP,
};
use crate::wire::Wire;

pub use crate::protocol::actor_host::{Claim, ClaimOutcome};

/// How long a call waits for its reply, retries included, unless told otherwise.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// How far apart two nodes' clocks may be, for what is counted on both: a message's wait
/// from its sender's send time ([`ActorEnvelope::sent_ms`]), a remembered answer's time.
/// Generous (NTP keeps clocks milliseconds apart): a node whose clock is further behind
/// would see its actor messages refused as "its caller stopped waiting".
pub const CLOCK_SKEW: Duration = Duration::from_secs(30);

/// How long a call waits for some node to serve an actor type it has not seen.
pub const UNKNOWN_TYPE_WAIT: Duration = Duration::from_secs(2);

/// The name of actor `key` of type `actor_type`, as messages and logs write it.
pub fn actor_name(actor_type: &str, key: &str) -> String {
    format!("{actor_type}/{key}")
}

/// The rendezvous key of an actor.
pub fn owner_key(actor_type: &str, key: &str) -> String {
    format!("actor:{actor_type}/{key}")
}

/// The hosts serving `actor_type` that this process sees, with their node names.
pub fn hosts(actor_type: &str) -> Vec<(String, ActorRef<ActorHostMessage>)> {
    ractor::pg::get_members(&actor_type_group(actor_type))
        .into_iter()
        .filter_map(|cell| {
            let node = node_of_actor_host(&cell.get_name()?)?.to_string();
            Some((node, cell.into()))
        })
        .collect()
}

/// The host that owns (`actor_type`, `key`) among `hosts`.
pub fn owner<'a>(
    actor_type: &str,
    key: &str,
    hosts: &'a [(String, ActorRef<ActorHostMessage>)],
) -> Option<&'a (String, ActorRef<ActorHostMessage>)> {
    let name = crate::merge::owner(
        &owner_key(actor_type, key),
        hosts.iter().map(|(n, _)| n.as_str()),
    )?;
    hosts.iter().find(|(n, _)| n == name)
}

/// How the reason of a call that timed out waiting for its reply starts.
const NO_REPLY: &str = "no reply within";

/// Whether `e` says only that the reply did not come in time.
fn no_reply(e: &ActorCallError) -> bool {
    matches!(e, ActorCallError::Unavailable { reason, .. } if reason.starts_with(NO_REPLY))
}

/// Sends one message to `host` and waits at most `timeout` for the reply.
pub async fn deliver(
    host: &ActorRef<ActorHostMessage>,
    envelope: ActorEnvelope,
    timeout: Duration,
) -> Result<Value, ActorCallError> {
    let actor = actor_name(&envelope.actor_type, &envelope.key);
    let unavailable = |reason: String| ActorCallError::Unavailable {
        actor: actor.clone(),
        reason,
    };
    match host
        .call(
            |r| ActorHostMessage::Deliver(Wire::new(envelope), r),
            Some(timeout),
        )
        .await
    {
        Ok(ractor::rpc::CallResult::Success(w)) => w
            .into_inner()
            .unwrap_or_else(|e| Err(unavailable(format!("unreadable reply: {e}")))),
        Ok(ractor::rpc::CallResult::Timeout) => Err(unavailable(format!(
            "{NO_REPLY} {} ms",
            timeout.as_millis()
        ))),
        Ok(ractor::rpc::CallResult::SenderError) => Err(unavailable(
            "its host dropped the message (it stopped or left)".into(),
        )),
        Err(e) => Err(unavailable(format!("its host cannot be reached: {e}"))),
    }
}

/// Sends `message` to actor `key` of type `actor_type` and waits for the reply, trying
/// again while the actor is unavailable (moving, its host went down) until `timeout`.
///
/// The tries of one call carry one id ([`ActorEnvelope::call_id`]): an activation that
/// applied it, or refused it (or the next one, which reads the replies with the state),
/// answers a retry with the first answer instead of handling it again. That memory is
/// bounded (the last calls that changed the key's state or were refused, for
/// [`CALL_TIMEOUT`] or their callers' time limit if longer; see
/// `troupe_actors::actor_host::activation`), and a new call (a caller that tries again
/// after an error) is a new id: give messages that must never apply twice an id the
/// actor remembers (as `examples/accounts` does). A job step's attempts are tries of one
/// call ([`call_as`] with [`step_call_id`]).
pub async fn call(
    actor_type: &str,
    key: &str,
    message: Value,
    timeout: Duration,
) -> Result<Value, ActorCallError> {
    call_as(actor_type, key, message, timeout, rand::random::<u64>()).await
}

/// The call id of every attempt of step `step` of job `job` (a hash of the two): an
/// actor step ran again (its node went down, its job was taken over) is a retry of the
/// same call, so the actor answers it as it answered the first, and an attempt that
/// arrives late, after another was answered, is not applied on a different state.
pub fn step_call_id(job: &str, step: &str) -> u64 {
    use sha2::{Digest, Sha256};
    // A hash every node and release computes alike (std's hasher promises neither).
    let d = Sha256::new()
        .chain_update(b"troupe step call\0")
        .chain_update(job.as_bytes())
        .chain_update([0])
        .chain_update(step.as_bytes())
        .finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// [`call`] with the id `call_id`, which the tries of one call share.
pub async fn call_as(
    actor_type: &str,
    key: &str,
    message: Value,
    timeout: Duration,
    call_id: u64,
) -> Result<Value, ActorCallError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut pause = Duration::from_millis(10);
    // The last refusal that said why: a last try cut short by the deadline says less.
    let mut why: Option<ActorCallError> = None;
    loop {
        let hosts = hosts(actor_type);
        // No host of the type in view (a client connected only to nodes that do not serve
        // it): through any node's host, which routes it by the whole cluster's view.
        let through = owner(actor_type, key, &hosts)
            .map(|(_, h)| h.clone())
            .or_else(|| first_member(ACTOR_HOSTS_GROUP));
        let result = match &through {
            Some(host) => {
                let left = deadline.saturating_duration_since(Instant::now());
                let envelope = ActorEnvelope {
                    actor_type: actor_type.to_string(),
                    key: key.to_string(),
                    message: message.clone(),
                    hops: 0,
                    wait_ms: Some(left.as_millis().try_into().unwrap_or(u64::MAX)),
                    call_id: Some(call_id),
                    sent_ms: Some(crate::observe::now_ms()),
                };
                deliver(host, envelope, left.max(Duration::from_millis(1))).await
            }
            None => Err(ActorCallError::UnknownType(actor_type.to_string())),
        };
        match result {
            // An unknown type gets a short wait (nodes may still be joining), not the
            // whole timeout: it is more likely a typo.
            Err(ActorCallError::UnknownType(t)) if start.elapsed() >= UNKNOWN_TYPE_WAIT => {
                return Err(ActorCallError::UnknownType(t))
            }
            Err(e) if e.is_transient() && Instant::now() + pause < deadline => {
                tracing::debug!(error = %e, "actor call: trying again");
                if !no_reply(&e) {
                    why = Some(e);
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            Err(e) if no_reply(&e) => {
                return Err(match why {
                    // The refusal that says why, and that the last try is not settled: a
                    // host does not start it once the deadline passed, but one that had
                    // started it may still apply it.
                    Some(ActorCallError::Unavailable { actor, reason }) => {
                        ActorCallError::Unavailable {
                            actor,
                            reason: format!(
                                "{reason} (and the last try got no reply before the deadline: if it had started, it may still apply)"
                            ),
                        }
                    }
                    Some(other) => other,
                    None => e,
                });
            }
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every attempt of a step computes the same id, on any node; other steps and jobs
    /// get others. (A fixed value: it must not change between releases, which compute it
    /// on different nodes of one cluster.)
    #[test]
    fn a_steps_attempts_share_one_call_id_and_other_steps_do_not() {
        let id = step_call_id("n1-1a2b-7", "withdraw");
        assert_eq!(id, step_call_id("n1-1a2b-7", "withdraw"));
        assert_ne!(id, step_call_id("n1-1a2b-7", "deposit"));
        assert_ne!(id, step_call_id("n1-1a2b-8", "withdraw"));
        // The separator keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(step_call_id("ab", "c"), step_call_id("a", "bc"));
        assert_eq!(step_call_id("j", "s"), STEP_CALL_ID_OF_J_S);
    }

    /// `step_call_id("j", "s")`: the first 8 bytes, big-endian, of SHA-256 of
    /// `"troupe step call\0j\0s"` (checked with Python's hashlib).
    const STEP_CALL_ID_OF_J_S: u64 = 10_422_338_203_305_988_654;
}
