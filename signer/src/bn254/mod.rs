//! BN254 BLS signatures as EigenLayer uses them.
//!
//! Signatures are G1 points; an operator has a public key in G2 (what verification uses) and the
//! same key in G1 (what the registry stores, and what the operator id hashes). Verification checks
//! `e(σ, G2gen) == e(H(m), pk_G2)` with one multi-pairing.
//!
//! On the wire every point is EVM-encoded (DESIGN §2.3): a G1 point is `X‖Y`, a G2 point is
//! `X.c1‖X.c0‖Y.c1‖Y.c0` (imaginary part first), each coordinate 32 bytes big-endian. The encoders
//! here are explicit: arkworks' own serialisation is little-endian and never goes on the wire.
//! Decoding rejects non-canonical coordinates, the point at infinity, off-curve points and (for
//! G2) points outside the prime-order subgroup.
//!
//! Two hash-to-G1 maps are needed (DESIGN §4.4), chosen per signature with [`HashToG1`]:
//! - `H_sol` ([`hash_to_g1_solidity`]), the contracts' try-and-increment map, for the certificate
//!   (result) signature, which is verified on chain;
//! - `H_rfc` ([`hash_to_g1_rfc9380`]), RFC 9380 hash-to-curve with the SVDW map, for the auth
//!   signature and for verifying aggregators' task signatures.
//!
//! # Caveat
//!
//! arkworks' scalar multiplication is not constant-time, so signing may leak timing information
//! about the secret key to a local observer. Secret keys zeroize on drop, but the `Fr` copies
//! arkworks makes during arithmetic are not wiped.

mod hash;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::LazyLock;

use ark_bn254::{Bn254, Fq2, Fr, G1Projective, G2Affine};
use ark_ec::pairing::Pairing;
use ark_ec::{AffineRepr, CurveGroup, PrimeGroup, VariableBaseMSM};
use ark_ff::{AdditiveGroup, BigInt, PrimeField, Zero};
use rand::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::messages::keccak256;
use crate::{Error, SigningDigest};

pub use ark_bn254::{Fq, G1Affine};
pub use hash::{
    expand_message_xmd, hash_to_field_rfc9380, hash_to_g1_rfc9380, hash_to_g1_solidity,
};

/// The domain separation tag of the RFC 9380 map, as EigenLayer (gnark) uses it.
// The tag says SSWU but the map is SVDW: gnark named it so, and it must match byte for byte.
pub const DST: &[u8] = b"BLS_SIG_BN254G1_XMD:SHA-256_SSWU_RO_NUL_";

/// Which hash-to-G1 map a signature uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HashToG1 {
    /// `H_sol`, the contracts' try-and-increment map: result (certificate) signatures.
    Solidity,
    /// `H_rfc`, RFC 9380 SVDW with [`DST`]: auth signatures and aggregator signatures.
    Rfc9380,
}

/// A BN254 secret key: a scalar in `[1, r)`, 32 bytes big-endian.
///
/// Zeroized on drop, printed as `<redacted>`, deliberately not `Clone`.
pub struct SecretKey {
    scalar: Fr,
}

