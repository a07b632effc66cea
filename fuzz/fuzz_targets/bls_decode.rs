//! BLS12-381 (`min_pk`) decoders: 48-byte compressed public keys, 96-byte compressed
//! signatures, 32-byte secret keys; and verification of `pk(48) ‖ sig(96) ‖ msg`.
//!
//! Invariants: nothing panics; whatever decodes re-encodes to exactly its input and decodes
//! again to the same value; a decodable secret's own signature verifies; a signature that
//! verifies does not verify over any other message.
#![no_main]

use avsnode_signer::bls12_381::{self, PublicKey, SecretKey, Signature};
use avsnode_signer::messages::{ResultCertificate, TaskId, certificate_digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pk) = PublicKey::from_bytes(data) {
        assert_eq!(
            pk.to_bytes()[..],
            data[..],
            "public key re-encodes to its input"
        );
        assert_eq!(PublicKey::from_bytes(&pk.to_bytes()), Ok(pk));
    }
    if let Ok(sig) = Signature::from_bytes(data) {
        assert_eq!(
            sig.to_bytes()[..],
            data[..],
            "signature re-encodes to its input"
        );
        assert_eq!(Signature::from_bytes(&sig.to_bytes()), Ok(sig));
    }
    if let Ok(bytes) = <&[u8; 32]>::try_from(data) {
        secret(bytes);
    }
    if data.len() >= 48 + 96 {
        let (pk, rest) = data.split_at(48);
        let (sig, msg) = rest.split_at(96);
        if let (Ok(pk), Ok(sig)) = (PublicKey::from_bytes(pk), Signature::from_bytes(sig))
            && bls12_381::verify(&pk, msg, &sig)
        {
            let mut other = msg.to_vec();
            other.push(0);
            assert!(
                !bls12_381::verify(&pk, &other, &sig),
                "signature verifies twice"
            );
        }
    }
});

fn secret(bytes: &[u8; 32]) {
    let Ok(sk) = SecretKey::from_bytes(bytes) else {
        return;
    };
    assert_eq!(&*sk.to_bytes(), bytes, "secret re-encodes to its input");
    // Deriving and signing cost milliseconds: one input in eight.
    if bytes[31] % 8 != 0 {
        return;
    }
    let pk = sk.public_key();
    assert_eq!(PublicKey::from_bytes(&pk.to_bytes()), Ok(pk.clone()));
    let timestamp = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let (_, digest) = certificate_digest(
        &ResultCertificate::Bls12381,
        &TaskId(*bytes),
        timestamp,
        bytes,
    );
    let sig = sk.sign(&digest);
    assert_eq!(Signature::from_bytes(&sig.to_bytes()), Ok(sig.clone()));
    assert!(
        bls12_381::verify(&pk, digest.as_bytes(), &sig),
        "own signature verifies"
    );
}
