//! `troupe-node`: a Troupe node with the built-in tasks, and the client subcommands.

/// mimalloc rather than glibc's allocator: allocation and freeing were 10-15% of a busy
/// node's CPU with glibc (profiled on one-step jobs); node binaries of your own can make
/// the same choice in their `main.rs`.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    troupe_cluster_node::main_with(troupe_runtime::TaskRegistry::with_builtins())
}
