//! A small blocking HTTP client for tests of a node's `--http` API.

use std::io::BufRead;
use std::time::Duration;

use serde_json::Value;

/// An answer: status code and body.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// The body as text.
    pub body: String,
    /// The Content-Type header.
    pub content_type: String,
    /// The Retry-After header, if any.
    pub retry_after: Option<String>,
}

impl Answer {
    /// The body as JSON (panics with the body if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    try_answer(r).unwrap_or_else(|e| panic!("HTTP request failed: {e}"))
}

fn try_answer(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Result<Answer, String> {
    let mut r = r.map_err(|e| e.to_string())?;
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    Ok(Answer {
        retry_after,
        status: r.status().as_u16(),
        body: r.body_mut().read_to_string().unwrap_or_default(),
        content_type,
    })
}

/// `GET url`, or why it could not be asked (e.g. the server is not listening yet).
pub fn try_get(url: &str) -> Result<Answer, String> {
    try_answer(agent().get(url).call())
}

/// `GET url`.
pub fn get(url: &str) -> Answer {
    answer(agent().get(url).call())
}

/// `POST url` with `body` as JSON text.
pub fn post(url: &str, body: &str) -> Answer {
    answer(
        agent()
            .post(url)
            .header("content-type", "application/json")
            .send(body),
    )
}

/// Follows a server-sent event stream: calls `each` with every `data:` payload parsed as
/// JSON, until it returns false or the stream ends.
pub fn follow_events(url: &str, mut each: impl FnMut(Value) -> bool) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into();
    let r = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let reader = std::io::BufReader::new(r.into_body().into_reader());
    for line in reader.lines() {
        let Ok(line) = line else { return };
        if let Some(data) = line.strip_prefix("data:") {
            let v: Value = serde_json::from_str(data.trim())
                .unwrap_or_else(|e| panic!("event data is not JSON ({e}): {data}"));
            if !each(v) {
                return;
            }
        }
    }
}

/// Parses Prometheus text format: every sample as (`name{labels}`, value). Panics on a
/// line that is not a comment, blank, or `NAME[{LABELS}] VALUE`.
pub fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line: {line}"));
        let v: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad value in metrics line: {line}")),
        };
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in: {line}"
        );
        if series.contains('{') {
            assert!(series.ends_with('}'), "bad labels in: {line}");
        }
        out.push((series.to_string(), v));
    }
    out
}

/// The value of the sample named exactly `series` (0 if absent).
pub fn metric(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or(0.0)
}

/// The sum of every sample whose series starts with `prefix` (e.g. a name, or a name
/// with its first labels).
pub fn metric_sum(samples: &[(String, f64)], prefix: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(prefix))
        .map(|(_, v)| v)
        .sum()
}

/// Waits until `GET url/api/nodes` lists `n` nodes up (panics after 20 s).
pub fn wait_nodes_up(url: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(a) = try_get(&format!("{url}/api/nodes")) {
            let up = serde_json::from_str::<Value>(&a.body)
                .ok()
                .and_then(|v| {
                    v["nodes"]
                        .as_array()
                        .map(|l| l.iter().filter(|n| n["state"] == "up").count())
                })
                .unwrap_or(0);
            if a.status == 200 && up == n {
                return;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never saw {n} nodes up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
