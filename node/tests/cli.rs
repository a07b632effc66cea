#![allow(clippy::unwrap_used)]
//! The `avsnode` command line run as a real process (DESIGN §6, §9): `keys generate | import |
//! inspect | list`, `check-config`, `run` with a broken configuration and `--help`, checking exit
//! codes, messages and file modes.
//!
//! Every run is at `--log-level debug`, with stdin null and no controlling terminal where a
//! prompt could happen, and every run's stdout and stderr are checked for the test passwords and
//! the known secrets (hex, decimal, byte list): none may ever be printed.

use std::ffi::OsString;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The password of every generated key: distinctive, so a leak is found by searching for it.
const PASSWORD: &str = "correct-horse-battery-staple-42";
const WRONG_PASSWORD: &str = "wrong-horse-battery-staple-17";

/// `bn254.json` key_a.
const KEY_A_SECRET: &str = "1b14a60376201e4c95ac7593500cb3ce02a72766c007c9c3eb771284d556add9";
const KEY_A_SECRET_DECIMAL: &str =
    "12248929636257230549931416853095037629726205319386239410403476017439825112537";

/// `keystores/web3-v3-pbkdf2.json`.
const WEB3_PASSWORD: &str = "testpassword";
const WEB3_SECRET: &str = "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d";
const WEB3_SECRET_DECIMAL: &str =
    "55254095649631781209224057814590225966912998986153936485890744796566334537373";
const WEB3_ADDRESS: &str = "0x008aeeda4d805471df9b2a5b0f38a0c3bcba786b";

/// `keystores/bn254-eip2335-curvetype.json` (the Hourglass format).
const BN254_VECTOR_PASSWORD: &str = "executor-test-password";
const BN254_VECTOR_SECRET: &str =
    "abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcd";
const BN254_VECTOR_SECRET_DECIMAL: &str =
    "77709354905233498995349917094833404261995315288902045168507868256984064043981";
const BN254_VECTOR_G1: &str = "0x0238c3eab5ce0bc05604942ca2172d67c343e221a58b0bd8d647cba594fd55b30ee8c4a0800d75f64eb42817902211180a7377ed83cbfd3c40a19a9668aa0ab7";

const SCHEMES: [&str; 3] = ["ecdsa", "bn254", "bls12-381"];

/// What must never appear in any output.
fn forbidden() -> Vec<String> {
    let mut out: Vec<String> = [
        PASSWORD,
        WRONG_PASSWORD,
        WEB3_PASSWORD,
        BN254_VECTOR_PASSWORD,
    ]
    .map(String::from)
    .to_vec();
    for (hex_secret, decimal) in [
        (KEY_A_SECRET, KEY_A_SECRET_DECIMAL),
        (WEB3_SECRET, WEB3_SECRET_DECIMAL),
        (BN254_VECTOR_SECRET, BN254_VECTOR_SECRET_DECIMAL),
    ] {
        out.push(hex_secret.to_owned());
        out.push(hex_secret.to_uppercase());
        out.push(decimal.to_owned());
        out.push(format!("{:?}", hex::decode(hex_secret).unwrap()));
    }
    out
}

/// One finished `avsnode` run.
struct Run {
    args: Vec<String>,
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "avsnode {}: {}\n--- stdout\n{}--- stderr\n{}",
            self.args.join(" "),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

impl Run {
    fn ok(self) -> Self {
        assert!(self.status.success(), "expected success: {self}");
        self
    }

