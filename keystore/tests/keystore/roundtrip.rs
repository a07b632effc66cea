//! Writing then reading a keystore gives back the secret; redaction; the Cerberus variant.

use avsnode_keystore::{
    Curve, Eip2335Keystore, Error, Kdf, Keystore, Password, SecretBytes, Web3Keystore,
};
use serde_json::Value;
use zeroize::Zeroizing;

const SECRET: [u8; 32] = [0x42; 32];
const PBKDF2_LIGHT: Kdf = Kdf::Pbkdf2 { c: 16 };

fn password() -> Password {
    Password::new("correct horse battery staple")
}

#[test]
fn eip2335_round_trips_for_each_curve_and_kdf() {
    for curve in [Curve::Bls12381, Curve::Bn254] {
        for kdf in [Kdf::light(), PBKDF2_LIGHT] {
            let written =
                Eip2335Keystore::encrypt(&SECRET, &password(), curve, "abcd", "m/1/2", &kdf)
                    .unwrap();
            let read = Keystore::from_json(&written.to_json()).unwrap();
            assert_eq!(read.curve(), curve);
            assert_eq!(read.kdf(), kdf);
            assert_eq!(read.decrypt(&password()).unwrap().as_bytes(), SECRET);
            let Keystore::Eip2335(read) = read else {
                panic!("expected EIP-2335");
            };
            assert_eq!((read.pubkey_hex(), read.path()), ("abcd", "m/1/2"));
            assert_eq!(read.uuid(), written.uuid());
        }
    }
}

#[test]
fn eip2335_writes_curve_type_only_for_bn254() {
    let json = |curve| {
        let ks = Eip2335Keystore::encrypt(&SECRET, &password(), curve, "", "", &Kdf::light());
        serde_json::from_str::<Value>(&ks.unwrap().to_json()).unwrap()
    };
    assert_eq!(json(Curve::Bn254)["curveType"], "bn254");
    assert!(json(Curve::Bls12381).get("curveType").is_none());
    assert!(json(Curve::Bls12381).get("curve").is_none());
}

#[test]
fn eip2335_refuses_secp256k1() {
    let err = Eip2335Keystore::encrypt(
        &SECRET,
        &password(),
        Curve::Secp256k1,
        "",
        "",
        &Kdf::light(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::CurveNotEip2335(Curve::Secp256k1)));
    assert!(err.to_string().contains("secp256k1"));
}

