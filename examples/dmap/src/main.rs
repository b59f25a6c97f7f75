//! A troupe-node binary that also serves `dmap.square` (`dmap start --name d1 ...`).

fn main() -> std::process::ExitCode {
    let mut tasks = troupe_runtime::TaskRegistry::with_builtins();
    troupe_example_dmap::register(&mut tasks);
    troupe_cluster_node::main_with(tasks)
}