    /// Exit code 1 (a runtime error) or 2 (a usage error from clap).
    fn fails(self, code: i32) -> Self {
        assert_eq!(self.status.code(), Some(code), "{self}");
        self
    }

    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `avsnode!(args…)` runs avsnode; `avsnode!(no_terminal; args…)` runs it in a new session, so a
/// password prompt cannot reach a terminal even when the tests run from one. A `&str` argument is
/// split at spaces (`"keys inspect --json"`), a path is one argument.
macro_rules! avsnode {
    (no_terminal; $($arg:expr),* $(,)?) => { run(true, &[$(&$arg as &dyn Arg),*]) };
    ($($arg:expr),* $(,)?) => { run(false, &[$(&$arg as &dyn Arg),*]) };
}

trait Arg {
    fn push(&self, args: &mut Vec<OsString>);
}

impl Arg for str {
    fn push(&self, args: &mut Vec<OsString>) {
        args.extend(self.split_whitespace().map(OsString::from));
    }
}

impl Arg for String {
    fn push(&self, args: &mut Vec<OsString>) {
        self.as_str().push(args);
    }
}

impl Arg for Path {
    fn push(&self, args: &mut Vec<OsString>) {
        args.push(self.into());
    }
}

impl Arg for PathBuf {
    fn push(&self, args: &mut Vec<OsString>) {
        self.as_path().push(args);
    }
}

impl<T: Arg + ?Sized> Arg for &T {
    fn push(&self, args: &mut Vec<OsString>) {
        (**self).push(args);
    }
}

fn run(no_terminal: bool, list: &[&dyn Arg]) -> Run {
    let mut args = Vec::new();
    for arg in list {
        arg.push(&mut args);
    }
    let bin = env!("CARGO_BIN_EXE_avsnode");
    let setsid = Path::new("/usr/bin/setsid");
    let mut cmd = if no_terminal && setsid.exists() {
        // Our child is no process group leader, so setsid execs avsnode in place (same pid).
        let mut cmd = Command::new(setsid);
        cmd.arg(bin);
        cmd
    } else {
        Command::new(bin)
    };
    cmd.args(["--log-level", "debug"])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AVSNODE_") {
            cmd.env_remove(name);
        }
    }
    let mut child = cmd.spawn().unwrap();
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).unwrap();
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into()).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!(
                "avsnode {} still running after 60 s (waiting for input?)",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let run = Run {
        args,
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    };
    for secret in forbidden() {
        assert!(!run.output().contains(&secret), "printed {secret:?}: {run}");
    }
    run
}

/// Writes a file readable by its owner only.
fn private_file(path: &Path, contents: &str) -> PathBuf {
    std::fs::write(path, contents).unwrap();
    set_mode(path, 0o600);
    path.to_owned()
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The password file of the generated keys in `dir` (with the trailing newline editors add).
fn password_file(dir: &Path) -> PathBuf {
    let path = dir.join("pass.txt");
    if !path.exists() {
        private_file(&path, &format!("{PASSWORD}\n"));
    }
    path
}

/// `keys generate` with the light KDF and `extra` arguments.
fn keys_generate(scheme: &str, out: &Path, pw: &Path, extra: &str) -> Run {
    avsnode!(
        "keys generate --kdf insecure-light --scheme",
        scheme,
        "--out",
        out,
        "--password-file",
        pw,
        extra
    )
}

/// `keys import --secret-file` with the light KDF.
fn import_secret(scheme: &str, secret: &Path, out: &Path, pw: &Path) -> Run {
    avsnode!(
        "keys import --kdf insecure-light --scheme",
        scheme,
        "--secret-file",
        secret,
        "--out",
        out,
        "--password-file",
        pw
    )
}

/// `keys import --from-keystore` with the light KDF.
fn import_keystore(scheme: &str, from: &Path, from_pw: &Path, out: &Path, pw: &Path) -> Run {
    avsnode!(
        "keys import --kdf insecure-light --scheme",
        scheme,
        "--from-keystore",
        from,
        "--from-password-file",
        from_pw,
        "--out",
        out,
        "--password-file",
        pw
    )
}

/// A new key in `dir/<scheme>.json` (password [`password_file`]): the file and the facts printed.
fn generate(dir: &Path, scheme: &str) -> (PathBuf, Value) {
    let out = dir.join(format!("{scheme}.json"));
    let run = keys_generate(scheme, &out, &password_file(dir), "").ok();
    (out, printed_facts(&run))
}

/// The JSON that `keys generate` and `keys import` print after `wrote FILE`.
fn printed_facts(run: &Run) -> Value {
    let (first, rest) = run.stdout.split_once('\n').unwrap();
    assert!(first.starts_with("wrote "), "{run}");
    serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {run}"))
}

fn inspect(file: &Path, password_file: &Path) -> Value {
    let run = avsnode!(
        "keys inspect",
        file,
        "--password-file",
        password_file,
        "--json"
    )
    .ok();
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run}"))
}

fn shared_vectors() -> PathBuf {
    avsnode_tests::workspace_root().join("../shared/vectors")
}

/// A shared keystore vector copied into `dir` with mode 0600 (shared/ is read-only).
fn vector(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::copy(shared_vectors().join("keystores").join(name), &path).unwrap();
    set_mode(&path, 0o600);
    path
}

