//! `avsnode import hourglass-config` through the real binary, for each Hourglass executor config
//! in `tests/fixtures/hourglass/` with the test chain's RPC URL and chain id in it: the things to
//! supply or decide listed on stderr, `check-config` failing on the raw output and naming each
//! value to supply, then the file filled in as an operator would — password files, the ECDSA
//! keystore made with `avsnode keys import` from the fixture's hex key, the chain's contracts,
//! operator sets, admins — against a test chain where the operator is a member of those sets
//! with those keys, after which `check-config` says `ok`. No key or password of a fixture appears
//! in the output or on stderr. Malformed input is refused, naming the line or the key.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use avsnode_keystore::{Kdf, Keystore, Password};
use avsnode_signer::Scheme;
use avsnode_signer::messages::Address;
use avsnode_signing::LocalKey;
use avsnode_tests::chain::{TestChain, chain_available};

use crate::chain::{BN254, ECDSA, add_to_set, bn254_key, configure_avs, register};
use crate::common::{address, avsnode_cli};

/// The fixtures' ECDSA signing keys (hex, as the YAML has them).
const ECDSA_FIXTURE_KEY: &str =
    "0x00000000000000000000000000000000000000000000000000000000000e0002";
const MINIMAL_FIXTURE_KEY: &str =
    "0x00000000000000000000000000000000000000000000000000000000000c0002";
const LEGACY_FIXTURE_KEY: &str =
    "0x00000000000000000000000000000000000000000000000000000000000d0002";

