//! Each malformed or hostile input is refused with its own error naming the field or value.

use avsnode_keystore::{Curve, Eip2335Keystore, Error, Kdf, Keystore, Password, Web3Keystore};
use serde_json::{Value, json};

fn eip2335(kdf: Kdf) -> Value {
    let ks = Eip2335Keystore::encrypt(&[7; 32], &Password::new("pw"), Curve::Bn254, "", "", &kdf);
    serde_json::from_str(&ks.expect("light EIP-2335 encrypts").to_json()).expect("valid JSON")
}

fn web3(kdf: Kdf) -> Value {
    let ks = Web3Keystore::encrypt(&[7; 32], &Password::new("pw"), None, &kdf);
    serde_json::from_str(&ks.expect("light Web3 encrypts").to_json()).expect("valid JSON")
}

/// Reads `file`, expects an error matching `expected` whose message contains `needle`.
fn refused(file: &Value, expected: fn(&Error) -> bool, needle: &str) {
    let err = Keystore::from_json(&file.to_string()).expect_err("should be refused");
    assert!(expected(&err), "unexpected error variant: {err:?}");
    let message = err.to_string();
    assert!(
        message.contains(needle),
        "{message:?} does not contain {needle:?}"
    );
}

#[test]
fn malformed_json_reports_line_and_column() {
    let err = Keystore::from_json("{\n  \"version\": 4,\n  oops").unwrap_err();
    assert!(matches!(err, Error::Json(_)));
    assert!(err.to_string().contains("line 3 column 3"), "{err}");
    let err = Eip2335Keystore::from_json("[]").unwrap_err();
    assert!(matches!(err, Error::Json(_)));
}

#[test]
fn unsupported_version_is_named() {
    let mut file = eip2335(Kdf::light());
    file["version"] = json!(5);
    refused(
        &file,
        |e| matches!(e, Error::UnsupportedVersion { found: 5, .. }),
        "version 5",
    );
    let err = Web3Keystore::from_json(&eip2335(Kdf::light()).to_string()).unwrap_err();
    assert!(
        matches!(err, Error::UnsupportedVersion { found: 4, .. }),
        "{err}"
    );
}

#[test]
fn unknown_algorithms_are_named() {
    let mut file = eip2335(Kdf::light());
    file["crypto"]["kdf"]["function"] = json!("argon2id");
    refused(&file, |e| matches!(e, Error::UnknownKdf(_)), "\"argon2id\"");

    let mut file = eip2335(Kdf::light());
    file["crypto"]["cipher"]["function"] = json!("aes-256-gcm");
    refused(
        &file,
        |e| matches!(e, Error::UnknownCipher(_)),
        "\"aes-256-gcm\"",
    );

    let mut file = eip2335(Kdf::light());
    file["crypto"]["checksum"]["function"] = json!("sha512");
    refused(
        &file,
        |e| matches!(e, Error::UnknownChecksum(_)),
        "\"sha512\"",
    );

    let mut file = eip2335(Kdf::Pbkdf2 { c: 16 });
    file["crypto"]["kdf"]["params"]["prf"] = json!("hmac-sha512");
    refused(
        &file,
        |e| matches!(e, Error::UnknownPrf(_)),
        "\"hmac-sha512\"",
    );

    let mut file = web3(Kdf::light());
    file["crypto"]["cipher"] = json!("aes-128-cbc");
    refused(
        &file,
        |e| matches!(e, Error::UnknownCipher(_)),
        "\"aes-128-cbc\"",
    );

    let mut file = eip2335(Kdf::light());
    file["curveType"] = json!("bls12-377");
    refused(
        &file,
        |e| matches!(e, Error::UnknownCurve(_)),
        "\"bls12-377\"",
    );
}

#[test]
fn kdf_limits_are_enforced_on_read() {
    let scrypt = |param: &str, value: Value| {
        let mut file = eip2335(Kdf::light());
        file["crypto"]["kdf"]["params"][param] = value;
        file
    };
    refused(
        &scrypt("n", json!(1u64 << 30)),
        |e| matches!(e, Error::ScryptMemory { .. }),
        "exceeds 1 GiB (n=1073741824, r=8, p=1)",
    );
    refused(
        &scrypt("p", json!(u32::MAX)),
        |e| matches!(e, Error::ScryptMemory { .. }),
        "p=4294967295",
    );
    refused(
        &scrypt("n", json!(1000)),
        |e| matches!(e, Error::ScryptN(1000)),
        "power of two",
    );
    refused(
        &scrypt("n", json!(1)),
        |e| matches!(e, Error::ScryptN(1)),
        "scrypt n",
    );
    refused(
        &scrypt("r", json!(0)),
        |e| matches!(e, Error::ScryptZero("r")),
        "scrypt r",
    );
    refused(
        &scrypt("p", json!(0)),
        |e| matches!(e, Error::ScryptZero("p")),
        "scrypt p",
    );
    refused(
        &scrypt("dklen", json!(64)),
        |e| matches!(e, Error::DkLen(64)),
        "dklen must be 32",
    );
    // Within the memory limit, but scrypt itself needs n < 2^(16r).
    let mut file = scrypt("r", json!(1));
    file["crypto"]["kdf"]["params"]["n"] = json!(1 << 16);
    refused(
        &file,
        |e| matches!(e, Error::ScryptParams { .. }),
        "n=65536, r=1",
    );

    let pbkdf2 = |c: Value| {
        let mut file = web3(Kdf::Pbkdf2 { c: 16 });
        file["crypto"]["kdfparams"]["c"] = c;
        file
    };
    refused(
        &pbkdf2(json!(0)),
        |e| matches!(e, Error::Pbkdf2ZeroRounds),
        "pbkdf2 c must be >= 1",
    );
    refused(
        &pbkdf2(json!(100_000_001)),
        |e| matches!(e, Error::Pbkdf2Rounds(100_000_001)),
        "CPU denial of service",
    );
    refused(
        &pbkdf2(json!(u64::MAX)),
        |e| matches!(e, Error::Pbkdf2Rounds(_)),
        "18446744073709551615",
    );
}

