//! The cryptographic core of avsnode: pure functions, no I/O.
//!
//! Owns the three signature schemes (ECDSA secp256k1, BN254, BLS12-381) with their wire
//! encodings, the BN254 hash-to-G1 maps, and the byte layouts of every message the node verifies
//! or signs (DESIGN §4). Signing backends (local keys, PKCS#11, remote) build on this crate;
//! keystore files are read by `avsnode-keystore`.
//!
//! # Invariant
//!
//! The node signs only digests it computed itself from typed fields: every signing function takes
//! a [`SigningDigest`], and a `SigningDigest` can only be made by the layout functions in
//! [`messages`]. There is no public way to sign an opaque 32-byte blob.
//!
//! # Caveat
//!
//! Secret keys zeroize on drop and print as `<redacted>`, but the arithmetic libraries copy
//! scalars into temporaries during signing (ark's `Fr` is `Copy`); those stack copies are not
//! wiped. Keep secret keys in one long-lived place and never clone them around.

pub mod bls12_381;
pub mod bn254;
pub mod ecdsa;
mod error;
pub mod messages;
mod verifying;

pub use error::Error;
pub use messages::SigningDigest;
pub use verifying::VerifyingKey;

use std::fmt;
use std::str::FromStr;

/// The signature schemes an operator set (or an aggregator) can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// secp256k1 ECDSA, 65-byte `r‖s‖v` signatures.
    Ecdsa,
    /// BN254 BLS signatures in G1, public keys in G2 (EigenLayer's BLS).
    Bn254,
    /// BLS12-381 `min_pk` (Ethereum consensus style), POP ciphersuite.
    Bls12381,
}

impl Scheme {
    /// The name used in config files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ecdsa => "ecdsa",
            Scheme::Bn254 => "bn254",
            Scheme::Bls12381 => "bls12-381",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "ecdsa" => Ok(Scheme::Ecdsa),
            "bn254" => Ok(Scheme::Bn254),
            "bls12-381" => Ok(Scheme::Bls12381),
            other => Err(Error::UnknownScheme(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod vectors;
