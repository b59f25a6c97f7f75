//! How a client reaches a cluster and how it behaves there: [`ClientOptions`].

use std::time::Duration;

/// How to reach a cluster.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `HOST:PORT` of one or more nodes.
    pub seeds: Vec<String>,
    /// The cluster's cookie.
    pub cookie: String,
    /// How long to try the seeds before giving up.
    pub connect_timeout: Duration,
    /// Limit on one request (submit, status, nodes).
    pub request_timeout: Duration,
    /// Push every step event to handles (false: only the end of each job).
    pub progress: bool,
    /// Mutual TLS, required when the nodes use TLS (see [`crate::tls::TlsFiles::load`]).
    pub tls: Option<crate::tls::TlsConfig>,
    /// When the cluster says it is overloaded: wait and submit again for up to this long
    /// (backpressure: the submitter slows down to what the cluster runs), then fail with
    /// [`ClientError::Overloaded`](crate::error::ClientError::Overloaded). Zero fails at
    /// once.
    pub overloaded_wait: Duration,
}

impl ClientOptions {
    /// Seeds and cookie, with default timeouts (5 s to connect, 10 s per request).
    pub fn new<I: IntoIterator<Item = S>, S: Into<String>>(seeds: I, cookie: &str) -> Self {
        Self {
            seeds: seeds.into_iter().map(Into::into).collect(),
            cookie: cookie.to_string(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            overloaded_wait: Duration::from_secs(300),
            progress: true,
            tls: None,
        }
    }
}
