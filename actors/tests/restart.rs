//! A system actor killed on purpose is restarted by the node's root supervisor, and the
//! node keeps running jobs. (In-process: one node per test binary, as ractor's registry
//! and process groups are process-wide.)

use std::time::{Duration, Instant};

use ractor::rpc::CallResult;
use ractor::ActorRef;
use troupe_actors::{find, names, start_node, NodeRootMessage};
use troupe_runtime::config::NodeConfig;
use troupe_runtime::protocol::{JobManagerMessage, SubmitRequest};
use troupe_runtime::wire::Wire;
use troupe_runtime::{JobSpec, JobState, StepSpec, TaskRegistry};

fn config(name: &str) -> NodeConfig {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut c = NodeConfig {
        name: name.into(),
        listen: format!("127.0.0.1:{port}"),
        slots: 2,
        ..Default::default()
    };
    c.finish().unwrap();
    c
}

async fn wait_for_new(name: &str, old: ractor::ActorId) -> ractor::ActorCell {
    let start = Instant::now();
    loop {
        if let Some(c) = ractor::registry::where_is(name) {
            if c.get_id() != old {
                return c;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{name} was not restarted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run_job(jm: &ActorRef<JobManagerMessage>) -> JobState {
    let req =
        SubmitRequest::new(JobSpec::new("after-restart").step(StepSpec::new("a", "troupe.echo")));
    let id = match jm
        .call(
            |r| JobManagerMessage::Submit(Wire::new(req), r),
            Some(Duration::from_secs(5)),
        )
        .await
    {
        Ok(CallResult::Success(w)) => w.into_inner().unwrap().unwrap(),
        other => panic!("submit failed: {:?}", other.is_ok()),
    };
    let start = Instant::now();
    loop {
        let st = match jm
            .call(
                |r| JobManagerMessage::Status(id.clone(), r),
                Some(Duration::from_secs(5)),
            )
            .await
        {
            Ok(CallResult::Success(w)) => w.into_inner().unwrap().unwrap(),
            _ => panic!("status failed"),
        };
        if st.state.is_terminal() || start.elapsed() > Duration::from_secs(5) {
            return st.state;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn killed_system_actors_are_restarted_and_the_node_keeps_working() {
    let (root, done) = start_node(config("restart-test"), TaskRegistry::with_builtins())
        .await
        .unwrap();
    let jm: ActorRef<JobManagerMessage> =
        find(&names::of(names::JOB_MANAGER, "restart-test")).unwrap();
    assert_eq!(run_job(&jm).await, JobState::Succeeded);

    for base in [names::DISPATCHER, names::WORKER_POOL, names::MEMBERSHIP] {
        let name = &names::of(base, "restart-test");
        let old = ractor::registry::where_is(name).unwrap();
        old.kill();
        let new = wait_for_new(name, old.get_id()).await;
        assert_ne!(new.get_id(), old.get_id());
    }
    let restarts = root
        .call(NodeRootMessage::Restarts, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert!(
        matches!(restarts, CallResult::Success(3)),
        "three restarts recorded"
    );
    // The restarted dispatcher and worker pool run jobs again.
    assert_eq!(run_job(&jm).await, JobState::Succeeded);
    assert!(!done.is_finished(), "the node is still up");
    root.stop(None);
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .unwrap()
        .unwrap();
}
