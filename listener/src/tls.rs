//! TLS for the intake and management listeners (rustls on ring). The certificate, key and client
//! CA are read from PEM files at start and again on SIGHUP ([`ServerTls::reload`]): new
//! connections get the new certificate, open ones keep theirs, and files that do not load leave
//! the running certificate in place.
//!
//! Handshakes run on their own tasks, bounded in time and number (and, through the listener's
//! gate, per source address), so a client that stalls its handshake holds up nobody else.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, DnsName, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;

use avsnode_metrics::WarningBudget;
use serde::Deserialize;

use crate::connections::{Connections, Guarded};

/// Handshakes under way at once; connections beyond it are closed at once.
const MAX_HANDSHAKES: usize = 1024;

/// Why the TLS files could not be used. Messages name the file and never carry key material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{key} {}: {source}", path.display())]
    Read {
        /// The config key (`intake.tls.cert`, ...).
        key: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file holds no PEM item of the expected kind.
    #[error("{key} {}: no PEM {expected} in it", path.display())]
    NoPem {
        /// The config key.
        key: String,
        /// The file.
        path: PathBuf,
        /// What was looked for.
        expected: &'static str,
    },
    /// rustls refused the certificate, key or CA (a key that does not match the certificate, an
    /// unsupported key type, a malformed CA).
    #[error("{key}: {message}")]
    Invalid {
        /// The config table (`intake.tls`, ...).
        key: String,
        /// What rustls said.
        message: String,
    },
}

/// `[intake.tls]` / `[management.tls]`: serve TLS 1.2/1.3 (rustls). The files are read at start
/// and again on SIGHUP, so certificates can be rotated without a restart (connections already
/// open keep the certificate they were made with).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the listener's own certificate first (relative paths are relative
    /// to the config file).
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to. Set: mutual TLS, a client
    /// without such a certificate cannot connect, and on the intake each aggregator is bound to
    /// its certificate (`tls_client_names`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// A listener's TLS settings, swappable while it serves.
#[derive(Debug)]
pub struct ServerTls {
    /// `intake.tls` or `management.tls` (for errors and logs).
    key: &'static str,
    current: RwLock<Arc<rustls::ServerConfig>>,
    mutual: bool,
}

impl ServerTls {
    /// Reads the files of `config` (the table at `key`).
    pub fn load(key: &'static str, config: &TlsConfig) -> Result<ServerTls, TlsError> {
        Ok(ServerTls {
            key,
            current: RwLock::new(build(key, config)?),
            mutual: config.client_ca.is_some(),
        })
    }

    /// Reads `config`'s files again and, if they load, serves new connections with them.
    /// Turning mutual TLS on or off needs a restart: that is refused here.
    pub fn reload(&self, config: &TlsConfig) -> Result<(), TlsError> {
        let next = self.prepare(config)?;
        self.commit(next);
        Ok(())
    }

    /// The first half of [`ServerTls::reload`]: reads and checks the files, changing nothing.
    pub fn prepare(&self, config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        if config.client_ca.is_some() != self.mutual {
            return Err(TlsError::Invalid {
                key: format!("{}.client_ca", self.key),
                message: "turning mutual TLS on or off takes a restart".into(),
            });
        }
        build(self.key, config)
    }

    /// The second half: new connections use `next`.
    pub fn commit(&self, next: Arc<rustls::ServerConfig>) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = next;
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.mutual
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

fn build(key: &'static str, config: &TlsConfig) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = certificates(&format!("{key}.cert"), &config.cert)?;
    let private_key = {
        let at = format!("{key}.key");
        let pem = read(&at, &config.key)?;
        PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoPem {
            key: at,
            path: config.key.clone(),
            expected: "private key (PKCS#8, SEC1 or PKCS#1)",
        })?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let invalid = |message: String| TlsError::Invalid {
        key: key.to_owned(),
        message,
    };
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let at = format!("{key}.client_ca");
            let mut roots = RootCertStore::empty();
            for ca in certificates(&at, path)? {
                roots.add(ca).map_err(|e| TlsError::Invalid {
                    key: at.clone(),
                    message: format!("{}: {e}", path.display()),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Invalid {
                    key: at.clone(),
                    message: e.to_string(),
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut server = builder
        .with_single_cert(certs, private_key)
        .map_err(|e| invalid(format!("certificate and key: {e}")))?;
    server.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(server))
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    })
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(key, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoPem {
            key: key.to_owned(),
            path: path.to_owned(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

/// The TLS connections made over `connections` (already admitted by the listener's gate), for
/// `serve_with_incoming`: each handshake runs on its own task and must finish within
/// `handshake_timeout`; at most [`MAX_HANDSHAKES`] run at once (the gate bounds how many one
/// source address can start).
pub fn incoming(
    mut connections: Connections,
    tls: Arc<ServerTls>,
    handshake_timeout: Duration,
) -> ReceiverStream<io::Result<TlsStream<Guarded<TcpStream>>>> {
    let (sender, receiver) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    let warnings = Arc::new(WarningBudget::new("TLS", 10));
    tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                next = connections.next() => match next {
                    Some(Ok(stream)) => stream,
                    Some(Err(_)) => continue,
                    None => return,
                },
                () = sender.closed() => return,
            };
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                warnings.warn(|| {
                    tracing::warn!(
                        listener = tls.key,
                        ?stream,
                        "too many TLS handshakes under way; connection closed"
                    );
                });
                continue;
            };
            let acceptor = tls.acceptor();
            let sender = sender.clone();
            let key = tls.key;
            tokio::spawn(async move {
                let peer = format!("{stream:?}");
                match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        drop(permit);
                        let _ = sender.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(listener = key, peer, error = %e, "TLS handshake failed");
                    }
                    Err(_) => {
                        tracing::debug!(listener = key, peer, "TLS handshake timed out");
                    }
                }
            });
        }
    });
    ReceiverStream::new(receiver)
}

