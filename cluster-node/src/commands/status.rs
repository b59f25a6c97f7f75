//! `troupe-node status JOB_ID`: print the status JSON.

use crate::cli::StatusArgs;
use crate::commands::{connect, fail};
use crate::exit;

/// Prints the job's status JSON.
pub async fn run(a: StatusArgs) -> u8 {
    let client = match connect(&a.cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match client.status(&a.job_id).await {
        Ok(st) => {
            println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            exit::OK
        }
        Err(e) => fail(e),
    }
}
