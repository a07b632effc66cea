//! A public key that checks signatures over a 32-byte hash, in any of the three schemes.

use std::sync::Arc;

use crate::bn254;
use crate::messages::Address;
use crate::{Scheme, bls12_381, ecdsa};

/// A verification key: an aggregator's, as configured, or an operator's, as published.
#[derive(Debug, Clone)]
pub enum VerifyingKey {
    /// The recovered signer must be this address.
    Ecdsa(Address),
    /// `e(σ, G2gen) == e(H_rfc(h), pk)`, with the key's side of the pairing prepared once
    /// ([`VerifyingKey::bn254`]).
    Bn254(Arc<bn254::PreparedPublicKey>),
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
                .map(VerifyingKey::bn254)
                .map_err(|e| e.to_string()),
            Scheme::Bls12381 => bls12_381::PublicKey::from_bytes(&decoded()?)
                .map(VerifyingKey::Bls12381)
                .map_err(|e| e.to_string()),
        }
    }

    /// A BN254 key, prepared for verifying (once: keep the result, clones share it).
    pub fn bn254(key: bn254::G2PublicKey) -> VerifyingKey {
        VerifyingKey::Bn254(Arc::new(bn254::PreparedPublicKey::new(key)))
    }

    /// The scheme of the key.
    pub fn scheme(&self) -> Scheme {
        match self {
            VerifyingKey::Ecdsa(_) => Scheme::Ecdsa,
            VerifyingKey::Bn254(_) => Scheme::Bn254,
            VerifyingKey::Bls12381(_) => Scheme::Bls12381,
        }
    }

    /// Whether `signature` over `h` verifies under this key. CPU-bound: call off the async
    /// workers.
    pub fn verify(&self, h: &[u8; 32], signature: &[u8]) -> bool {
        match self {
            VerifyingKey::Ecdsa(address) => {
                ecdsa::Signature::from_bytes(signature).is_ok_and(|s| ecdsa::verify(address, h, &s))
            }
            VerifyingKey::Bn254(pk) => {
                bn254::Signature::from_wire(signature).is_ok_and(|s| pk.verify(h, &s))
            }
            VerifyingKey::Bls12381(pk) => bls12_381::Signature::from_bytes(signature)
                .is_ok_and(|s| bls12_381::verify(pk, h, &s)),
        }
    }

    /// [`VerifyingKey::verify`] of many signatures under this key: `result[i]` is whether
    /// `items[i]` verifies, always the same answer as checking it alone. BN254 and BLS12-381
    /// check the batch at once (a random linear combination, split until each bad signature
    /// stands alone); ECDSA, which has no such shortcut, one by one. A signature that does not
    /// decode is false without costing the others anything.
    pub fn verify_batch(&self, items: &[([u8; 32], &[u8])]) -> Vec<bool> {
        match self {
            VerifyingKey::Ecdsa(_) => items.iter().map(|(h, s)| self.verify(h, s)).collect(),
            VerifyingKey::Bn254(pk) => batch(items, bn254::Signature::from_wire, |batch| {
                pk.verify_batch(batch)
            }),
            VerifyingKey::Bls12381(pk) => batch(items, bls12_381::Signature::from_bytes, |batch| {
                bls12_381::verify_batch(pk, batch)
            }),
        }
    }
}

