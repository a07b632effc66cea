//! `avsnode signer serve`: the remote signer's gRPC service over mutual TLS.
//!
//! Each call is attributed to a `[[client]]` by the SHA-256 of its TLS leaf certificate (DER); a
//! client may list and use only the keys configured for it, and any other key is answered as if
//! it did not exist. Signing follows the node's order (DESIGN §5): the ledger's record for
//! (key, domain, task) answers a repeat with the stored signatures and refuses a different
//! digest before anything is signed; otherwise the signer signs off the async workers, commits
//! the signatures durably, and answers from the committed record.
//!
//! Configuration (TOML; relative paths are relative to the file):
//!
//! ```toml
//! listen = "127.0.0.1:9500"
//! data_dir = "signer-data"            # the signer's own sign-once ledger
//! # ledger_commit_delay = "5ms"       # group commit: one fsync for the records of this window
//!
//! [tls]
//! cert = "server.pem"
//! key = "server.key"
//! client_ca = "ca.pem"                # client certificates must chain to it
//! # require_client_cert = true        # default; false lets clients connect without one
//!
//! [[key]]                             # the fields of the node's [[signer]]
//! name = "bn254-main"
//! scheme = "bn254"
//! keystore = "keys/bn254.json"
//! password_file = "keys/bn254.password"
//!
//! [[client]]
//! name = "node-1"
//! certificate = "node1.pem"           # identified by the SHA-256 of its DER
//! keys = ["bn254-main"]
//! ```
//!
//! With `require_client_cert = false`, one `[[client]]` may omit `certificate`: it stands for every
//! client that connects without one. That is logged as a warning at start-up.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use avsnode_proto::signer::signer_server::{Signer, SignerServer};
use avsnode_proto::signer::{
    KeyInfo, ListKeysRequest, ListKeysResponse, SignResultRequest, SignResultResponse,
};
use avsnode_signer::messages::{Address, AuthMessage, EcdsaVerifier, ResultCertificate, TaskId};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status};
use tracing::{debug, error, info, warn};

use super::{FieldError, RemoteSignerError, read_file};
use crate::LocalKey;
use crate::definition::duration;
use crate::{Problem, SignerBackend, SignerDefinition};
use avsnode_ledger::settings::PostgresConfig;
use avsnode_ledger::{
    Claim, EmbeddedLedger, Ledger, LedgerError, LedgerOptions, Origin, SignOnceError, Signatures,
};

/// The longest one call may take (a sign is milliseconds; this bounds a caller that never ends
/// its request).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The remote signer's configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerServiceConfig {
    /// Where to listen, e.g. `127.0.0.1:9500` (the caller binds it; see [`serve`]).
    pub listen: SocketAddr,
    /// The signer's ledger directory (one signer per directory; an OS lock enforces it). Not
    /// used with `[postgres]`.
    pub data_dir: PathBuf,
    /// `[postgres]`: keep the signer's sign-once ledger in PostgreSQL instead, shared by
    /// several signer hosts (the same keys as the node's `[ledger.postgres]`).
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// How long the ledger waits for more records to share one durable commit (default `"5ms"`,
    /// at most `"100ms"`): the latency each new signature pays for group commit.
    #[serde(default = "default_commit_delay", deserialize_with = "duration")]
    pub ledger_commit_delay: Duration,
    /// `[tls]`.
    pub tls: SignerTlsConfig,
    /// `[[key]]`: the keys this signer holds, as the node's `[[signer]]`.
    #[serde(default, rename = "key")]
    pub keys: Vec<SignerDefinition>,
    /// `[[client]]`: who may use which keys.
    #[serde(default, rename = "client")]
    pub clients: Vec<SignerClientConfig>,
}

/// `[tls]`: the server's identity and the CA its clients' certificates chain to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerTlsConfig {
    /// The server certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA that issues client certificates (PEM).
    pub client_ca: PathBuf,
    /// Refuse TLS clients without a certificate (default true).
    #[serde(default = "yes")]
    pub require_client_cert: bool,
}

fn yes() -> bool {
    true
}

fn default_commit_delay() -> Duration {
    LedgerOptions::default().commit_delay
}

/// `[[client]]`: one node allowed to use some keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerClientConfig {
    /// A name for logs.
    pub name: String,
    /// Its TLS certificate (PEM; the first certificate in the file). Only with
    /// `require_client_cert = false` may one client omit it (it then stands for clients without a
    /// certificate).
    #[serde(default)]
    pub certificate: Option<PathBuf>,
    /// The `[[key]]` names it may use.
    pub keys: Vec<String>,
}

