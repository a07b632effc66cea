//! `[[signer]]`: where a signing key is, as the configuration names it, and what is wrong with it.
//!
//! The node's configuration and the remote signer's (`[[key]]`) both hold these definitions;
//! each checks its own problems with key paths, collected, never fail-fast. The vocabulary every
//! configuration of the project shares (a [`Problem`], durations, scheme names) is here, at the
//! bottom of the crates that read configuration.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use avsnode_signer::Scheme;
use serde::{Deserialize, Deserializer};

pub use avsnode_ledger::settings::{MAX_DURATION, duration};

/// Deserializes a scheme name (`ecdsa`, `bn254`, `bls12-381`).
pub fn scheme<'de, D: Deserializer<'de>>(d: D) -> Result<Scheme, D::Error> {
    String::deserialize(d)?
        .parse()
        .map_err(serde::de::Error::custom)
}

/// One thing wrong with a configuration, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// E.g. `avs[0].operator_sets[1].signer`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// `[[signer]]`: a key, opened at start-up. Exactly one backend: a keystore file (`keystore` and
/// `password_file`), a PKCS#11 token (`pkcs11`) or a remote signer (`remote`) (DESIGN §4.5).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignerDefinition {
    /// The name operator sets refer to.
    pub name: String,
    /// `ecdsa`, `bn254` or `bls12-381`.
    #[serde(deserialize_with = "scheme")]
    pub scheme: Scheme,
    /// The keystore file: Web3 Secret Storage v3 for ecdsa, EIP-2335 for bn254 and bls12-381.
    #[serde(default)]
    pub keystore: Option<PathBuf>,
    /// A file holding the keystore's password (one trailing newline is ignored). Environment
    /// override: `AVSNODE_SIGNER_<NAME>_PASSWORD_FILE` (name upper-cased, `-` as `_`).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// A key on a PKCS#11 token (secp256k1 ECDSA only).
    #[serde(default)]
    pub pkcs11: Option<Pkcs11SignerDefinition>,
    /// A key held by a remote signer (`avsnode signer serve`), reached over mutual TLS.
    #[serde(default)]
    pub remote: Option<RemoteSignerDefinition>,
    /// Accept key, password, PIN and client-key files readable by group or other (default false).
    #[serde(default)]
    pub allow_insecure_permissions: bool,
}

/// `pkcs11 = { module, token_label, key_label | key_id, pin_file }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11SignerDefinition {
    /// The PKCS#11 module, e.g. `/usr/lib/softhsm/libsofthsm2.so`.
    pub module: PathBuf,
    /// The token's label.
    pub token_label: String,
    /// The private key's `CKA_LABEL` (or give `key_id`).
    #[serde(default)]
    pub key_label: Option<String>,
    /// The private key's `CKA_ID` in hex (or give `key_label`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// A file holding the user PIN (one trailing newline is ignored). Environment override:
    /// `AVSNODE_SIGNER_<NAME>_PIN_FILE`.
    pub pin_file: PathBuf,
}

/// `remote = { url, ca, cert, key, key_name, timeout }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSignerDefinition {
    /// `https://host:port`; the host must match the signer's certificate.
    pub url: String,
    /// The CA that issued the signer's certificate (PEM).
    pub ca: PathBuf,
    /// This node's client certificate (PEM).
    pub cert: PathBuf,
    /// This node's client key (PEM).
    pub key: PathBuf,
    /// The key's `[[key]]` name on the signer (default: this signer's name).
    #[serde(default)]
    pub key_name: Option<String>,
    /// Timeout of one attempt (default `"2s"`); UNAVAILABLE answers are retried twice.
    #[serde(default = "default_remote_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
}