impl PartialEq for VerifyingKey {
    fn eq(&self, other: &VerifyingKey) -> bool {
        match (self, other) {
            (VerifyingKey::Ecdsa(a), VerifyingKey::Ecdsa(b)) => a == b,
            (VerifyingKey::Bn254(a), VerifyingKey::Bn254(b)) => {
                Arc::ptr_eq(a, b) || a.key() == b.key()
            }
            (VerifyingKey::Bls12381(a), VerifyingKey::Bls12381(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for VerifyingKey {}

/// Decodes every signature, checks those that decode with `check`, and answers for all.
fn batch<S>(
    items: &[([u8; 32], &[u8])],
    decode: impl Fn(&[u8]) -> Result<S, crate::Error>,
    check: impl FnOnce(&[([u8; 32], S)]) -> Vec<bool>,
) -> Vec<bool> {
    let mut results = vec![false; items.len()];
    let mut decoded = Vec::with_capacity(items.len());
    let mut positions = Vec::with_capacity(items.len());
    for (i, (h, signature)) in items.iter().enumerate() {
        if let Ok(s) = decode(signature) {
            decoded.push((*h, s));
            positions.push(i);
        }
    }
    for (i, ok) in positions.into_iter().zip(check(&decoded)) {
        results[i] = ok;
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::SigningDigest;
    use proptest::prelude::*;

    /// How a batch member is forged, if it is.
    #[derive(Debug, Clone, Copy)]
    enum Forgery {
        /// The key's signature of another message.
        OtherMessage,
        /// Another key's signature of this message.
        OtherKey,
        /// The honest signature with its last byte changed (mostly: no longer decodes).
        Garbled,
        /// The signature of the batch's first message (valid, for the wrong member).
        Borrowed,
    }

    fn secret(seed: u8) -> [u8; 32] {
        let mut bytes = [0x22; 32];
        bytes[31] = seed;
        bytes
    }

    /// Signs `h` as the key of `scheme` made from `seed` would sign a task.
    fn sign(scheme: Scheme, seed: u8, h: &[u8; 32]) -> Vec<u8> {
        let digest = SigningDigest::for_test(*h);
        let secret = secret(seed);
        match scheme {
            Scheme::Ecdsa => ecdsa::SecretKey::from_bytes(&secret)
                .unwrap()
                .sign(&digest)
                .to_bytes()
                .to_vec(),
            Scheme::Bn254 => bn254::SecretKey::from_bytes(&secret)
                .unwrap()
                .sign(&digest, bn254::HashToG1::Rfc9380)
                .to_wire()
                .to_vec(),
            Scheme::Bls12381 => bls12_381::SecretKey::from_bytes(&secret)
                .unwrap()
                .sign(&digest)
                .to_bytes()
                .to_vec(),
        }
    }

    fn verifying_key(scheme: Scheme, seed: u8) -> VerifyingKey {
        let secret = secret(seed);
        match scheme {
            Scheme::Ecdsa => VerifyingKey::Ecdsa(
                ecdsa::SecretKey::from_bytes(&secret)
                    .unwrap()
                    .public_key()
                    .address(),
            ),
            Scheme::Bn254 => VerifyingKey::bn254(
                bn254::SecretKey::from_bytes(&secret)
                    .unwrap()
                    .public_key_g2(),
            ),
            Scheme::Bls12381 => VerifyingKey::Bls12381(
                bls12_381::SecretKey::from_bytes(&secret)
                    .unwrap()
                    .public_key(),
            ),
        }
    }

    fn scheme() -> impl Strategy<Value = Scheme> {
        prop_oneof![
            Just(Scheme::Ecdsa),
            Just(Scheme::Bn254),
            Just(Scheme::Bls12381)
        ]
    }

    fn forgery() -> impl Strategy<Value = Option<Forgery>> {
        prop_oneof![
            3 => Just(None),
            1 => Just(Some(Forgery::OtherMessage)),
            1 => Just(Some(Forgery::OtherKey)),
            1 => Just(Some(Forgery::Garbled)),
            1 => Just(Some(Forgery::Borrowed)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A batch with any subset of forged members rejects exactly that subset, and agrees
        /// with checking each member alone.
        #[test]
        fn a_batch_rejects_exactly_its_forged_members(
            scheme in scheme(),
            members in prop::collection::vec((any::<[u8; 32]>(), forgery()), 1..12),
        ) {
            let key = verifying_key(scheme, 1);
            let first = members[0].0;
            prop_assume!(members.iter().skip(1).all(|(h, _)| *h != first));
            let signatures: Vec<Vec<u8>> = members
                .iter()
                .map(|(h, forgery)| match forgery {
                    None => sign(scheme, 1, h),
                    Some(Forgery::OtherMessage) => {
                        let mut other = *h;
                        other[0] ^= 1;
                        sign(scheme, 1, &other)
                    }
                    Some(Forgery::OtherKey) => sign(scheme, 2, h),
                    Some(Forgery::Garbled) => {
                        let mut s = sign(scheme, 1, h);
                        *s.last_mut().unwrap() ^= 0x5a;
                        s
                    }
                    Some(Forgery::Borrowed) => sign(scheme, 1, &first),
                })
                .collect();
            let items: Vec<([u8; 32], &[u8])> = members
                .iter()
                .zip(&signatures)
                .map(|((h, _), s)| (*h, &s[..]))
                .collect();
            let verdicts = key.verify_batch(&items);
            let alone: Vec<bool> = items.iter().map(|(h, s)| key.verify(h, s)).collect();
            prop_assert_eq!(&verdicts, &alone);
            for (i, ((_, forgery), ok)) in members.iter().zip(&verdicts).enumerate() {
                // The first member's borrowed signature is its own.
                let honest = forgery.is_none() || (i == 0 && matches!(forgery, Some(Forgery::Borrowed)));
                prop_assert_eq!(*ok, honest, "member {} ({:?})", i, forgery);
            }
        }
    }

    #[test]
    fn an_empty_batch_has_no_verdicts() {
        for scheme in [Scheme::Ecdsa, Scheme::Bn254, Scheme::Bls12381] {
            assert!(verifying_key(scheme, 1).verify_batch(&[]).is_empty());
        }
    }
}
