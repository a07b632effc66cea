//! Hostile input never panics: random bytes and mutations of valid keystores give a `Result`.

use std::sync::LazyLock;

use avsnode_keystore::{Curve, Eip2335Keystore, Kdf, Keystore, Password, Web3Keystore};
use proptest::prelude::*;
use proptest::sample::Index;

const PASSWORD: &str = "proptest-password";

/// Valid files to mutate: EIP-2335 (scrypt and pbkdf2) and Web3.
static VALID: LazyLock<Vec<String>> = LazyLock::new(|| {
    let pw = Password::new(PASSWORD);
    let pbkdf2 = Kdf::Pbkdf2 { c: 16 };
    let eip = |kdf| Eip2335Keystore::encrypt(&[9; 32], &pw, Curve::Bn254, "ab", "m", &kdf);
    vec![
        eip(Kdf::light())
            .expect("light keystore encrypts")
            .to_json(),
        eip(pbkdf2).expect("light keystore encrypts").to_json(),
        Web3Keystore::encrypt(&[9; 32], &pw, Some("00"), &pbkdf2)
            .expect("light keystore encrypts")
            .to_json(),
    ]
});

/// Decrypting is bounded by the KDF limits, but those still allow seconds of work; only decrypt
/// what is cheap so the test stays fast.
fn is_cheap(kdf: Kdf) -> bool {
    match kdf {
        Kdf::Scrypt { n, r, p } => {
            n.saturating_mul(u64::from(r)).saturating_mul(u64::from(p)) <= 1 << 12
        }
        Kdf::Pbkdf2 { c } => c <= 4096,
    }
}

fn parse_and_decrypt(bytes: &[u8]) -> Result<(), TestCaseError> {
    let json = String::from_utf8_lossy(bytes);
    if let Ok(ks) = Keystore::from_json(&json) {
        if is_cheap(ks.kdf())
            && let Err(err) = ks.decrypt(&Password::new(PASSWORD))
        {
            prop_assert!(!err.to_string().contains(PASSWORD));
        }
        // Whatever parsed must be writable and read back.
        prop_assert!(Keystore::from_json(&ks.to_json()).is_ok());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_and_decrypt(&bytes)?;
    }

    #[test]
    fn truncated_keystore(which in 0..3usize, at in any::<Index>()) {
        let json = VALID[which].as_bytes();
        parse_and_decrypt(&json[..at.index(json.len() + 1)])?;
    }

    #[test]
    fn mutated_keystore(
        which in 0..3usize,
        flips in prop::collection::vec((any::<Index>(), any::<u8>()), 1..8),
    ) {
        let mut json = VALID[which].as_bytes().to_vec();
        for (at, byte) in flips {
            let i = at.index(json.len());
            json[i] = byte;
        }
        parse_and_decrypt(&json)?;
    }

    /// Replaces hex digits (in hex fields and numbers) with hex digits, so most mutants still
    /// parse and decrypt is reached: hex fields, KDF parameters, `dklen`, `version`.
    #[test]
    fn hex_mutated_keystore(
        which in 0..3usize,
        flips in prop::collection::vec((any::<Index>(), prop::sample::select(b"0123456789abcdef".to_vec())), 1..4),
    ) {
        let mut json = VALID[which].as_bytes().to_vec();
        let digits: Vec<usize> = (0..json.len()).filter(|&i| json[i].is_ascii_hexdigit()).collect();
        for (at, byte) in flips {
            json[digits[at.index(digits.len())]] = byte;
        }
        parse_and_decrypt(&json)?;
    }
}
