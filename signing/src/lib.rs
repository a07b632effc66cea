//! Signing methods (DESIGN §4.2, §4.3, §4.5): the keys named by `[[signer]]` ([`definition`]),
//! opened at start-up, and the two signatures a result carries.
//!
//! The methods are a closed set (STYLE §3), [`SigningMethod`]: a key decrypted from a keystore
//! ([`LocalKey`]), a key on a PKCS#11 token ([`pkcs11`]), and a key on a remote signer
//! ([`remote`]: the node's client and the `avsnode signer serve` service, which keeps its own
//! sign-once ledger through the same `Ledger::sign_once` as the node). Every method signs only a
//! [`SigningDigest`] (the remote signer computes it itself from typed fields).
//!
//! Depends on the ledger, the crypto and the keystore crates; not on the node.

use std::sync::Arc;

use avsnode_signer::Scheme;
use avsnode_signer::messages::{AuthMessage, SigningDigest, keccak256};

pub mod definition;
mod error;
mod local;
pub mod pkcs11;
pub mod remote;

pub use definition::{Problem, SignerBackend, SignerDefinition};
pub use error::{SignerError, check_permissions};
pub use local::{KeyFileError, LocalKey, scheme_of};

use pkcs11::{HsmError, Pin, Pkcs11Key, Pkcs11Spec};
use remote::{RemoteKey, RemoteSignerSpec, SignFields};

/// A key as the pipeline uses it, whatever holds it (DESIGN §4.5): decrypted in memory, on a
/// PKCS#11 token, or on a remote signer.
#[derive(Debug)]
pub enum SigningMethod {
    /// Decrypted from a keystore at start-up.
    Local(LocalKey),
    /// A secp256k1 key on a PKCS#11 token.
    Pkcs11(Pkcs11Key),
    /// A key on a remote signer.
    Remote(RemoteKey),
}

/// Why a task's signatures could not be made. Never carries key material.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The token or the remote signer is unreachable (retryable; the task is answered
    /// UNAVAILABLE).
    #[error("signer unavailable: {0}")]
    Unavailable(String),
    /// The remote signer refused: it already signed another output for this task.
    #[error("the remote signer refused: {0}")]
    Refused(String),
    /// Any other failure.
    #[error("signing failed: {0}")]
    Failed(String),
}

