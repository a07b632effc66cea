//! A public key that checks signatures over a 32-byte hash, in any of the three schemes.

use crate::bn254::{self, HashToG1};
use crate::messages::Address;
use crate::{Scheme, bls12_381, ecdsa};

/// A verification key: an aggregator's, as configured, or an operator's, as published.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    /// The recovered signer must be this address.
    Ecdsa(Address),
    /// `e(σ, G2gen) == e(H_rfc(h), pk)`.
    Bn254(bn254::G2PublicKey),
    /// blst `min_pk` over the 32 bytes `h`.
    Bls12381(bls12_381::PublicKey),
}

impl VerifyingKey {
    /// Decodes a key as a config file gives it: an ECDSA key is its `address` (and has no
    /// `public_key`), a BN254 or BLS12-381 key its `public_key` in hex. The error message is
    /// for the `public_key` (or, for ECDSA, the `address`) entry.
    pub fn from_config(
        scheme: Scheme,
        address: &str,
        public_key: Option<&str>,
    ) -> Result<VerifyingKey, String> {
        let decoded = || -> Result<Vec<u8>, String> {
            let text = public_key.ok_or_else(|| format!("required for a {scheme} aggregator"))?;
            hex::decode(text.trim_start_matches("0x")).map_err(|e| format!("invalid hex: {e}"))
        };
        match scheme {
            Scheme::Ecdsa => match public_key {
                Some(_) => {
                    Err("not used for an ecdsa aggregator (its address identifies it)".into())
                }
                None => address
                    .parse()
                    .map(VerifyingKey::Ecdsa)
                    .map_err(|e: crate::Error| e.to_string()),
            },
            Scheme::Bn254 => bn254::G2PublicKey::from_wire(&decoded()?)
                .map(VerifyingKey::Bn254)
                .map_err(|e| e.to_string()),
            Scheme::Bls12381 => bls12_381::PublicKey::from_bytes(&decoded()?)
                .map(VerifyingKey::Bls12381)
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether `signature` over `h` verifies under this key. CPU-bound: call off the async
    /// workers.
    pub fn verify(&self, h: &[u8; 32], signature: &[u8]) -> bool {
        match self {
            VerifyingKey::Ecdsa(address) => {
                ecdsa::Signature::from_bytes(signature).is_ok_and(|s| ecdsa::verify(address, h, &s))
            }
            VerifyingKey::Bn254(pk) => bn254::Signature::from_wire(signature)
                .is_ok_and(|s| bn254::verify(pk, h, &s, HashToG1::Rfc9380)),
            VerifyingKey::Bls12381(pk) => bls12_381::Signature::from_bytes(signature)
                .is_ok_and(|s| bls12_381::verify(pk, h, &s)),
        }
    }
}
