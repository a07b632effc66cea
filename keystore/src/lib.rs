//! Encrypted key files for the operator's signing keys.
//!
//! Owns reading and writing EIP-2335 keystores (BLS12-381, and BN254 with `"curveType": "bn254"`
//! or the Cerberus `"curve": "bn254"`), Web3 Secret Storage v3 keystores (secp256k1), password
//! handling (EIP-2335 normalisation, password files), and holding decrypted secrets in zeroizing
//! types.
//!
//! It does not know any curve's arithmetic: it never derives a public key, so it cannot tell
//! whether the decrypted secret matches the file's `pubkey` or `address`. The caller checks that.
//!
//! # Caveat
//!
//! The invariants this crate guards:
//! - decrypted secrets and derived keys live only in zeroizing types ([`SecretBytes`],
//!   [`Password`]) and their `Debug` never shows them; errors never carry them;
//! - a wrong password is [`Error::WrongPassword`], never garbage plaintext (the checksum or MAC is
//!   verified, in constant time, before decrypting). Both formats leave the IV (and `pubkey`,
//!   `address`) outside the checksum, so an altered file can still decrypt to a wrong key: one
//!   more reason the caller must check the secret against the public key;
//! - KDF parameters come from the file, so they are bounded on read and on write (see [`Kdf`]) to
//!   keep a hostile file from exhausting memory or CPU; no input panics.

mod eip2335;
mod error;
mod kdf;
mod password;
mod sealed;
mod secret;
mod web3;

use std::fmt;
use std::path::Path;

use serde::Deserialize;

pub use eip2335::Eip2335Keystore;
pub use error::Error;
pub use kdf::Kdf;
pub use password::{Password, strip_file_newline};
pub use secret::SecretBytes;
pub use web3::Web3Keystore;

/// The curve a key file's secret belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Curve {
    /// BLS12-381 (plain EIP-2335).
    Bls12381,
    /// BN254 (EIP-2335 with `curveType` or `curve` = `bn254`).
    Bn254,
    /// secp256k1 (Web3 Secret Storage v3).
    Secp256k1,
}

impl Curve {
    /// The lowercase name used in files and logs: `bls12-381`, `bn254` or `secp256k1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Curve::Bls12381 => "bls12-381",
            Curve::Bn254 => "bn254",
            Curve::Secp256k1 => "secp256k1",
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key file in either supported format, told apart by its `version`.
#[derive(Debug, Clone)]
pub enum Keystore {
    /// EIP-2335 (`version` 4): BLS12-381 or BN254.
    Eip2335(Eip2335Keystore),
    /// Web3 Secret Storage (`version` 3): secp256k1.
    Web3(Web3Keystore),
}

impl Keystore {
    /// Parses and validates a key file, choosing the format by its `version` (4 or 3).
    pub fn from_json(json: &str) -> Result<Self, Error> {
        match version_of(json)? {
            4 => Eip2335Keystore::from_json(json).map(Keystore::Eip2335),
            3 => Web3Keystore::from_json(json).map(Keystore::Web3),
            found => Err(Error::UnsupportedVersion {
                found,
                expected: "3 (Web3 Secret Storage) or 4 (EIP-2335)",
            }),
        }
    }

    /// Reads and parses a key file; I/O errors name the path.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let json = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_json(&json)
    }

    /// The curve of the secret this file holds.
    pub fn curve(&self) -> Curve {
        match self {
            Keystore::Eip2335(k) => k.curve(),
            Keystore::Web3(_) => Curve::Secp256k1,
        }
    }

    /// The key derivation parameters, e.g. to refuse costly files before decrypting.
    pub fn kdf(&self) -> Kdf {
        match self {
            Keystore::Eip2335(k) => k.kdf(),
            Keystore::Web3(k) => k.kdf(),
        }
    }

    /// Decrypts the secret; a wrong password is [`Error::WrongPassword`].
    pub fn decrypt(&self, password: &Password) -> Result<SecretBytes, Error> {
        match self {
            Keystore::Eip2335(k) => k.decrypt(password),
            Keystore::Web3(k) => k.decrypt(password),
        }
    }

    /// Writes the file, new and readable by its owner only ([`write_private`]).
    pub fn write_new(&self, path: &Path) -> Result<(), Error> {
        write_private(path, self.to_json().as_bytes()).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })
    }

    /// The file as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        match self {
            Keystore::Eip2335(k) => k.to_json(),
            Keystore::Web3(k) => k.to_json(),
        }
    }
}

/// Writes a new file readable by its owner only, synced to disk; refuses to overwrite one (a key or
/// password file replaced by mistake cannot be recovered).
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Reads only `version`, so a file of the other format is refused by version rather than by
/// whichever field first fails to parse.
fn version_of(json: &str) -> Result<u64, Error> {
    #[derive(Deserialize)]
    struct Probe {
        version: u64,
    }
    let probe: Probe = serde_json::from_str(json).map_err(Error::Json)?;
    Ok(probe.version)
}
