//! Known-answer tests from `shared/vectors/bn254.json`, decoding edge cases and properties.

use std::str::FromStr;
use std::sync::OnceLock;

use ark_bn254::{Fq2, Fr, G2Affine};
use ark_ec::AffineRepr;
use ark_ec::pairing::Pairing;
use ark_ff::{BigInteger, Field, PrimeField};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use super::*;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/bn254.json"
);

fn vectors() -> &'static Value {
    static V: OnceLock<Value> = OnceLock::new();
    V.get_or_init(|| {
        let text = std::fs::read_to_string(VECTORS)
            .unwrap_or_else(|e| panic!("BN254 vectors expected at {VECTORS}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{VECTORS}: invalid JSON: {e}"))
    })
}

fn field<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {key:?} missing in {v}"))
}

fn cases<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("vector list {key:?} missing"))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"))
}

fn unhex32(s: &str) -> [u8; 32] {
    unhex(s).try_into().expect("32 bytes")
}

fn fq_hex(s: &str) -> Fq {
    fq_from_be(&unhex32(s), "test vector").expect("canonical")
}

fn decimal(x: impl PrimeField) -> String {
    x.into_bigint().to_string()
}

fn key_a() -> SecretKey {
    SecretKey::from_bytes(&unhex(field(&vectors()["key_a"], "secret_hex"))).expect("key_a")
}

fn be32(int: &BigInt<4>) -> [u8; 32] {
    let mut out = [0u8; 32];
    write_be(int, &mut out);
    out
}

#[test]
fn key_a_public_keys_and_operator_id() {
    let v = &vectors()["key_a"];
    let sk = key_a();
    let g1 = sk.public_key_g1();
    assert_eq!(hex::encode(g1.to_wire()), field(v, "pubkey_g1_wire"));
    assert_eq!(
        hex::encode(sk.public_key_g2().to_wire()),
        field(v, "pubkey_g2_wire")
    );
    assert_eq!(hex::encode(g1.operator_id()), field(v, "operator_id"));

    assert_eq!(Fr::from_str(field(v, "secret_decimal")), Ok(sk.scalar));
    assert_eq!(hex::encode(sk.to_bytes()), field(v, "secret_hex"));
    let (x, y) = g1.0.xy().expect("finite");
    assert_eq!(decimal(x), field(v, "pubkey_g1_x_decimal"));
    assert_eq!(decimal(y), field(v, "pubkey_g1_y_decimal"));
}

#[test]
fn key_a_g1_and_g2_keys_share_the_secret() {
    // What the registry checks: e(pk_G1, G2gen) == e(G1gen, pk_G2).
    let sk = key_a();
    let lhs = Bn254::pairing(sk.public_key_g1().0, G2Affine::generator());
    let rhs = Bn254::pairing(G1Affine::generator(), sk.public_key_g2().0);
    assert_eq!(lhs, rhs);
}

#[test]
fn hash_to_g1_solidity_vectors() {
    for case in cases(vectors(), "hash_to_g1_solidity") {
        let h = hash_to_g1_solidity(&unhex32(field(case, "message")));
        let (x, y) = h.xy().expect("finite");
        assert_eq!(decimal(x), field(case, "x_decimal"), "{case}");
        assert_eq!(decimal(y), field(case, "y_decimal"), "{case}");
        assert!(h.is_on_curve());
    }
}

#[test]
fn hash_to_g1_solidity_increments_x() {
    // None of 0x0102…1f20, …21, …22 is the x of a point; the map (like the contract) moves on
    // to …23, so all four digests hash to the same point.
    let d = unhex32("0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20");
    let h = hash_to_g1_solidity(&d);
    let mut x = d;
    x[31] = 0x23;
    assert_eq!(h.xy().expect("finite").0, Fq::from_be_bytes_mod_order(&x));
    for last in 0x21..=0x23 {
        let mut next = d;
        next[31] = last;
        assert_eq!(hash_to_g1_solidity(&next), h);
    }
    // Digests ≥ p are reduced first.
    let mut d_plus_p = Fq::from_be_bytes_mod_order(&d).into_bigint();
    d_plus_p.add_with_carry(&Fq::MODULUS);
    assert_eq!(hash_to_g1_solidity(&be32(&d_plus_p)), h);
}