fn key_a() -> Value {
    let text = std::fs::read_to_string(shared_vectors().join("bn254.json")).unwrap();
    let all: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(all["key_a"]["secret_hex"], KEY_A_SECRET);
    assert_eq!(all["key_a"]["secret_decimal"], KEY_A_SECRET_DECIMAL);
    all["key_a"].clone()
}

/// `0x` and `bytes` bytes of lower-case hex.
fn is_hex(value: &Value, bytes: usize) -> bool {
    value
        .as_str()
        .and_then(|s| s.strip_prefix("0x"))
        .is_some_and(|h| {
            h.len() == 2 * bytes
                && h.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

fn str_of(value: &Value) -> &str {
    value.as_str().unwrap()
}

fn example_config() -> String {
    std::fs::read_to_string(avsnode_tests::workspace_root().join("deploy/avsnode.example.toml"))
        .unwrap()
}

/// `text` with `from` replaced by `to`, which must occur.
fn edit(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "{from:?} not in the example configuration"
    );
    text.replace(from, to)
}

/// The example with operator set 0 an ecdsa set without a verifier, and operator set 1 naming a
/// signer that does not exist.
fn config_with_two_problems() -> String {
    let text = edit(
        &example_config(),
        r#"{ id = 0, signer = "bn254-main" }"#,
        r#"{ id = 0, signer = "ecdsa-main", verifier_version = "1" }"#,
    );
    edit(
        &text,
        r#"{ id = 1, signer = "ecdsa-main""#,
        r#"{ id = 1, signer = "ecdsa-mian""#,
    )
}

const TWO_PROBLEMS: [&str; 2] = [
    "avs[0].operator_sets[0].verifier: required for an ecdsa operator set",
    r#"avs[0].operator_sets[1].signer: no signer named "ecdsa-mian""#,
];

#[test]
fn generate_writes_a_private_keystore_and_prints_its_public_facts() {
    let dir = TempDir::new().unwrap();
    for scheme in SCHEMES {
        let (file, facts) = generate(dir.path(), scheme);
        assert_eq!(mode(&file), 0o600, "{scheme}");
        assert_eq!(facts["scheme"], scheme);
        let stored: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        match scheme {
            "ecdsa" => {
                assert!(is_hex(&facts["address"], 20), "{facts}");
                assert!(is_hex(&facts["public_key"], 65), "{facts}");
                assert_eq!(stored["version"], 3);
                assert_eq!(stored["address"], str_of(&facts["address"])[2..]);
            }
            "bn254" => {
                assert!(is_hex(&facts["g1_public_key"], 64), "{facts}");
                assert!(is_hex(&facts["g2_public_key"], 128), "{facts}");
                assert!(is_hex(&facts["operator_id"], 32), "{facts}");
                let g1 = hex::decode(&str_of(&facts["g1_public_key"])[2..]).unwrap();
                let id = avsnode_signer::messages::keccak256(&g1);
                assert_eq!(facts["operator_id"], format!("0x{}", hex::encode(id)));
                assert_eq!(stored["curveType"], "bn254");
                assert_eq!(stored["pubkey"], str_of(&facts["g2_public_key"])[2..]);
            }
            _ => {
                assert!(is_hex(&facts["public_key"], 48), "{facts}");
                assert_eq!(stored["version"], 4);
                assert_eq!(stored["pubkey"], str_of(&facts["public_key"])[2..]);
            }
        }

        // Never overwrites.
        let before = std::fs::read(&file).unwrap();
        let run = keys_generate(scheme, &file, &password_file(dir.path()), "").fails(1);
        assert!(run.stderr.contains("must not exist yet"), "{run}");
        assert!(run.stderr.contains(&*file.to_string_lossy()), "{run}");
        assert_eq!(
            std::fs::read(&file).unwrap(),
            before,
            "{scheme} key overwritten"
        );
    }
    let run = avsnode!("keys generate --scheme rsa --out", dir.path().join("x")).fails(2);
    assert!(run.stderr.contains("rsa"), "{run}");
}

#[test]
fn inspect_shows_what_generate_printed_and_refuses_a_wrong_password() {
    let dir = TempDir::new().unwrap();
    let wrong = private_file(&dir.path().join("wrong.txt"), WRONG_PASSWORD);
    for scheme in SCHEMES {
        let (file, facts) = generate(dir.path(), scheme);
        assert_eq!(
            inspect(&file, &password_file(dir.path())),
            facts,
            "{scheme}"
        );

        let run = avsnode!("keys inspect", file, "--password-file", wrong, "--json").fails(1);
        let check = if scheme == "ecdsa" { "MAC" } else { "checksum" };
        assert!(
            run.stderr
                .contains(&format!("wrong password: keystore {check} mismatch")),
            "{run}"
        );
        assert!(run.stdout.is_empty(), "{run}");
        for (key, value) in facts.as_object().unwrap() {
            let value = str_of(value);
            if key == "scheme" {
                continue;
            }
            assert!(!run.output().contains(&value[2..]), "{value} shown: {run}");
        }
    }
    // Without --json: one `key: value` line per fact.
    let file = dir.path().join("bn254.json");
    let facts = inspect(&file, &password_file(dir.path()));
    let run = avsnode!(
        "keys inspect",
        file,
        "--password-file",
        password_file(dir.path())
    )
    .ok();
    for key in ["scheme", "g1_public_key", "g2_public_key", "operator_id"] {
        let line = format!("{key}: {}", str_of(&facts[key]));
        assert!(
            run.stdout.lines().any(|l| l == line),
            "{line} missing: {run}"
        );
    }
}

#[test]
fn inspect_reads_the_web3_vector() {
    let dir = TempDir::new().unwrap();
    let file = vector(dir.path(), "web3-v3-pbkdf2.json");
    let pw = private_file(&dir.path().join("web3.pass"), WEB3_PASSWORD);
    let facts = inspect(&file, &pw);
    assert_eq!(facts["scheme"], "ecdsa");
    assert_eq!(facts["address"], WEB3_ADDRESS);
}

/// Fails: the vector's stored secret `0xabcd…` is above the BN254 group order r, which the
/// Hourglass tooling that writes this format reduces mod r (the README's G1 key is that of
/// `secret mod r`); `bn254::SecretKey::from_bytes` refuses it instead.
#[test]
fn inspect_reads_the_hourglass_bn254_vector() {
    let dir = TempDir::new().unwrap();
    let file = vector(dir.path(), "bn254-eip2335-curvetype.json");
    let pw = private_file(&dir.path().join("bn254.pass"), BN254_VECTOR_PASSWORD);
    let facts = inspect(&file, &pw);
    assert_eq!(facts["scheme"], "bn254");
    assert_eq!(facts["g1_public_key"], BN254_VECTOR_G1);
}

#[test]
fn import_a_raw_secret_and_another_keystore() {
    let dir = TempDir::new().unwrap();
    let key_a = key_a();
    let pw = password_file(dir.path());

    // A raw secret, with 0x and a trailing newline.
    let secret = private_file(
        &dir.path().join("secret.hex"),
        &format!("0x{KEY_A_SECRET}\n"),
    );
    let out = dir.path().join("key_a.json");
    let run = import_secret("bn254", &secret, &out, &pw).ok();
    assert_eq!(mode(&out), 0o600);
    let facts = inspect(&out, &pw);
    assert_eq!(printed_facts(&run), facts);
    assert_eq!(facts["scheme"], "bn254");
    assert_eq!(
        facts["operator_id"],
        format!("0x{}", str_of(&key_a["operator_id"]))
    );
    assert_eq!(
        facts["g1_public_key"],
        format!("0x{}", str_of(&key_a["pubkey_g1_wire"]))
    );
    assert_eq!(
        facts["g2_public_key"],
        format!("0x{}", str_of(&key_a["pubkey_g2_wire"]))
    );

    // Another keystore, re-encrypted.
    let web3 = vector(dir.path(), "web3-v3-pbkdf2.json");
    let web3_pw = private_file(&dir.path().join("web3.pass"), WEB3_PASSWORD);
    let out = dir.path().join("reencrypted.json");
    import_keystore("ecdsa", &web3, &web3_pw, &out, &pw).ok();
    assert_eq!(inspect(&out, &pw)["address"], WEB3_ADDRESS);

    // The wrong scheme for that keystore: refused, nothing written.
    let out = dir.path().join("not-bn254.json");
    let run = import_keystore("bn254", &web3, &web3_pw, &out, &pw).fails(1);
    assert!(run.stderr.contains("holds a ecdsa key, not bn254"), "{run}");
    assert!(!out.exists());

    // Not hex, and not a valid secret.
    let junk = private_file(&dir.path().join("junk.hex"), "not a secret\n");
    let zero = private_file(&dir.path().join("zero.hex"), &"0".repeat(64));
    for (file, message) in [(&junk, "not hex"), (&zero, "not a valid bn254 secret")] {
        let run = import_secret("bn254", file, &dir.path().join("never.json"), &pw).fails(1);
        assert!(run.stderr.contains(message), "{run}");
    }
    assert!(!dir.path().join("never.json").exists());
}

#[test]
fn group_readable_key_and_password_files_are_refused_unless_allowed() {
    let dir = TempDir::new().unwrap();
    let (file, facts) = generate(dir.path(), "bn254");
    let pw = password_file(dir.path());
    let refused = |run: &Run, path: &Path| {
        assert!(run.stderr.contains(&*path.to_string_lossy()), "{run}");
        assert!(run.stderr.contains("chmod 600"), "{run}");
        assert!(run.stderr.contains("mode 644"), "{run}");
    };

    set_mode(&file, 0o644);
    let run = avsnode!("keys inspect", file, "--password-file", pw, "--json").fails(1);
    refused(&run, &file);
    let run = avsnode!(
        "keys inspect",
        file,
        "--password-file",
        pw,
        "--json --allow-insecure-permissions"
    )
    .ok();
    assert_eq!(serde_json::from_str::<Value>(&run.stdout).unwrap(), facts);
    set_mode(&file, 0o600);

    set_mode(&pw, 0o644);
    let run = avsnode!("keys inspect", file, "--password-file", pw, "--json").fails(1);
    refused(&run, &pw);
    let out = dir.path().join("new.json");
    refused(&keys_generate("ecdsa", &out, &pw, "").fails(1), &pw);
    assert!(!out.exists());
    keys_generate("ecdsa", &out, &pw, "--allow-insecure-permissions").ok();
    assert_eq!(mode(&out), 0o600);
    set_mode(&pw, 0o600);

    let secret = private_file(&dir.path().join("secret.hex"), KEY_A_SECRET);
    set_mode(&secret, 0o644);
    let out = dir.path().join("imported.json");
    let run = import_secret("bn254", &secret, &out, &pw).fails(1);
    refused(&run, &secret);
    assert!(!out.exists());
}

#[test]
fn a_missing_password_file_fails_at_once_instead_of_prompting() {
    let dir = TempDir::new().unwrap();
    let (file, _) = generate(dir.path(), "ecdsa");
    let started = Instant::now();
    let run = avsnode!(no_terminal; "keys inspect", file).fails(1);
    assert!(run.stderr.contains("--password-file"), "{run}");
    let out = dir.path().join("new.json");
    let run = avsnode!(no_terminal; "keys generate --scheme bn254 --out", out).fails(1);
    assert!(run.stderr.contains("--password-file"), "{run}");
    assert!(!out.exists());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn list_names_each_keystore_with_its_scheme_and_public_key() {
    let dir = TempDir::new().unwrap();
    let keys = dir.path().join("keys");
    std::fs::create_dir(&keys).unwrap();
    let facts: Vec<(PathBuf, Value)> = SCHEMES.iter().map(|s| generate(&keys, s)).collect();
    let web3 = vector(&keys, "web3-v3-pbkdf2.json");
    std::fs::write(keys.join("junk.json"), "{\"not\": \"a keystore\"}").unwrap();
    std::fs::write(keys.join("notes.txt"), "ignored").unwrap();

    let run = avsnode!("keys list", keys).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    let path = |p: &Path| p.display().to_string();
    let expected = [
        format!(
            "{}\tecdsa\t{}",
            path(&facts[0].0),
            str_of(&facts[0].1["address"])
        ),
        format!(
            "{}\tbn254\t{}",
            path(&facts[1].0),
            str_of(&facts[1].1["g2_public_key"])
        ),
        format!(
            "{}\tbls12-381\t{}",
            path(&facts[2].0),
            str_of(&facts[2].1["public_key"])
        ),
        format!("{}\tecdsa\t(no address recorded)", path(&web3)),
    ];
    for line in &expected {
        assert!(lines.contains(&line.as_str()), "{line:?} missing: {run}");
    }
    let junk = format!("{}\tnot a keystore: ", path(&keys.join("junk.json")));
    assert!(lines.iter().any(|l| l.starts_with(&junk)), "{run}");
    assert_eq!(lines.len(), 5, "only the .json files: {run}");

    let run = avsnode!("keys list", dir.path().join("absent")).fails(1);
    assert!(run.stderr.contains("absent"), "{run}");
}

#[test]
fn check_config_summarises_the_example_and_names_every_problem() {
    let example = avsnode_tests::workspace_root().join("deploy/avsnode.example.toml");
    let run = avsnode!("check-config", example).ok();
    assert!(run.stdout.starts_with("ok\n"), "{run}");
    for part in [
        "operator 0x1111111111111111111111111111111111111111",
        "intake listens on 0.0.0.0:9090",
        r#"signer "bn254-main": bn254 from "#,
        r#"signer "ecdsa-main": ecdsa from "#,
        r#"signer "ecdsa-hsm": ecdsa from PKCS#11 token "avs", key label "operator""#,
        r#"signer "bls-remote": bls12-381 from remote signer https://signer.internal:9500, key "bls-remote""#,
        "avs 0x2222222222222222222222222222222222222222: operator sets 0 (bn254-main), 1 (ecdsa-main); 1 aggregator(s)",
        // The EIP-712 domain the chain's verifier uses: version "1.0.0" → "1" (its first
        // character); the value computed independently with Python from the contract's formula.
        "avs 0x2222222222222222222222222222222222222222 operator set 1: ecdsa verifier \
         0x4444444444444444444444444444444444444444 version \"1.0.0\" (EIP-712 version \"1\"), \
         domain separator 0x37aafd5b959ddb0422981a2e32b0c68eb8549960c37da7042756e66128fb4ea5",
    ] {
        assert!(run.stdout.contains(part), "{part:?} missing: {run}");
    }

    let dir = TempDir::new().unwrap();
    let misspelt = dir.path().join("misspelt.toml");
    std::fs::write(
        &misspelt,
        edit(&example_config(), "max_staleness =", "max_stalenes ="),
    )
    .unwrap();
    let run = avsnode!("check-config", misspelt).fails(1);
    assert!(
        run.output().contains("unknown field `max_stalenes`"),
        "{run}"
    );
    assert!(!run.stdout.starts_with("ok"), "{run}");

    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, config_with_two_problems()).unwrap();
    let run = avsnode!("check-config", broken).fails(1);
    assert!(run.output().contains("2 problem(s)"), "{run}");
    for problem in TWO_PROBLEMS {
        assert!(run.output().contains(problem), "{problem:?} missing: {run}");
    }

    let run = avsnode!("check-config", dir.path().join("absent.toml")).fails(1);
    assert!(run.output().contains("absent.toml"), "{run}");
}

#[test]
fn run_with_an_invalid_config_reports_its_problems_before_starting() {
    let dir = TempDir::new().unwrap();
    // Held, so a node that tried to bind would say so; and a data dir that must not be created.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let text = edit(
        &config_with_two_problems(),
        "\"/var/lib/avsnode\"",
        "\"data\"",
    );
    let text = edit(&text, "\"0.0.0.0:9090\"", &format!("\"127.0.0.1:{port}\""));
    let config = dir.path().join("avsnode.toml");
    std::fs::write(&config, text).unwrap();

    let checked = avsnode!("check-config", config).fails(1);
    let run = avsnode!("run --config", config).fails(1);
    for problem in TWO_PROBLEMS {
        assert!(run.stderr.contains(problem), "{problem:?} missing: {run}");
    }
    let lines = checked.stdout.lines().filter(|l| l.starts_with("  avs["));
    for line in lines {
        assert!(
            run.stderr.contains(line),
            "{line:?} (from check-config) missing: {run}"
        );
    }
    assert!(!run.output().contains("binding"), "{run}");
    assert!(
        !dir.path().join("data").exists(),
        "run created its data dir: {run}"
    );
}

#[test]
fn help_describes_the_commands() {
    let run = avsnode!("--help").ok();
    for command in ["run", "demo", "check-config", "keys", "ledger"] {
        let listed = run
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{command} ")));
        assert!(listed, "{command} not listed: {run}");
    }
    assert!(!run.stdout.contains("example-performer"), "{run}");

    let run = avsnode!("keys --help").ok();
    for command in ["generate", "import", "list", "inspect"] {
        let listed = run
            .stdout
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{command} ")));
        assert!(listed, "{command} not listed: {run}");
    }

    let run = avsnode!("run --help").ok();
    assert!(run.stdout.contains("--config <CONFIG>"), "{run}");
    assert!(run.stdout.contains("configuration"), "{run}");
    // Every file the help points to exists.
    let root = avsnode_tests::workspace_root();
    for help in [
        "--help",
        "run --help",
        "ledger --help",
        "ledger migrate --help",
    ] {
        let run = avsnode!(help).ok();
        for word in run
            .stdout
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        {
            let word = word.trim_end_matches(['.', ',', ';', ':']);
            if (word.starts_with("docs/") || word.starts_with("deploy/"))
                && !root.join(word).exists()
            {
                panic!("`avsnode {help}` points to {word}, which does not exist: {run}");
            }
        }
    }

    let run = avsnode!("keys generate --help").ok();
    assert!(run.stdout.contains("--password-file"), "{run}");
    assert!(
        !run.stdout.contains("insecure-light"),
        "hidden KDF shown: {run}"
    );

    let run = avsnode!("frobnicate").fails(2);
    assert!(run.stderr.contains("frobnicate"), "{run}");
}

/// Every run checks its output against [`forbidden`]; this one drives each command over a key
/// made from a known secret, with the distinctive password, in both log formats.
#[test]
fn passwords_and_secrets_are_never_printed() {
    let dir = TempDir::new().unwrap();
    let pw = password_file(dir.path());
    let wrong = private_file(&dir.path().join("wrong.txt"), WRONG_PASSWORD);
    let secret = private_file(&dir.path().join("secret.hex"), KEY_A_SECRET);
    let mut runs = Vec::new();
    for scheme in SCHEMES {
        let out = dir.path().join(format!("imported-{scheme}.json"));
        runs.push(import_secret(scheme, &secret, &out, &pw).ok());
        for format in ["human", "json"] {
            let format = format!("--log-format={format}");
            runs.push(avsnode!("keys inspect", out, "--password-file", pw, format).ok());
            runs.push(avsnode!("keys inspect", out, "--password-file", wrong, format).fails(1));
        }
        runs.push(avsnode!(no_terminal; "keys inspect", out).fails(1));
        let copy = dir.path().join(format!("copy-{scheme}.json"));
        runs.push(import_keystore(scheme, &out, &pw, &copy, &pw).ok());
        let never = dir.path().join("never.json");
        runs.push(import_keystore(scheme, &out, &wrong, &never, &pw).fails(1));
        // Generating over an existing file fails after reading the password.
        runs.push(keys_generate(scheme, &copy, &pw, "").fails(1));
    }
    runs.push(avsnode!("keys list", dir.path()).ok());
    // A password file handed over as a keystore, and a secret file as a password file.
    runs.push(avsnode!("keys inspect", pw, "--password-file", pw).fails(1));
    runs.push(avsnode!("keys inspect", secret, "--password-file", secret).fails(1));
    let config = dir.path().join("avsnode.toml");
    std::fs::write(&config, config_with_two_problems()).unwrap();
    runs.push(avsnode!("check-config", config).fails(1));
    runs.push(avsnode!("run --config", config).fails(1));

    let debug_lines: usize = runs.iter().map(|r| r.stderr.lines().count()).sum();
    assert!(debug_lines > 0, "no stderr at all");
    for run in &runs {
        for secret in forbidden() {
            assert!(!run.output().contains(&secret), "printed {secret:?}: {run}");
        }
    }
}

#[test]
fn another_process_is_locked_out() {
    // A real second process: `avsnode ledger export` on a data dir this test holds open.
    let dir = tempfile::tempdir().expect("tempdir");
    let _ledger = avsnode_ledger::EmbeddedLedger::open(dir.path()).expect("open ledger");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_avsnode"))
        .args(["ledger", "export", "--data-dir"])
        .arg(dir.path())
        .output()
        .expect("run avsnode");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a second process opened a locked ledger: {stderr}"
    );
    assert!(
        stderr.contains("another avsnode"),
        "unclear message: {stderr}"
    );
    assert!(
        stderr.contains(&dir.path().display().to_string()),
        "message does not name the dir: {stderr}"
    );
}
