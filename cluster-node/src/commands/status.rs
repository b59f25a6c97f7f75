//! `troupe-node status|cancel|resume`: a job's status JSON, before or after acting on it.

use troupe_runtime::{ClientError, JobStatus};

use crate::cli::{ResumeArgs, StatusArgs};
use crate::commands::{connect, fail};
use crate::exit;

/// Prints the job's status JSON.
pub async fn run(a: StatusArgs) -> u8 {
    let job = a.job_id.clone();
    act(&a.cluster, |c| async move { c.status(&job).await }).await
}

/// Cancels the job and prints its status JSON.
pub async fn cancel(a: StatusArgs) -> u8 {
    let job = a.job_id.clone();
    act(&a.cluster, |c| async move { c.cancel(&job).await }).await
}

/// Resumes a step waiting for a user and prints the job's status JSON.
pub async fn resume(a: ResumeArgs) -> u8 {
    let (job, step) = (a.job_id.clone(), a.step_id.clone());
    act(&a.cluster, |c| async move { c.resume(&job, &step).await }).await
}

async fn act<F, Fut>(cluster: &crate::cli::ClusterArgs, f: F) -> u8
where
    F: FnOnce(troupe_runtime::Client) -> Fut,
    Fut: std::future::Future<Output = Result<JobStatus, ClientError>>,
{
    let client = match connect(cluster).await {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    match f(client).await {
        Ok(st) => {
            println!("{}", serde_json::to_string_pretty(&st).unwrap_or_default());
            exit::OK
        }
        Err(e) => fail(e),
    }
}
