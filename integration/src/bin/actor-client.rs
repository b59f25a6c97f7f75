//! A client process for the actor tests: connects through the given seeds only, sends
//! `ADDS` messages `{"op": "add", "n": 1}` to each of `KEYS` of actor type `TYPE` (keys in
//! parallel, each key's adds one after the other), and prints
//! `{"acked": N, "totals": {KEY: LAST_TOTAL}, "errors": [...]}`.
//!
//! Usage: `actor-client SEEDS COOKIE TYPE KEY[,KEY...] ADDS`

use std::collections::BTreeMap;

use serde_json::{json, Value};
use troupe_runtime::ClientOptions;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [seeds, cookie, actor_type, keys, adds] = args.as_slice() else {
        eprintln!("usage: actor-client SEEDS COOKIE TYPE KEY[,KEY...] ADDS");
        std::process::exit(2);
    };
    let Ok(adds) = adds.parse::<usize>() else {
        eprintln!("ADDS must be a number");
        std::process::exit(2);
    };
    let mut opts = ClientOptions::new(seeds.split(','), cookie);
    opts.request_timeout = std::time::Duration::from_secs(30);
    let client = troupe_integration::connect_retrying(opts).await;
    let tasks: Vec<_> = keys
        .split(',')
        .map(|key| {
            let (client, key, actor_type) = (client.clone(), key.to_string(), actor_type.clone());
            tokio::spawn(async move {
                let mut acked = 0usize;
                let mut last = Value::Null;
                let mut errors = Vec::new();
                for _ in 0..adds {
                    match client
                        .call_actor(&actor_type, &key, json!({"op": "add", "n": 1}))
                        .await
                    {
                        Ok(v) => {
                            acked += 1;
                            last = v["total"].clone();
                        }
                        Err(e) => errors.push(e.to_string()),
                    }
                }
                (key, acked, last, errors)
            })
        })
        .collect();
    let mut acked = 0;
    let mut totals = BTreeMap::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok((key, a, last, e)) => {
                acked += a;
                totals.insert(key, last);
                errors.extend(e);
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    println!(
        "{}",
        json!({"acked": acked, "totals": totals, "errors": errors})
    );
}