/// A client certificate, as presented on a mutual-TLS connection.
#[derive(Debug, Clone)]
pub struct ClientCertificate(CertificateDer<'static>);

impl ClientCertificate {
    /// The end-entity certificate of a connection's chain (already verified against the client
    /// CA by the handshake).
    pub fn from_chain(chain: &[CertificateDer<'static>]) -> Option<ClientCertificate> {
        chain.first().cloned().map(ClientCertificate)
    }

    /// Whether the certificate is valid for one of `names` (its subjectAltName DNS names).
    pub fn is_valid_for(&self, names: &[DnsName<'static>]) -> bool {
        let Ok(cert) = webpki::EndEntityCert::try_from(&self.0) else {
            return false;
        };
        names.iter().any(|name| {
            cert.verify_is_valid_for_subject_name(&ServerName::DnsName(name.clone()))
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn names(list: &[&str]) -> Vec<DnsName<'static>> {
        list.iter()
            .map(|n| DnsName::try_from(*n).unwrap().to_owned())
            .collect()
    }

    #[test]
    fn loads_reloads_and_keeps_the_old_certificate_on_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let pki = avsnode_tests::pki::write(dir.path(), &["agg.example"]);
        let config = TlsConfig {
            cert: pki.server_cert(),
            key: pki.server_key(),
            client_ca: Some(pki.ca()),
        };
        let tls = ServerTls::load("intake.tls", &config).unwrap();
        assert!(tls.mutual());
        let before = Arc::as_ptr(&tls.current.read().unwrap());
        tls.reload(&config).unwrap();
        let after = Arc::as_ptr(&tls.current.read().unwrap());
        assert_ne!(before, after, "a reload serves freshly read files");

        let garbage = write(dir.path(), "garbage.pem", "not a pem file");
        let bad_key = TlsConfig {
            key: garbage.clone(),
            ..config.clone()
        };
        let e = tls.reload(&bad_key).unwrap_err().to_string();
        assert!(
            e.starts_with("intake.tls.key") && e.contains("garbage.pem"),
            "{e}"
        );
        let missing = TlsConfig {
            cert: dir.path().join("absent.pem"),
            ..config.clone()
        };
        let e = tls.reload(&missing).unwrap_err().to_string();
        assert!(
            e.starts_with("intake.tls.cert") && e.contains("absent.pem"),
            "{e}"
        );
        // A key of another certificate.
        let mismatched = TlsConfig {
            key: pki.client_key("agg.example"),
            ..config.clone()
        };
        let e = tls.reload(&mismatched).unwrap_err().to_string();
        assert!(e.starts_with("intake.tls:"), "{e}");
        let plain = TlsConfig {
            client_ca: None,
            ..config.clone()
        };
        let e = tls.reload(&plain).unwrap_err().to_string();
        assert!(e.contains("restart"), "{e}");
        assert_eq!(
            after,
            Arc::as_ptr(&tls.current.read().unwrap()),
            "failed reloads leave the running certificate"
        );
    }

    #[test]
    fn client_certificates_match_their_dns_names_only() {
        let dir = tempfile::tempdir().unwrap();
        let pki = avsnode_tests::pki::write(dir.path(), &["agg-a.example", "agg-b.example"]);
        let pem = std::fs::read(pki.client_cert("agg-a.example")).unwrap();
        let chain = vec![CertificateDer::from_pem_slice(&pem).unwrap()];
        let cert = ClientCertificate::from_chain(&chain).unwrap();
        assert!(cert.is_valid_for(&names(&["agg-a.example"])));
        assert!(cert.is_valid_for(&names(&["other.example", "agg-a.example"])));
        assert!(!cert.is_valid_for(&names(&["agg-b.example"])));
        assert!(!cert.is_valid_for(&[]));
        assert!(ClientCertificate::from_chain(&[]).is_none());
    }
}
