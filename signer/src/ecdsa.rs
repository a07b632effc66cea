//! ECDSA over secp256k1 as EigenLayer uses it: RFC 6979 deterministic signatures over a raw
//! 32-byte digest (no EIP-191 prefix), encoded as 65 bytes `r‖s‖v` with low `s` and `v ∈ {27,28}`.
//! Verification accepts `v ∈ {0,1,27,28}` and either half of `s` (malleability does not matter for
//! checking who signed). Addresses are `keccak256(X‖Y)[12..32]`.
//!
//! The curve arithmetic is libsecp256k1 (Bitcoin Core's, through the `secp256k1` crate): its
//! signatures are RFC 6979 and low-s, and its public-key recovery, the aggregator check on every
//! ECDSA task, is several times faster than the pure-Rust implementations measured
//! (docs/PERFORMANCE.md).

use std::fmt;

use secp256k1::ecdsa::{RecoverableSignature, RecoveryId, Signature as RawSignature};
use secp256k1::{Message, PublicKey as RawPublicKey, SecretKey as RawSecretKey};
use zeroize::Zeroizing;

use crate::Error;
use crate::messages::{Address, SigningDigest, keccak256};

/// A secp256k1 secret key, with its public key. Overwritten on drop (libsecp256k1's
/// `non_secure_erase`, a best effort like any wipe the optimiser may see through); `Debug` shows
/// the address only.
pub struct SecretKey {
    secret: RawSecretKey,
    public: PublicKey,
}

impl SecretKey {
    /// Decodes a 32-byte big-endian scalar in `[1, n)`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: Zeroizing<[u8; 32]> =
            Zeroizing::new(bytes.try_into().map_err(|_| Error::Length {
                what: "ECDSA secret key",
                expected: 32,
                got: bytes.len(),
            })?);
        let secret =
            RawSecretKey::from_secret_bytes(*bytes).map_err(|_| Error::SecretKeyOutOfRange)?;
        Ok(Self::from_raw(secret))
    }

    fn from_raw(secret: RawSecretKey) -> Self {
        let public = PublicKey(RawPublicKey::from_secret_key(&secret));
        SecretKey { secret, public }
    }

    /// A fresh key from a cryptographic RNG.
    pub fn random<R: rand::RngCore + rand::CryptoRng>(rng: &mut R) -> Self {
        loop {
            let mut bytes = Zeroizing::new([0u8; 32]);
            rng.fill_bytes(&mut *bytes);
            // Out of range with probability about 2⁻¹²⁸.
            if let Ok(secret) = RawSecretKey::from_secret_bytes(*bytes) {
                return Self::from_raw(secret);
            }
        }
    }

    /// The 32-byte big-endian scalar (for writing a keystore).
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_secret_bytes())
    }

    /// The public key.
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// Signs a digest the node computed: RFC 6979, low-s, `v ∈ {27,28}`.
    pub fn sign(&self, digest: &SigningDigest) -> Signature {
        self.sign_prehash(digest.as_bytes())
    }

    pub(crate) fn sign_prehash(&self, prehash: &[u8; 32]) -> Signature {
        let signature = RecoverableSignature::sign_ecdsa_recoverable(
            Message::from_digest(*prehash),
            &self.secret,
        );
        // libsecp256k1 signs low-s. An x-reduced R (recovery id 2 or 3) happens with probability
        // about 2⁻¹²⁸ and cannot be expressed in `v`.
        let (id, rs) = signature.serialize_compact();
        Signature::from_parts(&rs, id.to_u8() & 1 == 1)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.secret.non_secure_erase();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ecdsa::SecretKey(<redacted>, address {})",
            self.public.address()
        )
    }
}

/// A secp256k1 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(RawPublicKey);

impl PublicKey {
    /// Decodes a SEC1 public key: 33 bytes compressed or 65 bytes uncompressed (`0x04‖X‖Y`).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self, Error> {
        if bytes.len() != 33 && bytes.len() != 65 {
            return Err(Error::Length {
                what: "ECDSA public key",
                expected: 65,
                got: bytes.len(),
            });
        }
        RawPublicKey::from_slice(bytes)
            .map(PublicKey)
            .map_err(|_| Error::NotOnCurve {
                what: "ECDSA public key",
            })
    }

    /// The 65-byte uncompressed SEC1 encoding `0x04‖X‖Y`.
    pub fn to_uncompressed(&self) -> [u8; 65] {
        self.0.serialize_uncompressed()
    }

    /// The Ethereum address: the last 20 bytes of `keccak256(X‖Y)`.
    pub fn address(&self) -> Address {
        let hash = keccak256(&self.to_uncompressed()[1..]);
        let mut a = [0u8; 20];
        a.copy_from_slice(&hash[12..]);
        Address(a)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ecdsa::PublicKey(0x{})",
            hex::encode(self.to_uncompressed())
        )
    }
}