impl SecretKey {
    /// Decodes 32 big-endian bytes. Values `0` and `≥ r` are rejected, never reduced mod `r`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: &[u8; 32] = bytes.try_into().map_err(|_| Error::Length {
            what: "BN254 secret key",
            expected: 32,
            got: bytes.len(),
        })?;
        let mut int = bigint_from_be(bytes);
        let scalar = Fr::from_bigint(int);
        int.zeroize();
        match scalar {
            Some(scalar) if scalar != Fr::ZERO => Ok(SecretKey { scalar }),
            _ => Err(Error::SecretKeyOutOfRange),
        }
    }

    /// Decodes the scalar of a BN254 **keystore**, reducing it mod `r`.
    ///
    /// Hourglass (and the crypto library it uses) writes the secret it was given without reducing
    /// it, and uses it mod `r`: its own test keystore holds `0xabcdef…abcd`, about 3.5·r, whose key
    /// is that value mod `r`. Reading such files needs the reduction; only a scalar ≡ 0 is
    /// refused. Raw secrets typed in by an operator go through the strict [`SecretKey::from_bytes`].
    pub fn from_keystore_bytes(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: &[u8; 32] = bytes.try_into().map_err(|_| Error::Length {
            what: "BN254 secret key",
            expected: 32,
            got: bytes.len(),
        })?;
        let scalar = Fr::from_be_bytes_mod_order(bytes);
        if scalar == Fr::ZERO {
            return Err(Error::SecretKeyOutOfRange);
        }
        Ok(SecretKey { scalar })
    }

    /// A uniformly random key in `[1, r)`.
    pub fn random<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut buf = Zeroizing::new([0u8; 32]);
        loop {
            rng.fill_bytes(&mut buf[..]);
            // r < 2^254: rejection sampling from [0, 2^254) keeps the result uniform and
            // accepts about 3 draws in 4.
            buf[0] &= 0x3f;
            if let Ok(key) = Self::from_bytes(&buf[..]) {
                return key;
            }
        }
    }

    /// The key as 32 big-endian bytes.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        let mut out = Zeroizing::new([0u8; 32]);
        let mut int = self.scalar.into_bigint();
        write_be(&int, &mut out);
        int.zeroize();
        out
    }

    /// The public key in G1 (`sk·G1gen`), the form the registry stores.
    pub fn public_key_g1(&self) -> G1PublicKey {
        G1PublicKey((G1Projective::generator() * self.scalar).into_affine())
    }

    /// The public key in G2 (`sk·G2gen`), the form verification uses.
    pub fn public_key_g2(&self) -> G2PublicKey {
        G2PublicKey((ark_bn254::G2Projective::generator() * self.scalar).into_affine())
    }

    /// Signs a digest the node computed: `sk·H(digest)` with the chosen map (for
    /// [`HashToG1::Rfc9380`] the message is the digest's 32 bytes and the tag is [`DST`]).
    pub fn sign(&self, digest: &SigningDigest, map: HashToG1) -> Signature {
        self.sign_point(hash_digest(digest.as_bytes(), map))
    }

    /// `sk·h` for an already hashed message (known-answer tests sign arbitrary messages).
    pub(crate) fn sign_point(&self, h: G1Affine) -> Signature {
        Signature((h * self.scalar).into_affine())
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.scalar.zeroize();
    }
}

impl ZeroizeOnDrop for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bn254::SecretKey(<redacted>)")
    }
}

/// A public key in G1 (64-byte wire form `X‖Y`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct G1PublicKey(G1Affine);

impl G1PublicKey {
    /// Decodes and validates the 64-byte wire form.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, Error> {
        decode_g1(bytes, "BN254 G1 public key").map(G1PublicKey)
    }

    /// The 64-byte wire form `X‖Y`.
    pub fn to_wire(&self) -> [u8; 64] {
        encode_g1(&self.0)
    }

    /// The EigenLayer operator id: `keccak256(X‖Y)`.
    pub fn operator_id(&self) -> [u8; 32] {
        keccak256(&self.to_wire())
    }
}

impl fmt::Debug for G1PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G1PublicKey(0x{})", hex::encode(self.to_wire()))
    }
}

/// A public key in G2 (128-byte wire form `X.c1‖X.c0‖Y.c1‖Y.c0`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct G2PublicKey(G2Affine);

impl G2PublicKey {
    /// Decodes and validates the 128-byte wire form, including the subgroup check.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, Error> {
        decode_g2(bytes, "BN254 G2 public key").map(G2PublicKey)
    }

    /// The 128-byte wire form `X.c1‖X.c0‖Y.c1‖Y.c0`.
    pub fn to_wire(&self) -> [u8; 128] {
        encode_g2(&self.0)
    }
}

impl fmt::Debug for G2PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "G2PublicKey(0x{})", hex::encode(self.to_wire()))
    }
}

/// A signature: a G1 point (64-byte wire form `X‖Y`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(G1Affine);

impl Signature {
    /// Decodes and validates the 64-byte wire form.
    pub fn from_wire(bytes: &[u8]) -> Result<Self, Error> {
        decode_g1(bytes, "BN254 signature").map(Signature)
    }

    /// The 64-byte wire form `X‖Y`.
    pub fn to_wire(&self) -> [u8; 64] {
        encode_g1(&self.0)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bn254::Signature(0x{})", hex::encode(self.to_wire()))
    }
}

/// Verifies a signature over a 32-byte digest with the chosen map (for [`HashToG1::Rfc9380`],
/// with [`DST`]).
pub fn verify(pk: &G2PublicKey, digest: &[u8; 32], sig: &Signature, map: HashToG1) -> bool {
    verify_point(pk, hash_digest(digest, map), sig)
}

