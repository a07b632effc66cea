//! Writes the seed corpora in `fuzz/seeds/<target>/` from the test vectors in
//! `../shared/vectors` and from real structs. Run from `fuzz/`:
//!
//! ```text
//! cargo run --example gen_seeds -- ../../shared/vectors
//! ```
//!
//! Everything is deterministic except the generated keystores, whose salt, IV and UUID are drawn
//! fresh by the keystore crate on each run.

use std::fs;
use std::path::{Path, PathBuf};

use avsnode_aggregator::{Aggregator, NewTask};
use avsnode::config::Config;
use avsnode_signing::LocalKey;
use avsnode::pipeline::validate;
use avsnode_signer::VerifyingKey;
use avsnode_keystore::{Curve, Eip2335Keystore, Kdf, Password, Web3Keystore};
use avsnode_proto::executor::TaskSubmission;
use avsnode_proto::stream::StreamRequest;
use avsnode_proto::stream::stream_request::Kind;
use avsnode_signer::messages::{Address, TaskId};
use avsnode_signer::{Scheme, bls12_381, bn254, ecdsa};
use prost::Message;
use serde_json::Value;

/// Must match `fuzz_targets/task_submission.rs`.
const OPERATOR: Address = Address([0x11; 20]);
const AGGREGATOR_SECRETS: [(Scheme, [u8; 32]); 3] = [
    (Scheme::Ecdsa, [0x21; 32]),
    (Scheme::Bn254, [0x22; 32]),
    (Scheme::Bls12381, [0x23; 32]),
];
/// Must match `fuzz_targets/keystore_json.rs`.
const PASSWORD: &str = "fuzz-password";

fn main() {
    let vectors = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "../../shared/vectors".into()),
    );
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("seeds");
    task_submission(&seeds.join("task_submission"));
    keystore_json(&seeds.join("keystore_json"), &vectors.join("keystores"));
    config_toml(&seeds.join("config_toml"));
    bn254_decode(
        &seeds.join("bn254_decode"),
        &json(&vectors.join("bn254.json")),
    );
    bls_decode(
        &seeds.join("bls_decode"),
        &json(&vectors.join("bls12_381.json")),
    );
    ecdsa_decode(
        &seeds.join("ecdsa_decode"),
        &json(&vectors.join("ecdsa.json")),
    );
}

fn json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    let text = v[key].as_str().unwrap_or_else(|| panic!("{key} missing"));
    hex::decode(text.trim_start_matches("0x")).unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Replaces the folder's contents with `files`.
fn write_all(dir: &Path, files: &[(String, Vec<u8>)]) {
    if dir.exists() {
        fs::remove_dir_all(dir).expect("remove old seeds");
    }
    fs::create_dir_all(dir).expect("create seed folder");
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).expect("write seed");
    }
    println!("{}: {} seeds", dir.display(), files.len());
}

