//! A troupe-node binary that also hosts the `accounts` actors
//! (`accounts start --name a1 ...`).

fn main() -> std::process::ExitCode {
    let mut tasks = troupe_runtime::TaskRegistry::with_builtins();
    troupe_example_accounts::register(&mut tasks);
    troupe_cluster_node::main_with(tasks)
}
