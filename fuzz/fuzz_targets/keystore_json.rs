//! Key files: `Keystore::from_json` (EIP-2335 with BLS12-381 or BN254, Web3 Secret Storage v3),
//! its round trip through `to_json`, EIP-2335 password normalisation, and decryption when the
//! file's KDF is cheap.
//!
//! Parsing is separate from decryption and validates the KDF parameters (capped at 1 GiB of
//! scrypt memory / 10^8 pbkdf2 rounds), so every parsed file is fuzzed, but only files whose KDF
//! costs at most about a millisecond are decrypted: scrypt `n·r·p ≤ 2^11`, pbkdf2 `c ≤ 2^11`.
//! The seeds include such files, encrypted under [`PASSWORD`]; the official vectors (scrypt
//! n = 2^18, pbkdf2 c = 2^18) are parsed and round-tripped but not decrypted.
//!
//! Invariants: nothing panics; the format chosen by `version` is the only parser that accepts
//! the file; `to_json` output parses back to the same file, curve and KDF; decryption of a parsed
//! file fails only with `WrongPassword` (parsing validated everything else), gives the same
//! secret from the round-tripped file, and a decrypted 32-byte secret is accepted or refused by
//! the signer consistently.
#![no_main]

use avsnode_signing::LocalKey;
use avsnode_keystore::{Curve, Eip2335Keystore, Error, Kdf, Keystore, Password, Web3Keystore};
use avsnode_signer::Scheme;
use libfuzzer_sys::fuzz_target;

/// The password of the decryptable seed keystores (see `examples/gen_seeds.rs`).
const PASSWORD: &str = "fuzz-password";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let normalised = Password::new(text).eip2335_bytes();
    assert!(
        !normalised.iter().any(|b| matches!(b, 0x00..=0x1f | 0x7f)),
        "control characters survive EIP-2335 normalisation"
    );

    let Ok(keystore) = Keystore::from_json(text) else {
        return;
    };
    match &keystore {
        Keystore::Eip2335(_) => assert!(Web3Keystore::from_json(text).is_err()),
        Keystore::Web3(_) => assert!(Eip2335Keystore::from_json(text).is_err()),
    }
    keystore
        .kdf()
        .check_limits()
        .expect("parsing enforces the KDF limits");

    let json = keystore.to_json();
    let again = Keystore::from_json(&json).expect("to_json output parses");
    assert_eq!(again.to_json(), json, "to_json is a fixed point");
    assert_eq!(again.curve(), keystore.curve());
    assert_eq!(again.kdf(), keystore.kdf());

    if !cheap(keystore.kdf()) {
        return;
    }
    let password = Password::new(PASSWORD);
    match keystore.decrypt(&password) {
        Ok(secret) => {
            let secret = secret.as_bytes();
            assert!(!secret.is_empty());
            let same = again
                .decrypt(&password)
                .expect("round-tripped file decrypts");
            assert_eq!(same.as_bytes(), secret);
            let scheme = match keystore.curve() {
                Curve::Bls12381 => Scheme::Bls12381,
                Curve::Bn254 => Scheme::Bn254,
                Curve::Secp256k1 => Scheme::Ecdsa,
            };
            if let Ok(key) = LocalKey::from_keystore_secret(scheme, secret) {
                assert_eq!(secret.len(), 32);
                assert_eq!(key.scheme(), scheme);
                let _ = key.public_id();
            }
        }
        Err(Error::WrongPassword { .. }) => {
            assert!(again.decrypt(&password).is_err());
        }
        Err(e) => panic!("a parsed keystore failed to decrypt with {e:?}, not WrongPassword"),
    }
});

fn cheap(kdf: Kdf) -> bool {
    match kdf {
        Kdf::Scrypt { n, r, p } => {
            n.saturating_mul(u64::from(r)).saturating_mul(u64::from(p)) <= 1 << 11
        }
        Kdf::Pbkdf2 { c } => c <= 1 << 11,
    }
}