/// A 65-byte recoverable signature `r‖s‖v`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 65]);

impl Signature {
    fn from_parts(rs: &[u8; 64], odd: bool) -> Self {
        let mut out = [0u8; 65];
        out[..64].copy_from_slice(rs);
        out[64] = 27 + u8::from(odd);
        Signature(out)
    }

    /// Decodes 65 bytes `r‖s‖v` with `v ∈ {0,1,27,28}`, `r` and `s` in `[1, n)`. High `s` is
    /// accepted (it is normalised when recovering).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: [u8; 65] = bytes.try_into().map_err(|_| Error::Length {
            what: "ECDSA signature",
            expected: 65,
            got: bytes.len(),
        })?;
        if !matches!(bytes[64], 0 | 1 | 27 | 28) {
            return Err(Error::MalformedEcdsaSignature {
                reason: "v must be 0, 1, 27 or 28",
            });
        }
        parse_rs(&bytes[..64])?;
        Ok(Signature(bytes))
    }

    /// The 65 bytes `r‖s‖v`.
    pub fn to_bytes(&self) -> [u8; 65] {
        self.0
    }

    /// Whether `s` is in the lower half of the group order (what we always produce).
    pub fn is_low_s(&self) -> bool {
        let (_, flipped) = low_s(&self.rs());
        !flipped
    }

    fn rs(&self) -> [u8; 64] {
        let mut rs = [0u8; 64];
        rs.copy_from_slice(&self.0[..64]);
        rs
    }

    /// The recovery id's parity (`R`'s y is odd) from `v`.
    fn recovery_parity(&self) -> bool {
        self.0[64] % 27 == 1
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ecdsa::Signature(0x{})", hex::encode(self.0))
    }
}

/// `r‖s` with both in `[1, n)`.
fn parse_rs(rs: &[u8]) -> Result<RawSignature, Error> {
    let out_of_range = Error::MalformedEcdsaSignature {
        reason: "r or s out of range",
    };
    // libsecp256k1 parses a zero r or s (and fails to verify it later): refused here.
    if rs[..32].iter().all(|&b| b == 0) || rs[32..].iter().all(|&b| b == 0) {
        return Err(out_of_range);
    }
    RawSignature::from_compact(rs).map_err(|_| out_of_range)
}

/// `rs` with `s` in the lower half (`n − s` for a high one), and whether it was flipped.
fn low_s(rs: &[u8; 64]) -> ([u8; 64], bool) {
    let mut signature = RawSignature::from_compact(rs).expect("validated on construction");
    signature.normalize_s();
    let low = signature.serialize_compact();
    (low, low != *rs)
}

/// The key that made the low-s `rs` over `prehash` with the parity `odd`.
fn recover_low_s(prehash: &[u8; 32], rs: &[u8; 64], odd: bool) -> Result<RawPublicKey, Error> {
    RecoverableSignature::from_compact(rs, RecoveryId::from_u8_masked(u8::from(odd)))
        .and_then(|signature| signature.recover_ecdsa(Message::from_digest(*prehash)))
        .map_err(|_| Error::RecoveryFailed)
}

/// Turns a bare 64-byte `r‖s` (what an HSM returns for `CKM_ECDSA`: randomised, often high-s, with
/// no recovery id) into our canonical 65-byte `r‖s‖v`: `s` normalised to the lower half of the group
/// order, and `v ∈ {27,28}` found by recovering with both ids against the key that signed.
///
/// Refuses `r` or `s` of zero or not below the group order, and an `r‖s` that is not `public`'s
/// signature over `digest` (neither recovery id gives `public`), so a faulty or swapped token key
/// never yields a signature the node would release.
pub fn signature_from_rs(
    rs: &[u8; 64],
    digest: &SigningDigest,
    public: &PublicKey,
) -> Result<Signature, Error> {
    parse_rs(rs)?;
    let (rs, _) = low_s(rs);
    // An x-reduced R (r = x − n) happens with probability ~2⁻¹²⁸ and cannot be expressed in `v`.
    [false, true]
        .into_iter()
        .find(|&odd| {
            recover_low_s(digest.as_bytes(), &rs, odd).is_ok_and(|recovered| recovered == public.0)
        })
        .map(|odd| Signature::from_parts(&rs, odd))
        .ok_or(Error::MalformedEcdsaSignature {
            reason: "r‖s is not a signature by the expected key over this digest",
        })
}

