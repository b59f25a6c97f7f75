//! Mutual TLS between nodes and clients (rustls, through ractor_cluster's TLS streams).
//!
//! Every member presents a certificate signed by the cluster's CA and checks the other
//! side's: a node refuses a peer or client without one, and a client refuses a node
//! without one. The cookie handshake still runs inside the TLS session.
//!
//! ractor_cluster can accept TLS itself, but its listener runs each TLS handshake inline,
//! with no deadline, so one connection that never sends its hello would stop every later
//! accept. A node therefore accepts on its own listener (`troupe_actors::tls_listener`),
//! with [`accept`] under a deadline, and hands finished streams to the node server; and a
//! member dials with [`dial`], which bounds the handshake the same way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;

/// Where a member's TLS material lives: its certificate chain, its private key, and the
/// cluster CA's certificate (all PEM).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This member's certificate (chain), PEM.
    pub cert: PathBuf,
    /// This member's private key (PKCS#8, PKCS#1 or SEC1), PEM.
    pub key: PathBuf,
    /// The CA certificate(s) that peers' certificates must be signed by, PEM.
    pub ca: PathBuf,
}

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error(
        "cannot use {what} {path}: {reason}. Make one with `troupe-node certs` or see SECURITY.md"
    )]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// Only some of the three TLS settings were given.
    #[error("TLS needs all three of --tls-cert, --tls-key and --tls-ca (got only {given})")]
    Incomplete {
        /// The settings that were given.
        given: String,
    },
    /// rustls refused the combination (a key that does not match the certificate, ...).
    #[error("the TLS certificate, key and CA do not work together: {0}")]
    Config(String),
}

impl TlsFiles {
    /// Builds [`TlsFiles`] from three optional settings: none means no TLS, all three
    /// mean TLS, anything else is an error naming what is missing.
    pub fn from_parts(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        ca: Option<PathBuf>,
    ) -> Result<Option<Self>, TlsError> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => Ok(Some(Self { cert, key, ca })),
            (c, k, a) => {
                let given: Vec<&str> = [
                    c.map(|_| "--tls-cert"),
                    k.map(|_| "--tls-key"),
                    a.map(|_| "--tls-ca"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(TlsError::Incomplete {
                    given: given.join(", "),
                })
            }
        }
    }

    /// Reads the three files and builds the server and client sides.
    pub fn load(&self) -> Result<TlsConfig, TlsError> {
        let certs = read_certs(&self.cert, "certificate")?;
        let key = read_key(&self.key)?;
        let mut roots = rustls::RootCertStore::empty();
        for ca in read_certs(&self.ca, "CA certificate")? {
            roots.add(ca).map_err(|e| TlsError::File {
                what: "CA certificate",
                path: self.ca.clone(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config_err = |e: rustls::Error| TlsError::Config(e.to_string());

        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key.clone_key())
            .map_err(config_err)?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(config_err)?;
        Ok(TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no CERTIFICATE block in it".into()));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        what: "private key",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loaded TLS settings of one member: the server side (for accepting) and the client side
/// (for dialling), both requiring the other side's certificate.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsConfig { mutual: true }")
    }
}

impl TlsConfig {
    /// The acceptor, for ractor_cluster's own listener (which nodes do not expose).
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.server.clone())
    }

    fn connector(&self) -> tokio_rustls::TlsConnector {
        tokio_rustls::TlsConnector::from(self.client.clone())
    }
}

/// Why an incoming connection did not become a TLS session.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    /// The peer spoke something other than TLS first (a plaintext member, or a scanner).
    #[error("refused a plaintext connection: this node requires TLS (start the peer with --tls-cert, --tls-key and --tls-ca)")]
    Plaintext,
    /// The peer closed before saying anything.
    #[error("the connection closed before the TLS handshake")]
    Closed,
    /// The handshake failed (no certificate, one not signed by the CA, ...).
    #[error("refused a TLS handshake: {0}")]
    Handshake(std::io::Error),
    /// The handshake did not finish in time.
    #[error("closed a connection whose TLS handshake did not finish within {0:?}")]
    Timeout(Duration),
}

/// The first byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Runs the server side of a TLS handshake on `stream`, within `deadline`, and answers
/// the stream ractor_cluster's node server takes. Plaintext is recognised by its first
/// byte, so that the log can say what is wrong.
pub async fn accept(
    stream: TcpStream,
    tls: &TlsConfig,
    deadline: Duration,
) -> Result<NetworkStream, AcceptError> {
    let peer_addr = stream.peer_addr().map_err(AcceptError::Handshake)?;
    let local_addr = stream.local_addr().map_err(AcceptError::Handshake)?;
    let _ = stream.set_nodelay(true);
    let handshake = async {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) => return Err(AcceptError::Closed),
            Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => return Err(AcceptError::Plaintext),
            Ok(_) => {}
            Err(e) => return Err(AcceptError::Handshake(e)),
        }
        tls.acceptor()
            .accept(stream)
            .await
            .map_err(AcceptError::Handshake)
    };
    let stream = tokio::time::timeout(deadline, handshake)
        .await
        .map_err(|_| AcceptError::Timeout(deadline))??;
    Ok(NetworkStream::TlsServer {
        peer_addr,
        local_addr,
        stream,
    })
}

