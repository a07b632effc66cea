use thiserror::Error;

/// Why a key, point, signature or identifier could not be decoded or used.
///
/// Verification failures are not errors: `verify` functions return `bool`. Messages never contain
/// secret material.
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The input has the wrong number of bytes.
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        /// What was being decoded.
        what: &'static str,
        /// The required length.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// The input is not valid hex, or lacks the `0x` prefix where one is required.
    #[error("{what}: {reason}")]
    Hex {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A field element or scalar is not canonical (not below the modulus).
    #[error("{what}: not a canonical field element (must be below the modulus)")]
    NonCanonical {
        /// What was being decoded.
        what: &'static str,
    },
    /// The bytes do not encode a point on the curve.
    #[error("{what}: not a point on the curve")]
    NotOnCurve {
        /// What was being decoded.
        what: &'static str,
    },
    /// The point is on the curve but outside the prime-order subgroup.
    #[error("{what}: point is not in the prime-order subgroup")]
    NotInSubgroup {
        /// What was being decoded.
        what: &'static str,
    },
    /// The point at infinity, which is never a valid key or signature.
    #[error("{what}: the point at infinity is not allowed")]
    Infinity {
        /// What was being decoded.
        what: &'static str,
    },
    /// A secret key outside `[1, n)` for its curve's group order `n`.
    #[error("secret key out of range: must be in [1, group order)")]
    SecretKeyOutOfRange,
    /// An ECDSA signature whose `r`/`s` are invalid or whose recovery id is not 0, 1, 27 or 28.
    #[error("malformed ECDSA signature: {reason}")]
    MalformedEcdsaSignature {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Public-key recovery from an ECDSA signature failed.
    #[error("ECDSA public key recovery failed")]
    RecoveryFailed,
    /// A certificate verifier that does not fit the scheme, or a verifier version the domain
    /// cannot be derived from.
    #[error("certificate verifier: {reason}")]
    Verifier {
        /// What is wrong.
        reason: &'static str,
    },
    /// A scheme name other than `ecdsa`, `bn254`, `bls12-381`.
    #[error("unknown signature scheme {0:?} (expected ecdsa, bn254 or bls12-381)")]
    UnknownScheme(String),
}
