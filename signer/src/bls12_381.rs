//! BLS12-381 signatures in the Ethereum consensus style (blst `min_pk`): 48-byte compressed G1
//! public keys, 96-byte compressed G2 signatures, ciphersuite
//! `BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_`. Public keys are validated (subgroup, not
//! infinity) when decoded and signatures group-checked when verified.

use std::fmt;

use blst::BLST_ERROR;
use blst::min_pk;
use zeroize::Zeroizing;

use crate::Error;
use crate::messages::SigningDigest;

/// The proof-of-possession ciphersuite's domain separation tag.
pub const DST: &[u8] = b"BLS_SIG_BLS12381G2_XMD:SHA-256_SSWU_RO_POP_";

/// A BLS12-381 secret key. blst's `SecretKey` zeroizes on drop but derives a `Debug` that prints
/// the scalar; this wrapper redacts it.
pub struct SecretKey(min_pk::SecretKey);

impl SecretKey {
    /// Decodes a 32-byte big-endian scalar in `[1, r)`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != 32 {
            return Err(Error::Length {
                what: "BLS12-381 secret key",
                expected: 32,
                got: bytes.len(),
            });
        }
        min_pk::SecretKey::from_bytes(bytes)
            .map(SecretKey)
            .map_err(|_| Error::SecretKeyOutOfRange)
    }

    /// A fresh key: EIP-2333 `KeyGen` from 32 bytes of the RNG.
    pub fn random<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        let mut ikm = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(ikm.as_mut());
        // key_gen only fails for IKM shorter than 32 bytes.
        SecretKey(min_pk::SecretKey::key_gen(ikm.as_ref(), &[]).expect("IKM is 32 bytes"))
    }

    /// The 32-byte big-endian scalar (for writing a keystore).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.sk_to_pk())
    }

    /// Signs a digest the node computed (the 32 digest bytes are the BLS message).
    pub fn sign(&self, digest: &SigningDigest) -> Signature {
        self.sign_message(digest.as_bytes())
    }

    pub(crate) fn sign_message(&self, msg: &[u8]) -> Signature {
        Signature(self.0.sign(msg, DST, &[]))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bls12_381::SecretKey(<redacted>)")
    }
}

/// A validated BLS12-381 public key (in G1, not infinity).
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey(min_pk::PublicKey);

impl PublicKey {
    /// Decodes and validates a 48-byte compressed key: on the curve, in the subgroup, not
    /// infinity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "BLS12-381 public key";
        if bytes.len() != 48 {
            return Err(Error::Length {
                what: WHAT,
                expected: 48,
                got: bytes.len(),
            });
        }
        min_pk::PublicKey::key_validate(bytes)
            .map(PublicKey)
            .map_err(|e| blst_error(WHAT, e))
    }

    /// The 48-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; 48] {
        self.0.compress()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bls12_381::PublicKey(0x{})",
            hex::encode(self.to_bytes())
        )
    }
}

/// A BLS12-381 signature (in G2).
#[derive(Clone, PartialEq, Eq)]
pub struct Signature(min_pk::Signature);

impl Signature {
    /// Decodes a 96-byte compressed signature and checks it is in the subgroup and not infinity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        const WHAT: &str = "BLS12-381 signature";
        if bytes.len() != 96 {
            return Err(Error::Length {
                what: WHAT,
                expected: 96,
                got: bytes.len(),
            });
        }
        min_pk::Signature::sig_validate(bytes, true)
            .map(Signature)
            .map_err(|e| blst_error(WHAT, e))
    }

    /// The 96-byte compressed encoding.
    pub fn to_bytes(&self) -> [u8; 96] {
        self.0.compress()
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bls12_381::Signature(0x{})",
            hex::encode(self.to_bytes())
        )
    }
}

fn blst_error(what: &'static str, e: BLST_ERROR) -> Error {
    match e {
        BLST_ERROR::BLST_PK_IS_INFINITY => Error::Infinity { what },
        BLST_ERROR::BLST_POINT_NOT_IN_GROUP => Error::NotInSubgroup { what },
        BLST_ERROR::BLST_BAD_ENCODING => Error::Hex {
            what,
            reason: "bad point encoding",
        },
        _ => Error::NotOnCurve { what },
    }
}

