//! The node's Prometheus recorder: every `metrics::counter!`/`gauge!`/`histogram!` in the
//! process lands here, and `GET /metrics` renders it.
//!
//! One recorder per process, as the `metrics` facade wants; a process is one node.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Histogram buckets in seconds: 100 us to 60 s, about three per decade.
const BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

/// Installs the recorder (once; later calls do nothing). `None` if another recorder was
/// installed first (an embedding program's own): metrics then go there.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    export_at_zero();
                    Some(handle)
                }
                Err(_) => {
                    tracing::warn!(
                        "a metrics recorder was already installed; /metrics stays empty"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// The Prometheus text of every metric now (empty if [`install`] found another recorder).
pub fn render() -> String {
    install()
        .map(|h| {
            troupe_runtime::wire::publish_counts();
            h.render()
        })
        .unwrap_or_default()
}

/// Registers the counters and gauges a dashboard or alert reads first at zero, so that
/// they show in `/metrics` from the start (a Prometheus `rate()` or an alert on a series
/// that does not exist yet sees nothing, not 0). Labelled ones get the label values known
/// in advance; per-task series appear with their task. Adding zero changes nothing if a
/// series moved already.
fn export_at_zero() {
    use troupe_runtime::observe::metric as m;
    for name in [
        m::ACTOR_ACTIVATIONS,
        m::ACTOR_RESTARTS,
        m::ACTOR_COPY_TIMEOUTS,
        m::MERGED,
        m::CACHE_HITS,
        m::CACHE_MISSES,
    ] {
        metrics::counter!(name).increment(0);
    }
    for name in [
        m::ACTORS_ACTIVE,
        m::JOBS_ACTIVE,
        m::SLOTS,
        m::SLOTS_BUSY,
        m::CORE_MOVED_JOBS,
        m::CORE_LOG_INDEX,
        m::CORE_LEADER,
    ] {
        metrics::gauge!(name).increment(0.0);
    }
    let labelled: [(&'static str, &'static str, &[&'static str]); 6] = [
        (
            m::JOBS,
            "state",
            &["accepted", "succeeded", "failed", "cancelled"],
        ),
        (
            m::MEMBERSHIP_EVENTS,
            "event",
            &["up", "rejoined", "suspect", "down", "recovered"],
        ),
        (m::TAKEOVERS, "outcome", &["taken", "denied", "failed"]),
        (
            m::REPLICA_WRITES,
            "direction",
            &["out", "kept", "fenced", "ack_timeout"],
        ),
        (m::HTTP_REQUESTS, "status", &["2xx", "4xx", "5xx"]),
        (m::GEARMAN_JOBS, "mode", &["foreground", "background"]),
    ];
    for (name, label, values) in labelled {
        for &v in values {
            metrics::counter!(name, label => v).increment(0);
        }
    }
    for state in ["up", "down"] {
        metrics::gauge!(m::NODES, "state" => state).increment(0.0);
    }
}
