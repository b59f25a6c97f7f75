//! Merging of identical requests, memoized results of pure tasks, and many job servers,
//! on real processes.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;
use troupe_integration::{cargo_bin, Cluster};
use troupe_runtime::merge::{owner, request_key};
use troupe_runtime::{JobSpec, JobState, StepSpec};

fn instrument(id: &str, cost_ms: u64) -> JobSpec {
    JobSpec::new("price")
        .step(StepSpec::new("p", "pricing.instrument").input(json!({"id": id, "cost_ms": cost_ms})))
}

fn pricing_cluster() -> Cluster {
    Cluster::start_with_binary(3, &cargo_bin("troupe-example-pricing", "pricing"))
}

#[tokio::test]
async fn fib_25_runs_once_per_n_and_a_repeat_from_another_node_is_a_cache_hit() {
    let c = Cluster::start(3);
    c.ready().await;
    let a = c.client_via(&[0]).await;
    let job = JobSpec::new("fib").step(StepSpec::new("fib", "troupe.fib").input(json!({"n": 25})));
    let st = a.submit(job.clone()).await.unwrap().wait().await.unwrap();
    assert_eq!(st.state, JobState::Succeeded, "{:?}", st.error);
    assert_eq!(st.output, Some(json!(75025)));
    assert!(st.stats.executions <= 26, "{:?}", st.stats);
    assert!(
        st.stats.merged + st.stats.cache_hits >= 20,
        "{:?}",
        st.stats
    );

    let first_owner = st.steps["fib"].node.clone();
    let b = c.client_via(&[2]).await;
    let st = b.submit(job).await.unwrap().wait().await.unwrap();
    eprintln!(
        "owner of fib(25) in job 1: {first_owner:?}, in job 2: {:?}; {:?}",
        st.steps["fib"].node, st.stats
    );
    assert_eq!(st.output, Some(json!(75025)));
    assert_eq!(st.stats.executions, 0);
    assert_eq!(st.stats.cache_hits, 1);
    assert!(
        st.steps["fib"].cache_hit,
        "the hit shows in the step's status"
    );
    // The node list counts the entries held (fib(0) to fib(25), spread over the nodes'
    // caches), as soon as the next gossip carries them.
    let mut entries = 0;
    for _ in 0..50 {
        let nodes = b.nodes().await.unwrap();
        entries = nodes.iter().map(|n| n.cache.entries).sum::<u64>();
        if entries >= 26 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(entries >= 26, "cache entries in the node list: {entries}");

    // Invalidate the key: the next request runs again (its own sub-calls still hit).
    assert!(b.invalidate("troupe.fib", &json!({"n": 25})).await.unwrap());
    let st = b
        .submit(
            JobSpec::new("fib").step(StepSpec::new("fib", "troupe.fib").input(json!({"n": 25}))),
        )
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(st.stats.executions, 1, "{:?}", st.stats);
    assert!(!st.steps["fib"].cache_hit);
}

#[tokio::test]
async fn a_hundred_identical_requests_from_three_clients_run_once() {
    let c = pricing_cluster();
    c.ready().await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(c.client_via(&[i]).await);
    }
    let mut tasks = Vec::new();
    for k in 0..100 {
        let client = clients[k % 3].clone();
        tasks.push(tokio::spawn(async move {
            client
                .submit(instrument("SAME", 1500))
                .await
                .unwrap()
                .wait()
                .await
                .unwrap()
        }));
    }
    let mut executions = 0;
    let mut merged = 0;
    let mut hits = 0;
    let mut owners = BTreeSet::new();
    for t in tasks {
        let st = t.await.unwrap();
        assert_eq!(st.state, JobState::Succeeded);
        assert_eq!(
            st.output.as_ref().unwrap()["price"],
            json!(troupe_example_pricing::price_of("SAME"))
        );
        executions += st.stats.executions;
        merged += st.stats.merged;
        hits += st.stats.cache_hits;
        owners.insert(st.id.split('-').next().unwrap().to_string());
    }
    assert_eq!(executions, 1, "merged {merged}, cache hits {hits}");
    assert_eq!(merged + hits, 99);
    assert_eq!(owners.len(), 3, "jobs were accepted by all three nodes");
}

#[tokio::test]
async fn an_impure_task_is_never_merged() {
    let c = Cluster::start(2);
    c.ready().await;
    let client = c.client().await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let j = JobSpec::new("s")
                .step(StepSpec::new("s", "troupe.sleep").input(json!({"ms": 300})));
            client.submit(j).await.unwrap().wait().await.unwrap()
        }));
    }
    let mut executions = 0;
    for t in tasks {
        let st = t.await.unwrap();
        assert_eq!(st.stats.merged + st.stats.cache_hits, 0);
        executions += st.stats.executions;
    }
    assert_eq!(executions, 10);
}

#[tokio::test]
async fn waiters_get_a_result_when_the_owner_of_a_merged_request_is_killed() {
    let mut c = pricing_cluster();
    c.ready().await;
    let key = request_key(
        "pricing.instrument",
        &json!({"id": "DOOMED", "cost_ms": 2000}),
        &Default::default(),
    );
    let names = ["n1", "n2", "n3"];
    let owner_name = owner(&key, names).unwrap();
    let owner_idx = names.iter().position(|n| *n == owner_name).unwrap();
    let survivor = (owner_idx + 1) % 3;
    // All jobs are owned by a surviving node; only the key's owner dies.
    let client = c.client_via(&[survivor]).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            client
                .submit(instrument("DOOMED", 2000))
                .await
                .unwrap()
                .wait()
                .await
                .unwrap()
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.node(owner_idx).kill();
    for t in tasks {
        let st = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .expect("a waiter was left hanging")
            .unwrap();
        assert_eq!(st.state, JobState::Succeeded, "{st:?}");
        assert_eq!(st.output.as_ref().unwrap()["id"], "DOOMED");
    }
}

#[tokio::test]
async fn submissions_spread_over_nodes_and_fail_over_when_one_is_down() {
    let mut c = Cluster::start(3);
    c.ready().await;
    let client = c.client().await;
    let mut owners = BTreeSet::new();
    for _ in 0..9 {
        let h = client
            .submit(JobSpec::new("e").step(StepSpec::new("e", "troupe.echo")))
            .await
            .unwrap();
        owners.insert(
            troupe_runtime::vocab::JobId::owner_of(h.id())
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(owners.len(), 3, "{owners:?}");
    c.node(1).kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..6 {
        let st = client
            .submit(JobSpec::new("e").step(StepSpec::new("e", "troupe.node")))
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
        assert_eq!(st.state, JobState::Succeeded);
        assert_ne!(st.output, Some(json!("n2")));
        // The owner recorded the end: a peer leaving must not disturb the survivors' own
        // system actors (ractor_cluster's shims of the dead peer's actors once unregistered
        // same-named local actors; names are per node now).
        let again = client.status(&st.id).await.unwrap();
        assert_eq!(again.state, JobState::Succeeded);
    }
}
