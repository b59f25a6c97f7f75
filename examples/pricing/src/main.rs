//! A troupe-node binary that also serves the pricing tasks (`pricing start --name p1 ...`).

fn main() -> std::process::ExitCode {
    let mut tasks = troupe_runtime::TaskRegistry::with_builtins();
    troupe_example_pricing::register(&mut tasks);
    troupe_cluster_node::main_with(tasks)
}
