//! The example crates, each on a three-node cluster of its own node binary, driven by its
//! own submitting program.

use std::collections::BTreeSet;

use serde_json::Value;
use troupe_integration::{cargo_bin, texts, Cluster};

#[tokio::test]
async fn social_aggregates_linked_networks_and_breaks_down_groups() {
    let c = Cluster::start_with_binary(3, &cargo_bin("troupe-example-social", "social"));
    c.ready().await;
    let submit = cargo_bin("troupe-example-social", "social-submit");
    let accounts = r#"{"facebook": "fb-1", "twitter": "tw-2", "linkedin": "li-3"}"#;
    let out = c.run_program(&submit, &["--accounts", accounts, "--resume"]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("retrying twitter"),
        "twitter failed once, transiently: {stderr}"
    );
    assert!(
        stderr.contains("ACTION NEEDED on linkedin") && stderr.contains("revoked"),
        "{stderr}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let agg = &v["aggregate"];
    let f = |n: &str, a: &str| troupe_example_social::followers(n, a);
    assert_eq!(
        agg["total"],
        f("facebook", "fb-1") + f("twitter", "tw-2") + f("linkedin", "li-3")
    );
    assert!(
        agg["networks"].get("instagram").is_none(),
        "instagram is not linked: skipped"
    );
    // The breakdown ran itself on every sub-group: 2+3+4+5+6+7 people.
    assert_eq!(v["breakdown"]["total"], 27);
    assert_eq!(
        v["breakdown"]["children"][0]["children"][1]["group"],
        "apac"
    );
}

#[tokio::test]
async fn social_without_the_user_acting_waits() {
    let c = Cluster::start_with_binary(3, &cargo_bin("troupe-example-social", "social"));
    c.ready().await;
    // No linkedin account: nothing needs action and the job succeeds on its own.
    let submit = cargo_bin("troupe-example-social", "social-submit");
    let out = c.run_program(&submit, &["--accounts", r#"{"instagram": "ig-1"}"#]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        v["aggregate"]["total"],
        troupe_example_social::followers("instagram", "ig-1")
    );
}

#[tokio::test]
async fn wordcount_map_reduce_counts_every_chunk_once() {
    let c = Cluster::start_with_binary(3, &cargo_bin("troupe-example-wordcount", "wordcount"));
    c.ready().await;
    let text = "one two three flaky two three three flaky four four four four ".repeat(25);
    let input = c.job_file("text.txt", &text);
    let out_path = c.dir.join("counts.json").display().to_string();
    let submit = cargo_bin("troupe-example-wordcount", "wordcount-submit");
    let out = c.run_program(&submit, &["--chunks", "6", "--out", &out_path, &input]);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("retried"),
        "map attempts on chunks with 'flaky' failed once: {stderr}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap();
    // Exactly once: the failed attempts' emits are not counted.
    for (w, n) in [
        ("one", 25),
        ("two", 50),
        ("three", 75),
        ("four", 100),
        ("flaky", 50),
    ] {
        assert_eq!(v["counts"][w], n, "{w}: {v}");
    }
    assert_eq!(v["total"], 300);
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(&out_path).unwrap()).unwrap();
    assert_eq!(written["four"], 100);
    let nodes: BTreeSet<_> = stderr
        .lines()
        .filter(|l| l.starts_with("map["))
        .filter_map(|l| l.rsplit(' ').next())
        .collect();
    assert!(nodes.len() >= 2, "maps ran on {nodes:?}");
}

#[tokio::test]
async fn dmap_returns_results_in_input_order() {
    let c = Cluster::start_with_binary(3, &cargo_bin("troupe-example-dmap", "dmap"));
    c.ready().await;
    let run = cargo_bin("troupe-example-dmap", "dmap-run");
    let nums: Vec<String> = (1..=24).map(|n| n.to_string()).collect();
    let args: Vec<&str> = nums.iter().map(String::as_str).collect();
    let out = c.run_program(&run, &args);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 24);
    let mut nodes = BTreeSet::new();
    for (i, l) in lines.iter().enumerate() {
        let n = i as i64 + 1;
        assert!(
            l.starts_with(&format!("{n} -> {} on n", n * n)),
            "line {i}: {l}"
        );
        nodes.insert(l.rsplit(' ').next().unwrap().to_string());
    }
    assert!(nodes.len() >= 2, "spread over {nodes:?}");
}

