//! `troupe-node`: a Troupe node with the built-in tasks, and the client subcommands.

fn main() -> std::process::ExitCode {
    troupe_cluster_node::main_with(troupe_runtime::TaskRegistry::with_builtins())
}
