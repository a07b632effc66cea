//! Live signers: the keys named by `[[signer]]`, unlocked at start-up, and the two signatures a
//! result carries (DESIGN §4.2, §4.3).
//!
//! Signing methods are a closed set (STYLE §3), [`SigningKey`]: local keys, PKCS#11 tokens and the
//! remote signer. Every method signs only a [`SigningDigest`] (the remote signer computes it
//! itself from typed fields).

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use avsnode_keystore::{Curve, Keystore, Password};
use avsnode_signer::bn254::{self, HashToG1};
use avsnode_signer::messages::{AuthMessage, SigningDigest, keccak256};
use avsnode_signer::{Scheme, bls12_381, ecdsa};

use crate::config::{SignerBackend, SignerConfig};
use crate::hsm::{HsmError, Pin, Pkcs11Key, Pkcs11Spec};
use crate::remote_signer::{RemoteKey, RemoteSignerError, RemoteSignerSpec, SignFields};

/// Why a signer could not be loaded. Never carries key material or the password.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    /// A key or password file could not be read.
    #[error("{name}: reading {path}: {source}")]
    Read {
        /// The signer.
        name: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is readable by group or other.
    #[error(
        "{name}: {path} is readable by group or other (mode {mode:o}); run `chmod 600 {path}`, or accept it with allow_insecure_permissions (config) or --allow-insecure-permissions (command line)"
    )]
    InsecurePermissions {
        /// What the file is for (e.g. `signer "bn254-main"`, `password file`).
        name: String,
        /// The file.
        path: std::path::PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The keystore could not be parsed or decrypted (a wrong password says so).
    #[error("signer {name:?}: keystore {path}: {source}")]
    Keystore {
        /// The signer.
        name: String,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: avsnode_keystore::Error,
    },
    /// The keystore holds a key of another curve than the configured scheme.
    #[error("signer {name:?}: scheme {scheme} but the keystore holds a {curve} key")]
    WrongCurve {
        /// The signer.
        name: String,
        /// The configured scheme.
        scheme: Scheme,
        /// The keystore's curve.
        curve: Curve,
    },
    /// The decrypted secret is not a valid key, or does not match the file's public key.
    #[error("signer {name:?}: {reason}")]
    BadKey {
        /// The signer.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The backend does not fit the signer's configuration (e.g. a remote key of another scheme).
    #[error("signer {name:?}: {reason}")]
    Backend {
        /// The signer.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The PKCS#11 key could not be opened (the source says why).
    #[error("signer {name:?}")]
    Hsm {
        /// The signer.
        name: String,
        /// Why.
        #[source]
        source: Box<HsmError>,
    },
    /// The remote signer could not be reached or does not offer the key (the source says why).
    #[error("signer {name:?}")]
    Remote {
        /// The signer.
        name: String,
        /// Why.
        #[source]
        source: Box<RemoteSignerError>,
    },
}

/// A decrypted operator key of one of the three schemes.
pub enum LocalKey {
    /// secp256k1.
    Ecdsa(ecdsa::SecretKey),
    /// BN254.
    Bn254(bn254::SecretKey),
    /// BLS12-381.
    Bls12381(bls12_381::SecretKey),
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalKey({}, {})", self.scheme(), self.public_id())
    }
}

/// A key as the pipeline uses it, whatever holds it (DESIGN §4.5): decrypted in memory, on a
/// PKCS#11 token, or on a remote signer.
#[derive(Debug)]
pub enum SigningKey {
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

impl SigningKey {
    /// Opens a `[[signer]]`'s key: unlocks a keystore or logs in to the token (off the async
    /// workers), or connects to the remote signer and checks it offers the key with this scheme.
    pub async fn open(config: &SignerConfig) -> Result<SigningKey, SignerError> {
        let name = config.name.clone();
        let backend = config.backend().map_err(|reason| SignerError::Backend {
            name: name.clone(),
            reason,
        })?;
        let blocking = |f: Box<dyn FnOnce() -> Result<SigningKey, SignerError> + Send>| async {
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
                    LocalKey::load(&config).map(SigningKey::Local)
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
                        .map(SigningKey::Pkcs11)
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
                Ok(SigningKey::Remote(key))
            }
        }
        .and_then(|key: SigningKey| {
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
            SigningKey::Local(k) => k.scheme(),
            SigningKey::Pkcs11(_) => Scheme::Ecdsa,
            SigningKey::Remote(k) => k.scheme(),
        }
    }

    /// The metric label: `local`, `pkcs11` or `remote`.
    pub fn backend(&self) -> &'static str {
        match self {
            SigningKey::Local(_) => "local",
            SigningKey::Pkcs11(_) => "pkcs11",
            SigningKey::Remote(_) => "remote",
        }
    }

    /// The public key bytes, as [`LocalKey::public_bytes`].
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            SigningKey::Local(k) => k.public_bytes(),
            SigningKey::Pkcs11(k) => k.address().0.to_vec(),
            SigningKey::Remote(k) => k.public_bytes().to_vec(),
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
        if let SigningKey::Remote(k) = &**self {
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
        let key = self.clone();
        let (task_id, avs, operator, operator_set_id) = (
            fields.task_id,
            fields.avs,
            fields.operator,
            fields.operator_set_id,
        );
        tokio::task::spawn_blocking(move || {
            let auth = AuthMessage {
                task_id,
                avs,
                operator,
                operator_set_id,
                result_signature: &[],
            };
            match &*key {
                SigningKey::Local(k) => Ok(k.sign_result(&digest, auth)),
                SigningKey::Pkcs11(k) => pkcs11_sign_result(k, &digest, auth),
                SigningKey::Remote(_) => {
                    Err(SignError::Failed("remote key on the blocking path".into()))
                }
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

impl LocalKey {
    /// Generates a fresh key (for `keys generate` and the demo).
    pub fn generate(scheme: Scheme) -> LocalKey {
        let mut rng = rand::rngs::OsRng;
        match scheme {
            Scheme::Ecdsa => LocalKey::Ecdsa(ecdsa::SecretKey::random(&mut rng)),
            Scheme::Bn254 => LocalKey::Bn254(bn254::SecretKey::random(&mut rng)),
            Scheme::Bls12381 => LocalKey::Bls12381(bls12_381::SecretKey::random(&mut rng)),
        }
    }

    /// Decodes a raw 32-byte big-endian secret.
    pub fn from_secret(scheme: Scheme, secret: &[u8]) -> Result<LocalKey, avsnode_signer::Error> {
        Ok(match scheme {
            Scheme::Ecdsa => LocalKey::Ecdsa(ecdsa::SecretKey::from_bytes(secret)?),
            Scheme::Bn254 => LocalKey::Bn254(bn254::SecretKey::from_bytes(secret)?),
            Scheme::Bls12381 => LocalKey::Bls12381(bls12_381::SecretKey::from_bytes(secret)?),
        })
    }

    /// Decodes the secret of a keystore file. BN254 keystores written by Hourglass may hold an
    /// unreduced scalar; it is reduced mod r (see `bn254::SecretKey::from_keystore_bytes`).
    pub fn from_keystore_secret(
        scheme: Scheme,
        secret: &[u8],
    ) -> Result<LocalKey, avsnode_signer::Error> {
        match scheme {
            Scheme::Bn254 => Ok(LocalKey::Bn254(bn254::SecretKey::from_keystore_bytes(
                secret,
            )?)),
            _ => LocalKey::from_secret(scheme, secret),
        }
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        match self {
            LocalKey::Ecdsa(_) => Scheme::Ecdsa,
            LocalKey::Bn254(_) => Scheme::Bn254,
            LocalKey::Bls12381(_) => Scheme::Bls12381,
        }
    }

    /// The public key bytes that identify the key: the 20-byte address for ECDSA, the 128-byte
    /// G2 key for BN254, the 48-byte key for BLS12-381.
    pub fn public_bytes(&self) -> Vec<u8> {
        match self {
            LocalKey::Ecdsa(k) => k.public_key().address().0.to_vec(),
            LocalKey::Bn254(k) => k.public_key_g2().to_wire().to_vec(),
            LocalKey::Bls12381(k) => k.public_key().to_bytes().to_vec(),
        }
    }

    /// A short public identifier for logs: the address, or the start of the public key.
    pub fn public_id(&self) -> String {
        let bytes = self.public_bytes();
        match self {
            LocalKey::Ecdsa(_) => format!("0x{}", hex::encode(bytes)),
            _ => format!("0x{}…", hex::encode(&bytes[..8])),
        }
    }

    /// The ledger's key id: `keccak256(public_bytes)`.
    pub fn key_id(&self) -> [u8; 32] {
        keccak256(&self.public_bytes())
    }

    /// Signs a certificate digest: BN254 with `H_sol` (what the contracts verify).
    pub fn sign_certificate(&self, digest: &SigningDigest) -> Vec<u8> {
        match self {
            LocalKey::Ecdsa(k) => k.sign(digest).to_bytes().to_vec(),
            LocalKey::Bn254(k) => k.sign(digest, HashToG1::Solidity).to_wire().to_vec(),
            LocalKey::Bls12381(k) => k.sign(digest).to_bytes().to_vec(),
        }
    }

    /// Signs the auth message: BN254 with the RFC 9380 map (DESIGN §4.3).
    pub fn sign_auth(&self, auth: &AuthMessage<'_>) -> Vec<u8> {
        let digest = auth.digest();
        match self {
            LocalKey::Ecdsa(k) => k.sign(&digest).to_bytes().to_vec(),
            LocalKey::Bn254(k) => k.sign(&digest, HashToG1::Rfc9380).to_wire().to_vec(),
            LocalKey::Bls12381(k) => k.sign(&digest).to_bytes().to_vec(),
        }
    }

    /// Signs a task's certificate digest, then the auth message over that signature.
    pub fn sign_result(&self, digest: &SigningDigest, auth: AuthMessage<'_>) -> ResultSignatures {
        let result = self.sign_certificate(digest);
        let auth = self.sign_auth(&AuthMessage {
            result_signature: &result,
            ..auth
        });
        ResultSignatures { result, auth }
    }

    /// Unlocks a `[[signer]]`: checks file permissions, decrypts, checks the scheme and that the
    /// secret matches the keystore's public key where the file records one.
    pub fn load(config: &SignerConfig) -> Result<LocalKey, SignerError> {
        let name = &config.name;
        let Ok(SignerBackend::Keystore {
            keystore: keystore_path,
            password_file,
        }) = config.backend()
        else {
            return Err(SignerError::Backend {
                name: name.clone(),
                reason: "not a keystore signer".into(),
            });
        };
        for path in [keystore_path, password_file] {
            check_permissions(
                &format!("signer {name:?}"),
                path,
                config.allow_insecure_permissions,
            )?;
        }
        let password_text =
            std::fs::read_to_string(password_file).map_err(|source| SignerError::Read {
                name: format!("signer {name:?}"),
                path: password_file.to_owned(),
                source,
            })?;
        let password = Password::from_file_contents(&zeroize::Zeroizing::new(password_text));
        let keystore_error = |source| SignerError::Keystore {
            name: name.clone(),
            path: keystore_path.to_owned(),
            source,
        };
        let keystore = Keystore::read(keystore_path).map_err(keystore_error)?;
        let expected_curve = match config.scheme {
            Scheme::Ecdsa => Curve::Secp256k1,
            Scheme::Bn254 => Curve::Bn254,
            Scheme::Bls12381 => Curve::Bls12381,
        };
        if keystore.curve() != expected_curve {
            return Err(SignerError::WrongCurve {
                name: name.clone(),
                scheme: config.scheme,
                curve: keystore.curve(),
            });
        }
        let secret = keystore.decrypt(&password).map_err(keystore_error)?;
        let key =
            LocalKey::from_keystore_secret(config.scheme, secret.as_bytes()).map_err(|e| {
                SignerError::BadKey {
                    name: name.clone(),
                    reason: e.to_string(),
                }
            })?;
        key.check_recorded_public_key(&keystore)
            .map_err(|reason| SignerError::BadKey {
                name: name.clone(),
                reason,
            })?;
        Ok(key)
    }

    /// The keystores leave `pubkey`/`address` outside their checksum: a decrypted key that does
    /// not match them means a damaged or tampered file.
    fn check_recorded_public_key(&self, keystore: &Keystore) -> Result<(), String> {
        let (recorded, ours) = match (keystore, self) {
            (Keystore::Web3(w), LocalKey::Ecdsa(k)) => match w.address() {
                Some(a) => (
                    a.trim_start_matches("0x").to_lowercase(),
                    hex::encode(k.public_key().address().0),
                ),
                None => return Ok(()),
            },
            (Keystore::Eip2335(e), LocalKey::Bls12381(k)) => (
                e.pubkey_hex().to_lowercase(),
                hex::encode(k.public_key().to_bytes()),
            ),
            (Keystore::Eip2335(e), LocalKey::Bn254(k)) => {
                let recorded = e.pubkey_hex().to_lowercase();
                // The Hourglass format records the 128-byte G2 key; the Cerberus variant a
                // compressed G1 key, which we do not decode: only the G2 form is compared.
                if recorded.len() != 256 {
                    return Ok(());
                }
                (recorded, hex::encode(k.public_key_g2().to_wire()))
            }
            _ => return Err("keystore format does not match the scheme".into()),
        };
        if recorded.is_empty() || recorded == ours {
            Ok(())
        } else {
            Err(format!(
                "the decrypted key's public key 0x{ours} does not match the keystore's 0x{recorded}"
            ))
        }
    }
}

/// Refuses key and password files that group or other can read, unless allowed.
pub fn check_permissions(name: &str, path: &Path, allow_insecure: bool) -> Result<(), SignerError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| SignerError::Read {
        name: name.to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 && !allow_insecure {
        return Err(SignerError::InsecurePermissions {
            name: name.to_owned(),
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}
