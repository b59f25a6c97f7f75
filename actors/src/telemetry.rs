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
                Ok(()) => Some(handle),
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
    install().map(|h| h.render()).unwrap_or_default()
}
