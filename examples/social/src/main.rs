//! A troupe-node binary that also serves the social tasks (`social start --name s1 ...`).

fn main() -> std::process::ExitCode {
    let mut tasks = troupe_runtime::TaskRegistry::with_builtins();
    troupe_example_social::register(&mut tasks);
    troupe_cluster_node::main_with(tasks)
}
