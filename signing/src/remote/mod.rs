//! The remote signer: `avsnode signer serve` ([`service`]) and the node's client of it
//! ([`client`], the `remote` signing backend of DESIGN §4.5).
//!
//! Keys can live on a separate, hardened host. Nodes reach it over gRPC with mutual TLS
//! (`avsnode.signer.v1.Signer`); each client certificate may use a configured set of keys.
//!
//! # Invariant
//!
//! The signer signs only digests it computed itself from typed task fields ([`SignFields`]: task
//! id, output, reference timestamp, and for ECDSA the verifier), never an opaque digest a client
//! hands it. It keeps its own sign-once ledger (DESIGN §5, the node's [`Ledger`] in its own data
//! directory, through the same [`Ledger::sign_once`]): for one (key, what the digest binds, task
//! id) it releases signatures over at most one digest, and only for the AVS and operator set it
//! first signed the task for, whoever asks. A compromised node can make it sign any output once,
//! but never two different outputs for one task, nor one task for two AVSs or operator sets.
//!
//! # Caveat
//!
//! The ledger protects one signer data directory. Two signer processes holding the same key with
//! different data directories (a restored backup, a second host) can together sign two outputs
//! for a task, exactly as two nodes can: run a key in one signer only.
//!
//! [`Ledger`]: avsnode_ledger::Ledger
//! [`Ledger::sign_once`]: avsnode_ledger::Ledger::sign_once

pub mod client;
pub mod service;

use std::path::{Path, PathBuf};
use std::time::Duration;

use avsnode_signer::messages::{Address, EcdsaVerifier, TaskId};

use crate::Problem;
use crate::SignerError;
use avsnode_ledger::LedgerError;

pub use client::{RemoteKey, RemoteSignerSpec};
pub use service::{SignerClientConfig, SignerServiceConfig, SignerTlsConfig, serve};

/// The typed fields of one result to sign (DESIGN §4.2, §4.3): everything the signer needs to
/// compute the certificate digest and the auth message itself.
#[derive(Debug, Clone, Copy)]
pub struct SignFields<'a> {
    /// The task.
    pub task_id: TaskId,
    /// The AVS.
    pub avs: Address,
    /// The operator set.
    pub operator_set_id: u32,
    /// The task's reference timestamp.
    pub reference_timestamp: u32,
    /// The performer's output.
    pub output: &'a [u8],
    /// The operator address the auth signature binds the result to.
    pub operator: Address,
    /// ECDSA keys only: the certificate verifier (EIP-712 domain). `None` for the other schemes.
    pub verifier: Option<&'a EcdsaVerifier>,
}

/// A malformed field of a sign request (the signer answers INVALID_ARGUMENT).
#[derive(Debug, thiserror::Error)]
pub enum FieldError {
    /// `task_id` is not 32 bytes.
    #[error("task_id must be 32 bytes, got {0}")]
    TaskIdLength(usize),
    /// An address field is not `0x` + 40 hex digits.
    #[error("{field}: {source}")]
    Address {
        /// The field.
        field: &'static str,
        /// Why.
        #[source]
        source: avsnode_signer::Error,
    },
    /// `verifier` and `verifier_version` must be sent together.
    #[error("verifier and verifier_version must be sent together")]
    HalfVerifier,
    /// The verifier does not fit the key's scheme (ECDSA keys need one, the others refuse one),
    /// or its version is unusable.
    #[error(transparent)]
    Certificate(avsnode_signer::Error),
}

