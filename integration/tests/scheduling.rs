//! Scheduling on real node processes: priority lanes decide which waiting attempt gets a
//! free worker slot.

use std::time::Duration;

use serde_json::json;
use troupe_integration::Cluster;
use troupe_runtime::job::spec::Priority;
use troupe_runtime::{JobSpec, StepSpec};

fn sleep_job(name: &str, ms: u64, p: Priority) -> JobSpec {
    JobSpec::new(name)
        .with_priority(p)
        .step(StepSpec::new("s", "troupe.sleep").input(json!({ "ms": ms })))
}

/// The jobs by the time they ended, earliest first (each followed in its own task).
async fn end_order(handles: Vec<(String, troupe_runtime::JobHandle)>) -> Vec<String> {
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|(name, mut h)| {
            tokio::spawn(async move {
                let st = tokio::time::timeout(Duration::from_secs(30), h.wait())
                    .await
                    .expect("job ends")
                    .expect("status");
                assert_eq!(st.state, troupe_runtime::JobState::Succeeded);
                (name, std::time::Instant::now())
            })
        })
        .collect();
    let mut ended = Vec::new();
    for t in tasks {
        ended.push(t.await.expect("follower"));
    }
    ended.sort_by_key(|(_, t)| *t);
    ended.into_iter().map(|(n, _)| n).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_high_priority_job_and_continuing_work_go_before_waiting_new_work() {
    let mut c = Cluster::plan(1);
    c.slots = 1;
    c.start_node(0);
    let client = c.client().await;
    // The one slot is busy; then low, normal and high jobs queue, in that order, and a
    // two-step job whose second step (continuing work) becomes ready while they wait.
    let blocker = client
        .submit(sleep_job("blocker", 600, Priority::Normal))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut handles = vec![("blocker".to_string(), blocker)];
    for (name, p) in [
        ("low", Priority::Low),
        ("normal", Priority::Normal),
        ("high", Priority::High),
    ] {
        handles.push((
            name.into(),
            client.submit(sleep_job(name, 50, p)).await.unwrap(),
        ));
    }
    let order = end_order(handles).await;
    assert_eq!(order, ["blocker", "high", "normal", "low"]);
}

/// A two-step job's second step, ready while new jobs wait, goes before them under the
/// priority policy; under `fifo` it waits behind them. (When its first step ends, the
/// freed slot goes at once to the next waiting attempt, `new1`: the second step is
/// dispatched by the job's supervisor a moment later.)
async fn chain_vs_new(policy: &str) -> Vec<String> {
    let mut c = Cluster::plan(1);
    c.slots = 1;
    c.env
        .push(("TROUPE_SCHEDULING__POLICY".into(), policy.into()));
    c.start_node(0);
    let client = c.client().await;
    let blocker = client
        .submit(sleep_job("blocker", 500, Priority::Normal))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let chain = JobSpec::new("chain")
        .step(StepSpec::new("a", "troupe.sleep").input(json!({"ms": 50})))
        .step(
            StepSpec::new("b", "troupe.sleep")
                .input(json!({"ms": 50}))
                .after(["a"]),
        );
    let mut handles = vec![
        ("blocker".to_string(), blocker),
        ("chain".to_string(), client.submit(chain).await.unwrap()),
    ];
    for name in ["new1", "new2"] {
        handles.push((
            name.into(),
            client
                .submit(sleep_job(name, 50, Priority::Normal))
                .await
                .unwrap(),
        ));
    }
    end_order(handles).await
}

#[tokio::test(flavor = "current_thread")]
async fn continuing_work_goes_before_new_work_unless_the_policy_is_fifo() {
    assert_eq!(
        chain_vs_new("priority").await,
        ["blocker", "new1", "chain", "new2"]
    );
    assert_eq!(
        chain_vs_new("fifo").await,
        ["blocker", "new1", "new2", "chain"]
    );
}