fn task_submission(dir: &Path) {
    let mut files = Vec::new();
    for (scheme, secret) in AGGREGATOR_SECRETS {
        let key = LocalKey::from_secret(scheme, &secret).expect("valid secret");
        let address = match &key {
            LocalKey::Ecdsa(k) => k.public_key().address(),
            _ => Address([0x33; 20]),
        };
        let aggregator = Aggregator::new(address, key);
        let tasks = [
            ("v1", None, b"".to_vec()),
            ("v1-payload", None, b"{\"n\":7}".to_vec()),
            ("v1001", Some(1_700_000_000_000), b"\x00\x01\x02\x03".to_vec()),
        ];
        for (i, (name, deadline, payload)) in tasks.into_iter().enumerate() {
            let mut task_id = [0u8; 32];
            task_id[0] = i as u8 + 1;
            task_id[31] = scheme as u8;
            let sub = aggregator.sign(&NewTask {
                task_id: TaskId(task_id),
                avs: Address([0x22; 20]),
                operator: OPERATOR,
                operator_set_id: i as u32,
                reference_timestamp: 1_700_000_000,
                task_block_number: 19_000_000 + i as u64,
                payload,
                deadline_unix_ms: deadline,
            });
            // The node's own checks accept it (the fuzz target's positive path is seeded).
            let task = validate::shape(sub.clone()).expect("signed seed passes shape");
            let public = match aggregator.key() {
                LocalKey::Ecdsa(k) => VerifyingKey::Ecdsa(k.public_key().address()),
                LocalKey::Bn254(k) => VerifyingKey::bn254(k.public_key_g2()),
                LocalKey::Bls12381(k) => VerifyingKey::Bls12381(k.public_key()),
            };
            assert!(public.verify(&validate::task_hash(&task, OPERATOR), &sub.signature));
            let stem = format!("{scheme}-{name}");
            if name != "v1-payload" {
                let stream = StreamRequest {
                    kind: Some(Kind::Task(sub.clone())),
                };
                files.push((format!("stream-{stem}.pb"), stream.encode_to_vec()));
            }
            files.push((format!("unary-{stem}.pb"), sub.encode_to_vec()));
        }
    }
    // Shapes the node must refuse or normalise.
    let base = TaskSubmission {
        task_id: format!("0x{}", "AB".repeat(32)),
        aggregator_address: format!("0X{}", "33".repeat(20)),
        avs_address: format!("0x{}", "22".repeat(20)),
        payload: b"p".to_vec(),
        signature: vec![0x1b; 65],
        operator_set_id: 0,
        reference_timestamp: 1_700_000_000,
        executor_address: format!("0x{}", "11".repeat(20)),
        task_block_number: 1,
        version: 1,
        deadline_unix_ms: 5,
    };
    let variants: [(&str, fn(&mut TaskSubmission)); 7] = [
        ("upper-case-hex", |_| {}),
        ("version-3", |s| s.version = 3),
        ("version-1001-no-deadline", |s| {
            s.version = 1001;
            s.deadline_unix_ms = 0;
        }),
        ("empty-signature", |s| s.signature.clear()),
        ("zero-timestamp", |s| s.reference_timestamp = 0),
        ("short-task-id", |s| s.task_id = "0x1234".into()),
        ("no-prefix-address", |s| s.avs_address = "22".repeat(20)),
    ];
    for (name, change) in variants {
        let mut sub = base.clone();
        change(&mut sub);
        files.push((format!("bad-{name}.pb"), sub.encode_to_vec()));
    }
    files.push(("empty.pb".into(), Vec::new()));
    write_all(dir, &files);
}

fn keystore_json(dir: &Path, vectors: &Path) {
    let mut files = Vec::new();
    for name in [
        "eip2335-pbkdf2.json",
        "eip2335-scrypt.json",
        "web3-v3-pbkdf2.json",
        "bn254-eip2335-curvetype.json",
    ] {
        let bytes = fs::read(vectors.join(name)).expect("keystore vector");
        files.push((format!("vector-{name}"), bytes));
    }
    let password = Password::new(PASSWORD);
    let light = Kdf::light();
    let pbkdf2 = Kdf::Pbkdf2 { c: 1024 };
    for (kdf_name, kdf) in [("scrypt", light), ("pbkdf2", pbkdf2)] {
        let bls = bls12_381::SecretKey::from_bytes(&[0x31; 32]).expect("bls secret");
        let pubkey = hex::encode(bls.public_key().to_bytes());
        let k = Eip2335Keystore::encrypt(
            &bls.to_bytes()[..],
            &password,
            Curve::Bls12381,
            &pubkey,
            "m/12381/3600/0/0/0",
            &kdf,
        )
        .expect("encrypt");
        files.push((
            format!("light-bls-{kdf_name}.json"),
            k.to_json().into_bytes(),
        ));

        let bn = bn254::SecretKey::from_bytes(&[0x12; 32]).expect("bn254 secret");
        let pubkey = hex::encode(bn.public_key_g2().to_wire());
        let k = Eip2335Keystore::encrypt(
            &bn.to_bytes()[..],
            &password,
            Curve::Bn254,
            &pubkey,
            "",
            &kdf,
        )
        .expect("encrypt");
        let text = k.to_json();
        // Cerberus marks BN254 with `curve` instead of `curveType`.
        let cerberus = text.replace("\"curveType\"", "\"curve\"");
        files.push((format!("light-bn254-{kdf_name}.json"), text.into_bytes()));
        files.push((
            format!("light-bn254-cerberus-{kdf_name}.json"),
            cerberus.into_bytes(),
        ));

        let ec = ecdsa::SecretKey::from_bytes(&[0x13; 32]).expect("ecdsa secret");
        let address = hex::encode(ec.public_key().address().0);
        let k = Web3Keystore::encrypt(&ec.to_bytes()[..], &password, Some(&address), &kdf)
            .expect("encrypt");
        let text = k.to_json();
        // geth writes `Crypto` as often as `crypto`.
        let geth = text.replace("\"crypto\"", "\"Crypto\"");
        files.push((format!("light-web3-{kdf_name}.json"), text.into_bytes()));
        files.push((
            format!("light-web3-geth-{kdf_name}.json"),
            geth.into_bytes(),
        ));
    }
    write_all(dir, &files);
}