#[test]
fn missing_kdf_params_are_named() {
    let mut file = web3(Kdf::light());
    file["crypto"]["kdfparams"]
        .as_object_mut()
        .unwrap()
        .remove("n");
    refused(
        &file,
        |e| matches!(e, Error::MissingKdfParam { param: "n", .. }),
        "scrypt kdf params: missing n",
    );
}

#[test]
fn bad_hex_names_the_field() {
    let cases = [
        (
            &["crypto", "cipher", "params", "iv"][..],
            "crypto.cipher.params.iv: invalid hex",
        ),
        (
            &["crypto", "kdf", "params", "salt"],
            "crypto.kdf.params.salt: invalid hex",
        ),
        (
            &["crypto", "cipher", "message"],
            "crypto.cipher.message: invalid hex",
        ),
        (
            &["crypto", "checksum", "message"],
            "crypto.checksum.message: invalid hex",
        ),
    ];
    for (path, message) in cases {
        for mangle in [
            |s: &str| s[1..].to_owned(),
            |s: &str| format!("zz{}", &s[2..]),
        ] {
            let mut file = eip2335(Kdf::light());
            let field = path.iter().fold(&mut file, |v, key| &mut v[*key]);
            *field = json!(mangle(field.as_str().unwrap()));
            refused(&file, |e| matches!(e, Error::Hex { .. }), message);
        }
    }
    let mut file = web3(Kdf::light());
    file["crypto"]["mac"] = json!("abc");
    refused(
        &file,
        |e| {
            matches!(
                e,
                Error::Hex {
                    field: "crypto.mac",
                    ..
                }
            )
        },
        "crypto.mac: invalid hex",
    );
}

#[test]
fn wrong_lengths_are_named() {
    let mut file = eip2335(Kdf::light());
    file["crypto"]["cipher"]["params"]["iv"] = json!("00".repeat(15));
    refused(
        &file,
        |e| matches!(e, Error::Length { actual: 15, .. }),
        "crypto.cipher.params.iv: must be 16 bytes, got 15 bytes",
    );

    let mut file = eip2335(Kdf::light());
    file["crypto"]["checksum"]["message"] = json!("00".repeat(33));
    refused(
        &file,
        |e| matches!(e, Error::Length { .. }),
        "crypto.checksum.message: must be 32 bytes",
    );

    let mut file = web3(Kdf::light());
    file["crypto"]["mac"] = json!("00".repeat(31));
    refused(
        &file,
        |e| matches!(e, Error::Length { .. }),
        "crypto.mac: must be 32 bytes",
    );

    let mut file = web3(Kdf::light());
    file["crypto"]["kdfparams"]["salt"] = json!("");
    refused(
        &file,
        |e| matches!(e, Error::Length { .. }),
        "crypto.kdfparams.salt: must be non-empty",
    );

    let mut file = eip2335(Kdf::light());
    file["crypto"]["cipher"]["message"] = json!("");
    refused(
        &file,
        |e| matches!(e, Error::Length { .. }),
        "crypto.cipher.message: must be non-empty",
    );
}

#[test]
fn tampered_ciphertext_is_a_checksum_mismatch() {
    let mut file = eip2335(Kdf::light());
    let ct = file["crypto"]["cipher"]["message"].as_str().unwrap();
    let flipped = if ct.starts_with('0') { "1" } else { "0" };
    file["crypto"]["cipher"]["message"] = json!(format!("{flipped}{}", &ct[1..]));
    let err = Keystore::from_json(&file.to_string())
        .unwrap()
        .decrypt(&Password::new("pw"))
        .unwrap_err();
    assert!(matches!(err, Error::WrongPassword { .. }));
}

#[test]
fn io_errors_name_the_path() {
    let path = std::path::Path::new("/nonexistent/avsnode/key.json");
    let err = Keystore::read(path).unwrap_err();
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/avsnode/key.json"));
}
