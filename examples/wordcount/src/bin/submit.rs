//! Sends a word-count job through a supervisor handle and prints the counts.
//!
//! `wordcount-submit --seeds 127.0.0.1:7340 --cookie secret --parts 3 "some text ..."`

use clap::Parser;
use troupe_runtime::{Client, ClientOptions, JobEvent, JobState};

#[derive(Parser)]
struct Args {
    /// HOST:PORT of nodes, comma-separated.
    #[arg(long, env = "TROUPE_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster's cookie.
    #[arg(long, env = "TROUPE_COOKIE", default_value = troupe_runtime::config::DEV_COOKIE)]
    cookie: String,
    /// Chunks counted in parallel.
    #[arg(long, default_value_t = 3)]
    parts: usize,
    /// The text to count.
    text: String,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let client = match Client::connect(ClientOptions::new(a.seeds, &a.cookie)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wordcount-submit: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    let mut handle = match client
        .submit(troupe_example_wordcount::job(&a.text, a.parts))
        .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("wordcount-submit: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    while let Some(ev) = handle.next_event().await {
        match ev {
            JobEvent::StepFinished { step, node, .. } => {
                eprintln!("{step} done on {}", node.unwrap_or_default())
            }
            JobEvent::JobFinished { status } => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&status.output).unwrap_or_default()
                );
                return if status.state == JobState::Succeeded {
                    std::process::ExitCode::SUCCESS
                } else {
                    eprintln!("wordcount-submit: {}", status.error.unwrap_or_default());
                    std::process::ExitCode::from(1)
                };
            }
            _ => {}
        }
    }
    std::process::ExitCode::from(3)
}