/// Verifies a signature made with the RFC 9380 map over any message and tag.
pub fn verify_with_dst(pk: &G2PublicKey, msg: &[u8], dst: &[u8], sig: &Signature) -> bool {
    verify_point(pk, hash_to_g1_rfc9380(msg, dst), sig)
}

fn hash_digest(digest: &[u8; 32], map: HashToG1) -> G1Affine {
    match map {
        HashToG1::Solidity => hash_to_g1_solidity(digest),
        HashToG1::Rfc9380 => hash_to_g1_rfc9380(digest, DST),
    }
}

/// `e(σ, G2gen) == e(h, pk)`, as one multi-pairing `e(σ, -G2gen)·e(h, pk) == 1`.
fn verify_point(pk: &G2PublicKey, h: G1Affine, sig: &Signature) -> bool {
    pairs_to_one(sig.0, h, G2Prepared::from(pk.0))
}

type G2Prepared = <Bn254 as Pairing>::G2Prepared;

/// `-G2gen`, prepared once for every verification.
static MINUS_G2_GENERATOR: LazyLock<G2Prepared> =
    LazyLock::new(|| G2Prepared::from(-G2Affine::generator()));

/// `e(s, -G2gen)·e(h, pk) == 1`.
fn pairs_to_one(s: G1Affine, h: G1Affine, pk: G2Prepared) -> bool {
    Bn254::multi_pairing([s, h], [MINUS_G2_GENERATOR.clone(), pk]).is_zero()
}

/// A G2 public key with its side of the pairing computed once: a key that checks many
/// signatures (an aggregator's, which signs every task it sends) is prepared when it is loaded,
/// not at every check.
#[derive(Clone)]
pub struct PreparedPublicKey {
    key: G2PublicKey,
    prepared: G2Prepared,
}

impl PreparedPublicKey {
    /// Prepares `key`.
    pub fn new(key: G2PublicKey) -> PreparedPublicKey {
        PreparedPublicKey {
            prepared: G2Prepared::from(key.0),
            key,
        }
    }

    /// The key.
    pub fn key(&self) -> &G2PublicKey {
        &self.key
    }

    /// Whether `sig` is a signature of `digest` under this key, RFC 9380 map ([`DST`]): the
    /// check of an aggregator's task signature.
    pub fn verify(&self, digest: &[u8; 32], sig: &Signature) -> bool {
        let h = hash_digest(digest, HashToG1::Rfc9380);
        pairs_to_one(sig.0, h, self.prepared.clone())
    }

    /// [`PreparedPublicKey::verify`] for many signatures at once: `result[i]` is whether
    /// `items[i]` verifies, the same answer as checking it alone.
    ///
    /// The whole batch is one check of a random linear combination — with fresh random
    /// 128-bit `rᵢ`, `e(Σ rᵢσᵢ, -G2gen)·e(Σ rᵢH(hᵢ), pk) == 1` — which holds for a batch with a
    /// bad signature with probability at most 2⁻¹²⁸. A batch that fails is split in halves,
    /// each checked with new randomisers, until every bad signature stands alone: a forged
    /// signature never makes an honest one fail.
    pub fn verify_batch(&self, items: &[([u8; 32], Signature)]) -> Vec<bool> {
        let points: Vec<(G1Affine, G1Affine)> = items
            .iter()
            .map(|(digest, sig)| (sig.0, hash_digest(digest, HashToG1::Rfc9380)))
            .collect();
        let mut results = vec![false; items.len()];
        self.settle(&points, &mut results, &mut rand::thread_rng());
        results
    }

    /// Checks `points` together and, if that fails, each half on its own; writes the verdicts
    /// into `results` (the same length).
    fn settle(
        &self,
        points: &[(G1Affine, G1Affine)],
        results: &mut [bool],
        rng: &mut (impl RngCore + CryptoRng),
    ) {
        let holds = match points {
            [] => return,
            [(sig, h)] => pairs_to_one(*sig, *h, self.prepared.clone()),
            _ => {
                let randomisers: Vec<Fr> = points
                    .iter()
                    .map(|_| {
                        let mut r = 0u128;
                        while r == 0 {
                            r = u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64());
                        }
                        Fr::from(r)
                    })
                    .collect();
                let (sigs, hashes): (Vec<G1Affine>, Vec<G1Affine>) = points.iter().copied().unzip();
                let combine = |bases: &[G1Affine]| {
                    G1Projective::msm(bases, &randomisers)
                        .map(|p| p.into_affine())
                        .unwrap_or_default()
                };
                pairs_to_one(combine(&sigs), combine(&hashes), self.prepared.clone())
            }
        };
        if holds {
            results.fill(true);
        } else if points.len() > 1 {
            let half = points.len() / 2;
            let (left, right) = results.split_at_mut(half);
            self.settle(&points[..half], left, rng);
            self.settle(&points[half..], right, rng);
        }
    }
}