#[test]
fn sign_solidity_key_a() {
    let pk = G2PublicKey::from_wire(&unhex(field(&vectors()["key_a"], "pubkey_g2_wire")))
        .expect("key_a G2 decodes");
    let sk = key_a();
    for case in cases(vectors(), "sign_solidity_key_a") {
        let msg = unhex32(field(case, "message"));
        let sig = sk.sign(&SigningDigest::for_test(msg), HashToG1::Solidity);
        assert_eq!(
            hex::encode(sig.to_wire()),
            field(case, "signature_wire"),
            "{case}"
        );
        assert_eq!(Signature::from_wire(&sig.to_wire()), Ok(sig));

        assert!(verify(&pk, &msg, &sig, HashToG1::Solidity));
        assert!(!verify(&pk, &msg, &sig, HashToG1::Rfc9380), "map is bound");
        // Flip a high bit: the try-and-increment map sends neighbouring digests to one point.
        let mut tampered = msg;
        tampered[0] ^= 1;
        assert!(!verify(&pk, &tampered, &sig, HashToG1::Solidity));
    }
}

#[test]
fn sign_rfc9380_is_sk_times_h_rfc() {
    let sk = key_a();
    let msg = [7u8; 32];
    let sig = sk.sign(&SigningDigest::for_test(msg), HashToG1::Rfc9380);
    assert_eq!(sig, sk.sign_point(hash_to_g1_rfc9380(&msg, DST)));
    assert!(verify(&sk.public_key_g2(), &msg, &sig, HashToG1::Rfc9380));
    assert!(verify_with_dst(&sk.public_key_g2(), &msg, DST, &sig));
    assert!(!verify_with_dst(
        &sk.public_key_g2(),
        &msg,
        b"another tag",
        &sig
    ));
    assert!(!verify(&sk.public_key_g2(), &msg, &sig, HashToG1::Solidity));
}

#[test]
fn hash_to_field_rfc9380_vectors() {
    let v = &vectors()["hash_to_g1_rfc9380_svdw_ro"];
    let dst = field(v, "dst").as_bytes();
    for case in cases(v, "cases") {
        let [u0, u1] = hash_to_field_rfc9380(field(case, "msg").as_bytes(), dst);
        assert_eq!(u0, fq_hex(field(case, "u0")), "u0 of {case}");
        assert_eq!(u1, fq_hex(field(case, "u1")), "u1 of {case}");
    }
}

#[test]
fn hash_to_g1_rfc9380_svdw_ro_vectors() {
    let v = &vectors()["hash_to_g1_rfc9380_svdw_ro"];
    let dst = field(v, "dst").as_bytes();
    for case in cases(v, "cases") {
        let h = hash_to_g1_rfc9380(field(case, "msg").as_bytes(), dst);
        assert_eq!(
            h.xy(),
            Some((fq_hex(field(case, "x")), fq_hex(field(case, "y")))),
            "{case}"
        );
    }
}

#[test]
fn svdw_map_outputs_are_on_curve() {
    for u in [0u64, 1, 2, 3, 1 << 40] {
        for u in [Fq::from(u), -Fq::from(u)] {
            let p = hash::map_to_curve_svdw(u);
            assert!(p.is_on_curve(), "u = {u}");
            let y = p.xy().expect("finite").1;
            assert_eq!(
                y.into_bigint().is_odd(),
                u.into_bigint().is_odd(),
                "sgn0(y) == sgn0(u)"
            );
        }
    }
}