const MINIMAL_CONFIG: &str = r#"[node]
operator_address = "0x1111111111111111111111111111111111111111"
data_dir = "data"

[[signer]]
name = "main"
scheme = "SCHEME"
keystore = "keys/main.json"
password_file = "keys/main.pass"

[[avs]]
address = "0x2222222222222222222222222222222222222222"
aggregators = [AGGREGATOR]
operator_sets = [OPERATOR_SET]

[avs.performer]
PERFORMER
"#;

fn config_toml(dir: &Path) {
    let bn254_g2 = bn254::SecretKey::from_bytes(&[0x22; 32])
        .expect("bn254 secret")
        .public_key_g2()
        .to_wire();
    let bls_pk = bls12_381::SecretKey::from_bytes(&[0x23; 32])
        .expect("bls secret")
        .public_key()
        .to_bytes();
    let ecdsa_agg =
        r#"{ scheme = "ecdsa", address = "0x3333333333333333333333333333333333333333" }"#;
    let bn254_agg = format!(
        r#"{{ scheme = "bn254", address = "0x3333333333333333333333333333333333333333", public_key = "0x{}" }}"#,
        hex::encode(bn254_g2)
    );
    let bls_agg = format!(
        r#"{{ scheme = "bls12-381", address = "0x3333333333333333333333333333333333333333", public_key = "{}" }}"#,
        hex::encode(bls_pk)
    );
    let ecdsa_set = r#"{ id = 1, signer = "main", verifier = "0x4444444444444444444444444444444444444444", verifier_version = "1" }"#;
    let plain_set = r#"{ id = 0, signer = "main" }"#;
    let process = "runtime = \"process\"\ncommand = \"./performer\"";
    let remote = "runtime = \"remote\"\nendpoint = \"http://127.0.0.1:8080\"";
    let docker = "runtime = \"docker\"\nimage = \"example/performer:1\"\n\n[avs.performer.resources]\ncpus = 0.5";
    let configs: [(&str, &str, &str, &str, &str); 5] = [
        ("ecdsa-process", "ecdsa", ecdsa_agg, ecdsa_set, process),
        ("bn254-remote", "bn254", &bn254_agg, plain_set, remote),
        ("bls-docker", "bls12-381", &bls_agg, plain_set, docker),
        (
            "bn254-bad-key",
            "bn254",
            &bn254_agg.replace("0x", "0xzz"),
            plain_set,
            process,
        ),
        (
            "ecdsa-set-without-verifier",
            "ecdsa",
            ecdsa_agg,
            plain_set,
            remote,
        ),
    ];
    let mut files = vec![(
        "example.toml".to_string(),
        include_bytes!("../../deploy/avsnode.example.toml").to_vec(),
    )];
    for (name, scheme, aggregator, set, performer) in configs {
        let text = MINIMAL_CONFIG
            .replace("SCHEME", scheme)
            .replace("AGGREGATOR", aggregator)
            .replace("OPERATOR_SET", set)
            .replace("PERFORMER", performer);
        files.push((format!("{name}.toml"), text.into_bytes()));
    }
    // TOML, a NUL, then `NAME=VALUE` environment overrides (see the target's doc).
    let with_env = format!(
        "{}\0AVSNODE_OPERATOR_ADDRESS=0x5555555555555555555555555555555555555555\n\
         AVSNODE_INTAKE_LISTEN=127.0.0.1:1\nAVSNODE_METRICS_LISTEN=not-an-address\n\
         AVSNODE_SIGNER_MAIN_PASSWORD_FILE=/run/secrets/pass\n",
        MINIMAL_CONFIG
            .replace("SCHEME", "ecdsa")
            .replace("AGGREGATOR", ecdsa_agg)
            .replace("OPERATOR_SET", ecdsa_set)
            .replace("PERFORMER", process)
    );
    files.push(("ecdsa-with-env.toml".into(), with_env.into_bytes()));
    files.push(("empty.toml".into(), Vec::new()));
    for (name, bytes) in &files {
        let text = String::from_utf8_lossy(bytes);
        let (toml, _) = text.split_once('\0').unwrap_or((&text, ""));
        let verdict =
            match Config::from_toml(toml, Path::new("/etc/avsnode/avsnode.toml"), |_| None) {
                Ok(_) => "valid".to_string(),
                Err(e) => e.to_string().lines().next().unwrap_or_default().to_owned(),
            };
        println!("  config seed {name}: {verdict}");
    }
    write_all(dir, &files);
}