#[test]
fn uuid_is_a_random_v4() {
    let ks = Eip2335Keystore::encrypt(&SECRET, &password(), Curve::Bls12381, "", "", &Kdf::light())
        .unwrap();
    let other =
        Eip2335Keystore::encrypt(&SECRET, &password(), Curve::Bls12381, "", "", &Kdf::light())
            .unwrap();
    let parts: Vec<&str> = ks.uuid().split('-').collect();
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [8, 4, 4, 4, 12]
    );
    assert!(parts[2].starts_with('4'));
    assert!(matches!(parts[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'));
    assert_ne!(ks.uuid(), other.uuid());
}

#[test]
fn web3_round_trips_for_each_kdf() {
    for kdf in [Kdf::light(), PBKDF2_LIGHT] {
        let written = Web3Keystore::encrypt(
            &SECRET,
            &password(),
            Some("008aeeda4d805471df9b2a5b0f38a0c3bcba786b"),
            &kdf,
        )
        .unwrap();
        let read = Keystore::from_json(&written.to_json()).unwrap();
        assert_eq!(read.curve(), Curve::Secp256k1);
        assert_eq!(read.decrypt(&password()).unwrap().as_bytes(), SECRET);
        let Keystore::Web3(read) = read else {
            panic!("expected Web3");
        };
        assert_eq!(
            read.address(),
            Some("008aeeda4d805471df9b2a5b0f38a0c3bcba786b")
        );
    }
}

#[test]
fn web3_accepts_capitalised_crypto() {
    let json = Web3Keystore::encrypt(&SECRET, &password(), None, &Kdf::light())
        .unwrap()
        .to_json()
        .replace("\"crypto\"", "\"Crypto\"");
    assert!(json.contains("\"Crypto\""));
    let ks = Web3Keystore::from_json(&json).unwrap();
    assert_eq!(ks.decrypt(&password()).unwrap().as_bytes(), SECRET);
}

#[test]
fn web3_uses_the_raw_password_not_the_eip2335_normalisation() {
    // A control character is stripped by EIP-2335 normalisation but is part of a Web3 password.
    let ks =
        Web3Keystore::encrypt(&SECRET, &Password::new("pass\tword"), None, &Kdf::light()).unwrap();
    let err = ks.decrypt(&Password::new("password")).unwrap_err();
    assert!(matches!(err, Error::WrongPassword { .. }));
    let eip = Eip2335Keystore::encrypt(
        &SECRET,
        &Password::new("pass\tword"),
        Curve::Bn254,
        "",
        "",
        &Kdf::light(),
    )
    .unwrap();
    assert_eq!(
        eip.decrypt(&Password::new("password")).unwrap().as_bytes(),
        SECRET
    );
}

#[test]
fn wrong_password_is_an_error_for_each_format() {
    let wrong = Password::new("wrong");
    let eip =
        Eip2335Keystore::encrypt(&SECRET, &password(), Curve::Bls12381, "", "", &Kdf::light())
            .unwrap();
    let err = eip.decrypt(&wrong).unwrap_err();
    assert!(matches!(err, Error::WrongPassword { check: "checksum" }));
    let web3 = Web3Keystore::encrypt(&SECRET, &password(), None, &Kdf::light()).unwrap();
    let err = web3.decrypt(&wrong).unwrap_err();
    assert!(matches!(err, Error::WrongPassword { check: "MAC" }));
}

#[test]
fn cerberus_curve_field_reads_as_bn254() {
    let json = Eip2335Keystore::encrypt(&SECRET, &password(), Curve::Bn254, "", "", &Kdf::light())
        .unwrap()
        .to_json();
    let mut value: Value = serde_json::from_str(&json).unwrap();
    let object = value.as_object_mut().unwrap();
    assert!(object.remove("curveType").is_some());
    object.insert("curve".into(), "bn254".into());
    let ks = Eip2335Keystore::from_json(&value.to_string()).unwrap();
    assert_eq!(ks.curve(), Curve::Bn254);
    assert_eq!(ks.decrypt(&password()).unwrap().as_bytes(), SECRET);
}

#[test]
fn unknown_top_level_fields_survive_a_rewrite() {
    let json =
        Eip2335Keystore::encrypt(&SECRET, &password(), Curve::Bls12381, "", "", &Kdf::light())
            .unwrap()
            .to_json();
    let mut value: Value = serde_json::from_str(&json).unwrap();
    value["description"] = "operator key".into();
    value["name"] = "validator-7".into();
    let rewritten = Eip2335Keystore::from_json(&value.to_string())
        .unwrap()
        .to_json();
    let rewritten: Value = serde_json::from_str(&rewritten).unwrap();
    assert_eq!(rewritten["description"], "operator key");
    assert_eq!(rewritten["name"], "validator-7");
}

#[test]
fn default_kdfs_are_within_the_limits() {
    for kdf in [Kdf::scrypt_default(), Kdf::pbkdf2_default(), Kdf::light()] {
        kdf.check_limits().unwrap();
    }
}

#[test]
fn limits_apply_when_writing() {
    let err = Web3Keystore::encrypt(
        &SECRET,
        &password(),
        None,
        &Kdf::Scrypt {
            n: 1 << 30,
            r: 8,
            p: 1,
        },
    )
    .unwrap_err();
    assert!(matches!(err, Error::ScryptMemory { .. }));
    let err = Web3Keystore::encrypt(&SECRET, &password(), None, &Kdf::Pbkdf2 { c: 0 }).unwrap_err();
    assert!(matches!(err, Error::Pbkdf2ZeroRounds));
}

#[test]
fn password_file_loses_exactly_one_line_ending() {
    // Web3 uses the raw password, so a stray line ending would change the key.
    let ks = Web3Keystore::encrypt(&SECRET, &Password::new("pw\n"), None, &Kdf::light()).unwrap();
    assert!(ks.decrypt(&Password::from_file_contents("pw\n\n")).is_ok());
    assert!(ks.decrypt(&Password::from_file_contents("pw\r\n")).is_err());
    assert!(ks.decrypt(&Password::from_file_contents("pw\n")).is_err());
    let ks = Web3Keystore::encrypt(&SECRET, &Password::new(" pw "), None, &Kdf::light()).unwrap();
    assert!(
        ks.decrypt(&Password::from_file_contents(" pw \r\n"))
            .is_ok()
    );
}

#[test]
fn debug_never_shows_secrets() {
    let secret = "7a28b5ba57c53603b0b07b56bba752f7";
    let password = Password::new(secret);
    let shown = format!("{password:?}");
    assert_eq!(shown, "Password(<redacted>)");
    assert!(!shown.contains(secret));

    let bytes = SecretBytes::new(Zeroizing::new(secret.as_bytes().to_vec()));
    let shown = format!("{bytes:?}");
    assert_eq!(shown, "SecretBytes(<redacted, 32 bytes>)");
    assert!(!shown.contains(secret));
    assert!(!shown.contains(&hex::encode(secret)));

    let decrypted = Web3Keystore::encrypt(&SECRET, &password, None, &Kdf::light())
        .unwrap()
        .decrypt(&password)
        .unwrap();
    let shown = format!("{decrypted:?}");
    assert!(!shown.contains(&hex::encode(SECRET)));
    assert!(!shown.contains("42, 42"));
}