/// Recovers the public key that signed `prehash` (a 32-byte digest, no prefix).
pub fn recover(prehash: &[u8; 32], sig: &Signature) -> Result<PublicKey, Error> {
    // A high-s signature's low-s twin was made by the same key with the opposite parity of R's y.
    let (rs, flipped) = low_s(&sig.rs());
    recover_low_s(prehash, &rs, sig.recovery_parity() != flipped).map(PublicKey)
}

/// Recovers the signer's address.
pub fn recover_address(prehash: &[u8; 32], sig: &Signature) -> Result<Address, Error> {
    recover(prehash, sig).map(|pk| pk.address())
}

/// Whether `sig` over `prehash` was made by the key behind `address`.
pub fn verify(address: &Address, prehash: &[u8; 32], sig: &Signature) -> bool {
    recover_address(prehash, sig).is_ok_and(|a| a == *address)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{AuthMessage, TaskId};
    use proptest::prelude::*;

    /// A distinct valid key per seed (well below either group order).
    fn key(seed: u8) -> SecretKey {
        let mut bytes = [0x11; 32];
        bytes[31] = seed;
        SecretKey::from_bytes(&bytes).unwrap()
    }

    proptest! {
        #[test]
        fn sign_recover_round_trip(seed in any::<u8>(), digest in any::<[u8; 32]>()) {
            let sk = key(seed);
            let sig = sk.sign_prehash(&digest);
            prop_assert!(sig.is_low_s());
            prop_assert!(matches!(sig.to_bytes()[64], 27 | 28));
            prop_assert!(verify(&sk.public_key().address(), &digest, &sig));
            let decoded = Signature::from_bytes(&sig.to_bytes()).unwrap();
            prop_assert_eq!(decoded, sig);
        }

        #[test]
        fn tampering_fails(seed in 0u8..255, digest in any::<[u8; 32]>(), byte in 0usize..32, bit in 0u8..8) {
            let sk = key(seed);
            let sig = sk.sign_prehash(&digest);
            let address = sk.public_key().address();
            let mut other = digest;
            other[byte] ^= 1 << bit;
            prop_assert!(!verify(&address, &other, &sig));
            prop_assert!(!verify(&key(seed + 1).public_key().address(), &digest, &sig));
            let mut bad = sig.to_bytes();
            bad[byte] ^= 1 << bit;
            if let Ok(bad) = Signature::from_bytes(&bad) {
                prop_assert!(!verify(&address, &digest, &bad));
            }
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = Signature::from_bytes(&bytes);
            let _ = PublicKey::from_sec1(&bytes);
            let _ = SecretKey::from_bytes(&bytes);
        }
    }

    #[test]
    fn high_s_and_v_variants_recover_the_same_signer() {
        let sk = key(7);
        let digest = keccak256(b"high-s");
        let sig = sk.sign_prehash(&digest).to_bytes();
        let address = sk.public_key().address();

        // v as 0/1 instead of 27/28.
        let mut raw_v = sig;
        raw_v[64] -= 27;
        assert!(verify(
            &address,
            &digest,
            &Signature::from_bytes(&raw_v).unwrap()
        ));

        // s → n − s with the parity flipped: same signer.
        let rs: [u8; 64] = sig[..64].try_into().unwrap();
        let mut high_s = [0u8; 65];
        high_s[..64].copy_from_slice(&negate_s(&rs));
        high_s[64] = if sig[64] == 27 { 28 } else { 27 };
        let high_s = Signature::from_bytes(&high_s).unwrap();
        assert!(!high_s.is_low_s());
        assert!(verify(&address, &digest, &high_s));

        let mut bad_v = sig;
        bad_v[64] = 29;
        assert_eq!(
            Signature::from_bytes(&bad_v),
            Err(Error::MalformedEcdsaSignature {
                reason: "v must be 0, 1, 27 or 28"
            })
        );
    }

    /// The order `n` of the secp256k1 group, big-endian.
    const ORDER: [u8; 32] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36,
        0x41, 0x41,
    ];

    /// `r‖(n − s)`, by schoolbook subtraction (independent of the library under test).
    fn negate_s(rs: &[u8; 64]) -> [u8; 64] {
        let mut out = *rs;
        let mut borrow = 0i16;
        for i in (0..32).rev() {
            let mut d = i16::from(ORDER[i]) - i16::from(rs[32 + i]) - borrow;
            borrow = i16::from(d < 0);
            if d < 0 {
                d += 256;
            }
            out[32 + i] = d as u8;
        }
        out
    }

    /// `r‖(n − s)` of one of our signatures: what an HSM hands back half of the time.
    fn high_s_rs(sig: &Signature) -> [u8; 64] {
        let rs: [u8; 64] = sig.to_bytes()[..64].try_into().unwrap();
        let high = negate_s(&rs);
        let mut bytes = [0u8; 65];
        bytes[..64].copy_from_slice(&high);
        bytes[64] = 27;
        assert!(
            !Signature::from_bytes(&bytes).unwrap().is_low_s(),
            "s must now be high"
        );
        high
    }

    fn auth_digest(seed: u8) -> SigningDigest {
        AuthMessage {
            task_id: TaskId([seed; 32]),
            avs: Address([0xaa; 20]),
            operator: Address([0xbb; 20]),
            operator_set_id: 1,
            result_signature: &[seed, 1, 2, 3],
        }
        .digest()
    }

    #[test]
    fn hsm_rs_is_normalised_to_low_s_with_the_right_v() {
        let sk = key(9);
        let public = sk.public_key();
        // Several digests, so both values of v are exercised.
        let mut seen_v = std::collections::BTreeSet::new();
        for seed in 0..16 {
            let digest = auth_digest(seed);
            let expected = sk.sign(&digest);
            let rs = high_s_rs(&expected);
            let got = signature_from_rs(&rs, &digest, &public).unwrap();
            assert!(got.is_low_s());
            assert_eq!(got, expected, "(r, low s, right v)");
            assert!(verify(&public.address(), digest.as_bytes(), &got));
            // Already-low s passes through unchanged.
            let low: [u8; 64] = expected.to_bytes()[..64].try_into().unwrap();
            assert_eq!(signature_from_rs(&low, &digest, &public).unwrap(), expected);
            seen_v.insert(got.to_bytes()[64]);
        }
        assert_eq!(seen_v.into_iter().collect::<Vec<_>>(), vec![27, 28]);
    }

    #[test]
    fn hsm_rs_from_another_key_or_digest_is_refused() {
        let sk = key(9);
        let digest = auth_digest(1);
        let rs = high_s_rs(&sk.sign(&digest));
        assert!(matches!(
            signature_from_rs(&rs, &digest, &key(10).public_key()),
            Err(Error::MalformedEcdsaSignature { .. })
        ));
        assert!(matches!(
            signature_from_rs(&rs, &auth_digest(2), &sk.public_key()),
            Err(Error::MalformedEcdsaSignature { .. })
        ));
    }

    #[test]
    fn hsm_rs_out_of_range_is_refused() {
        let sk = key(9);
        let public = sk.public_key();
        let digest = auth_digest(1);
        let good: [u8; 64] = sk.sign(&digest).to_bytes()[..64].try_into().unwrap();
        let n = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
            .unwrap();
        let out_of_range = Err(Error::MalformedEcdsaSignature {
            reason: "r or s out of range",
        });

        assert_eq!(signature_from_rs(&[0; 64], &digest, &public), out_of_range);
        for half in [0..32, 32..64] {
            let mut zero = good;
            zero[half.clone()].fill(0);
            assert_eq!(signature_from_rs(&zero, &digest, &public), out_of_range);
            let mut at_n = good;
            at_n[half.clone()].copy_from_slice(&n);
            assert_eq!(signature_from_rs(&at_n, &digest, &public), out_of_range);
            let mut max = good;
            max[half].fill(0xff);
            assert_eq!(signature_from_rs(&max, &digest, &public), out_of_range);
        }
    }

    #[test]
    fn out_of_range_secret_keys_are_refused() {
        let n = hex::decode("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141")
            .unwrap();
        assert_eq!(
            SecretKey::from_bytes(&[0; 32]).err(),
            Some(Error::SecretKeyOutOfRange)
        );
        assert_eq!(
            SecretKey::from_bytes(&n).err(),
            Some(Error::SecretKeyOutOfRange)
        );
        assert!(matches!(
            SecretKey::from_bytes(&[1; 31]),
            Err(Error::Length { .. })
        ));
    }

    #[test]
    fn debug_redacts_the_secret() {
        let sk = key(0x42);
        let shown = format!("{sk:?}");
        assert!(shown.contains("<redacted>"));
        assert!(!shown.contains(&hex::encode(*sk.to_bytes())));
    }
}
