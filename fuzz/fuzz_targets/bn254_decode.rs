//! BN254 wire decoders (DESIGN §2.3): G1 public keys and signatures (64-byte `X‖Y`), G2 public
//! keys (128-byte `X.c1‖X.c0‖Y.c1‖Y.c0`), 32-byte secret keys (strict and keystore forms), and
//! the two hash-to-G1 maps on arbitrary messages and tags.
//!
//! Invariants: nothing panics; whatever decodes re-encodes to exactly its input (encodings are
//! canonical) and decodes again to the same value; a G1 key and a signature accept the same
//! bytes; the operator id is `keccak256(wire)`; a strict secret is a keystore secret, and a
//! keystore secret reduces to a canonical scalar; hash-to-G1 lands on the curve.
#![no_main]

use avsnode_signer::bn254::{
    DST, G1PublicKey, G2PublicKey, SecretKey, Signature, expand_message_xmd, hash_to_g1_rfc9380,
    hash_to_g1_solidity,
};
use avsnode_signer::messages::keccak256;
use ark_ec::AffineRepr;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    g1(data);
    g2(data);
    if let Ok(bytes) = <&[u8; 32]>::try_from(data) {
        secret(bytes);
    }
    hashes(data);
});

fn g1(data: &[u8]) {
    let pk = G1PublicKey::from_wire(data);
    let sig = Signature::from_wire(data);
    assert_eq!(
        pk.is_ok(),
        sig.is_ok(),
        "G1 keys and signatures share one encoding"
    );
    if let Ok(pk) = pk {
        assert_eq!(pk.to_wire()[..], data[..], "G1 key re-encodes to its input");
        assert_eq!(G1PublicKey::from_wire(&pk.to_wire()), Ok(pk));
        assert_eq!(pk.operator_id(), keccak256(data));
    }
    if let Ok(sig) = sig {
        assert_eq!(
            sig.to_wire()[..],
            data[..],
            "signature re-encodes to its input"
        );
        assert_eq!(Signature::from_wire(&sig.to_wire()), Ok(sig));
    }
}

fn g2(data: &[u8]) {
    if let Ok(pk) = G2PublicKey::from_wire(data) {
        assert_eq!(pk.to_wire()[..], data[..], "G2 key re-encodes to its input");
        assert_eq!(G2PublicKey::from_wire(&pk.to_wire()), Ok(pk));
    }
}

fn secret(bytes: &[u8; 32]) {
    let strict = SecretKey::from_bytes(bytes);
    let keystore = SecretKey::from_keystore_bytes(bytes);
    if let Ok(sk) = &strict {
        assert_eq!(
            &*sk.to_bytes(),
            bytes,
            "strict secret re-encodes to its input"
        );
        let reduced = keystore
            .as_ref()
            .expect("a strict secret is a keystore secret");
        assert_eq!(
            *reduced.to_bytes(),
            *sk.to_bytes(),
            "reduction of a reduced scalar"
        );
    }
    let Ok(sk) = keystore else {
        return;
    };
    // The reduced scalar is canonical.
    let canonical = sk.to_bytes();
    let again = SecretKey::from_bytes(&canonical[..]).expect("reduced scalar is in [1, r)");
    assert_eq!(*again.to_bytes(), *canonical);

    // No key derivation or signing here: arkworks' scalar arithmetic branches on the scalar's
    // bits, so libFuzzer takes every new scalar for new coverage and ends up spending nearly all
    // its time (about 80 ms an input) in pairings. The signer's proptests sign with random keys.
}

fn hashes(data: &[u8]) {
    // First byte: the tag's length; then the tag, then the message.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (dst, msg) = rest.split_at(usize::from(n).min(rest.len()));
    let p = hash_to_g1_rfc9380(msg, dst);
    assert!(!p.is_zero() && p.is_on_curve(), "H_rfc off the curve");
    if dst.is_empty() {
        let p = hash_to_g1_rfc9380(msg, DST);
        assert!(!p.is_zero() && p.is_on_curve(), "H_rfc off the curve");
    }
    // RFC 9380 allows up to 255 blocks of output.
    let len = usize::from(u16::from_be_bytes([n, rest.first().copied().unwrap_or(0)])) % 8161;
    assert_eq!(expand_message_xmd(msg, dst, len).len(), len);
    if let Ok(digest) = <&[u8; 32]>::try_from(msg) {
        let p = hash_to_g1_solidity(digest);
        assert!(!p.is_zero() && p.is_on_curve(), "H_sol off the curve");
    }
}