/// Why dialling a member failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// `HOST:PORT` could not be understood.
    #[error("{0:?} is not HOST:PORT")]
    Address(String),
    /// No TCP connection.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed: usually a certificate not signed by the CA we trust, or
    /// one that does not name the host we dialled.
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The node closed the connection at the TLS handshake without a TLS answer: a node
    /// that does not use TLS reads the handshake as a malformed frame and hangs up.
    #[error("the node closed the connection at the TLS handshake: it does not use TLS")]
    NotTls,
    /// Connecting (and the TLS handshake) took longer than allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// This member's node server has stopped.
    #[error("the local node server has stopped")]
    ServerStopped,
}

impl DialError {
    /// Whether the failure is about TLS (certificates), not reachability.
    pub fn is_tls(&self) -> bool {
        matches!(self, DialError::Tls(_) | DialError::NotTls)
    }
}

/// The name the dialled node's certificate must carry: the host part of `HOST:PORT`
/// (an IP address or a DNS name).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, DialError> {
    let bad = || DialError::Address(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    port.parse::<u16>().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|_| bad())
}

/// Dials `addr` and hands the connection to `server`, which runs the cookie handshake.
/// With `tls`, the TLS handshake (both certificates checked) happens first; the whole
/// dial is bounded by `deadline`.
pub async fn dial(
    server: &ActorRef<NodeServerMessage>,
    addr: &str,
    tls: Option<&TlsConfig>,
    deadline: Duration,
) -> Result<(), DialError> {
    let name = match tls {
        Some(_) => Some(server_name(addr)?),
        None => None,
    };
    let connect = async {
        let stream = TcpStream::connect(addr).await.map_err(DialError::Connect)?;
        let _ = stream.set_nodelay(true);
        let peer_addr: SocketAddr = stream.peer_addr().map_err(DialError::Connect)?;
        let local_addr = stream.local_addr().map_err(DialError::Connect)?;
        Ok(match (tls, name) {
            (Some(tls), Some(name)) => NetworkStream::TlsClient {
                peer_addr,
                local_addr,
                stream: tls.connector().connect(name, stream).await.map_err(|e| {
                    match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => DialError::NotTls,
                        _ => DialError::Tls(e),
                    }
                })?,
            },
            _ => NetworkStream::Raw {
                peer_addr,
                local_addr,
                stream,
            },
        })
    };
    let stream = tokio::time::timeout(deadline, connect)
        .await
        .map_err(|_| DialError::Timeout(deadline))??;
    server
        .cast(NodeServerMessage::ConnectionOpened {
            stream: Box::new(stream),
            is_server: false,
        })
        .map_err(|_| DialError::ServerStopped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_come_from_the_host_part() {
        assert!(matches!(
            server_name("127.0.0.1:7340"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("[::1]:7340"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(
            server_name("node-1.example:7340"),
            Ok(ServerName::DnsName(_))
        ));
        assert!(server_name("no-port").is_err());
        assert!(server_name("host:notaport").is_err());
    }

    #[test]
    fn the_three_settings_go_together() {
        assert!(matches!(TlsFiles::from_parts(None, None, None), Ok(None)));
        let e = TlsFiles::from_parts(Some("c".into()), None, Some("a".into()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("--tls-cert, --tls-ca"), "{e}");
    }

    #[test]
    fn missing_files_are_named() {
        let files = TlsFiles {
            cert: "/nonexistent/node.pem".into(),
            key: "/nonexistent/node-key.pem".into(),
            ca: "/nonexistent/ca.pem".into(),
        };
        let e = files
            .load()
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("/nonexistent/node.pem"), "{e}");
    }
}
