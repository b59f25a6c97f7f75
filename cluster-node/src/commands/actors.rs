//! `troupe-node call` (one message to a keyed actor) and `troupe-node actors` (where the
//! cluster's activations run).

use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::{ActorsArgs, CallArgs};
use crate::commands::{connect, connect_with, fail};
use crate::exit;

/// Sends the message and prints the reply as JSON on stdout.
pub async fn call(a: CallArgs) -> u8 {
    let message: Value = match serde_json::from_str(&a.message) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("troupe-node: the message is not JSON: {e}");
            return exit::BAD_INPUT;
        }
    };
    if !(a.timeout.is_finite() && a.timeout > 0.0) {
        eprintln!("troupe-node: --timeout must be a positive number of seconds");
        return exit::BAD_INPUT;
    }
    let timeout = Duration::from_secs_f64(a.timeout.min(86_400.0));
    let client = match connect_with(&a.cluster, |o| o.request_timeout = timeout).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match client.call_actor(&a.actor_type, &a.key, message).await {
        Ok(reply) => {
            println!("{reply}");
            exit::OK
        }
        Err(e) => fail(e),
    }
}

/// Prints the activations, as a table or as `{"actors": [...]}`.
pub async fn list(a: ActorsArgs) -> u8 {
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let actors = match client.actors().await {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    if a.json {
        println!("{}", json!({ "actors": actors }));
    } else {
        println!(
            "{:<20} {:<20} {:<10} {:>8} {:>10} {:>8}",
            "TYPE", "KEY", "NODE", "EPOCH", "HANDLED", "RESTARTS"
        );
        for x in &actors {
            println!(
                "{:<20} {:<20} {:<10} {:>8} {:>10} {:>8}",
                x.actor_type, x.key, x.node, x.epoch, x.handled, x.restarts
            );
        }
    }
    exit::OK
}
