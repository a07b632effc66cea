//! The two hash-to-G1 maps (DESIGN §4.4) and the RFC 9380 pieces under the second one.
//!
//! Neither map handles secrets, so neither is written to be constant-time.

use std::sync::OnceLock;

use ark_bn254::{Fq, G1Affine, G1Projective};
use ark_ec::CurveGroup;
use ark_ff::{AdditiveGroup, BigInt, BigInteger, Field, PrimeField};
use sha2::{Digest as _, Sha256};

/// SHA-256 output size (`b_in_bytes`) and input block size (`s_in_bytes`).
const B_IN_BYTES: usize = 32;
const S_IN_BYTES: usize = 64;

/// `L` of RFC 9380 §5: `ceil((ceil(log2(p)) + k) / 8)` with k = 128 bits of security.
const L: usize = 48;

/// The curve's `B` in `y² = x³ + B` (`A = 0`).
const B: u64 = 3;

/// RFC 9380 §5.3.1 `expand_message_xmd` with SHA-256: `len` uniformly random bytes from `msg`
/// and the domain separation tag `dst`.
///
/// A `dst` longer than 255 bytes is first replaced by
/// `SHA-256("H2C-OVERSIZE-DST-" ‖ dst)`, as RFC 9380 §5.3.3 prescribes.
///
/// # Panics
///
/// If `len > 8160` (255 SHA-256 blocks), which the RFC forbids. Callers in this crate ask for
/// 96 bytes.
pub fn expand_message_xmd(msg: &[u8], dst: &[u8], len: usize) -> Vec<u8> {
    let ell = len.div_ceil(B_IN_BYTES);
    assert!(
        ell <= 255,
        "expand_message_xmd: len {len} exceeds 255 SHA-256 blocks"
    );

    let oversize: [u8; 32];
    let dst = if dst.len() > 255 {
        oversize = Sha256::new()
            .chain_update(b"H2C-OVERSIZE-DST-")
            .chain_update(dst)
            .finalize()
            .into();
        &oversize[..]
    } else {
        dst
    };
    // Fits: both lengths are at most 255 here.
    let dst_prime_len = [dst.len() as u8];
    let len_bytes = (len as u16).to_be_bytes();

    let b0: [u8; 32] = Sha256::new()
        .chain_update([0u8; S_IN_BYTES])
        .chain_update(msg)
        .chain_update(len_bytes)
        .chain_update([0u8])
        .chain_update(dst)
        .chain_update(dst_prime_len)
        .finalize()
        .into();

    let mut out = Vec::with_capacity(ell * B_IN_BYTES);
    let mut b_prev: [u8; 32] = Sha256::new()
        .chain_update(b0)
        .chain_update([1u8])
        .chain_update(dst)
        .chain_update(dst_prime_len)
        .finalize()
        .into();
    out.extend_from_slice(&b_prev);
    for i in 2..=ell {
        let mut mixed = b0;
        for (m, b) in mixed.iter_mut().zip(b_prev) {
            *m ^= b;
        }
        b_prev = Sha256::new()
            .chain_update(mixed)
            .chain_update([i as u8])
            .chain_update(dst)
            .chain_update(dst_prime_len)
            .finalize()
            .into();
        out.extend_from_slice(&b_prev);
    }
    out.truncate(len);
    out
}

/// RFC 9380 §5.2 `hash_to_field(msg, 2)` for the BN254 base field: 96 bytes from
/// [`expand_message_xmd`], each 48-byte half read big-endian and reduced mod p.
pub fn hash_to_field_rfc9380(msg: &[u8], dst: &[u8]) -> [Fq; 2] {
    let uniform = expand_message_xmd(msg, dst, 2 * L);
    [
        Fq::from_be_bytes_mod_order(&uniform[..L]),
        Fq::from_be_bytes_mod_order(&uniform[L..]),
    ]
}

/// RFC 9380 §3 `hash_to_curve` (random-oracle variant) onto BN254 G1: two field elements, two
/// SVDW maps, one addition. G1 has cofactor 1, so there is no cofactor clearing.
pub fn hash_to_g1_rfc9380(msg: &[u8], dst: &[u8]) -> G1Affine {
    let [u0, u1] = hash_to_field_rfc9380(msg, dst);
    (G1Projective::from(map_to_curve_svdw(u0)) + map_to_curve_svdw(u1)).into_affine()
}

