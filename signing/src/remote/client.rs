//! The node's `remote` signing backend: a client of `avsnode signer serve` over mutual TLS.
//!
//! Each [`RemoteKey::sign_result`] is one `SignResult` with a timeout per attempt, retried only on
//! UNAVAILABLE (the signer's ledger makes a retry idempotent: the same request gets the same
//! signatures). A circuit keeps a dead signer from costing every task its timeout: after
//! [`CIRCUIT_THRESHOLD`] consecutive calls that found the signer unreachable it is marked down
//! for [`CIRCUIT_OPEN_FOR`], and calls fail at once with [`RemoteSignerError::Down`]; the first
//! call after that goes through, and one success closes the circuit.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use avsnode_proto::signer::signer_client::SignerClient;
use avsnode_proto::signer::{ListKeysRequest, SignResultRequest};
use avsnode_signer::Scheme;
use avsnode_signer::messages::keccak256;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tracing::warn;

use super::{RemoteSignerError, SignFields, read_file};
use crate::ResultSignatures;

/// Attempts per call (the first and two retries), on UNAVAILABLE only.
pub const MAX_ATTEMPTS: u32 = 3;
/// The wait before each retry.
const BACKOFF: [Duration; 2] = [Duration::from_millis(50), Duration::from_millis(200)];
/// Consecutive failed calls that mark the signer down.
pub const CIRCUIT_THRESHOLD: u32 = 5;
/// How long a signer marked down is not called.
pub const CIRCUIT_OPEN_FOR: Duration = Duration::from_secs(2);
/// The default timeout of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where the remote signer is and how this node authenticates to it.
#[derive(Debug, Clone)]
pub struct RemoteSignerSpec {
    /// `https://host:port`; the host must match the signer's certificate.
    pub url: String,
    /// The CA that issued the signer's certificate (PEM).
    pub ca: PathBuf,
    /// This node's client certificate (PEM).
    pub cert: PathBuf,
    /// This node's client key (PEM).
    pub key: PathBuf,
    /// The key's name on the signer.
    pub key_name: String,
    /// Timeout of one attempt (and of connecting); [`DEFAULT_TIMEOUT`] by default.
    pub timeout: Duration,
}

