//! Submits one user's social job through a supervisor handle, follows it, and when a
//! fetch needs the user's action, says so and (with `--resume`) resumes it as if the user
//! had re-linked the account.
//!
//! `social-submit --seeds 127.0.0.1:7341 --cookie c --accounts '{"facebook":"fb-1","linkedin":"li-9"}' --resume`

use clap::Parser;
use troupe_runtime::{Client, ClientOptions, JobEvent, JobState};

/// Submits one user's social job, follows it, and resumes a step that waits for the user if asked.
#[derive(Parser)]
struct Args {
    /// HOST:PORT of nodes, comma-separated.
    #[arg(long, env = "TROUPE_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster's cookie.
    #[arg(long, env = "TROUPE_COOKIE", default_value = troupe_runtime::config::DEV_COOKIE)]
    cookie: String,
    /// Linked accounts, network -> account id.
    #[arg(long, default_value = r#"{"facebook": "fb-1", "twitter": "tw-2"}"#)]
    accounts: String,
    /// Resume steps that need the user's action (as if the user acted).
    #[arg(long)]
    resume: bool,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let accounts: serde_json::Value = match serde_json::from_str(&a.accounts) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("social-submit: --accounts is not JSON: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let client = match Client::connect(ClientOptions::new(a.seeds, &a.cookie)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("social-submit: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    let job = troupe_example_social::job(&accounts, &troupe_example_social::sample_org());
    let mut h = match client.submit(job).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("social-submit: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    eprintln!("job {}", h.id());
    while let Some(ev) = h.next_event().await {
        match ev {
            JobEvent::StepNeedsAction { step, message, .. } => {
                eprintln!("ACTION NEEDED on {step}: {message}");
                if a.resume {
                    eprintln!("(resuming {step} as if the user re-linked the account)");
                    if let Err(e) = client.resume(h.id(), &step).await {
                        eprintln!("social-submit: {e}");
                    }
                }
            }
            JobEvent::StepRetrying { step, error, .. } => eprintln!("retrying {step}: {error}"),
            JobEvent::StepFinished {
                step, state, node, ..
            } => eprintln!("{step} {state:?} on {}", node.unwrap_or_default()),
            JobEvent::JobFinished { status } => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status.output).unwrap_or_default()
                );
                return if status.state == JobState::Succeeded {
                    std::process::ExitCode::SUCCESS
                } else {
                    eprintln!(
                        "social-submit: job {}: {}",
                        status.id,
                        status.error.unwrap_or_default()
                    );
                    std::process::ExitCode::from(1)
                };
            }
            _ => {}
        }
    }
    std::process::ExitCode::from(3)
}
