//! Bank accounts as keyed actors: the user's own actor type, hosted by any node built with
//! [`register`].
//!
//! An account (actor type [`ACCOUNTS`], key = the account's name) is persistent: its
//! balance survives the death of the node that hosts it. A withdrawal that would overdraw
//! is refused. Every deposit and withdrawal carries a transaction id, and an account
//! remembers the ids it applied, so a message that arrives twice applies once: a transfer
//! submitted again as a new job (its client lost sight of the first), or a step's attempt
//! that comes after the runtime's memory of the step's call let it go. (The attempts of
//! one step are tries of one call: the runtime answers them alike while it remembers the
//! call, a refusal included, which the tx ids cannot do since a refusal changes nothing.)
//!
//! A transfer is a job ([`transfer_job`]): `withdraw` from one account, then `deposit` to
//! the other; if the deposit fails (the account is not open), the compensating step
//! `refund` puts the money back. So money is neither made nor lost when nodes fail, with
//! one assumption: a step fails only by refusal. A step retried 20 times (with doubling
//! backoff, capped at a minute: about ten minutes) while its account stays unavailable
//! fails too. An update refused for want of copies is either in the next answer on its
//! account or gone for good (the node answers nothing from a state a quorum does not
//! hold), so each retry settles the attempts before it; but after the last one nobody
//! asks again, and its update may come back at the account's next activation: a
//! withdrawal that failed so destroys its amount, a deposit refunded so creates it. A
//! production transfer would ask the account whether `TX:w` (or `TX:d`) was applied
//! before it gives up. (Before that rule, a withdrawal refused once could come back
//! after a retry had been refused for want of money: the nemesis's 20-minute run
//! destroyed 177 so; see ARCHITECTURE.md, "The nemesis test".)

use std::collections::VecDeque;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use troupe_runtime::actor::{ActorContext, ActorError, KeyedActor};
use troupe_runtime::{Client, ClientError, JobSpec, JobState, RetryPolicy, StepSpec, TaskRegistry};

/// The actor type's name.
pub const ACCOUNTS: &str = "accounts";

/// Transaction ids an account remembers (the newest), to apply a repeated message once.
pub const REMEMBERED: usize = 1024;

/// Registers the `accounts` actor type.
pub fn register(r: &mut TaskRegistry) {
    r.register_actor(ACCOUNTS, Accounts);
}

/// A message to an account.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AccountMessage {
    /// Opens the account with `initial` money (refused if it is open already).
    Open {
        /// The opening balance.
        initial: i64,
    },
    /// Adds `amount` (refused unless the account is open and the amount positive).
    Deposit {
        /// The transaction id.
        tx: String,
        /// How much.
        amount: i64,
    },
    /// Takes `amount` (refused if the balance is short: no overdraft).
    Withdraw {
        /// The transaction id.
        tx: String,
        /// How much.
        amount: i64,
    },
    /// The balance.
    Balance,
}

/// An account's state.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Account {
    /// Whether it was opened.
    pub open: bool,
    /// Its money.
    pub balance: i64,
    /// The newest transaction ids applied, with the balance each left.
    pub applied: VecDeque<(String, i64)>,
}

impl Account {
    fn check(&self, amount: i64) -> Result<(), ActorError> {
        if !self.open {
            return Err(ActorError::refused("the account is not open"));
        }
        if amount <= 0 {
            return Err(ActorError::refused(format!(
                "the amount must be positive, not {amount}"
            )));
        }
        Ok(())
    }

    fn applied(&self, tx: &str) -> Option<i64> {
        self.applied.iter().find(|(t, _)| t == tx).map(|(_, b)| *b)
    }

    fn record(&mut self, tx: String) {
        self.applied.push_back((tx, self.balance));
        while self.applied.len() > REMEMBERED {
            self.applied.pop_front();
        }
    }
}

/// The `accounts` actor type.
pub struct Accounts;

impl KeyedActor for Accounts {
    type State = Account;
    type Message = AccountMessage;
    type Reply = Value;
    const PERSISTENT: bool = true;