/// Where a `[[signer]]`'s key is, once the configuration is valid.
#[derive(Debug, Clone, Copy)]
pub enum SignerBackend<'a> {
    /// A keystore file and its password file.
    Keystore {
        /// The keystore.
        keystore: &'a Path,
        /// The password file.
        password_file: &'a Path,
    },
    /// A PKCS#11 token.
    Pkcs11(&'a Pkcs11SignerDefinition),
    /// A remote signer.
    Remote(&'a RemoteSignerDefinition),
}

impl SignerDefinition {
    /// The backend, or what is wrong with the choice (the message names the keys involved).
    pub fn backend(&self) -> Result<SignerBackend<'_>, String> {
        match (
            &self.keystore,
            &self.password_file,
            &self.pkcs11,
            &self.remote,
        ) {
            (Some(keystore), Some(password_file), None, None) => Ok(SignerBackend::Keystore {
                keystore,
                password_file,
            }),
            (Some(_), None, None, None) => Err("keystore needs password_file".into()),
            (None, Some(_), None, None) => Err("password_file without keystore".into()),
            (None, None, Some(pkcs11), None) => Ok(SignerBackend::Pkcs11(pkcs11)),
            (None, None, None, Some(remote)) => Ok(SignerBackend::Remote(remote)),
            (None, None, None, None) => Err(
                "no key: give keystore + password_file, pkcs11 = { … } or remote = { … }".into(),
            ),
            _ => Err(
                "more than one backend: give exactly one of keystore + password_file, pkcs11, remote"
                    .into(),
            ),
        }
    }

    /// The backend's metric label: `local`, `pkcs11` or `remote`.
    pub fn backend_label(&self) -> &'static str {
        match self.backend() {
            Ok(SignerBackend::Pkcs11(_)) => "pkcs11",
            Ok(SignerBackend::Remote(_)) => "remote",
            _ => "local",
        }
    }

    /// Problems with this signer, with key paths under `at` (e.g. `signer[0]`).
    pub fn problems(&self, at: &str) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |key: &str, message: String| {
            out.push(Problem {
                path: format!("{at}{key}"),
                message,
            })
        };
        if self.name.is_empty() {
            problem(".name", "must not be empty".into());
        }
        match self.backend() {
            Err(message) => problem("", message),
            Ok(SignerBackend::Keystore { .. }) => {}
            Ok(SignerBackend::Pkcs11(p)) => {
                if self.scheme != Scheme::Ecdsa {
                    problem(
                        ".pkcs11",
                        format!(
                            "scheme {} cannot use PKCS#11: PKCS#11 has no pairing curves, so \
                             pkcs11 signers are scheme = \"ecdsa\" (secp256k1) only; keep {} keys \
                             in a keystore or a remote signer",
                            self.scheme, self.scheme
                        ),
                    );
                }
                if p.token_label.is_empty() {
                    problem(".pkcs11.token_label", "must not be empty".into());
                }
                match (&p.key_label, &p.key_id) {
                    (Some(_), None) => {}
                    (None, Some(id)) => {
                        if hex::decode(id.trim_start_matches("0x")).map_or(true, |id| id.is_empty())
                        {
                            problem(
                                ".pkcs11.key_id",
                                format!("{id:?} is not a non-empty hex string"),
                            );
                        }
                    }
                    _ => problem(".pkcs11", "give exactly one of key_label and key_id".into()),
                }
            }
            Ok(SignerBackend::Remote(r)) => {
                if !r.url.starts_with("https://") {
                    problem(
                        ".remote.url",
                        format!(
                            "{:?}: the remote signer is reached over mutual TLS; use https://host:port",
                            r.url
                        ),
                    );
                }
                if r.timeout.is_zero() {
                    problem(".remote.timeout", "must be more than 0".into());
                }
            }
        }
        out
    }

    /// Resolves relative paths against `base` (the configuration file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        self.keystore.as_mut().map(resolve);
        self.password_file.as_mut().map(resolve);
        if let Some(p) = &mut self.pkcs11 {
            // A bare library name is left to the dynamic loader's search path.
            if p.module.components().count() > 1 {
                resolve(&mut p.module);
            }
            resolve(&mut p.pin_file);
        }
        if let Some(r) = &mut self.remote {
            resolve(&mut r.ca);
            resolve(&mut r.cert);
            resolve(&mut r.key);
        }
    }

    /// `AVSNODE_SIGNER_<NAME>_PASSWORD_FILE` / `_PIN_FILE` overrides.
    pub fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) {
        let prefix = format!(
            "AVSNODE_SIGNER_{}",
            self.name.to_uppercase().replace('-', "_")
        );
        if let Some(v) = env(&format!("{prefix}_PASSWORD_FILE")) {
            self.password_file = Some(v.into());
        }
        if let (Some(v), Some(p)) = (env(&format!("{prefix}_PIN_FILE")), &mut self.pkcs11) {
            p.pin_file = v.into();
        }
    }

    /// Where the key is, for `check-config` and logs.
    pub fn location(&self) -> String {
        match self.backend() {
            Ok(SignerBackend::Keystore { keystore, .. }) => {
                format!("keystore {}", keystore.display())
            }
            Ok(SignerBackend::Pkcs11(p)) => format!(
                "PKCS#11 token {:?}, key {}",
                p.token_label,
                match (&p.key_label, &p.key_id) {
                    (Some(label), _) => format!("label {label:?}"),
                    (_, Some(id)) => format!("id {id}"),
                    _ => "?".into(),
                }
            ),
            Ok(SignerBackend::Remote(r)) => format!(
                "remote signer {}, key {:?}",
                r.url,
                r.key_name.as_deref().unwrap_or(&self.name)
            ),
            Err(e) => format!("(invalid: {e})"),
        }
    }
}

fn default_remote_timeout() -> Duration {
    Duration::from_secs(2)
}
