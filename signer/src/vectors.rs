//! Known-answer tests from `../shared/vectors/` (ECDSA and BLS12-381; BN254's live beside its
//! module). Table-driven: every case in each file runs.

use serde_json::Value;

use crate::messages::SigningDigest;
use crate::{bls12_381, ecdsa};

pub(crate) fn load(name: &str) -> Value {
    let path = format!("{}/../../shared/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("test vectors expected at {path} (shared/ beside the repo): {e}")
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(crate) fn hex_field(case: &Value, field: &str) -> Vec<u8> {
    let s = case[field]
        .as_str()
        .unwrap_or_else(|| panic!("vector field {field} missing: {case}"));
    hex::decode(s).unwrap_or_else(|e| panic!("vector field {field}: {e}"))
}

fn bytes32(v: Vec<u8>) -> [u8; 32] {
    v.try_into().expect("32 bytes")
}

#[test]
fn ecdsa_vectors() {
    let file = load("ecdsa.json");
    let cases = file["cases"].as_array().expect("cases");
    assert!(cases.len() >= 2);
    for case in cases {
        let sk = ecdsa::SecretKey::from_bytes(&hex_field(case, "secret")).unwrap();
        let digest = bytes32(hex_field(case, "digest"));
        let sig = sk.sign(&SigningDigest::for_test(digest)).to_bytes();
        if case.get("address").is_some() {
            assert_eq!(
                sk.public_key().address().0.to_vec(),
                hex_field(case, "address")
            );
        }
        if case.get("signature").is_some() {
            assert_eq!(
                hex::encode(sig),
                case["signature"].as_str().unwrap(),
                "{case}"
            );
        } else {
            assert_eq!(sig[..32], hex_field(case, "r")[..], "{case}");
            assert_eq!(sig[32..64], hex_field(case, "s")[..], "{case}");
            assert_eq!(
                u64::from(sig[64] - 27),
                case["recovery_id"].as_u64().unwrap(),
                "{case}"
            );
        }
        let sig = ecdsa::Signature::from_bytes(&sig).unwrap();
        assert!(sig.is_low_s());
        assert!(ecdsa::verify(&sk.public_key().address(), &digest, &sig));
    }
}

#[test]
fn bls12_381_sign_vectors() {
    let file = load("bls12_381.json");
    let cases = file["sign"].as_array().expect("sign");
    assert!(cases.len() >= 3);
    for case in cases {
        let sk = bls12_381::SecretKey::from_bytes(&hex_field(case, "privkey"));
        let msg = hex_field(case, "message");
        match case["signature"].as_str() {
            None => assert_eq!(sk.err(), Some(crate::Error::SecretKeyOutOfRange), "{case}"),
            Some(expected) => {
                let sk = sk.unwrap();
                let sig = sk.sign_message(&msg);
                assert_eq!(hex::encode(sig.to_bytes()), expected, "{case}");
                assert!(bls12_381::verify(&sk.public_key(), &msg, &sig));
            }
        }
    }
}

#[test]
fn bls12_381_verify_vectors() {
    let file = load("bls12_381.json");
    let cases = file["verify"].as_array().expect("verify");
    assert!(cases.len() >= 2);
    for case in cases {
        let pk = bls12_381::PublicKey::from_bytes(&hex_field(case, "pubkey"));
        let sig = bls12_381::Signature::from_bytes(&hex_field(case, "signature"));
        let msg = hex_field(case, "message");
        // A key or signature that does not decode (infinity, off-curve) can never verify.
        let verified = match (pk, sig) {
            (Ok(pk), Ok(sig)) => bls12_381::verify(&pk, &msg, &sig),
            _ => false,
        };
        assert_eq!(verified, case["output"].as_bool().unwrap(), "{case}");
    }
}

#[test]
fn infinity_public_key_is_refused_by_name() {
    let mut infinity = [0u8; 48];
    infinity[0] = 0xc0;
    assert!(matches!(
        bls12_381::PublicKey::from_bytes(&infinity),
        Err(crate::Error::Infinity { .. })
    ));
}

#[test]
fn certificate_typehashes_match_their_type_strings() {
    use crate::messages::*;
    let bn = load("bn254.json");
    let constants = &bn["constants"];
    assert_eq!(
        hex::encode(BN254_CERT_TYPEHASH),
        constants["bn254_certificate_typehash"].as_str().unwrap()
    );
    assert_eq!(
        hex::encode(ECDSA_CERT_TYPEHASH),
        constants["ecdsa_certificate_typehash"].as_str().unwrap()
    );
    assert_eq!(
        BN254_CERT_TYPEHASH,
        keccak256(b"BN254Certificate(uint32 referenceTimestamp,bytes32 messageHash)")
    );
    assert_eq!(
        ECDSA_CERT_TYPEHASH,
        keccak256(b"ECDSACertificate(uint32 referenceTimestamp,bytes32 messageHash)")
    );
    assert_eq!(
        BLS12381_CERT_TYPEHASH,
        keccak256(b"BLS12381Certificate(uint32 referenceTimestamp,bytes32 messageHash)")
    );
    assert_eq!(
        EIP712_DOMAIN_TYPEHASH_NO_CHAIN_ID,
        keccak256(b"EIP712Domain(string name,string version,address verifyingContract)")
    );
}
