//! A troupe-node binary that also serves the flood tasks (`flood start --name f1 ...`).

fn main() -> std::process::ExitCode {
    let mut tasks = troupe_runtime::TaskRegistry::with_builtins();
    troupe_example_flood::register(&mut tasks);
    troupe_cluster_node::main_with(tasks)
}