impl SignerServiceConfig {
    /// Reads, resolves relative paths against the file's folder, and validates.
    pub fn load(path: &Path) -> Result<SignerServiceConfig, RemoteSignerError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| RemoteSignerError::ReadConfig {
                path: path.to_owned(),
                source,
            })?;
        SignerServiceConfig::from_toml(&text, path)
    }

    /// As [`SignerServiceConfig::load`], from text; `path` is the file it came from.
    pub fn from_toml(text: &str, path: &Path) -> Result<SignerServiceConfig, RemoteSignerError> {
        let mut config: SignerServiceConfig =
            toml::from_str(text).map_err(|e| RemoteSignerError::ParseConfig {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(RemoteSignerError::InvalidConfig {
                path: path.to_owned(),
                problems,
            })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        if let Some(postgres) = &mut self.postgres {
            postgres.resolve_paths(resolve);
        }
        resolve(&mut self.tls.cert);
        resolve(&mut self.tls.key);
        resolve(&mut self.tls.client_ca);
        for key in &mut self.keys {
            key.resolve_paths(base);
        }
        for client in &mut self.clients {
            if let Some(certificate) = &mut client.certificate {
                resolve(certificate);
            }
        }
    }

    /// Every problem with this configuration (empty when it is usable).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |path: String, message: String| out.push(Problem { path, message });

        if let Some(postgres) = &self.postgres {
            postgres.problems("postgres", &mut problem);
        }
        if self.ledger_commit_delay > Duration::from_millis(100) {
            problem(
                "ledger_commit_delay".into(),
                "at most 100ms: every new signature waits this long".into(),
            );
        }

        let mut keys = HashSet::new();
        for (i, key) in self.keys.iter().enumerate() {
            for p in key.problems(&format!("key[{i}]")) {
                problem(p.path, p.message);
            }
            if !matches!(key.backend(), Ok(SignerBackend::Keystore { .. }) | Err(_)) {
                problem(
                    format!("key[{i}]"),
                    "the remote signer holds keystore keys only (keystore + password_file)".into(),
                );
            }
            if !key.name.is_empty() && !keys.insert(key.name.as_str()) {
                problem(
                    format!("key[{i}].name"),
                    format!("duplicate key name {:?}", key.name),
                );
            }
        }
        if self.keys.is_empty() {
            problem(
                "key".into(),
                "no [[key]]: the signer would hold nothing".into(),
            );
        }

        let mut clients = HashSet::new();
        let mut anonymous = None;
        for (i, client) in self.clients.iter().enumerate() {
            if client.name.is_empty() {
                problem(format!("client[{i}].name"), "must not be empty".into());
            } else if !clients.insert(client.name.as_str()) {
                problem(
                    format!("client[{i}].name"),
                    format!("duplicate client name {:?}", client.name),
                );
            }
            if client.certificate.is_none() {
                if self.tls.require_client_cert {
                    problem(
                        format!("client[{i}].certificate"),
                        "required (clients are identified by their certificate); only with \
                         tls.require_client_cert = false may one client have none"
                            .into(),
                    );
                } else if anonymous.replace(i).is_some() {
                    problem(
                        format!("client[{i}].certificate"),
                        "only one client may go without a certificate".into(),
                    );
                }
            }
            for (j, key) in client.keys.iter().enumerate() {
                if !keys.contains(key.as_str()) {
                    problem(
                        format!("client[{i}].keys[{j}]"),
                        format!("no [[key]] named {key:?}"),
                    );
                }
            }
        }
        if self.clients.is_empty() {
            problem(
                "client".into(),
                "no [[client]]: nobody could use the signer".into(),
            );
        }
        out
    }
}