impl RemoteSignerSpec {
    /// A spec with the default timeout.
    pub fn new(
        url: impl Into<String>,
        ca: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
        key_name: impl Into<String>,
    ) -> RemoteSignerSpec {
        RemoteSignerSpec {
            url: url.into(),
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
            key_name: key_name.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// One key held by a remote signer, as the node uses it.
pub struct RemoteKey {
    url: String,
    key_name: String,
    scheme: Scheme,
    public: Vec<u8>,
    timeout: Duration,
    client: SignerClient<Channel>,
    circuit: Circuit,
}

impl fmt::Debug for RemoteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteKey")
            .field("url", &self.url)
            .field("key", &self.key_name)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl RemoteKey {
    /// Opens the mTLS channel, lists the keys this client may use and finds `spec.key_name`
    /// (its scheme and public key are remembered). Fails if the signer cannot be reached, refuses
    /// the certificate, or does not offer the key (the error lists what it offers).
    pub async fn connect(spec: RemoteSignerSpec) -> Result<RemoteKey, RemoteSignerError> {
        let url = spec.url.clone();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(
                read_file("remote signer CA", &spec.ca).await?,
            ))
            .identity(Identity::from_pem(
                read_file("client certificate", &spec.cert).await?,
                read_file("client key", &spec.key).await?,
            ));
        let tls_error = |source| RemoteSignerError::Tls {
            what: url.clone(),
            source,
        };
        let endpoint = Endpoint::from_shared(spec.url.clone())
            .map_err(|source| RemoteSignerError::Connect {
                url: url.clone(),
                source,
            })?
            .tls_config(tls)
            .map_err(tls_error)?
            .connect_timeout(spec.timeout)
            .tcp_nodelay(true);
        let channel = endpoint
            .connect()
            .await
            .map_err(|source| RemoteSignerError::Connect {
                url: url.clone(),
                source,
            })?;
        let mut client = SignerClient::new(channel);
        let mut request = tonic::Request::new(ListKeysRequest {});
        request.set_timeout(spec.timeout);
        let listed = tokio::time::timeout(spec.timeout, client.list_keys(request))
            .await
            .map_err(|_| RemoteSignerError::Timeout {
                url: url.clone(),
                after: spec.timeout,
            })?
            .map_err(|status| status_error(&url, spec.timeout, status))?
            .into_inner();
        let Some(info) = listed.keys.iter().find(|k| k.name == spec.key_name) else {
            return Err(RemoteSignerError::UnknownKey {
                url,
                key: spec.key_name,
                available: listed.keys.into_iter().map(|k| k.name).collect(),
            });
        };
        let scheme: Scheme = info
            .scheme
            .parse()
            .map_err(|_| RemoteSignerError::BadResponse {
                url: url.clone(),
                reason: "unknown scheme in ListKeys",
            })?;
        if info.public_key.len() != public_key_len(scheme) {
            return Err(RemoteSignerError::BadResponse {
                url,
                reason: "public key of the wrong length for its scheme in ListKeys",
            });
        }
        Ok(RemoteKey {
            url,
            key_name: spec.key_name,
            scheme,
            public: info.public_key.clone(),
            timeout: spec.timeout,
            client,
            circuit: Circuit::default(),
        })
    }

    /// The key's scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The public key bytes, as [`LocalKey::public_bytes`](crate::LocalKey::public_bytes).
    pub fn public_bytes(&self) -> &[u8] {
        &self.public
    }

    /// The ledger's key id: `keccak256(public_bytes)`, as
    /// [`LocalKey::key_id`](crate::LocalKey::key_id).
    pub fn key_id(&self) -> [u8; 32] {
        keccak256(&self.public)
    }

    /// Whether the signer is marked down now (after repeated unreachable calls; see the module).
    pub fn is_down(&self) -> bool {
        self.circuit.check(&self.url, Instant::now()).is_err()
    }

    /// The key's name on the signer.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The signer's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// One `SignResult` with `timeout` per attempt; retries only on UNAVAILABLE (up to
    /// [`MAX_ATTEMPTS`], 50 then 200 ms apart). While the circuit is open (after
    /// [`CIRCUIT_THRESHOLD`] consecutive unreachable calls, for [`CIRCUIT_OPEN_FOR`]) it fails at
    /// once with [`RemoteSignerError::Down`]; one success closes it.
    pub async fn sign_result(
        &self,
        fields: SignFields<'_>,
    ) -> Result<ResultSignatures, RemoteSignerError> {
        self.circuit.check(&self.url, Instant::now())?;
        let outcome = self.sign_with_retries(&fields).await;
        match &outcome {
            Err(e) if e.is_unavailable() => {
                if self.circuit.failed(Instant::now()) {
                    warn!(url = %self.url, key = %self.key_name, error = %e, "remote signer marked down");
                }
            }
            // Any answer, even a refusal, shows the signer is up.
            _ => self.circuit.succeeded(),
        }
        outcome
    }

    async fn sign_with_retries(
        &self,
        fields: &SignFields<'_>,
    ) -> Result<ResultSignatures, RemoteSignerError> {
        let request = SignResultRequest {
            key: self.key_name.clone(),
            task_id: fields.task_id.0.to_vec(),
            avs: fields.avs.to_string(),
            operator_set_id: fields.operator_set_id,
            reference_timestamp: fields.reference_timestamp,
            output: fields.output.to_vec(),
            operator: fields.operator.to_string(),
            verifier: fields
                .verifier
                .map(|v| v.address.to_string())
                .unwrap_or_default(),
            verifier_version: fields
                .verifier
                .map(|v| v.version.clone())
                .unwrap_or_default(),
        };
        let mut attempt = 0;
        loop {
            let mut call = tonic::Request::new(request.clone());
            call.set_timeout(self.timeout);
            let mut client = self.client.clone();
            let answer = tokio::time::timeout(self.timeout, client.sign_result(call)).await;
            let status = match answer {
                Ok(Ok(response)) => {
                    let response = response.into_inner();
                    return self.check_lengths(ResultSignatures {
                        result: response.result_signature,
                        auth: response.auth_signature,
                    });
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    return Err(RemoteSignerError::Timeout {
                        url: self.url.clone(),
                        after: self.timeout,
                    });
                }
            };
            match BACKOFF.get(attempt) {
                Some(wait) if is_unreachable(&status) => {
                    attempt += 1;
                    tokio::time::sleep(*wait).await;
                }
                _ => return Err(status_error(&self.url, self.timeout, status)),
            }
        }
    }

    fn check_lengths(
        &self,
        signatures: ResultSignatures,
    ) -> Result<ResultSignatures, RemoteSignerError> {
        let expected = signature_len(self.scheme);
        if signatures.result.len() != expected || signatures.auth.len() != expected {
            return Err(RemoteSignerError::BadResponse {
                url: self.url.clone(),
                reason: "a signature of the wrong length for the key's scheme",
            });
        }
        Ok(signatures)
    }
}

/// Whether `status` says the signer could not be reached, rather than being its answer: UNAVAILABLE,
/// or any status tonic made locally from a transport error (its source), as when the connection
/// breaks during a call because the signer died: UNKNOWN "transport error", or CANCELLED
/// "operation was canceled" for a request the dead connection never sent. Both are retried (the
/// signer's ledger makes a retry idempotent) and count towards the circuit.
fn is_unreachable(status: &Status) -> bool {
    status.code() == Code::Unavailable
        || std::error::Error::source(status)
            .is_some_and(|source| source.is::<tonic::transport::Error>())
}

fn status_error(url: &str, timeout: Duration, status: Status) -> RemoteSignerError {
    let url = url.to_owned();
    if is_unreachable(&status) {
        return RemoteSignerError::Unavailable { url, status };
    }
    match status.code() {
        // The signer gave up first, on the deadline this attempt sent. gRPC says DEADLINE_EXCEEDED;
        // a tonic server (ours) answers CANCELLED "Timeout expired". A CANCELLED that tonic made
        // here from a broken connection was caught above.
        Code::DeadlineExceeded | Code::Cancelled => RemoteSignerError::Timeout {
            url,
            after: timeout,
        },
        Code::FailedPrecondition => RemoteSignerError::Refused { url, status },
        Code::PermissionDenied | Code::Unauthenticated => RemoteSignerError::Denied { url, status },
        _ => RemoteSignerError::Status { url, status },
    }
}

fn signature_len(scheme: Scheme) -> usize {
    match scheme {
        Scheme::Ecdsa => 65,
        Scheme::Bn254 => 64,
        Scheme::Bls12381 => 96,
    }
}

fn public_key_len(scheme: Scheme) -> usize {
    match scheme {
        Scheme::Ecdsa => 20,
        Scheme::Bn254 => 128,
        Scheme::Bls12381 => 48,
    }
}

/// Consecutive unreachable calls, and until when the signer is marked down.
#[derive(Debug, Default)]
struct Circuit {
    state: Mutex<CircuitState>,
}

#[derive(Debug, Default)]
struct CircuitState {
    failures: u32,
    open_until: Option<Instant>,
}

impl Circuit {
    fn lock(&self) -> std::sync::MutexGuard<'_, CircuitState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, url: &str, now: Instant) -> Result<(), RemoteSignerError> {
        let state = self.lock();
        match state.open_until {
            Some(until) if now < until => Err(RemoteSignerError::Down {
                url: url.to_owned(),
                retry_in: until.saturating_duration_since(now),
            }),
            _ => Ok(()),
        }
    }

    /// Counts a failed call; true when this one opened the circuit.
    fn failed(&self, now: Instant) -> bool {
        let mut state = self.lock();
        state.failures = state.failures.saturating_add(1);
        if state.failures >= CIRCUIT_THRESHOLD {
            let was_open = state.open_until.is_some();
            state.open_until = Some(now + CIRCUIT_OPEN_FOR);
            return !was_open;
        }
        false
    }

    fn succeeded(&self) {
        *self.lock() = CircuitState::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signer_giving_up_on_the_deadline_is_a_timeout() {
        // What a tonic server answers when the deadline an attempt sent runs out, as it reaches
        // the client: the code and message, no source.
        let expired = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        let expired = Status::new(expired.code(), expired.message());
        for status in [expired, Status::deadline_exceeded("deadline exceeded")] {
            let error = status_error("https://signer:9500", Duration::from_secs(2), status);
            assert!(
                matches!(error, RemoteSignerError::Timeout { .. }),
                "{error:?}"
            );
            assert!(
                error.is_unavailable(),
                "the node answers UNAVAILABLE: {error}"
            );
            assert_eq!(
                error.to_string(),
                "the remote signer https://signer:9500 did not answer within 2s"
            );
        }
    }

    #[test]
    fn the_circuit_opens_after_five_failures_and_closes_after_a_success() {
        let circuit = Circuit::default();
        let t0 = Instant::now();
        for _ in 0..CIRCUIT_THRESHOLD - 1 {
            assert!(!circuit.failed(t0));
            assert!(circuit.check("u", t0).is_ok());
        }
        assert!(circuit.failed(t0), "the fifth failure opens it");
        assert!(matches!(
            circuit.check("u", t0),
            Err(RemoteSignerError::Down { retry_in, .. }) if retry_in == CIRCUIT_OPEN_FOR
        ));
        let t1 = t0 + CIRCUIT_OPEN_FOR;
        assert!(circuit.check("u", t1).is_ok(), "half open after the window");
        // A failure then re-opens it at once (not reported as newly down).
        assert!(!circuit.failed(t1));
        assert!(circuit.check("u", t1).is_err());
        let t2 = t1 + CIRCUIT_OPEN_FOR;
        circuit.succeeded();
        assert!(circuit.check("u", t2).is_ok());
        assert!(
            !circuit.failed(t2),
            "one failure after a success does not open it"
        );
        assert!(circuit.check("u", t2).is_ok());
    }
}
