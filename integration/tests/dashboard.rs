//! The live dashboard at `/`, in a real headless Chromium (Debian's `chromium`, which
//! `.ci/run` installs; the test fails with that hint if it is missing).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use troupe_integration::browser::Browser;
use troupe_integration::http::{post, wait_nodes_up};
use troupe_integration::Cluster;

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn dashboard_shows_the_cluster_and_a_running_jobs_steps_live() {
    if !troupe_integration::needs::has(
        "dashboard_shows_the_cluster_and_a_running_jobs_steps_live",
        &[troupe_integration::needs::Need::Chromium],
    ) {
        return;
    }
    let mut c = Cluster::plan(3);
    c.serve_http = true;
    for i in 0..3 {
        c.start_node(i);
    }
    let u1 = c.http_url(0);
    wait_nodes_up(&u1, 3);

    let mut b = Browser::launch(&c.dir, 1400, 900).unwrap_or_else(|e| panic!("{e}"));
    b.open(&format!("{u1}/")).expect("open the dashboard");
    // A marker that a reload would wipe: the page must update in place.
    b.wait_for("document.readyState === 'complete'", WAIT)
        .unwrap();
    b.eval("window.__troupeMarker = 42").unwrap();

    // All three nodes, up.
    let nodes = b
        .wait_for(
            "(() => { const r = [...document.querySelectorAll('#nodes tr[data-node]')]; \
               return r.length === 3 && r.every(t => t.querySelector('.badge.s-up')) \
               && r.map(t => t.dataset.node).sort().join(','); })()",
            WAIT,
        )
        .unwrap();
    assert_eq!(nodes, json!("n1,n2,n3"));
    b.wait_for(
        "document.querySelector('#conn').textContent === 'live'",
        WAIT,
    )
    .unwrap();

    // A job submitted after the page loaded (through another node) appears from the
    // event stream, and its DAG shows running, finished and waiting steps.
    let job = json!({"name": "dashboard-demo", "steps": [
        {"id": "fetch", "task": "troupe.sleep", "input": {"ms": 60000}},
        {"id": "fan", "task": "troupe.echo", "for_each": "[1, 2, 3]"},
        {"id": "ask", "task": "troupe.needs_action", "input": {"message": "approve the spend"}},
        {"id": "store", "task": "troupe.sum", "after": ["fetch", "fan", "ask"]}]});
    let a = post(&format!("{}/api/jobs", c.http_url(1)), &job.to_string());
    assert_eq!(a.status, 201, "{}", a.body);
    let id = a.json()["id"].as_str().unwrap().to_string();
    let row = format!("#jobs tr[data-id='{id}']");
    b.wait_for(&format!("!!document.querySelector(\"{row}\")"), WAIT)
        .unwrap();
    b.eval(&format!("document.querySelector(\"{row}\").click()"))
        .unwrap();
    let state =
        |step: &str| format!("document.querySelector('[data-step=\"{step}\"]')?.dataset.state");
    for (step, want) in [
        ("fetch", "running"),
        ("fan[0]", "succeeded"),
        ("fan[2]", "succeeded"),
        ("ask", "waiting_for_user"),
        ("store", "pending"),
    ] {
        b.wait_for(&format!("{} === '{want}'", state(step)), WAIT)
            .unwrap_or_else(|e| panic!("step {step}: {e}"));
    }
    let waiting: Value = b
        .eval("document.querySelector('#waiting').textContent")
        .unwrap();
    assert!(
        waiting
            .as_str()
            .unwrap_or_default()
            .contains("approve the spend"),
        "{waiting}"
    );
    // Which node runs each step is shown.
    let fetch_text = b
        .eval("document.querySelector('[data-step=\"fetch\"]').textContent")
        .unwrap();
    assert!(
        ["n1", "n2", "n3"]
            .iter()
            .any(|n| fetch_text.as_str().unwrap_or_default().contains(n)),
        "{fetch_text}"
    );

    let shot: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    b.screenshot(&shot).expect("screenshot");
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot of {size} bytes");
    eprintln!("dashboard screenshot: {}", shot.display());

    // The resume button resumes the step; the page follows without a reload.
    b.eval("document.querySelector('[data-resume=\"ask\"]').click()")
        .unwrap();
    b.wait_for(&format!("{} === 'succeeded'", state("ask")), WAIT)
        .unwrap();
    // Cancel from the page ends the job.
    b.wait_for("!!document.querySelector('#cancel-job')", WAIT)
        .unwrap();
    b.eval("document.querySelector('#cancel-job').click()")
        .unwrap();
    b.wait_for(
        &format!("document.querySelector(\"{row} .badge\")?.textContent === 'cancelled'"),
        WAIT,
    )
    .unwrap();
    assert_eq!(b.eval("window.__troupeMarker").unwrap(), json!(42));
    let st = troupe_integration::http::get(&format!("{u1}/api/jobs/{id}")).json();
    assert_eq!(st["state"], "cancelled");
    assert_eq!(st["steps"]["ask"]["state"], "succeeded");

    // The selected job has a URL of its own.
    let hash = b.eval("location.hash").unwrap();
    assert_eq!(hash, json!(format!("#job={id}")));

    // A job without a name, ending while the page is open: shown by its id, its time
    // human-readable in the list, and counted in the header's p50.
    let quick = json!({"steps": [{"id": "nap", "task": "troupe.sleep", "input": {"ms": 300}}]});
    let a = post(&format!("{}/api/jobs", c.http_url(2)), &quick.to_string());
    let quick_id = a.json()["id"].as_str().unwrap().to_string();
    let took = b
        .wait_for(
            &format!(
                "(() => {{ const r = document.querySelector(\"#jobs tr[data-id='{quick_id}']\"); \
                   return r && /^\\d+(\\.\\d)? (ms|s)$/.test(r.cells[4].textContent) \
                   && [r.cells[1].textContent, r.cells[4].textContent]; }})()"
            ),
            WAIT,
        )
        .unwrap();
    assert_eq!(
        took[0],
        json!(quick_id),
        "a job without a name shows its id: {took}"
    );
    b.wait_for("document.querySelector('#k-p50').textContent !== '-'", WAIT)
        .unwrap();

    // A page opened now shows the events before it (the job's end among them, with its
    // id and how it ended), and opens the job its URL names.
    b.open(&format!("{u1}/#job={id}")).expect("reopen");
    b.wait_for("document.readyState === 'complete'", WAIT)
        .unwrap();
    let log = b
        .wait_for(
            &format!(
                "(() => {{ const t = document.querySelector('#log').textContent; \
                   return t.includes('job finished {id} cancelled') && t; }})()"
            ),
            WAIT,
        )
        .unwrap();
    assert!(
        log.as_str().unwrap_or_default().contains("job finished"),
        "{log}"
    );
    b.wait_for(
        &format!("document.querySelector('#detail-head code')?.textContent === '{id}'"),
        WAIT,
    )
    .unwrap();
    // The fan-out's children sit right below their parent, in index order.
    let column: Value = b
        .wait_for(
            "(() => { const y = (s) => Number(document.querySelector(`[data-step=\"${s}\"] rect`)?.getAttribute('y')); \
               const x = (s) => Number(document.querySelector(`[data-step=\"${s}\"] rect`)?.getAttribute('x')); \
               const ys = ['fan', 'fan[0]', 'fan[1]', 'fan[2]'].map(y); \
               return ys.every(v => !isNaN(v)) && [ys, x('fan[0]') > x('fan'), x('fan[0]') - x('fan')]; })()",
            WAIT,
        )
        .unwrap();
    let ys: Vec<f64> = column[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        ys.windows(2).all(|w| w[1] > w[0]),
        "children below their parent: {column}"
    );
    let gap = ys[1] - ys[0];
    assert!(
        ys.windows(2).all(|w| (w[1] - w[0] - gap).abs() < 0.5),
        "no other step between the children: {column}"
    );

    // 900 px wide: nothing runs off the right edge.
    b.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 900, "height": 900, "deviceScaleFactor": 1, "mobile": false}),
    )
    .unwrap();
    let overflow = b
        .wait_for(
            "(() => { const w = document.documentElement.scrollWidth; return w <= 900 ? 'fits' : w; })()",
            WAIT,
        )
        .unwrap_or_else(|e| panic!("the page is wider than 900 px: {e}"));
    assert_eq!(overflow, json!("fits"));
    let narrow: PathBuf = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-900.png");
    b.screenshot(&narrow).expect("screenshot");
    eprintln!("900 px screenshot: {}", narrow.display());
}