/// Serves the signer on the connections of `incoming` until `shutdown` completes: unlocks every
/// `[[key]]` (off the async workers), opens the ledger in `data_dir`, and answers over mutual
/// TLS. The caller binds `listen` and bounds the connections it hands over (`avsnode signer
/// serve` gates them as the node gates its own listeners).
///
/// Returns once the server has stopped and the ledger is flushed.
pub async fn serve<I, IO, IE>(
    config: SignerServiceConfig,
    incoming: I,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RemoteSignerError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tls = &config.tls;
    let identity = Identity::from_pem(
        read_file("tls.cert", &tls.cert).await?,
        read_file("tls.key", &tls.key).await?,
    );
    let client_ca = Certificate::from_pem(read_file("tls.client_ca", &tls.client_ca).await?);
    let tls_config = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(client_ca)
        .client_auth_optional(!tls.require_client_cert);

    let clients = load_clients(&config).await?;
    let key_configs = config.keys.clone();
    let keys = tokio::task::spawn_blocking(move || {
        key_configs
            .iter()
            .map(|c| {
                let key = LocalKey::load(c)?;
                Ok((c.name.clone(), ServedKey::new(c.name.clone(), key)))
            })
            .collect::<Result<HashMap<_, _>, RemoteSignerError>>()
    })
    .await
    .map_err(|_| RemoteSignerError::Panicked {
        what: "unlocking the keys",
    })??;
    let ledger = match &config.postgres {
        Some(postgres) => Ledger::Postgres(
            postgres
                .connect()
                .await
                .map_err(RemoteSignerError::Ledger)?,
        ),
        None => {
            let data_dir = config.data_dir.clone();
            let options = LedgerOptions {
                commit_delay: config.ledger_commit_delay,
                ..LedgerOptions::default()
            };
            let opened =
                tokio::task::spawn_blocking(move || EmbeddedLedger::open_with(&data_dir, options))
                    .await
                    .map_err(|_| RemoteSignerError::Panicked {
                        what: "opening the ledger",
                    })?
                    .map_err(RemoteSignerError::Ledger)?;
            Ledger::Embedded(opened)
        }
    };

    if !tls.require_client_cert {
        warn!(
            "tls.require_client_cert = false: clients without a certificate can connect to the \
             signer"
        );
    }
    let service = SignerService {
        inner: Arc::new(Inner {
            keys,
            clients,
            ledger: ledger.clone(),
            lease: config
                .postgres
                .as_ref()
                .map_or(Duration::from_secs(5), |p| p.claim_lease),
        }),
    };
    info!(
        listen = %config.listen,
        keys = config.keys.len(),
        clients = config.clients.len(),
        ledger = ledger.backend(),
        "signer serving"
    );
    let served = Server::builder()
        .tls_config(tls_config)
        .map_err(|source| RemoteSignerError::Tls {
            what: "the signer's server".into(),
            source,
        })?
        .timeout(CALL_TIMEOUT)
        .add_service(SignerServer::new(service))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(RemoteSignerError::Serve);
    let flushed = ledger.close().await.map_err(RemoteSignerError::Ledger);
    info!("signer stopped");
    served.and(flushed)
}

/// The SHA-256 of the first certificate's DER in a PEM file.
pub(crate) async fn certificate_fingerprint(
    what: &str,
    path: &Path,
) -> Result<[u8; 32], RemoteSignerError> {
    let pem = read_file(what, path).await?;
    let der =
        CertificateDer::from_pem_slice(&pem).map_err(|_| RemoteSignerError::NoCertificate {
            what: what.to_owned(),
            path: path.to_owned(),
        })?;
    Ok(Sha256::digest(der.as_ref()).into())
}

async fn load_clients(config: &SignerServiceConfig) -> Result<Clients, RemoteSignerError> {
    let mut clients = Clients::default();
    for client in &config.clients {
        let entry = Arc::new(Client {
            name: client.name.clone(),
            keys: client.keys.iter().cloned().collect(),
        });
        match &client.certificate {
            Some(path) => {
                let what = format!("client {:?} certificate", client.name);
                let fingerprint = certificate_fingerprint(&what, path).await?;
                if let Some(first) = clients.by_certificate.insert(fingerprint, entry) {
                    return Err(RemoteSignerError::DuplicateClientCertificate {
                        first: first.name.clone(),
                        second: client.name.clone(),
                    });
                }
            }
            None => clients.anonymous = Some(entry),
        }
    }
    Ok(clients)
}

/// One unlocked key with what the ledger and `ListKeys` need.
struct ServedKey {
    name: String,
    key: Arc<LocalKey>,
    public: Vec<u8>,
    key_id: [u8; 32],
}

impl ServedKey {
    fn new(name: String, key: LocalKey) -> ServedKey {
        ServedKey {
            name,
            public: key.public_bytes(),
            key_id: key.key_id(),
            key: Arc::new(key),
        }
    }
}

#[derive(Default)]
struct Clients {
    by_certificate: HashMap<[u8; 32], Arc<Client>>,
    /// The client without a certificate (only with `require_client_cert = false`).
    anonymous: Option<Arc<Client>>,
}

