//! `troupe-node start`: run a node until SIGINT or SIGTERM.

use std::time::Duration;

use troupe_runtime::config::{LogFormat, NodeConfig, RuntimeFlavor, DEV_COOKIE};
use troupe_runtime::TaskRegistry;

use crate::cli::StartArgs;
use crate::{exit, logging};

fn flags(a: &StartArgs) -> Vec<(&'static str, config::Value)> {
    let mut f: Vec<(&'static str, config::Value)> = Vec::new();
    let mut put = |k: &'static str, v: Option<config::Value>| {
        if let Some(v) = v {
            f.push((k, v));
        }
    };
    put("name", a.name.clone().map(Into::into));
    put("listen", a.listen.clone().map(Into::into));
    put("advertise", a.advertise.clone().map(Into::into));
    put("seeds", a.seeds.clone().map(Into::into));
    put("cookie", a.cookie.clone().map(Into::into));
    put(
        "cookie_file",
        a.cookie_file
            .as_ref()
            .map(|d| d.display().to_string().into()),
    );
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|d| d.display().to_string().into());
    put("tls_cert", path(&a.tls.tls_cert));
    put("tls_key", path(&a.tls.tls_key));
    put("tls_ca", path(&a.tls.tls_ca));
    put("slots", a.slots.map(|s| (s as u64).into()));
    put(
        "data",
        a.data.as_ref().map(|d| d.display().to_string().into()),
    );
    put("http", a.http.clone().map(Into::into));
    put("gearman", a.gearman.clone().map(Into::into));
    put("log_format", a.log_format.clone().map(Into::into));
    f
}

/// Loads the configuration and runs the node.
pub fn run(args: StartArgs, registry: TaskRegistry) -> u8 {
    let config = match NodeConfig::load(args.config.as_deref(), &flags(&args)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("troupe-node: {e}");
            return exit::BAD_INPUT;
        }
    };
    logging::init(config.log_format == LogFormat::Json, "info");
    let rt = match config.runtime {
        RuntimeFlavor::CurrentThread => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        RuntimeFlavor::MultiThread => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    };
    match rt {
        Ok(rt) => rt.block_on(run_node(config, registry)),
        Err(e) => {
            eprintln!("troupe-node: cannot start the async runtime: {e}");
            exit::UNREACHABLE
        }
    }
}

async fn run_node(config: NodeConfig, registry: TaskRegistry) -> u8 {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        _ => {
            eprintln!("troupe-node: cannot install signal handlers");
            return exit::UNREACHABLE;
        }
    };
    if config.cookie == DEV_COOKIE {
        tracing::warn!(
            "using the development cookie; set --cookie or TROUPE_COOKIE on a real cluster"
        );
    }
    for var in troupe_runtime::config::unknown_env_vars(std::env::vars().map(|(k, _)| k)) {
        tracing::warn!(variable = %var, "{var} is not a setting and is ignored; settings are TROUPE_<KEY> and TROUPE_<TABLE>__<KEY> as in config/default.toml (TROUPE_FAILURE__DOWN_AFTER_MS)");
    }
    let tasks = registry.names();
    let (root, mut done, ctx) =
        match troupe_actors::start_node_with_context(config.clone(), registry).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "node did not start");
                eprintln!("troupe-node: {e}");
                return exit::BAD_INPUT;
            }
        };
    let ctx_view = ctx.view.clone();
    let drain_ctx = ctx.clone();
    let http = match config.http.as_deref().map(troupe_runtime::config::resolve) {
        None => None,
        Some(Err(e)) => {
            eprintln!("troupe-node: --http: {e}");
            root.stop(None);
            return exit::BAD_INPUT;
        }
        Some(Ok(addr)) => match crate::http::serve(addr, ctx).await {
            Ok(task) => {
                tracing::info!(http = %addr, "HTTP API, metrics and dashboard at http://{addr}/");
                Some(task)
            }
            Err(e) => {
                tracing::error!(error = %e, "node did not start");
                eprintln!("troupe-node: {e}");
                root.stop(None);
                let _ = tokio::time::timeout(Duration::from_secs(5), done).await;
                return exit::BAD_INPUT;
            }
        },
    };
    tracing::info!(
        node = %config.name,
        listen = %config.listen,
        seeds = ?config.seeds,
        slots = config.slots,
        tasks = tasks.len(),
        "node started"
    );
    let why = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = ctx_view.shutdown.notified() => "a Gearman admin shutdown",
        _ = &mut done => {
            tracing::error!(node = %config.name, "node's supervisor stopped; exiting");
            return exit::JOB_FAILED;
        }
    };
    tracing::info!(
        node = %config.name,
        signal = why,
        drain_timeout_ms = config.drain_timeout_ms,
        "shutting down: draining first; send the signal again (Ctrl-C) to stop without waiting"
    );
    let drain =
        troupe_actors::drain::drain(&drain_ctx, Duration::from_millis(config.drain_timeout_ms));
    tokio::select! {
        _ = drain => {}
        _ = term.recv() => tracing::warn!("second SIGTERM: stopping without finishing the drain"),
        _ = int.recv() => tracing::warn!("second SIGINT: stopping without finishing the drain"),
    }
    if let Some(h) = http {
        h.abort();
    }
    root.stop(Some(format!("{why} received")));
    if tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .is_err()
    {
        tracing::warn!("actors did not stop within 5 s; exiting anyway");
    }
    tracing::info!(node = %config.name, "stopped");
    exit::OK
}