fn bn254_decode(dir: &Path, v: &Value) {
    let key = &v["key_a"];
    let mut files = vec![
        ("key-a-g1.bin".to_string(), hex_field(key, "pubkey_g1_wire")),
        ("key-a-g2.bin".to_string(), hex_field(key, "pubkey_g2_wire")),
        ("key-a-secret.bin".to_string(), hex_field(key, "secret_hex")),
    ];
    for (i, case) in v["sign_solidity_key_a"]
        .as_array()
        .expect("sign cases")
        .iter()
        .enumerate()
    {
        files.push((
            format!("sig-solidity-{i}.bin"),
            hex_field(case, "signature_wire"),
        ));
        // As a hash-to-curve input: tag length 0, then the message.
        let mut h = vec![0u8];
        h.extend(hex_field(case, "message"));
        files.push((format!("hash-msg-{i}.bin"), h));
    }
    let rfc = &v["hash_to_g1_rfc9380_svdw_ro"];
    let dst = rfc["dst"].as_str().expect("dst").as_bytes();
    for (i, case) in rfc["cases"].as_array().expect("cases").iter().enumerate() {
        let mut point = hex_field(case, "x");
        point.extend(hex_field(case, "y"));
        files.push((format!("rfc9380-point-{i}.bin"), point));
        let mut h = vec![dst.len() as u8];
        h.extend_from_slice(dst);
        h.extend_from_slice(case["msg"].as_str().expect("msg").as_bytes());
        files.push((format!("rfc9380-input-{i}.bin"), h));
    }
    // A canonical scalar and an unreduced keystore scalar (≥ r).
    files.push(("secret-canonical.bin".into(), [0x22; 32].to_vec()));
    files.push((
        "secret-unreduced.bin".into(),
        [0xab, 0xcd, 0xef].repeat(11)[..32].to_vec(),
    ));
    files.push(("g1-generator.bin".into(), {
        let mut g = vec![0u8; 64];
        g[31] = 1;
        g[63] = 2;
        g
    }));
    write_all(dir, &files);
}

fn bls_decode(dir: &Path, v: &Value) {
    let mut files = Vec::new();
    for (i, case) in v["sign"].as_array().expect("sign").iter().enumerate() {
        files.push((format!("sign-{i}-privkey.bin"), hex_field(case, "privkey")));
        if case["signature"].is_string() {
            files.push((
                format!("sign-{i}-signature.bin"),
                hex_field(case, "signature"),
            ));
        }
    }
    for (i, case) in v["verify"].as_array().expect("verify").iter().enumerate() {
        if !case["pubkey"].is_string() || !case["signature"].is_string() {
            continue;
        }
        let pk = hex_field(case, "pubkey");
        let sig = hex_field(case, "signature");
        let mut triple = pk.clone();
        triple.extend(&sig);
        triple.extend(hex_field(case, "message"));
        files.push((format!("verify-{i}-pubkey.bin"), pk));
        files.push((format!("verify-{i}-pk-sig-msg.bin"), triple));
    }
    // A scalar that signs (last byte ≡ 0 mod 8).
    let mut signs = [0x23; 32];
    signs[31] = 0x08;
    files.push(("secret-signs.bin".into(), signs.to_vec()));
    write_all(dir, &files);
}

fn ecdsa_decode(dir: &Path, v: &Value) {
    let mut files = Vec::new();
    for (i, case) in v["cases"].as_array().expect("cases").iter().enumerate() {
        let secret = hex_field(case, "secret");
        files.push((format!("case-{i}-secret.bin"), secret.clone()));
        let sk = ecdsa::SecretKey::from_bytes(&secret).expect("vector secret");
        let pk = sk.public_key().to_uncompressed();
        files.push((format!("case-{i}-pubkey-uncompressed.bin"), pk.to_vec()));
        let mut compressed = vec![0x02 | (pk[64] & 1)];
        compressed.extend_from_slice(&pk[1..33]);
        files.push((format!("case-{i}-pubkey-compressed.bin"), compressed));
        let sig = if case["signature"].is_string() {
            hex_field(case, "signature")
        } else {
            let mut rs = hex_field(case, "r");
            rs.extend(hex_field(case, "s"));
            rs.push(case["recovery_id"].as_u64().expect("recovery id") as u8);
            rs
        };
        let mut with_digest = sig.clone();
        with_digest.extend(hex_field(case, "digest"));
        files.push((format!("case-{i}-signature.bin"), sig));
        files.push((format!("case-{i}-signature-digest.bin"), with_digest));
    }
    // A scalar that signs (last byte ≡ 0 mod 4).
    files.push(("secret-signs.bin".into(), [0x24; 32].to_vec()));
    write_all(dir, &files);
}
