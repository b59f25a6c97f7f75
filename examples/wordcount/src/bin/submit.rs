//! Sends a word-count MapReduce job through a supervisor handle and prints the counts.
//!
//! `wordcount-submit --seeds 127.0.0.1:7341 --cookie secret --chunks 4 --out counts.json FILE`
//! (`-` or no FILE reads standard input).

use std::io::Read;

use clap::Parser;
use troupe_runtime::{Client, ClientOptions, JobEvent, JobState};

/// Counts the words of a file (or standard input) with a MapReduce job and prints the counts.
#[derive(Parser)]
struct Args {
    /// HOST:PORT of nodes, comma-separated.
    #[arg(long, env = "TROUPE_SEEDS", value_delimiter = ',')]
    seeds: Vec<String>,
    /// The cluster's cookie.
    #[arg(long, env = "TROUPE_COOKIE", default_value = troupe_runtime::config::DEV_COOKIE)]
    cookie: String,
    /// Chunks mapped in parallel.
    #[arg(long, default_value_t = 4)]
    chunks: usize,
    /// Where the write step stores the counts (on the node that runs it).
    #[arg(long)]
    out: Option<String>,
    /// The text file; `-` or nothing reads standard input.
    file: Option<String>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let a = Args::parse();
    let text = match a.file.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).map(|_| s)
        }
        Some(f) => std::fs::read_to_string(f),
    };
    let text = match text {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wordcount-submit: cannot read the text: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let client = match Client::connect(ClientOptions::new(a.seeds, &a.cookie)).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wordcount-submit: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    let job = troupe_example_wordcount::job(&text, a.chunks, a.out.as_deref());
    let mut handle = match client.submit(job).await {
        Ok(h) => h,
        Err(e) => {
            eprintln!("wordcount-submit: {e}");
            return std::process::ExitCode::from(e.exit_code());
        }
    };
    while let Some(ev) = handle.next_event().await {
        match ev {
            JobEvent::StepRetrying { step, error, .. } => eprintln!("{step} retried: {error}"),
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