/// RFC 9380 Appendix K.1, expand_message_xmd(SHA-256).
#[test]
fn expand_message_xmd_rfc9380_k1() {
    let dst = b"QUUX-V01-CS02-with-expander-SHA256-128";
    let long_dst = format!(
        "QUUX-V01-CS02-with-expander-SHA256-128-long-DST-{}",
        "1".repeat(208)
    );
    assert_eq!(long_dst.len(), 256, "exercises the oversize-DST rule");
    let table: [(&[u8], &[u8], &str); 4] = [
        (
            b"",
            dst,
            "68a985b87eb6b46952128911f2a4412bbc302a9d759667f87f7a21d803f07235",
        ),
        (
            b"abc",
            dst,
            "d8ccab23b5985ccea865c6c97b6e5b8350e794e603b4b97902f53a8a0d605615",
        ),
        (
            b"",
            long_dst.as_bytes(),
            "e8dc0c8b686b7ef2074086fbdd2f30e3f8bfbd3bdf177f73f04b97ce618a3ed3",
        ),
        (
            b"abc",
            long_dst.as_bytes(),
            "52dbf4f36cf560fca57dedec2ad924ee9c266341d8f3d6afe5171733b16bbb12",
        ),
    ];
    for (msg, dst, want) in table {
        assert_eq!(hex::encode(expand_message_xmd(msg, dst, 32)), want);
    }
    assert_eq!(expand_message_xmd(b"x", dst, 123).len(), 123);
    assert_eq!(expand_message_xmd(b"x", dst, 8160).len(), 8160);
}

#[test]
fn constants() {
    let v = &vectors()["constants"];
    assert_eq!(Fq::MODULUS.to_string(), field(v, "p_decimal"));
    assert_eq!(Fr::MODULUS.to_string(), field(v, "r_decimal"));
    assert_eq!(DST, b"BLS_SIG_BN254G1_XMD:SHA-256_SSWU_RO_NUL_");
}

// --- decoding ---

fn key_a_wires() -> ([u8; 64], [u8; 128]) {
    let sk = key_a();
    (sk.public_key_g1().to_wire(), sk.public_key_g2().to_wire())
}

/// A point on the twist that is not in the order-r subgroup (most twist points are not).
fn twist_point_outside_subgroup() -> G2Affine {
    (1u64..)
        .find_map(|i| {
            let x = Fq2::new(Fq::from(i), Fq::ONE);
            G2Affine::get_point_from_x_unchecked(x, false)
                .filter(|p| !p.is_in_correct_subgroup_assuming_on_curve())
        })
        .expect("found one")
}

#[test]
fn wire_round_trips() {
    let (g1, g2) = key_a_wires();
    assert_eq!(G1PublicKey::from_wire(&g1).expect("valid").to_wire(), g1);
    assert_eq!(Signature::from_wire(&g1).expect("valid").to_wire(), g1);
    assert_eq!(G2PublicKey::from_wire(&g2).expect("valid").to_wire(), g2);
    // G1 generator (1, 2): checks byte order independently of key_a.
    let mut gen_wire = [0u8; 64];
    gen_wire[31] = 1;
    gen_wire[63] = 2;
    assert_eq!(
        G1PublicKey::from_wire(&gen_wire).map(|k| k.0),
        Ok(G1Affine::generator())
    );
}

#[test]
fn g1_decoding_rejects() {
    let what = "BN254 G1 public key";
    let (g1, _) = key_a_wires();
    for len in [0, 63, 65, 128] {
        assert_eq!(
            G1PublicKey::from_wire(&vec![1u8; len]),
            Err(Error::Length {
                what,
                expected: 64,
                got: len
            })
        );
    }
    assert_eq!(
        G1PublicKey::from_wire(&[0u8; 64]),
        Err(Error::Infinity { what })
    );
    assert_eq!(
        Signature::from_wire(&[0u8; 64]),
        Err(Error::Infinity {
            what: "BN254 signature"
        })
    );

    let mut off_curve = g1;
    off_curve[63] ^= 1;
    assert_eq!(
        G1PublicKey::from_wire(&off_curve),
        Err(Error::NotOnCurve { what })
    );

    let p = be32(&Fq::MODULUS);
    for range in [0..32, 32..64] {
        let mut big = g1;
        big[range.clone()].copy_from_slice(&p);
        assert_eq!(
            G1PublicKey::from_wire(&big),
            Err(Error::NonCanonical { what })
        );
        big[range].fill(0xff);
        assert_eq!(
            G1PublicKey::from_wire(&big),
            Err(Error::NonCanonical { what })
        );
    }
}