/// The Hourglass executor configs.
fn fixture(name: &str) -> String {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/hourglass"));
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// `avsnode ARGS…`: status, stdout, stderr.
fn avsnode(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (ExitStatus, String, String) {
    let args: Vec<OsString> = args.iter().map(|a| a.as_ref().to_owned()).collect();
    let args: Vec<&std::ffi::OsStr> = args.iter().map(OsString::as_os_str).collect();
    avsnode_cli(&args)
}

/// The executor config `name` with the RPC URL and chain id of `chain`.
fn fixture_on(name: &str, chain: &TestChain) -> String {
    let text = fixture(name);
    let mut out = String::new();
    for line in text.lines() {
        let indent = &line[..line.len() - line.trim_start().len()];
        let key = line.trim_start().to_ascii_lowercase();
        if key.starts_with("rpcurl:") {
            out += &format!("{indent}rpcUrl: \"{}\"\n", chain.url);
        } else if key.starts_with("chainid:") {
            out += &format!("{indent}chainId: {}\n", chain.chain_id);
        } else {
            out += line;
            out.push('\n');
        }
    }
    assert_ne!(out, text, "{name}: no l1Chain to point at the test chain");
    out
}

/// An operator's folder with an executor config in it, and the configuration imported from it.
struct Operator {
    dir: tempfile::TempDir,
    yaml: PathBuf,
    toml: PathBuf,
}

impl Operator {
    fn new(executor_yaml: &str) -> Operator {
        let dir = tempfile::Builder::new()
            .prefix("avsnode-import-")
            .tempdir()
            .unwrap();
        let yaml = dir.path().join("executor.yaml");
        std::fs::write(&yaml, executor_yaml).unwrap();
        let toml = dir.path().join("avsnode.toml");
        Operator { dir, yaml, toml }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    /// `avsnode import hourglass-config executor.yaml --out avsnode.toml`, which must succeed;
    /// the configuration and stderr.
    fn import(&self) -> (String, String) {
        let (status, stdout, stderr) = avsnode(&[
            &"import",
            &"hourglass-config",
            &self.yaml,
            &"--out",
            &self.toml,
        ]);
        assert!(status.success(), "{stdout}{stderr}");
        assert_eq!(stdout, "", "the configuration goes to --out");
        (std::fs::read_to_string(&self.toml).unwrap(), stderr)
    }

    /// `avsnode check-config avsnode.toml`: success, and what it printed.
    fn check(&self) -> (bool, String) {
        let (status, stdout, stderr) = avsnode(&[&"check-config", &self.toml]);
        (status.success(), format!("{stdout}{stderr}"))
    }

    /// A new file holding a secret, mode 0600 (its folder created).
    fn write_secret(&self, relative: &str, contents: &str) {
        let path = self.path(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        avsnode_keystore::write_private(&path, contents.as_bytes()).unwrap();
    }

    /// What the TODO says for an inline ECDSA key: the hex through a file into
    /// `avsnode keys import`, the hex file removed after; the address `keys import` printed.
    fn import_ecdsa_key(&self, hex_key: &str) -> Address {
        self.write_secret("keys/ecdsa.pass", "ecdsa-password\n");
        self.write_secret("keys/ecdsa.hex", &format!("{hex_key}\n"));
        let (status, stdout, stderr) = avsnode(&[
            &"keys",
            &"import",
            &"--scheme",
            &"ecdsa",
            &"--secret-file",
            &self.path("keys/ecdsa.hex"),
            &"--out",
            &self.path("keys/ecdsa.json"),
            &"--password-file",
            &self.path("keys/ecdsa.pass"),
            &"--kdf",
            &"insecure-light",
        ]);
        assert!(status.success(), "{stdout}{stderr}");
        std::fs::remove_file(self.path("keys/ecdsa.hex")).unwrap();
        let printed: serde_json::Value =
            serde_json::from_str(stdout.split_once('\n').unwrap().1).unwrap();
        printed["address"].as_str().unwrap().parse().unwrap()
    }

    /// Rewrites the configuration with `edit`.
    fn edit(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.toml).unwrap();
        let edited = edit(text.clone());
        assert_ne!(edited, text, "the edit changed nothing");
        std::fs::write(&self.toml, edited).unwrap();
    }
}

/// The keys of the "things to supply or decide" lines on stderr, which must be as many as its
/// first line says.
fn todo_keys(stderr: &str) -> Vec<String> {
    let mut lines = stderr.lines();
    let first = lines.next().unwrap_or_default();
    let keys: Vec<String> = lines
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.trim_start().split_once(": ").unwrap().0.to_owned())
        .collect();
    let count = if keys.len() == 1 {
        "1 thing".to_owned()
    } else {
        format!("{} things", keys.len())
    };
    assert!(
        first.starts_with(&format!("{count} to supply or decide")),
        "{stderr}"
    );
    keys
}

/// Replaces the one line of `text` that is `old` with `new`.
fn replace_line(text: &str, old: &str, new: &str) -> String {
    let found = text.lines().filter(|l| *l == old).count();
    assert_eq!(found, 1, "{old:?} in:\n{text}");
    text.replacen(&format!("\n{old}\n"), &format!("\n{new}\n"), 1)
}

/// The test chain's EigenLayer contracts in place of the placeholders.
fn with_contracts(text: &str, chain: &TestChain) -> String {
    let text = replace_line(
        text,
        "allocation_manager = \"IMPORT TODO\"",
        &format!("allocation_manager = \"{}\"", chain.allocation_manager),
    );
    replace_line(
        &text,
        "key_registrar = \"IMPORT TODO\"",
        &format!("key_registrar = \"{}\"", chain.key_registrar),
    )
}

/// Asserts that none of `secrets` is in any of `outputs`, and that they were in `input`.
fn assert_secrets_kept(input: &str, secrets: &[&str], outputs: &[&str]) {
    for secret in secrets {
        let digits = secret.trim_start_matches("0x");
        assert!(input.contains(digits), "the fixture holds {secret}");
        for output in outputs {
            assert!(!output.contains(digits), "{secret} in:\n{output}");
        }
    }
}

/// Asserts that `check-config` fails, naming each of `keys`.
fn assert_check_names(operator: &Operator, keys: &[&str]) {
    let (ok, out) = operator.check();
    assert!(!ok, "{out}");
    for key in keys {
        assert!(
            out.contains(&format!("  {key}:")),
            "{key} not named:\n{out}"
        );
    }
}

/// Asserts that `check-config` passes, the chain agreeing with every set.
fn assert_check_passes(operator: &Operator) -> String {
    let (ok, out) = operator.check();
    assert!(
        ok,
        "{out}\n{}",
        std::fs::read_to_string(&operator.toml).unwrap()
    );
    assert!(out.lines().any(|l| l == "ok"), "{out}");
    assert!(!out.contains("member NO"), "{out}");
    out
}

/// One AVS, BN254 signing with a keystore file, env from the executor's environment, no ECDSA
/// key (so no admin to derive).
#[tokio::test(flavor = "multi_thread")]
async fn the_bn254_executor_config_imports_and_checks_once_filled_in() {
    if !chain_available() {
        return;
    }
    let chain = TestChain::start();
    const AVS: &str = "0xa0a0000000000000000000000000000000000001";
    let operator_address = address("0x5a1e000000000000000000000000000000000001");
    let bls = LocalKey::generate(Scheme::Bn254);
    let yaml = fixture_on("executor-bn254.yaml", &chain);
    let operator = Operator::new("");
    let keystore = operator.path("hourglass/operator.bls.json");
    std::fs::create_dir(operator.path("hourglass")).unwrap();
    bls.encrypt(&Password::new("test-password-1"), &Kdf::light())
        .unwrap()
        .write_new(&keystore)
        .unwrap();
    let yaml = yaml.replace("/keys/operator.bls.json", keystore.to_str().unwrap());
    std::fs::write(&operator.yaml, &yaml).unwrap();

    let (toml, stderr) = operator.import();
    assert_eq!(
        todo_keys(&stderr),
        [
            "management.admins",
            "chain.allocation_manager, chain.key_registrar",
            "signer[0].password_file",
            "avs[0].operator_sets",
            "avs[0].performer.env.PRICE_API_TOKEN",
        ]
    );
    // The variable is named, with where its value came from, and nothing else of it.
    assert!(stderr.contains("ACME_PRICE_API_TOKEN"), "{stderr}");
    assert!(stderr.contains("storage: not imported"), "{stderr}");
    assert!(
        !stderr.contains(&chain.url),
        "the RPC URL may hold an API key:\n{stderr}"
    );
    assert_secrets_kept(
        &yaml,
        &[
            "0x00000000000000000000000000000000000000000000000000000000000b0001",
            "test-password-1",
        ],
        &[&toml, &stderr],
    );
    assert_check_names(
        &operator,
        &[
            "chain.allocation_manager",
            "chain.key_registrar",
            "management.admins",
            "signer[0]",
            "avs[0].operator_sets",
        ],
    );

    // What the operator does.
    operator.write_secret("keys/bn254.pass", "test-password-1\n");
    let admin = match LocalKey::generate(Scheme::Ecdsa) {
        LocalKey::Ecdsa(k) => k.public_key().address(),
        _ => unreachable!("an ECDSA key"),
    };
    operator.edit(|text| {
        let text = with_contracts(&text, &chain);
        let text = replace_line(&text, "admins = []", &format!("admins = [\"{admin}\"]"));
        let text = replace_line(
            &text,
            "# password_file = \"keys/bn254.pass\"",
            "password_file = \"keys/bn254.pass\"",
        );
        let text = replace_line(
            &text,
            "# PRICE_API_TOKEN = \"…\"",
            "PRICE_API_TOKEN = \"from-the-operator\"",
        );
        replace_line(
            &text,
            "operator_sets = []",
            "operator_sets = [{ id = 1, signer = \"bn254\" }]",
        )
    });
    configure_avs(&chain, AVS, &[(1, Some(BN254))]).await;
    register(
        &chain,
        AVS,
        1,
        operator_address,
        &bn254_key(&bls.public_bytes()),
    )
    .await;
    add_to_set(&chain, AVS, 1, operator_address).await;
    let out = assert_check_passes(&operator);
    assert!(out.contains("registered key"), "{out}");
    // The keystore opens with the password file as written.
    let (status, stdout, stderr) = avsnode(&[
        &"keys",
        &"inspect",
        &keystore,
        &"--password-file",
        &operator.path("keys/bn254.pass"),
    ]);
    assert!(status.success(), "{stdout}{stderr}");
}

/// Two AVSs signing with the executor's inline ECDSA key, authentication on: the admin is that
/// key's address.
#[tokio::test(flavor = "multi_thread")]
async fn the_ecdsa_executor_config_imports_and_checks_once_filled_in() {
    if !chain_available() {
        return;
    }
    let chain = TestChain::start();
    let avs = [
        "0xa0a0000000000000000000000000000000000002",
        "0xa0a0000000000000000000000000000000000003",
    ];
    let operator_address = address("0xec0d5a0000000000000000000000000000000002");
    let yaml = fixture_on("executor-ecdsa.yaml", &chain);
    let operator = Operator::new(&yaml);

    let (toml, stderr) = operator.import();
    assert_eq!(
        todo_keys(&stderr),
        [
            "management.admins",
            "chain.allocation_manager, chain.key_registrar",
            "signer[0].password_file",
            "avs[0].operator_sets",
            "avs[1].operator_sets",
            "avs[1].performer.env.WEATHER_API_KEY",
        ]
    );
    assert!(
        !stderr.contains("authentication.enabled"),
        "auth was on:\n{stderr}"
    );
    assert!(!stderr.contains(&chain.url), "{stderr}");
    assert_secrets_kept(
        &yaml,
        &[
            "0x00000000000000000000000000000000000000000000000000000000000e0001",
            ECDSA_FIXTURE_KEY,
        ],
        &[&toml, &stderr],
    );
    assert_check_names(
        &operator,
        &[
            "chain.allocation_manager",
            "signer[0]",
            "avs[0].operator_sets",
            "avs[1].operator_sets",
        ],
    );

    let signer = operator.import_ecdsa_key(ECDSA_FIXTURE_KEY);
    // The admin the import derived is the signing key's address, as `keys import` prints it.
    assert!(
        toml.contains(&format!("\nadmins = [\"{signer}\"]\n")),
        "{toml}"
    );
    operator.edit(|text| {
        let text = with_contracts(&text, &chain);
        let text = replace_line(
            &text,
            "# password_file = \"keys/ecdsa.pass\"",
            "password_file = \"keys/ecdsa.pass\"",
        );
        let set = |id| {
            format!(
                "operator_sets = [{{ id = {id}, signer = \"ecdsa\", verifier = \"{}\" }}]",
                chain.ecdsa_verifier
            )
        };
        text.replacen("\noperator_sets = []\n", &format!("\n{}\n", set(0)), 1)
            .replacen("\noperator_sets = []\n", &format!("\n{}\n", set(7)), 1)
    });
    for (avs, set) in [(avs[0], 0), (avs[1], 7)] {
        configure_avs(&chain, avs, &[(set, Some(ECDSA))]).await;
        register(&chain, avs, set, operator_address, &signer.0).await;
        add_to_set(&chain, avs, set, operator_address).await;
    }
    let out = assert_check_passes(&operator);
    assert!(out.contains("domain separator"), "{out}");
}

/// No grpcPort, no performers: ports chosen, and an [[avs]] to add from the template.
#[tokio::test(flavor = "multi_thread")]
async fn the_minimal_executor_config_imports_and_checks_once_an_avs_is_added() {
    if !chain_available() {
        return;
    }
    let chain = TestChain::start();
    const AVS: &str = "0xa0a0000000000000000000000000000000000005";
    let operator_address = address("0x0000000000000000000000000000000000a11ce1");
    let yaml = fixture_on("executor-minimal.yaml", &chain);
    let operator = Operator::new(&yaml);

    let (toml, stderr) = operator.import();
    assert_eq!(
        todo_keys(&stderr),
        [
            "intake.listen",
            "management.listen",
            "management.admins",
            "chain.allocation_manager, chain.key_registrar",
            "signer[0].password_file",
            "avs",
        ]
    );
    assert!(toml.contains("\nlisten = \"0.0.0.0:9090\"\n"), "{toml}");
    assert!(toml.contains("\nlisten = \"0.0.0.0:9091\"\n"), "{toml}");
    assert!(stderr.contains("authentication.enabled: off"), "{stderr}");
    assert_secrets_kept(
        &yaml,
        &[
            "0x00000000000000000000000000000000000000000000000000000000000c0001",
            MINIMAL_FIXTURE_KEY,
        ],
        &[&toml, &stderr],
    );
    assert_check_names(&operator, &["chain.allocation_manager", "signer[0]", "avs"]);

    operator.import_ecdsa_key(MINIMAL_FIXTURE_KEY);
    operator.edit(|text| {
        let text = with_contracts(&text, &chain);
        let text = replace_line(
            &text,
            "# password_file = \"keys/ecdsa.pass\"",
            "password_file = \"keys/ecdsa.pass\"",
        );
        // The template, uncommented and filled in.
        let (head, template) = text.split_once("\n# [[avs]]\n").unwrap();
        let avs: Vec<&str> = template
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
            .collect();
        let avs = avs
            .join("\n")
            .replace("<AVS address>", AVS)
            .replace("<ID>", "5")
            .replace("<ECDSACertificateVerifier address>", &chain.ecdsa_verifier);
        format!("{head}\n[[avs]]\n{avs}\n")
    });
    configure_avs(&chain, AVS, &[(5, Some(ECDSA))]).await;
    let signer = LocalKey::from_secret(
        Scheme::Ecdsa,
        &hex::decode(&MINIMAL_FIXTURE_KEY[2..]).unwrap(),
    )
    .unwrap()
    .public_bytes();
    register(&chain, AVS, 5, operator_address, &signer).await;
    add_to_set(&chain, AVS, 5, operator_address).await;
    let out = assert_check_passes(&operator);
    assert!(
        out.contains("docker (deployed through the management API)"),
        "{out}"
    );
}

/// An older config: legacy string keys, an inline BN254 keystore (written beside the output),
/// both signing keys, a kubernetes performer, keys spelt otherwise, keys the executor ignores.
#[tokio::test(flavor = "multi_thread")]
async fn an_older_executor_config_with_legacy_keys_imports_and_checks_once_filled_in() {
    if !chain_available() {
        return;
    }
    let chain = TestChain::start();
    const AVS: &str = "0xa0a0000000000000000000000000000000000004";
    let operator_address = address("0x1e9ac00000000000000000000000000000000004");
    let yaml = fixture_on("executor-legacy.yaml", &chain);
    let operator = Operator::new(&yaml);

    let (toml, stderr) = operator.import();
    assert_eq!(
        todo_keys(&stderr),
        [
            "management.listen",
            "management.admins",
            "chain.allocation_manager, chain.key_registrar",
            "signer[0].password_file",
            "signer[1].password_file",
            "avs[0].operator_sets",
            "avs[0].performer.endpoint",
        ]
    );
    for ignored in [
        "workerCount",
        "signingCurve",
        "avsRegistrarAddress",
        "kubernetes",
        "storage",
    ] {
        assert!(
            stderr.contains(&format!("\n  {ignored}: ")),
            "{ignored}:\n{stderr}"
        );
    }
    assert_secrets_kept(
        &yaml,
        &[
            "0x00000000000000000000000000000000000000000000000000000000000d0001",
            LEGACY_FIXTURE_KEY,
            "test-password-4",
        ],
        &[&toml, &stderr],
    );
    // The inline keystore, as it was, beside the configuration, owner-only.
    let keystore = operator.path("avsnode.bn254.json");
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&keystore).unwrap()).unwrap();
    let inline = yaml.split_once("keystore: |\n").unwrap().1;
    let inline: String = inline
        .lines()
        .take_while(|l| l.starts_with("        "))
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        written,
        serde_json::from_str::<serde_json::Value>(&inline).unwrap()
    );
    use std::os::unix::fs::PermissionsExt as _;
    for file in [&keystore, &operator.toml] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    assert!(
        toml.contains("\nkeystore = \"avsnode.bn254.json\"\n"),
        "{toml}"
    );
    assert_check_names(
        &operator,
        &[
            "signer[0]",
            "signer[1]",
            "avs[0].operator_sets",
            "avs[0].performer.endpoint",
        ],
    );

    operator.write_secret("keys/bn254.pass", "test-password-4\n");
    let signer = operator.import_ecdsa_key(LEGACY_FIXTURE_KEY);
    operator.edit(|text| {
        let text = with_contracts(&text, &chain);
        let text = text.replace("\n# password_file = ", "\npassword_file = ");
        let text = replace_line(
            &text,
            "endpoint = \"IMPORT TODO\"",
            "endpoint = \"http://127.0.0.1:18080\"",
        );
        replace_line(
            &text,
            "operator_sets = []",
            &format!(
                "operator_sets = [{{ id = 1, signer = \"bn254\" }}, {{ id = 0, signer = \"ecdsa\", verifier = \"{}\" }}]",
                chain.ecdsa_verifier
            ),
        )
    });
    let bls = LocalKey::decrypt(
        &Keystore::read(&keystore).unwrap(),
        &Password::new("test-password-4"),
    )
    .unwrap();
    configure_avs(&chain, AVS, &[(0, Some(ECDSA)), (1, Some(BN254))]).await;
    register(&chain, AVS, 0, operator_address, &signer.0).await;
    register(
        &chain,
        AVS,
        1,
        operator_address,
        &bn254_key(&bls.public_bytes()),
    )
    .await;
    for set in [0, 1] {
        add_to_set(&chain, AVS, set, operator_address).await;
    }
    let out = assert_check_passes(&operator);
    assert!(
        out.contains("performer remote http://127.0.0.1:18080"),
        "{out}"
    );
}

