//! A troupe-node binary that also serves the word-count tasks: every `troupe-node`
//! subcommand works (`wordcount start --name w1 ...`).

fn main() -> std::process::ExitCode {
    let mut tasks = troupe_runtime::TaskRegistry::with_builtins();
    troupe_example_wordcount::register(&mut tasks);
    troupe_cluster_node::main_with(tasks)
}