struct Client {
    name: String,
    keys: HashSet<String>,
}

struct Inner {
    keys: HashMap<String, ServedKey>,
    clients: Clients,
    ledger: Ledger,
    /// How long a claim on the shared ledger holds a task (`[postgres] claim_lease`).
    lease: Duration,
}

#[derive(Clone)]
struct SignerService {
    inner: Arc<Inner>,
}

impl fmt::Debug for SignerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignerService")
            .field("keys", &self.inner.keys.len())
            .field("ledger", &self.inner.ledger)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// The client a call comes from, by the SHA-256 of its leaf certificate.
    fn client<T>(&self, request: &Request<T>) -> Result<Arc<Client>, Status> {
        let found = match request.peer_certs() {
            Some(certs) if !certs.is_empty() => {
                let fingerprint: [u8; 32] = Sha256::digest(certs[0].as_ref()).into();
                let client = self.clients.by_certificate.get(&fingerprint).cloned();
                if client.is_none() {
                    warn!(
                        certificate_sha256 = %hex::encode(fingerprint),
                        "signer call from an unknown client certificate"
                    );
                }
                client
            }
            _ => self.clients.anonymous.clone(),
        };
        found.ok_or_else(|| Status::permission_denied("this client is not known to the signer"))
    }

    /// The key, if this client may use it; otherwise the same answer as for a key that does not
    /// exist, so no client learns another's key names.
    fn key(&self, client: &Client, name: &str) -> Result<&ServedKey, Status> {
        self.keys
            .get(name)
            .filter(|_| client.keys.contains(name))
            .ok_or_else(|| {
                warn!(client = %client.name, key = %name, "signer call for a key the client may not use");
                Status::permission_denied(format!("no key {name:?} for this client"))
            })
    }

    /// The ledger's `sign_once`, which decides which signatures leave.
    async fn sign(
        &self,
        client: &Client,
        key: &ServedKey,
        request: SignResultRequest,
    ) -> Result<Signatures, Status> {
        let parsed = ParsedRequest::parse(&request).map_err(invalid)?;
        let certificate = ResultCertificate::new(key.key.scheme(), parsed.verifier.as_ref())
            .map_err(|e| invalid(FieldError::Certificate(e)))?;
        let claim = Claim {
            task_id: parsed.task_id,
            origin: Origin {
                avs: parsed.avs,
                operator_set_id: parsed.operator_set_id,
            },
            reference_timestamp: parsed.reference_timestamp,
            output: request.output,
        };
        let signing_key = Arc::clone(&key.key);
        let auth = AuthFields {
            task_id: parsed.task_id,
            avs: parsed.avs,
            operator: parsed.operator,
            operator_set_id: parsed.operator_set_id,
        };
        let sign = |digest| async move {
            tokio::task::spawn_blocking(move || {
                let signed = signing_key.sign_result(
                    &digest,
                    AuthMessage {
                        task_id: auth.task_id,
                        avs: auth.avs,
                        operator: auth.operator,
                        operator_set_id: auth.operator_set_id,
                        result_signature: &[],
                    },
                );
                Signatures {
                    result: signed.result,
                    auth: signed.auth,
                }
            })
            .await
        };
        match self
            .ledger
            .claim_and_sign(
                key.key_id,
                &certificate,
                claim,
                self.lease,
                tokio::time::Instant::now() + CALL_TIMEOUT / 3,
                sign,
            )
            .await
        {
            Ok(signed) => {
                if signed.fresh {
                    debug!(client = %client.name, key = %key.name, task_id = %parsed.task_id, "signer signed");
                } else {
                    debug!(client = %client.name, key = %key.name, task_id = %parsed.task_id, "signer answered from its ledger");
                }
                signed
                    .record
                    .signatures
                    .ok_or_else(|| Status::internal("committed record without signatures"))
            }
            Err(SignOnceError::Ledger(LedgerError::Conflict { refusal, .. })) => {
                error!(
                    client = %client.name, key = %key.name, task_id = %parsed.task_id,
                    "signer refused to sign a task again: already {refusal}"
                );
                Err(Status::failed_precondition(format!(
                    "refusing to sign task {} with key {:?}: already {refusal}",
                    parsed.task_id, key.name
                )))
            }
            Err(SignOnceError::Ledger(
                e @ (LedgerError::Unavailable { .. } | LedgerError::Busy { .. }),
            )) => {
                warn!(error = %e, "the signer's ledger cannot answer now");
                Err(Status::unavailable(e.to_string()))
            }
            Err(SignOnceError::Ledger(e)) => Err(ledger_failed(e)),
            Err(SignOnceError::Sign(_)) => Err(Status::internal("signing panicked")),
        }
    }
}

