//! Why a signer could not be opened, and the permission check on the secret files it reads.

use std::path::Path;

use avsnode_keystore::Curve;
use avsnode_signer::Scheme;

use crate::pkcs11::HsmError;
use crate::remote::RemoteSignerError;

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