#[test]
fn g2_decoding_rejects() {
    let what = "BN254 G2 public key";
    let (_, g2) = key_a_wires();
    for len in [0, 64, 127, 129] {
        assert_eq!(
            G2PublicKey::from_wire(&vec![1u8; len]),
            Err(Error::Length {
                what,
                expected: 128,
                got: len
            })
        );
    }
    assert_eq!(
        G2PublicKey::from_wire(&[0u8; 128]),
        Err(Error::Infinity { what })
    );

    let mut off_curve = g2;
    off_curve[127] ^= 1;
    assert_eq!(
        G2PublicKey::from_wire(&off_curve),
        Err(Error::NotOnCurve { what })
    );

    // Swapping c0 and c1 (the classic encoding mistake) must not decode.
    let mut swapped = g2;
    swapped[..32].copy_from_slice(&g2[32..64]);
    swapped[32..64].copy_from_slice(&g2[..32]);
    assert!(G2PublicKey::from_wire(&swapped).is_err());

    let p = be32(&Fq::MODULUS);
    for start in [0, 32, 64, 96] {
        let mut big = g2;
        big[start..start + 32].copy_from_slice(&p);
        assert_eq!(
            G2PublicKey::from_wire(&big),
            Err(Error::NonCanonical { what })
        );
    }

    let outside = twist_point_outside_subgroup();
    assert!(outside.is_on_curve());
    // Cross-check ark's fast subgroup test against the definition: r·P ≠ O.
    assert!(!outside.mul_bigint(Fr::MODULUS).is_zero());
    assert_eq!(
        G2PublicKey::from_wire(&encode_g2(&outside)),
        Err(Error::NotInSubgroup { what })
    );
}

// --- secret keys ---

#[test]
fn secret_key_range() {
    let r = Fr::MODULUS;
    let mut r_plus_1 = r;
    r_plus_1.add_with_carry(&BigInt::from(1u64));
    let mut r_minus_1 = r;
    r_minus_1.sub_with_borrow(&BigInt::from(1u64));

    for bad in [[0u8; 32], be32(&r), be32(&r_plus_1), [0xff; 32]] {
        assert!(
            matches!(SecretKey::from_bytes(&bad), Err(Error::SecretKeyOutOfRange)),
            "{}",
            hex::encode(bad)
        );
    }
    let top = SecretKey::from_bytes(&be32(&r_minus_1)).expect("r - 1 is a valid key");
    assert_eq!(*top.to_bytes(), be32(&r_minus_1));
    let mut one = [0u8; 32];
    one[31] = 1;
    let one = SecretKey::from_bytes(&one).expect("1 is a valid key");
    assert_eq!(one.public_key_g1().0, G1Affine::generator());

    for len in [0, 31, 33] {
        assert!(matches!(
            SecretKey::from_bytes(&vec![1u8; len]),
            Err(Error::Length { expected: 32, got, .. }) if got == len
        ));
    }
}

#[test]
fn secret_key_debug_is_redacted() {
    let v = &vectors()["key_a"];
    let shown = format!("{:?}", key_a());
    assert_eq!(shown, "bn254::SecretKey(<redacted>)");
    assert!(!shown.contains(field(v, "secret_hex")));
    assert!(!shown.contains(field(v, "secret_decimal")));
}

#[test]
fn random_keys_are_valid_and_distinct() {
    let mut rng = StdRng::seed_from_u64(1);
    let a = SecretKey::random(&mut rng);
    let b = SecretKey::random(&mut rng);
    assert_ne!(*a.to_bytes(), *b.to_bytes());
    let again = SecretKey::from_bytes(&a.to_bytes()[..]).expect("round trip");
    assert_eq!(again.public_key_g2(), a.public_key_g2());
}

// --- properties ---