/// The fields the auth signature binds, moved to the signing thread.
#[derive(Clone, Copy)]
struct AuthFields {
    task_id: TaskId,
    avs: Address,
    operator: Address,
    operator_set_id: u32,
}

fn invalid(e: FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

fn ledger_failed(e: LedgerError) -> Status {
    error!(error = %e, "the signer's ledger failed");
    Status::internal("the signer's ledger failed")
}

/// The request's fields, parsed (the output stays in the request).
struct ParsedRequest {
    task_id: TaskId,
    avs: Address,
    operator: Address,
    verifier: Option<EcdsaVerifier>,
    operator_set_id: u32,
    reference_timestamp: u32,
}

impl ParsedRequest {
    fn parse(request: &SignResultRequest) -> Result<ParsedRequest, FieldError> {
        let task_id = TaskId(
            request
                .task_id
                .as_slice()
                .try_into()
                .map_err(|_| FieldError::TaskIdLength(request.task_id.len()))?,
        );
        let address = |field: &'static str, text: &str| {
            text.parse::<Address>()
                .map_err(|source| FieldError::Address { field, source })
        };
        let verifier = match (
            request.verifier.is_empty(),
            request.verifier_version.is_empty(),
        ) {
            (true, true) => None,
            (false, false) => Some(EcdsaVerifier {
                address: address("verifier", &request.verifier)?,
                version: request.verifier_version.clone(),
            }),
            _ => return Err(FieldError::HalfVerifier),
        };
        Ok(ParsedRequest {
            task_id,
            avs: address("avs", &request.avs)?,
            operator: address("operator", &request.operator)?,
            verifier,
            operator_set_id: request.operator_set_id,
            reference_timestamp: request.reference_timestamp,
        })
    }
}

#[tonic::async_trait]
impl Signer for SignerService {
    async fn list_keys(
        &self,
        request: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        let client = self.inner.client(&request)?;
        let mut keys: Vec<KeyInfo> = self
            .inner
            .keys
            .values()
            .filter(|k| client.keys.contains(&k.name))
            .map(|k| KeyInfo {
                name: k.name.clone(),
                scheme: k.key.scheme().as_str().to_owned(),
                public_key: k.public.clone(),
            })
            .collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Response::new(ListKeysResponse { keys }))
    }

    async fn sign_result(
        &self,
        request: Request<SignResultRequest>,
    ) -> Result<Response<SignResultResponse>, Status> {
        let client = self.inner.client(&request)?;
        let request = request.into_inner();
        // Checked here so a denied call costs nothing more.
        self.inner.key(&client, &request.key)?;
        // Lookup-sign-commit runs to completion even if the client goes away (tonic drops the
        // handler's future then), so a retry finds the record.
        let inner = Arc::clone(&self.inner);
        let signatures = tokio::spawn(async move {
            let key = inner.key(&client, &request.key)?;
            inner.sign(&client, key, request).await
        })
        .await
        .map_err(|_| Status::internal("signing task panicked"))??;
        Ok(Response::new(SignResultResponse {
            result_signature: signatures.result,
            auth_signature: signatures.auth,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../../deploy/avsnode-signer.example.toml");
        let config = SignerServiceConfig::from_toml(
            text,
            Path::new("/etc/avsnode/avsnode-signer.example.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.keys.len(), 2);
        assert_eq!(config.data_dir, Path::new("/etc/avsnode/signer-data"));
        assert!(config.tls.require_client_cert);
    }

    #[test]
    fn keys_must_be_keystores() {
        let text = include_str!("../../../deploy/avsnode-signer.example.toml").replace(
            "keystore = \"keys/bn254.json\"\npassword_file = \"keys/bn254.pass\"",
            "remote = { url = \"https://other:9500\", ca = \"a\", cert = \"b\", key = \"c\" }",
        );
        let error = SignerServiceConfig::from_toml(&text, Path::new("signer.toml"))
            .expect_err("a remote key on the signer")
            .to_string();
        assert!(
            error.contains("key[1]: the remote signer holds keystore keys only"),
            "{error}"
        );
    }
}