    async fn handle(
        &self,
        _ctx: &ActorContext,
        acc: &mut Account,
        msg: AccountMessage,
    ) -> Result<Value, ActorError> {
        match msg {
            AccountMessage::Open { initial } => {
                if acc.open {
                    return Err(ActorError::refused("the account is open already"));
                }
                if initial < 0 {
                    return Err(ActorError::refused(
                        "the opening balance cannot be negative",
                    ));
                }
                acc.open = true;
                acc.balance = initial;
            }
            AccountMessage::Deposit { tx, amount } => {
                acc.check(amount)?;
                if let Some(balance) = acc.applied(&tx) {
                    return Ok(json!({ "balance": balance, "repeated": true }));
                }
                acc.balance = acc
                    .balance
                    .checked_add(amount)
                    .ok_or_else(|| ActorError::refused("the balance would overflow"))?;
                acc.record(tx);
            }
            AccountMessage::Withdraw { tx, amount } => {
                acc.check(amount)?;
                if let Some(balance) = acc.applied(&tx) {
                    return Ok(json!({ "balance": balance, "repeated": true }));
                }
                if acc.balance < amount {
                    return Err(ActorError::refused(format!(
                        "insufficient funds: the balance is {}, the withdrawal {amount}",
                        acc.balance
                    )));
                }
                acc.balance -= amount;
                acc.record(tx);
            }
            AccountMessage::Balance => {}
        }
        Ok(json!({ "balance": acc.balance, "open": acc.open }))
    }
}

/// The job that moves `amount` from account `from` to account `to` as transaction `tx`:
/// `withdraw`, then `deposit`, and `refund` (to `from`) only if the deposit failed. It
/// succeeds with the deposit's reply, or fails with the first refusal (after the refund,
/// if one was due).
pub fn transfer_job(tx: &str, from: &str, to: &str, amount: i64) -> JobSpec {
    // Steps ride out a node's death (their attempts are retried); a refusal is final.
    let patient = RetryPolicy {
        max_attempts: 20,
        backoff_ms: 100,
    };
    let msg =
        |op: &str, part: &str| json!({"op": op, "tx": format!("{tx}:{part}"), "amount": amount});
    let mut job = JobSpec::new(format!("transfer {tx}"))
        .step(StepSpec::actor("withdraw", ACCOUNTS, from, msg("withdraw", "w")).retry(patient))
        .step(
            StepSpec::actor("deposit", ACCOUNTS, to, msg("deposit", "d"))
                .after(["withdraw"])
                .retry(patient),
        )
        .step(
            StepSpec::actor("refund", ACCOUNTS, from, msg("deposit", "r"))
                .after(["withdraw"])
                .optional(["deposit"])
                .when("!has(steps.deposit)")
                .retry(patient),
        );
    job.output = Some("deposit".into());
    job
}

/// A deterministic stream of pseudo-random numbers (xorshift), so a run can be repeated.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A stream from `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// One planned transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Its transaction id.
    pub tx: String,
    /// From.
    pub from: String,
    /// To (sometimes an account that was never opened, so the refund runs).
    pub to: String,
    /// How much (sometimes more than the balance, so the withdrawal is refused).
    pub amount: i64,
}

/// `n` random transfers among `accounts`; about one in ten goes to an account that was
/// never opened.
pub fn plan(accounts: &[String], n: usize, seed: u64) -> Vec<Transfer> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let from = accounts[rng.below(accounts.len() as u64) as usize].clone();
            let to = if rng.below(10) == 0 {
                format!("closed-{i}")
            } else {
                accounts[rng.below(accounts.len() as u64) as usize].clone()
            };
            Transfer {
                tx: format!("t{seed}-{i}"),
                from,
                to,
                amount: 1 + rng.below(400) as i64,
            }
        })
        .collect()
}