/// What cannot be imported is refused, naming the line or the key; nothing is written.
#[test]
fn malformed_yaml_and_missing_or_bad_keys_are_named() {
    let minimal = fixture("executor-minimal.yaml");
    let refused = |yaml: &str| {
        let operator = Operator::new(yaml);
        let (status, stdout, stderr) = avsnode(&[
            &"import",
            &"hourglass-config",
            &operator.yaml,
            &"--out",
            &operator.toml,
        ]);
        assert!(!status.success(), "{stdout}{stderr}");
        assert!(!operator.toml.exists());
        assert_secrets_kept(&minimal, &[MINIMAL_FIXTURE_KEY], &[&stdout, &stderr]);
        stderr
    };

    // chainId indented one space less than rpcUrl above it: line 13 of the fixture.
    let stderr = refused(&minimal.replace("  chainId: 31337", " chainId: 31337"));
    assert!(
        stderr.contains("executor.yaml: line 13 column"),
        "the line of the syntax error:\n{stderr}"
    );
    let stderr = refused(&minimal.replace(
        "  address: \"0x0000000000000000000000000000000000a11ce1\"\n",
        "",
    ));
    assert!(
        stderr.contains("executor.yaml: operator.address: required"),
        "{stderr}"
    );
    let stderr = refused(
        &(minimal.clone()
            + "avsPerformers:\n  - avsAddress: \"0xa0a0000000000000000000000000000000000001\"\n    processType: server\n  - avsAddress: \"0xa0a0\"\n    processType: server\n"),
    );
    assert!(
        stderr.contains("executor.yaml: avsPerformers[1].avsAddress: not a 20-byte hex address"),
        "{stderr}"
    );
    let stderr = refused(&minimal.replace("c0002\"", "zz\""));
    assert!(
        stderr.contains(
            "executor.yaml: operator.signingKeys.ecdsa.privateKey: not a secp256k1 private key"
        ),
        "{stderr}"
    );
}

