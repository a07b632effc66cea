//! The shared keystore vectors (`shared/vectors/keystores/README.md`) decrypt as documented.

use std::path::PathBuf;

use avsnode_keystore::{Curve, Error, Keystore, Password};

const EIP2335_PASSWORD: &str = "𝔱𝔢𝔰𝔱𝔭𝔞𝔰𝔰𝔴𝔬𝔯𝔡🔑";
const BLS_SECRET: &str = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f";

struct Vector {
    file: &'static str,
    password: &'static str,
    secret: &'static str,
    curve: Curve,
}

const VECTORS: &[Vector] = &[
    Vector {
        file: "eip2335-pbkdf2.json",
        password: EIP2335_PASSWORD,
        secret: BLS_SECRET,
        curve: Curve::Bls12381,
    },
    Vector {
        file: "eip2335-scrypt.json",
        password: EIP2335_PASSWORD,
        secret: BLS_SECRET,
        curve: Curve::Bls12381,
    },
    Vector {
        file: "web3-v3-pbkdf2.json",
        password: "testpassword",
        secret: "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d",
        curve: Curve::Secp256k1,
    },
    Vector {
        file: "bn254-eip2335-curvetype.json",
        password: "executor-test-password",
        secret: "abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd",
        curve: Curve::Bn254,
    },
];

fn vectors_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/vectors/keystores/"
    ));
    assert!(
        dir.is_dir(),
        "keystore test vectors missing: expected them in {}",
        dir.display()
    );
    dir
}

#[test]
fn every_vector_file_is_in_the_table() {
    let mut files: Vec<String> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    let mut known: Vec<&str> = VECTORS.iter().map(|v| v.file).collect();
    known.sort_unstable();
    assert_eq!(files, known);
}

#[test]
fn vectors_decrypt_to_the_documented_secret() {
    for v in VECTORS {
        let ks = Keystore::read(&vectors_dir().join(v.file)).unwrap();
        assert_eq!(ks.curve(), v.curve, "{}", v.file);
        let secret = ks.decrypt(&Password::new(v.password)).unwrap();
        assert_eq!(hex::encode(secret.as_bytes()), v.secret, "{}", v.file);
    }
}

#[test]
fn vectors_refuse_a_wrong_password() {
    for v in VECTORS {
        let ks = Keystore::read(&vectors_dir().join(v.file)).unwrap();
        let err = ks.decrypt(&Password::new("not the password")).unwrap_err();
        assert!(
            matches!(err, Error::WrongPassword { .. }),
            "{}: {err}",
            v.file
        );
        let expected = match v.curve {
            Curve::Secp256k1 => "wrong password: keystore MAC mismatch",
            _ => "wrong password: keystore checksum mismatch",
        };
        assert_eq!(err.to_string(), expected);
    }
}

#[test]
fn eip2335_password_normalises_to_the_spec_bytes() {
    let bytes = Password::new(EIP2335_PASSWORD).eip2335_bytes();
    assert_eq!(hex::encode(&*bytes), "7465737470617373776f7264f09f9491");
}

#[test]
fn eip2335_normalisation_strips_control_characters_but_keeps_spaces() {
    let bytes = Password::new("a b\u{0}\u{1f}\u{7f}\u{80}\u{9f}\tc\u{fb01}").eip2335_bytes();
    assert_eq!(&*bytes, b"a bcfi");
}

#[test]
fn bn254_vector_exposes_its_g2_pubkey() {
    let path = vectors_dir().join("bn254-eip2335-curvetype.json");
    let Keystore::Eip2335(ks) = Keystore::read(&path).unwrap() else {
        panic!("bn254 vector should read as EIP-2335");
    };
    assert_eq!(ks.pubkey_hex().len(), 256);
    assert!(ks.pubkey_hex().starts_with("09d0db86a021028a"));
    assert_eq!(hex::decode(ks.pubkey_hex()).unwrap().len(), 128);
    assert_eq!(ks.path(), "m/1/0/0");
    assert_eq!(ks.uuid(), "eba8fb27-5bc8-4374-9109-d2aaa14019e3");
}

#[test]
fn web3_vector_reads_its_id_and_has_no_address() {
    let Keystore::Web3(ks) = Keystore::read(&vectors_dir().join("web3-v3-pbkdf2.json")).unwrap()
    else {
        panic!("web3 vector should read as Web3");
    };
    assert_eq!(ks.id(), "3198bc9c-6672-5ab3-d995-4942343ae5b6");
    assert_eq!(ks.address(), None);
}