/// Opens each of `accounts` with `initial` money (one already open is left as it is).
pub async fn open_all(
    client: &Client,
    accounts: &[String],
    initial: i64,
) -> Result<(), ClientError> {
    for a in accounts {
        match client
            .call_actor(ACCOUNTS, a, json!({"op": "open", "initial": initial}))
            .await
        {
            Ok(_) => {}
            Err(ClientError::Actor(e)) if e.to_string().contains("open already") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The sum of the balances of `accounts`.
pub async fn total(client: &Client, accounts: &[String]) -> Result<i64, ClientError> {
    let mut sum = 0;
    for a in accounts {
        let v = client
            .call_actor(ACCOUNTS, a, json!({"op": "balance"}))
            .await?;
        sum += v["balance"].as_i64().unwrap_or_default();
    }
    Ok(sum)
}

/// How a run of transfers ended.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Transfers that moved the money.
    pub succeeded: usize,
    /// Transfers whose withdrawal was refused (nothing moved).
    pub refused: usize,
    /// Transfers whose deposit failed and whose refund put the money back.
    pub refunded: usize,
    /// Transfers that ended otherwise (with why): none is expected.
    pub other: Vec<String>,
    /// Submissions made again after the client lost sight of a job (a node died).
    pub resubmitted: usize,
}

/// Runs `plan`, `parallel` transfers at a time; `progress` is told how many have ended.
/// A transfer whose job the client loses (its node died) is submitted again: its
/// transaction ids make that safe.
pub async fn run_transfers(
    client: &Client,
    plan: Vec<Transfer>,
    parallel: usize,
    progress: impl Fn(usize),
) -> Outcome {
    let mut results = futures::stream::iter(plan)
        .map(|t| async move {
            let mut resubmitted = 0;
            loop {
                let job = transfer_job(&t.tx, &t.from, &t.to, t.amount);
                let ended = match client.submit(job).await {
                    Ok(mut h) => tokio::time::timeout(std::time::Duration::from_secs(60), h.wait())
                        .await
                        .ok()
                        .and_then(Result::ok),
                    Err(_) => None,
                };
                match ended {
                    Some(st) => return (st, resubmitted),
                    None => {
                        resubmitted += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        })
        .buffer_unordered(parallel.max(1));
    let mut out = Outcome::default();
    let mut done = 0;
    while let Some((st, again)) = results.next().await {
        out.resubmitted += again;
        let step = |id: &str| st.steps.get(id).map(|s| s.state);
        use troupe_runtime::StepState::{Failed, Succeeded};
        match (st.state, step("withdraw"), step("deposit"), step("refund")) {
            (JobState::Succeeded, ..) => out.succeeded += 1,
            (_, Some(Failed), ..) => out.refused += 1,
            (_, Some(Succeeded), Some(Failed), Some(Succeeded)) => out.refunded += 1,
            _ => out.other.push(format!(
                "{} {:?}: {}",
                st.id,
                st.state,
                st.error.unwrap_or_default()
            )),
        }
        done += 1;
        progress(done);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn send(acc: &mut Account, msg: AccountMessage) -> Result<Value, ActorError> {
        Accounts
            .handle(&ActorContext::new(ACCOUNTS, "a", "n1"), acc, msg)
            .await
    }

    #[tokio::test]
    async fn an_account_refuses_overdrafts_and_applies_a_transaction_once() {
        let mut a = Account::default();
        let dep = |tx: &str, amount| AccountMessage::Deposit {
            tx: tx.into(),
            amount,
        };
        assert!(send(&mut a, dep("x", 5)).await.is_err(), "not open yet");
        send(&mut a, AccountMessage::Open { initial: 100 })
            .await
            .unwrap();
        assert_eq!(send(&mut a, dep("d1", 50)).await.unwrap()["balance"], 150);
        // The same transaction again: applied once.
        assert_eq!(send(&mut a, dep("d1", 50)).await.unwrap()["balance"], 150);
        let w = |tx: &str, amount| AccountMessage::Withdraw {
            tx: tx.into(),
            amount,
        };
        let e = send(&mut a, w("w1", 151)).await.unwrap_err();
        assert!(matches!(e, ActorError::Refused(m) if m.contains("insufficient")));
        assert_eq!(send(&mut a, w("w2", 150)).await.unwrap()["balance"], 0);
        assert_eq!(a.balance, 0);
    }

    #[test]
    fn a_transfer_job_is_valid_and_plans_repeat() {
        let job = transfer_job("t1", "a", "b", 10);
        troupe_runtime::job::validate::validate(&job).expect("valid");
        let accounts: Vec<String> = (0..5).map(|i| format!("acc-{i}")).collect();
        assert_eq!(plan(&accounts, 50, 7), plan(&accounts, 50, 7));
        assert!(plan(&accounts, 200, 7)
            .iter()
            .any(|t| t.to.starts_with("closed-")));
    }
}