/// Verifies `sig` over `msg` under `pk` (group check on; the key was validated when decoded).
pub fn verify(pk: &PublicKey, msg: &[u8], sig: &Signature) -> bool {
    sig.0.verify(true, msg, DST, &[], &pk.0, false) == BLST_ERROR::BLST_SUCCESS
}

/// [`verify`] for many signatures under one key at once: `result[i]` is whether `items[i]` is a
/// signature of its message, the same answer as checking it alone. blst checks the batch as one
/// random linear combination (fresh random 128-bit scalars); a batch that fails is split in
/// halves until every bad signature stands alone, so a forged signature never makes an honest
/// one fail.
pub fn verify_batch(pk: &PublicKey, items: &[([u8; 32], Signature)]) -> Vec<bool> {
    let mut results = vec![false; items.len()];
    settle(pk, items, &mut results, &mut rand::thread_rng());
    results
}

fn settle(
    pk: &PublicKey,
    items: &[([u8; 32], Signature)],
    results: &mut [bool],
    rng: &mut (impl rand::RngCore + rand::CryptoRng),
) {
    let holds = match items {
        [] => return,
        [(msg, sig)] => verify(pk, msg, sig),
        _ => {
            let randomisers: Vec<blst::blst_scalar> = items
                .iter()
                .map(|_| {
                    let mut b = [0u8; 32];
                    while b[..16] == [0; 16] {
                        rng.fill_bytes(&mut b[..16]);
                    }
                    blst::blst_scalar { b }
                })
                .collect();
            let msgs: Vec<&[u8]> = items.iter().map(|(m, _)| &m[..]).collect();
            let sigs: Vec<&min_pk::Signature> = items.iter().map(|(_, s)| &s.0).collect();
            let pks = vec![&pk.0; items.len()];
            // Keys were validated when decoded and signatures group-checked (`from_bytes`).
            min_pk::Signature::verify_multiple_aggregate_signatures(
                &msgs,
                DST,
                &pks,
                false,
                &sigs,
                false,
                &randomisers,
                128,
            ) == BLST_ERROR::BLST_SUCCESS
        }
    };
    if holds {
        results.fill(true);
    } else if items.len() > 1 {
        let half = items.len() / 2;
        let (left, right) = results.split_at_mut(half);
        settle(pk, &items[..half], left, rng);
        settle(pk, &items[half..], right, rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A distinct valid key per seed (well below either group order).
    fn key(seed: u8) -> SecretKey {
        let mut bytes = [0x11; 32];
        bytes[31] = seed;
        SecretKey::from_bytes(&bytes).unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        #[test]
        fn sign_verify_round_trip(seed in 0u8..255, msg in any::<[u8; 32]>(), byte in 0usize..32) {
            let sk = key(seed);
            let pk = sk.public_key();
            let sig = sk.sign_message(&msg);
            prop_assert!(verify(&pk, &msg, &sig));
            let mut other = msg;
            other[byte] ^= 1;
            prop_assert!(!verify(&pk, &other, &sig));
            prop_assert!(!verify(&key(seed + 1).public_key(), &msg, &sig));
            let round = Signature::from_bytes(&sig.to_bytes()).unwrap();
            prop_assert_eq!(&round, &sig);
            prop_assert_eq!(PublicKey::from_bytes(&pk.to_bytes()).unwrap(), pk);
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = PublicKey::from_bytes(&bytes);
            let _ = Signature::from_bytes(&bytes);
            let _ = SecretKey::from_bytes(&bytes);
        }
    }

    #[test]
    fn tampered_signature_fails() {
        let sk = key(9);
        let sig = sk.sign_message(b"tamper").to_bytes();
        let mut bad = sig;
        bad[50] ^= 1;
        match Signature::from_bytes(&bad) {
            Ok(bad) => assert!(!verify(&sk.public_key(), b"tamper", &bad)),
            Err(e) => assert!(matches!(
                e,
                Error::NotOnCurve { .. } | Error::NotInSubgroup { .. }
            )),
        }
    }

    #[test]
    fn debug_redacts_the_secret() {
        let sk = key(0x42);
        let shown = format!("{sk:?}");
        assert_eq!(shown, "bls12_381::SecretKey(<redacted>)");
    }
}
