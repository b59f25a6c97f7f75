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
    let c = Cluster::start_with_binary(3, &cargo_bin("troupe-example-pricing", "pricing"));
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
