//! Past its restart intensity the root supervisor stops instead of restarting forever.

use std::time::{Duration, Instant};

use troupe_actors::{names, start_node};
use troupe_runtime::config::{NodeConfig, RestartConfig};
use troupe_runtime::TaskRegistry;

#[tokio::test]
async fn too_many_restarts_stop_the_node() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = NodeConfig {
        name: "intensity-test".into(),
        listen: format!("127.0.0.1:{port}"),
        restart: RestartConfig {
            max_restarts: 2,
            window_ms: 60_000,
        },
        ..Default::default()
    };
    c.finish().unwrap();
    let (_root, done) = start_node(c, TaskRegistry::with_builtins()).await.unwrap();
    for round in 0..3 {
        let start = Instant::now();
        let cell = loop {
            if let Some(c) =
                ractor::registry::where_is(names::of(names::DISPATCHER, "intensity-test"))
            {
                break c;
            }
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "no dispatcher in round {round}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        cell.kill();
        // Wait for the old one to be gone before killing again.
        let id = cell.get_id();
        while ractor::registry::where_is(names::of(names::DISPATCHER, "intensity-test"))
            .is_some_and(|c| c.get_id() == id)
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if round < 2 {
            assert!(!done.is_finished(), "restarts {round} is within the limit");
        }
    }
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the root stopped after the third restart in its window")
        .unwrap();
}