/// The EigenLayer contracts' `BN254.hashToG1`: try-and-increment from `x = uint256(d) mod p`,
/// taking `y = β^((p+1)/4)` exactly as computed (no sign normalisation), so the point matches
/// what the chain recomputes. `H_sol(0) = (1, 2)`.
pub fn hash_to_g1_solidity(digest: &[u8; 32]) -> G1Affine {
    let exp = p_plus_1_div_4();
    let mut x = Fq::from_be_bytes_mod_order(digest);
    loop {
        let beta = x * x.square() + Fq::from(B);
        let y = beta.pow(exp);
        if y.square() == beta {
            return G1Affine::new_unchecked(x, y);
        }
        x += Fq::ONE;
    }
}

/// `(p + 1) / 4`, the square-root exponent for p ≡ 3 (mod 4).
fn p_plus_1_div_4() -> BigInt<4> {
    let mut e = Fq::MODULUS;
    // p < 2^254, so neither step loses a bit.
    e.add_with_carry(&BigInt::from(1u64));
    e.div2();
    e.div2();
    e
}

/// RFC 9380 `sgn0` for a prime field: the parity of the canonical integer.
fn sgn0(x: Fq) -> bool {
    x.into_bigint().is_odd()
}

/// The SVDW constants of RFC 9380 §6.6.1 for `Z = 1`, `A = 0`, `B = 3`.
#[derive(Debug)]
struct SvdwConstants {
    /// `g(Z)`.
    c1: Fq,
    /// `-Z / 2`.
    c2: Fq,
    /// `sqrt(-g(Z) · (3Z² + 4A))`, the root with `sgn0 = 0`.
    c3: Fq,
    /// `-4 · g(Z) / (3Z² + 4A)`.
    c4: Fq,
}

const Z: u64 = 1;

fn svdw_constants() -> &'static SvdwConstants {
    static CONSTANTS: OnceLock<SvdwConstants> = OnceLock::new();
    CONSTANTS.get_or_init(|| {
        let z = Fq::from(Z);
        let g_z = z * z.square() + Fq::from(B);
        let three_z2 = Fq::from(3u64) * z.square();
        let c2 = -z * Fq::from(2u64).inverse().expect("2 is invertible");
        let c3 = (-g_z * three_z2)
            .sqrt()
            .expect("-g(Z)·3Z² is a square for BN254, Z = 1");
        let c3 = if sgn0(c3) { -c3 } else { c3 };
        let c4 = -Fq::from(4u64) * g_z * three_z2.inverse().expect("3Z² is non-zero");
        SvdwConstants {
            c1: g_z,
            c2,
            c3,
            c4,
        }
    })
}

/// `CMOV(a, b, c)`: `b` if `c`, else `a`.
fn cmov(a: Fq, b: Fq, c: bool) -> Fq {
    if c { b } else { a }
}

/// RFC 9380 `is_square`: true for 0 too.
fn is_square(x: Fq) -> bool {
    !x.legendre().is_qnr()
}

fn g(x: Fq) -> Fq {
    x.square() * x + Fq::from(B)
}

/// RFC 9380 §6.6.1 Shallue–van de Woestijne map, the straight-line steps of Appendix F.1.
pub(crate) fn map_to_curve_svdw(u: Fq) -> G1Affine {
    let SvdwConstants { c1, c2, c3, c4 } = *svdw_constants();
    let mut tv1 = u.square() * c1;
    let tv2 = Fq::ONE + tv1;
    tv1 = Fq::ONE - tv1;
    // inv0: 0 maps to 0.
    let tv3 = (tv1 * tv2).inverse().unwrap_or(Fq::ZERO);
    let tv4 = u * tv1 * tv3 * c3;
    let x1 = c2 - tv4;
    let e1 = is_square(g(x1));
    let x2 = c2 + tv4;
    let e2 = is_square(g(x2)) && !e1;
    let x3 = (tv2.square() * tv3).square() * c4 + Fq::from(Z);
    let x = cmov(x3, x1, e1);
    let x = cmov(x, x2, e2);
    // SVDW guarantees one of g(x1), g(x2), g(x3) is square; the CMOVs pick it.
    let y = g(x).sqrt().expect("SVDW picks an x with g(x) square");
    let y = cmov(-y, y, sgn0(u) == sgn0(y));
    G1Affine::new_unchecked(x, y)
}