impl SigningMethod {
    /// Opens a `[[signer]]`'s key: unlocks a keystore or logs in to the token (off the async
    /// workers), or connects to the remote signer and checks it offers the key with this scheme.
    pub async fn open(config: &SignerDefinition) -> Result<SigningMethod, SignerError> {
        let name = config.name.clone();
        let backend = config.backend().map_err(|reason| SignerError::Backend {
            name: name.clone(),
            reason,
        })?;
        let blocking = |f: Box<dyn FnOnce() -> Result<SigningMethod, SignerError> + Send>| async {
            tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| SignerError::Backend {
                    name: config.name.clone(),
                    reason: format!("opening the key panicked: {e}"),
                })?
        };
        match backend {
            SignerBackend::Keystore { .. } => {
                let config = config.clone();
                blocking(Box::new(move || {
                    LocalKey::load(&config).map(SigningMethod::Local)
                }))
                .await
            }
            SignerBackend::Pkcs11(p) => {
                let key_id = match &p.key_id {
                    Some(id) => Some(hex::decode(id.trim_start_matches("0x")).map_err(|_| {
                        SignerError::Backend {
                            name: name.clone(),
                            reason: "pkcs11.key_id is not hex".into(),
                        }
                    })?),
                    None => None,
                };
                check_permissions(
                    &format!("signer {name:?} PIN file"),
                    &p.pin_file,
                    config.allow_insecure_permissions,
                )?;
                let pin =
                    std::fs::read_to_string(&p.pin_file).map_err(|source| SignerError::Read {
                        name: format!("signer {name:?} PIN file"),
                        path: p.pin_file.clone(),
                        source,
                    })?;
                let spec = Pkcs11Spec {
                    module: p.module.clone(),
                    token_label: p.token_label.clone(),
                    key_label: p.key_label.clone(),
                    key_id,
                    pin: Pin::from_file_contents(&zeroize::Zeroizing::new(pin)),
                };
                blocking(Box::new(move || {
                    Pkcs11Key::open(spec)
                        .map(SigningMethod::Pkcs11)
                        .map_err(|source| SignerError::Hsm {
                            name,
                            source: Box::new(source),
                        })
                }))
                .await
            }
            SignerBackend::Remote(r) => {
                check_permissions(
                    &format!("signer {name:?} client key"),
                    &r.key,
                    config.allow_insecure_permissions,
                )?;
                let spec = RemoteSignerSpec {
                    url: r.url.clone(),
                    ca: r.ca.clone(),
                    cert: r.cert.clone(),
                    key: r.key.clone(),
                    key_name: r.key_name.clone().unwrap_or_else(|| name.clone()),
                    timeout: r.timeout,
                };
                let key = RemoteKey::connect(spec)
                    .await
                    .map_err(|source| SignerError::Remote {
                        name: name.clone(),
                        source: Box::new(source),
                    })?;
                if key.scheme() != config.scheme {
                    return Err(SignerError::Backend {
                        name,
                        reason: format!(
                            "configured as {} but the remote signer's key {:?} is {}",
                            config.scheme,
                            key.key_name(),
                            key.scheme()
                        ),
                    });
                }
                Ok(SigningMethod::Remote(key))
            }
        }
        .and_then(|key: SigningMethod| {
            if key.scheme() == config.scheme {
                Ok(key)
            } else {
                Err(SignerError::Backend {
                    name: config.name.clone(),
                    reason: format!(
                        "configured as {} but the key is {}",
                        config.scheme,
                        key.scheme()
                    ),
                })
            }
        })
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            SigningMethod::Local(k) => k.scheme(),
            SigningMethod::Pkcs11(_) => Scheme::Ecdsa,
            SigningMethod::Remote(k) => k.scheme(),
        }
    }

    /// The metric label: `local`, `pkcs11` or `remote`.
    pub fn backend(&self) -> &'static str {
        match self {
            SigningMethod::Local(_) => "local",
            SigningMethod::Pkcs11(_) => "pkcs11",
            SigningMethod::Remote(_) => "remote",
        }
    }

    /// Whether the backend is known to be unable to sign now: a remote signer marked down after
    /// repeated unreachable calls. (A PKCS#11 token's loss shows on the next signature.)
    pub fn is_down(&self) -> bool {
        match self {
            SigningMethod::Remote(k) => k.is_down(),
            SigningMethod::Local(_) | SigningMethod::Pkcs11(_) => false,
        }
    }

    /// The public key bytes, as [`LocalKey::public_bytes`].
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            SigningMethod::Local(k) => k.public_bytes(),
            SigningMethod::Pkcs11(k) => k.address().0.to_vec(),
            SigningMethod::Remote(k) => k.public_bytes().to_vec(),
        }
    }

    /// A short public identifier for logs, as [`LocalKey::public_id`].
    pub fn public_id(&self) -> String {
        let bytes = self.public_bytes();
        match self.scheme() {
            Scheme::Ecdsa => format!("0x{}", hex::encode(bytes)),
            _ => format!("0x{}…", hex::encode(&bytes[..8.min(bytes.len())])),
        }
    }

    /// The ledger's key id: `keccak256(public_bytes)`. The same key has the same id whichever
    /// backend holds it, so moving a key to an HSM or a remote signer keeps its ledger records.
    pub fn key_id(&self) -> [u8; 32] {
        keccak256(&self.public_bytes())
    }

    /// Signs one result: the certificate digest (computed by the caller from `fields`), then the
    /// auth message over that signature. Local and PKCS#11 signing run off the async workers; a
    /// remote signer recomputes the digest from `fields` itself.
    pub async fn sign_result(
        self: &Arc<Self>,
        digest: SigningDigest,
        fields: SignFields<'_>,
    ) -> Result<ResultSignatures, SignError> {
        if let SigningMethod::Remote(k) = &**self {
            return k.sign_result(fields).await.map_err(|e| {
                if e.is_unavailable() {
                    SignError::Unavailable(e.to_string())
                } else if e.is_refusal() {
                    SignError::Refused(e.to_string())
                } else {
                    SignError::Failed(e.to_string())
                }
            });
        }
        // The auth message's result signature is filled in by the key, after the result's.
        let auth: AuthMessage<'static> = AuthMessage {
            task_id: fields.task_id,
            avs: fields.avs,
            operator: fields.operator,
            operator_set_id: fields.operator_set_id,
            result_signature: &[],
        };
        // A local ECDSA key signs both in about 100 µs: less than handing the work to a blocking
        // thread and back costs, so it signs here. Slower keys (BN254, BLS12-381, an HSM) go to
        // the blocking pool.
        if let SigningMethod::Local(k @ LocalKey::Ecdsa(_)) = &**self {
            return Ok(k.sign_result(&digest, auth));
        }
        let key = self.clone();
        tokio::task::spawn_blocking(move || match &*key {
            SigningMethod::Local(k) => Ok(k.sign_result(&digest, auth)),
            SigningMethod::Pkcs11(k) => pkcs11_sign_result(k, &digest, auth),
            SigningMethod::Remote(_) => {
                Err(SignError::Failed("remote key on the blocking path".into()))
            }
        })
        .await
        .map_err(|e| SignError::Failed(format!("signing panicked: {e}")))?
    }
}

fn pkcs11_sign_result(
    key: &Pkcs11Key,
    digest: &SigningDigest,
    auth: AuthMessage<'_>,
) -> Result<ResultSignatures, SignError> {
    let hsm_error = |e: HsmError| match e {
        HsmError::Unavailable { .. } => SignError::Unavailable(e.to_string()),
        e => SignError::Failed(e.to_string()),
    };
    let result = key.sign(digest).map_err(hsm_error)?.to_bytes().to_vec();
    let auth_digest = AuthMessage {
        result_signature: &result,
        ..auth
    }
    .digest();
    let auth = key
        .sign(&auth_digest)
        .map_err(hsm_error)?
        .to_bytes()
        .to_vec();
    Ok(ResultSignatures { result, auth })
}

/// The result and auth signatures of one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultSignatures {
    /// Over the certificate digest (verified on chain).
    pub result: Vec<u8>,
    /// Over the 160-byte auth message binding the result to this operator.
    pub auth: Vec<u8>,
}