/// `--out` never replaces a file unless told to; without `--out` the configuration goes to
/// stdout and the list to stderr.
#[test]
fn out_refuses_an_existing_file_without_force() {
    let minimal = fixture("executor-minimal.yaml");
    let operator = Operator::new(&minimal);
    std::fs::write(&operator.toml, "mine\n").unwrap();
    let args = |force: bool| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"import",
            &"hourglass-config",
            &operator.yaml,
            &"--out",
            &operator.toml,
        ];
        if force {
            args.push(&"--force");
        }
        avsnode(&args)
    };
    let (status, _, stderr) = args(false);
    assert!(!status.success());
    assert!(stderr.contains("exists; pass --force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&operator.toml).unwrap(), "mine\n");
    let (status, _, stderr) = args(true);
    assert!(status.success(), "{stderr}");
    let written = std::fs::read_to_string(&operator.toml).unwrap();
    assert!(written.starts_with("# avsnode configuration"), "{written}");

    let (status, stdout, stderr) = avsnode(&[&"import", &"hourglass-config", &operator.yaml]);
    assert!(status.success(), "{stderr}");
    assert_eq!(stdout, written);
    assert!(
        stderr.starts_with("6 things to supply or decide"),
        "{stderr}"
    );
    assert!(!Path::new(&operator.path("avsnode.bn254.json")).exists());
}