fn key(seed: [u8; 32]) -> SecretKey {
    SecretKey::random(&mut StdRng::from_seed(seed))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_verify(seed: [u8; 32], other_seed: [u8; 32], msg: [u8; 32], other_msg: [u8; 32]) {
        prop_assume!(seed != other_seed && msg != other_msg);
        let sk = key(seed);
        let pk = sk.public_key_g2();
        let other_pk = key(other_seed).public_key_g2();
        for map in [HashToG1::Solidity, HashToG1::Rfc9380] {
            let sig = sk.sign(&SigningDigest::for_test(msg), map);
            prop_assert!(verify(&pk, &msg, &sig, map));
            prop_assert!(!verify(&pk, &other_msg, &sig, map));
            prop_assert!(!verify(&other_pk, &msg, &sig, map));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn public_key_wire_round_trip(seed: [u8; 32]) {
        let sk = key(seed);
        let g1 = sk.public_key_g1();
        let g2 = sk.public_key_g2();
        prop_assert_eq!(G1PublicKey::from_wire(&g1.to_wire()), Ok(g1));
        prop_assert_eq!(G2PublicKey::from_wire(&g2.to_wire()), Ok(g2));
    }

    #[test]
    fn from_wire_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..=130),
        canonical: bool,
    ) {
        let mut bytes = bytes;
        if canonical {
            // Keep every coordinate below 2^253 < p so decoding gets past the range check.
            for chunk in bytes.chunks_mut(32) {
                chunk[0] &= 0x1f;
            }
        }
        let _ = G1PublicKey::from_wire(&bytes);
        let _ = Signature::from_wire(&bytes);
        let _ = G2PublicKey::from_wire(&bytes);
    }
}

#[test]
fn hourglass_keystore_scalars_are_reduced_mod_r() {
    // The shared Hourglass keystore vector stores 0xabcdef…abcd (≈ 3.5·r); its G1 key (README of
    // shared/vectors/keystores) is that value mod r.
    let secret =
        hex::decode("abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd").unwrap();
    assert_eq!(
        SecretKey::from_bytes(&secret).err(),
        Some(Error::SecretKeyOutOfRange)
    );
    let key = SecretKey::from_keystore_bytes(&secret).unwrap();
    assert_eq!(
        hex::encode(key.public_key_g1().to_wire()),
        "0238c3eab5ce0bc05604942ca2172d67c343e221a58b0bd8d647cba594fd55b30ee8c4a0800d75f64eb42817902211180a7377ed83cbfd3c40a19a9668aa0ab7"
    );
    // r itself reduces to zero: still refused.
    let r =
        hex::decode("30644e72e131a029b85045b68181585d2833e84879b9709143e1f593f0000001").unwrap();
    assert_eq!(
        SecretKey::from_keystore_bytes(&r).err(),
        Some(Error::SecretKeyOutOfRange)
    );
}

#[test]
fn a_batch_is_not_fooled_by_forgeries_that_cancel_out() {
    let sk = key([7; 32]);
    let pk = PreparedPublicKey::new(sk.public_key_g2());
    let (h1, h2) = ([1u8; 32], [2u8; 32]);
    let s1 = sk.sign(&SigningDigest::for_test(h1), HashToG1::Rfc9380);
    let s2 = sk.sign(&SigningDigest::for_test(h2), HashToG1::Rfc9380);
    let d = G1Projective::generator() * Fr::from(12_345u64);
    let f1 = Signature((s1.0 + d).into_affine());
    let f2 = Signature((s2.0 - d).into_affine());
    // Unweighted, the forgeries add up to the honest signatures: a plain sum would accept them.
    assert_eq!(f1.0 + f2.0, s1.0 + s2.0);
    assert_eq!(pk.verify_batch(&[(h1, f1), (h2, f2)]), [false, false]);
    assert_eq!(
        pk.verify_batch(&[(h1, s1), (h2, s2), (h1, f1), (h2, f2)]),
        [true, true, false, false]
    );
    assert!(pk.verify(&h1, &s1) && !pk.verify(&h1, &f1));
}
