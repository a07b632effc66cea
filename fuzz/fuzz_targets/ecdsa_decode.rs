//! secp256k1 ECDSA decoders: 65-byte `r‖s‖v` signatures, SEC1 public keys (33 or 65 bytes),
//! 32-byte secret keys; and public-key recovery from `sig(65) ‖ prehash(32)`.
//!
//! Invariants: nothing panics; a decoded signature re-encodes to its input; a 65-byte
//! uncompressed key re-encodes to its input and every decoded key decodes again to itself;
//! recovery agrees with `verify`, is the same for `v` and `v ± 27`, and for the high-s twin of a
//! signature (`s → n − s`, parity flipped); a decodable secret signs low-s with `v ∈ {27,28}`,
//! recovers to its own key, and `signature_from_rs` rebuilds the same signature from `r‖s` or
//! from its high-s twin.
#![no_main]

use avsnode_signer::ecdsa::{self, PublicKey, SecretKey, Signature};
use avsnode_signer::messages::{
    Address, EcdsaVerifier, ResultCertificate, TaskId, certificate_digest, keccak256,
};
use libfuzzer_sys::fuzz_target;

/// The secp256k1 group order `n`, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

fuzz_target!(|data: &[u8]| {
    if let Ok(sig) = Signature::from_bytes(data) {
        assert_eq!(
            sig.to_bytes()[..],
            data[..],
            "signature re-encodes to its input"
        );
        assert!(matches!(data[64], 0 | 1 | 27 | 28));
    }
    if let Ok(pk) = PublicKey::from_sec1(data) {
        let uncompressed = pk.to_uncompressed();
        if data.len() == 65 && data[0] == 0x04 {
            assert_eq!(
                uncompressed[..],
                data[..],
                "uncompressed key re-encodes to its input"
            );
        }
        assert_eq!(PublicKey::from_sec1(&uncompressed), Ok(pk));
        assert_eq!(pk.address().0[..], keccak256(&uncompressed[1..])[12..]);
    }
    if let Ok(bytes) = <&[u8; 32]>::try_from(data) {
        secret(bytes);
    }
    if data.len() >= 65 {
        let (sig, rest) = data.split_at(65);
        let prehash = match <[u8; 32]>::try_from(rest.get(..32).unwrap_or(rest)) {
            Ok(h) => h,
            Err(_) => keccak256(rest),
        };
        if let Ok(sig) = Signature::from_bytes(sig) {
            recovery(&sig, &prehash);
        }
    }
});

fn recovery(sig: &Signature, prehash: &[u8; 32]) {
    let recovered = ecdsa::recover(prehash, sig);
    let mut other_v = sig.to_bytes();
    other_v[64] = match other_v[64] {
        0 => 27,
        1 => 28,
        27 => 0,
        _ => 1,
    };
    let other_v = Signature::from_bytes(&other_v).expect("v in {0,1,27,28}");
    let twin = twin(sig);
    assert_ne!(
        twin.is_low_s(),
        sig.is_low_s(),
        "exactly one of s and n - s is low"
    );
    match &recovered {
        Ok(pk) => {
            // `verify` is `recover_address` compared: one more recovery, not two.
            assert!(ecdsa::verify(&pk.address(), prehash, sig));
            assert_eq!(
                ecdsa::recover(prehash, &other_v).as_ref(),
                Ok(pk),
                "v vs v ± 27"
            );
            assert_eq!(
                ecdsa::recover(prehash, &twin).as_ref(),
                Ok(pk),
                "high-s twin"
            );
        }
        Err(_) => {
            assert!(ecdsa::recover(prehash, &other_v).is_err());
            assert!(ecdsa::recover(prehash, &twin).is_err());
        }
    }
}

/// The same signature with `s → n − s` and the recovery parity flipped.
fn twin(sig: &Signature) -> Signature {
    let mut bytes = sig.to_bytes();
    let mut borrow = 0u16;
    for i in (0..32).rev() {
        let diff = u16::from(N[i])
            .wrapping_sub(u16::from(bytes[32 + i]))
            .wrapping_sub(borrow);
        bytes[32 + i] = diff as u8;
        borrow = u16::from(diff > 0xff);
    }
    bytes[64] = match bytes[64] {
        0 => 1,
        1 => 0,
        27 => 28,
        _ => 27,
    };
    Signature::from_bytes(&bytes).expect("n - s is in [1, n) when s is")
}

fn secret(bytes: &[u8; 32]) {
    let Ok(sk) = SecretKey::from_bytes(bytes) else {
        return;
    };
    assert_eq!(&*sk.to_bytes(), bytes, "secret re-encodes to its input");
    // Signing and two recoveries cost about a millisecond: one input in four.
    if bytes[31] % 4 != 0 {
        return;
    }
    let pk = sk.public_key();
    assert_eq!(PublicKey::from_sec1(&pk.to_uncompressed()), Ok(pk));
    let verifier = EcdsaVerifier {
        address: Address([0x44; 20]),
        version: "1".into(),
    };
    let timestamp = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let certificate = ResultCertificate::new(avsnode_signer::Scheme::Ecdsa, Some(&verifier))
        .expect("an ecdsa certificate with a verifier");
    let (_, digest) = certificate_digest(&certificate, &TaskId(*bytes), timestamp, bytes);
    let sig = sk.sign(&digest);
    assert!(sig.is_low_s(), "produced signatures are low-s");
    assert!(matches!(sig.to_bytes()[64], 27 | 28));
    assert_eq!(ecdsa::recover(digest.as_bytes(), &sig), Ok(pk));
    assert!(ecdsa::verify(&pk.address(), digest.as_bytes(), &sig));

    let rs: [u8; 64] = sig.to_bytes()[..64].try_into().expect("64 bytes");
    assert_eq!(ecdsa::signature_from_rs(&rs, &digest, &pk), Ok(sig));
    let high: [u8; 64] = twin(&sig).to_bytes()[..64].try_into().expect("64 bytes");
    assert_eq!(
        ecdsa::signature_from_rs(&high, &digest, &pk),
        Ok(sig),
        "high s normalised"
    );
}