/// Everything the remote signer and its client can fail with. Never carries key material,
/// passwords or signatures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RemoteSignerError {
    /// The signer's configuration file could not be read.
    #[error("reading {}: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is not valid TOML for the schema (toml names the key and line).
    #[error("{}: {message}", path.display())]
    ParseConfig {
        /// The file.
        path: PathBuf,
        /// toml's message.
        message: String,
    },
    /// The configuration parsed but is not usable.
    #[error(
        "{} problem(s) in {}:\n{}",
        problems.len(),
        path.display(),
        problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
    )]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// Every problem found, each naming its key.
        problems: Vec<Problem>,
    },
    /// A certificate, key or CA file could not be read.
    #[error("{what} {}: {source}", path.display())]
    ReadFile {
        /// What the file is for (e.g. `tls.cert`, `client "node-1" certificate`).
        what: String,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A certificate file holds no PEM certificate.
    #[error("{what} {}: no PEM certificate in the file", path.display())]
    NoCertificate {
        /// What the file is for.
        what: String,
        /// The file.
        path: PathBuf,
    },
    /// Two `[[client]]` entries have the same certificate.
    #[error("clients {first:?} and {second:?} have the same certificate")]
    DuplicateClientCertificate {
        /// The first client.
        first: String,
        /// The second.
        second: String,
    },
    /// A signing key could not be unlocked.
    #[error(transparent)]
    Key(#[from] SignerError),
    /// The signer's ledger failed to open.
    #[error("the signer's ledger: {0}")]
    Ledger(#[source] LedgerError),
    /// The TLS configuration was refused (certificate and key that do not match, a bad CA).
    #[error("TLS setup failed for {what}")]
    Tls {
        /// Which side (`server`, or the client's URL).
        what: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The gRPC server failed.
    #[error("the signer's gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
    /// A blocking start-up step (unlocking keys, opening the ledger) panicked.
    #[error("{what} panicked")]
    Panicked {
        /// The step.
        what: &'static str,
    },
    /// The client could not reach the signer (refused connection, TLS handshake refused).
    #[error("connecting to the remote signer {url}")]
    Connect {
        /// The signer's URL.
        url: String,
        /// tonic's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The signer does not offer the configured key to this client.
    #[error(
        "the remote signer {url} has no key {key:?} for this client; it offers: {}",
        if available.is_empty() { "none".to_owned() } else { available.join(", ") }
    )]
    UnknownKey {
        /// The signer's URL.
        url: String,
        /// The configured key name.
        key: String,
        /// The names it offers this client.
        available: Vec<String>,
    },
    /// The signer refused to sign: it already signed a different digest for this key, domain and
    /// task (FAILED_PRECONDITION). Never retried.
    #[error("the remote signer {url} refused: {}", status.message())]
    Refused {
        /// The signer's URL.
        url: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// The signer does not know this client's certificate, or does not let it use the key
    /// (PERMISSION_DENIED).
    #[error("the remote signer {url} denied the call: {}", status.message())]
    Denied {
        /// The signer's URL.
        url: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// The signer is unreachable or overloaded (UNAVAILABLE, after the retries).
    #[error("the remote signer {url} is unavailable: {}", status.message())]
    Unavailable {
        /// The signer's URL.
        url: String,
        /// The last answer.
        status: tonic::Status,
    },
    /// No answer within the per-attempt timeout.
    #[error("the remote signer {url} did not answer within {}", humantime::format_duration(*after))]
    Timeout {
        /// The signer's URL.
        url: String,
        /// The timeout.
        after: Duration,
    },
    /// The circuit is open: the last calls failed, so calls fail at once for a while.
    #[error(
        "the remote signer {url} is marked down after repeated failures; next try in {}",
        humantime::format_duration(*retry_in)
    )]
    Down {
        /// The signer's URL.
        url: String,
        /// Until the next call goes through.
        retry_in: Duration,
    },
    /// Any other gRPC status from the signer.
    #[error("the remote signer {url} answered {}: {}", status.code(), status.message())]
    Status {
        /// The signer's URL.
        url: String,
        /// Its answer.
        status: tonic::Status,
    },
    /// The signer's answer is malformed (a signature of the wrong length, an unknown scheme).
    #[error("the remote signer {url} answered malformed data: {reason}")]
    BadResponse {
        /// The signer's URL.
        url: String,
        /// What is wrong.
        reason: &'static str,
    },
}

impl RemoteSignerError {
    /// Whether the signer could not be reached or did not answer (the node answers UNAVAILABLE);
    /// false for answers (refusals, denials, malformed requests) and configuration errors.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            RemoteSignerError::Connect { .. }
                | RemoteSignerError::Unavailable { .. }
                | RemoteSignerError::Timeout { .. }
                | RemoteSignerError::Down { .. }
        )
    }

    /// Whether the signer refused to sign (it already signed another output for the task).
    pub fn is_refusal(&self) -> bool {
        matches!(self, RemoteSignerError::Refused { .. })
    }
}

/// Reads a certificate or key file named in the configuration; the error names what it is for.
pub(super) async fn read_file(what: &str, path: &Path) -> Result<Vec<u8>, RemoteSignerError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| RemoteSignerError::ReadFile {
            what: what.to_owned(),
            path: path.to_owned(),
            source,
        })
}
