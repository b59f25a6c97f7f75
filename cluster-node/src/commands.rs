//! One module per subcommand; [`run`] hands the parsed command line to its module.

use std::time::Duration;

use troupe_runtime::tls::TlsFiles;
use troupe_runtime::{Client, ClientError, ClientOptions, TaskRegistry};

use crate::cli::{ClusterArgs, Command};
use crate::{exit, logging};

pub mod actors;
pub mod certs;
pub mod demo;
pub mod jobs;
pub mod nodes;
pub mod start;
pub mod status;
pub mod submit;
pub mod top;

/// Runs one subcommand and returns its exit code.
pub fn run(cli: crate::cli::Cli, registry: TaskRegistry) -> u8 {
    if !matches!(cli.command, Command::Start(_) | Command::Demo(_)) {
        end_quietly_on_a_closed_pipe();
    }
    let code = match cli.command {
        Command::Start(a) => start::run(a, registry),
        Command::Submit(a) => client_command(|| submit::run(a)),
        Command::Status(a) => client_command(|| status::run(a)),
        Command::Jobs(a) => client_command(|| jobs::list(a)),
        Command::Watch(a) => client_command(|| jobs::watch(a)),
        Command::Rerun(a) => client_command(|| jobs::rerun(a)),
        Command::Cancel(a) => client_command(|| status::cancel(a)),
        Command::Resume(a) => client_command(|| status::resume(a)),
        Command::Nodes(a) => client_command(|| nodes::run(a)),
        Command::Call(a) => client_command(|| actors::call(a)),
        Command::Actors(a) => client_command(|| actors::list(a)),
        Command::Demo(a) => client_command(|| demo::run(a)),
        Command::Top(a) => client_command(|| top::run(a)),
        Command::Certs(a) => certs::run(a),
    };
    crate::logging::finish();
    code
}

/// Lets a printing command end quietly when its reader goes (`top --once | head`), as
/// Unix tools do, instead of panicking in `println!`: Rust starts programs with SIGPIPE
/// ignored, and this puts the default back. Socket writes are unaffected (std sends with
/// `MSG_NOSIGNAL`). Not for `start` and `demo`, which run or supervise nodes.
fn end_quietly_on_a_closed_pipe() {
    // SAFETY: sets a signal's disposition to the default, before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Client subcommands log warnings only, and run on a one-thread runtime.
fn client_command<F, Fut>(f: F) -> u8
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = u8>,
{
    logging::init(false, "warn");
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(f()),
        Err(e) => {
            eprintln!("troupe-node: cannot start the async runtime: {e}");
            exit::UNREACHABLE
        }
    }
}

/// Connects a client with the command line's seeds and cookie.
pub async fn connect(c: &ClusterArgs) -> Result<Client, ClientError> {
    connect_with(c, |_| {}).await
}

/// Connects a client as [`connect`] does, with `adjust` applied to its options.
pub async fn connect_with(
    c: &ClusterArgs,
    adjust: impl FnOnce(&mut ClientOptions),
) -> Result<Client, ClientError> {
    let cookie = match &c.cookie_file {
        Some(f) => troupe_runtime::config::read_cookie_file(f).map_err(ClientError::BadInput)?,
        None => c.cookie.clone(),
    };
    let mut opts = ClientOptions::new(c.seeds.iter().map(|s| s.trim().to_string()), &cookie);
    opts.connect_timeout = Duration::from_secs(5);
    let t = &c.tls;
    opts.tls = TlsFiles::from_parts(t.tls_cert.clone(), t.tls_key.clone(), t.tls_ca.clone())
        .and_then(|f| f.map(|f| f.load()).transpose())
        .map_err(|e| ClientError::BadInput(e.to_string()))?;
    adjust(&mut opts);
    Client::connect(opts).await
}

/// Prints a client error and returns its exit code.
pub fn fail(e: ClientError) -> u8 {
    eprintln!("troupe-node: {e}");
    e.exit_code()
}