impl fmt::Debug for PreparedPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Prepared{:?}", self.key)
    }
}

fn bigint_from_be(bytes: &[u8; 32]) -> BigInt<4> {
    let mut limbs = [0u64; 4];
    for (limb, chunk) in limbs.iter_mut().rev().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *limb = u64::from_be_bytes(word);
    }
    BigInt::new(limbs)
}

fn write_be(int: &BigInt<4>, out: &mut [u8; 32]) {
    for (limb, chunk) in int.0.iter().rev().zip(out.chunks_exact_mut(8)) {
        chunk.copy_from_slice(&limb.to_be_bytes());
    }
}

fn fq_to_be(x: Fq) -> [u8; 32] {
    let mut out = [0u8; 32];
    write_be(&x.into_bigint(), &mut out);
    out
}

fn fq_from_be(bytes: &[u8], what: &'static str) -> Result<Fq, Error> {
    let mut word = [0u8; 32];
    word.copy_from_slice(bytes);
    Fq::from_bigint(bigint_from_be(&word)).ok_or(Error::NonCanonical { what })
}

/// EVM form of a G1 point. Infinity would encode as all zeros, but no value of this module's
/// types is ever the point at infinity.
fn encode_g1(p: &G1Affine) -> [u8; 64] {
    let (x, y) = p.xy().unwrap_or((Fq::ZERO, Fq::ZERO));
    let mut out = [0u8; 64];
    out[..32].copy_from_slice(&fq_to_be(x));
    out[32..].copy_from_slice(&fq_to_be(y));
    out
}

/// EVM form of a G2 point: imaginary part first (ark's `Fq2` is `c0 + c1·u`).
fn encode_g2(p: &G2Affine) -> [u8; 128] {
    let (x, y) = p.xy().unwrap_or((Fq2::ZERO, Fq2::ZERO));
    let mut out = [0u8; 128];
    out[..32].copy_from_slice(&fq_to_be(x.c1));
    out[32..64].copy_from_slice(&fq_to_be(x.c0));
    out[64..96].copy_from_slice(&fq_to_be(y.c1));
    out[96..].copy_from_slice(&fq_to_be(y.c0));
    out
}

fn decode_g1(bytes: &[u8], what: &'static str) -> Result<G1Affine, Error> {
    if bytes.len() != 64 {
        return Err(Error::Length {
            what,
            expected: 64,
            got: bytes.len(),
        });
    }
    let x = fq_from_be(&bytes[..32], what)?;
    let y = fq_from_be(&bytes[32..], what)?;
    // The EVM encodes infinity as (0, 0); it is never a valid key or signature.
    if x == Fq::ZERO && y == Fq::ZERO {
        return Err(Error::Infinity { what });
    }
    let p = G1Affine::new_unchecked(x, y);
    if !p.is_on_curve() {
        return Err(Error::NotOnCurve { what });
    }
    // G1 has cofactor 1: every point on the curve is in the prime-order group.
    Ok(p)
}

fn decode_g2(bytes: &[u8], what: &'static str) -> Result<G2Affine, Error> {
    if bytes.len() != 128 {
        return Err(Error::Length {
            what,
            expected: 128,
            got: bytes.len(),
        });
    }
    let x = Fq2::new(
        fq_from_be(&bytes[32..64], what)?,
        fq_from_be(&bytes[..32], what)?,
    );
    let y = Fq2::new(
        fq_from_be(&bytes[96..], what)?,
        fq_from_be(&bytes[64..96], what)?,
    );
    if x == Fq2::ZERO && y == Fq2::ZERO {
        return Err(Error::Infinity { what });
    }
    let p = G2Affine::new_unchecked(x, y);
    if !p.is_on_curve() {
        return Err(Error::NotOnCurve { what });
    }
    // The twist's cofactor is not 1: without this check a key could sit in a small subgroup.
    if !p.is_in_correct_subgroup_assuming_on_curve() {
        return Err(Error::NotInSubgroup { what });
    }
    Ok(p)
}