#[tokio::test]
async fn pricing_prices_each_shared_instrument_once() {
    // Slots for every portfolio at once: instrument calls go ahead of portfolios not yet
    // started (re-entrant work first), so with fewer slots a portfolio could start after
    // the pricing it shares has ended, and with the cache bypassed it would run again.
    let exe = cargo_bin("troupe-example-pricing", "pricing");
    let mut c = Cluster::plan(3);
    c.slots = 8;
    for i in 0..3 {
        let spec = c.spec(i);
        c.start_with(i, &exe, &spec);
    }
    c.ready().await;
    let run = cargo_bin("troupe-example-pricing", "pricing-run");
    let out = c.run_program(
        &run,
        &[
            "--portfolios",
            "12",
            "--universe",
            "15",
            "--size",
            "6",
            "--fresh",
        ],
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let last = stdout.lines().last().unwrap();
    assert!(
        last.contains("asked: 72, ran: 15,") && last.contains("distinct instruments: 15"),
        "{last}"
    );
    // Again, from the cache: nothing runs.
    let out = c.run_program(
        &run,
        &["--portfolios", "12", "--universe", "15", "--size", "6"],
    );
    let last = texts(&out).0.lines().last().unwrap().to_string();
    assert!(
        last.contains("ran: 0,") && last.contains("from cache: 72"),
        "{last}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn accounts_program_conserves_money_and_refunds_failed_deposits() {
    let c = Cluster::start_with_binary(3, &cargo_bin("troupe-example-accounts", "accounts"));
    c.ready().await;
    let run = cargo_bin("troupe-example-accounts", "accounts-run");
    let out = c.run_program(
        &run,
        &["--transfers", "80", "--initial", "200", "--seed", "3"],
    );
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["total_before"], 1600, "{v}");
    assert_eq!(v["total_after"], 1600, "{v}");
    assert!(v["refunded"].as_u64() > Some(0), "no refund ran: {v}");
    assert!(
        v["refused"].as_u64() > Some(0),
        "no overdraft was refused: {v}"
    );
    assert!(stderr.contains("80/80 transfers ended"), "{stderr}");
}

/// `troupe-node call` through a node that does not serve the actor type reaches it on
/// the nodes that do: n1 runs plain `troupe-node`, n2 and n3 the accounts binary.
#[tokio::test(flavor = "current_thread")]
async fn an_actor_is_called_through_a_node_that_does_not_serve_its_type() {
    let exe = cargo_bin("troupe-example-accounts", "accounts");
    let mut c = Cluster::plan(3);
    c.start_node(0);
    for i in 1..3 {
        let spec = c.spec(i);
        c.start_with(i, &exe, &spec);
    }
    let _settled = c.settled_client(&[0, 1, 2]).await;
    let via_n1 = |message: &str| {
        c.cli(
            &[
                "call",
                "--seeds",
                &c.addrs[0],
                "--cookie",
                &c.cookie,
                "accounts",
                "acc-x",
                message,
            ],
            false,
        )
    };
    let out = via_n1(r#"{"op": "open", "initial": 70}"#);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let out = via_n1(r#"{"op": "balance"}"#);
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let v: Value = serde_json::from_str(stdout.trim()).expect("the reply is JSON");
    assert_eq!(v["balance"], 70, "{v}");
    // A type no node serves is still refused, by name.
    let out = c.cli(
        &[
            "call",
            "--seeds",
            &c.addrs[0],
            "--cookie",
            &c.cookie,
            "acounts",
            "acc-x",
            r#"{"op": "balance"}"#,
        ],
        false,
    );
    let (_, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("acounts"), "{stderr}");
}

#[tokio::test(flavor = "current_thread")]
async fn accounts_conserve_money_over_200_transfers_with_a_node_killed_in_the_middle() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use troupe_example_accounts as accounts;
    let exe = cargo_bin("troupe-example-accounts", "accounts");
    let mut c = Cluster::plan(3);
    // Jobs owned by the killed node are taken over after 1 s rather than 10.
    c.env
        .push(("TROUPE_FAILURE__TAKEOVER_AFTER_MS".into(), "1000".into()));
    for i in 0..3 {
        let spec = c.spec(i);
        c.start_with(i, &exe, &spec);
    }
    let client = c.settled_client(&[0, 1, 2]).await;
    troupe_integration::core_formed(3).await;
    let names: Vec<String> = (0..8).map(|i| format!("acc-{i}")).collect();
    accounts::open_all(&client, &names, 1000)
        .await
        .expect("open");
    assert_eq!(accounts::total(&client, &names).await.unwrap(), 8000);
    let hosted = client.actors().await.expect("actors");
    assert!(
        hosted.iter().any(|a| a.node == "n3"),
        "n3 hosts no account, so its death would test nothing: {hosted:?}"
    );
    let done = AtomicUsize::new(0);
    let plan = accounts::plan(&names, 200, 11);
    let run = accounts::run_transfers(&client, plan, 8, |n| done.store(n, Ordering::Relaxed));
    let kill = async {
        while done.load(Ordering::Relaxed) < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        c.node(2).kill();
        eprintln!("killed n3 after {} transfers", done.load(Ordering::Relaxed));
    };
    let (outcome, ()) = tokio::join!(run, kill);
    eprintln!("{outcome:?}");
    assert!(outcome.other.is_empty(), "{outcome:?}");
    assert_eq!(
        outcome.succeeded + outcome.refused + outcome.refunded,
        200,
        "{outcome:?}"
    );
    assert!(outcome.refunded > 0, "{outcome:?}");
    assert_eq!(
        accounts::total(&client, &names).await.unwrap(),
        8000,
        "money was made or lost"
    );
    let hosted = client.actors().await.expect("actors");
    assert!(hosted.iter().all(|a| a.node != "n3"), "{hosted:?}");
}
