//! SoftHSM2 tokens for the PKCS#11 tests: each [`Token`] has its own `SOFTHSM2_CONF` and token
//! directory, so tests never share a token and can remove one ("pull" it) without touching others.
//! A test that loads the module in its own process runs in a child process ([`in_child`]).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every test token.
pub const PIN: &str = "460913";
/// The security officer PIN of every test token.
pub const SO_PIN: &str = "827364";

/// Set in a child process of [`in_child`] to its token's folder.
const CHILD_ENV: &str = "AVSNODE_SOFTHSM_CHILD";

/// Whether SoftHSM2 is installed (the module, `softhsm2-util` and OpenSC's `pkcs11-tool`). If not, prints
/// `skipping: SoftHSM2 is not installed (…)` and returns false, so a test can
/// `if !softhsm_available() { return; }` — except on CI (`CI=true`), where it panics: `.ci/run`
/// installs it.
pub fn softhsm_available() -> bool {
    let util = Command::new("softhsm2-util").arg("--version").output();
    let tool = Command::new("pkcs11-tool").arg("--help").output();
    let reason = match (util, tool) {
        _ if !Path::new(MODULE).exists() => format!("{MODULE} is missing"),
        (Err(e), _) => format!("softhsm2-util: {e}"),
        (_, Err(e)) => format!("pkcs11-tool: {e}"),
        (Ok(_), Ok(_)) => return true,
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("SoftHSM2 is not installed on CI ({reason}); .ci/run installs softhsm2");
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "skipping: SoftHSM2 is not installed ({reason}); apt-get install softhsm2 opensc"
        );
    }
    false
}

/// An initialised token in its own directory under `dir`.
#[derive(Debug)]
pub struct Token {
    /// The `SOFTHSM2_CONF` file to give every process that uses the token.
    pub conf: PathBuf,
    /// The token directory (removing it pulls the token).
    pub tokens: PathBuf,
    /// A file holding [`PIN`] (mode 0600).
    pub pin_file: PathBuf,
    /// The token's label.
    pub label: String,
}

/// Runs `body` with a fresh token labelled `label`, in a child process of the running test binary
/// whose `SOFTHSM2_CONF` is the token's. A PKCS#11 module reads that variable once, when it is
/// loaded, and a test may not set its own environment (`unsafe`, which the workspace forbids): so
/// the test re-runs itself, filtered to `name` (the test function's name), as the child. The
/// parent checks the child ran the test and passed. Without SoftHSM it prints why and returns,
/// except under `CI=true`, where it fails.
pub fn in_child(name: &str, label: &str, body: impl FnOnce(&Token)) {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        let token = Token::at(Path::new(&dir), label);
        body(&token);
        std::fs::write(Path::new(&dir).join("passed"), name).expect("writing the pass marker");
        return;
    }
    if !softhsm_available() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary folder");
    let token = Token::new(dir.path(), label);
    let status = token
        .command(std::env::current_exe().expect("the test binary"))
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir.path())
        .status()
        .expect("running the test binary");
    assert!(
        status.success(),
        "{name} failed in its SoftHSM child process"
    );
    // A filter that matched nothing would pass without running the test.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("passed"))
            .ok()
            .as_deref(),
        Some(name),
        "the child process did not run {name}"
    );
}

impl Token {
    /// The token laid out under `dir` by [`Token::new`].
    fn at(dir: &Path, label: &str) -> Token {
        Token {
            conf: dir.join("softhsm2.conf"),
            tokens: dir.join("softhsm-tokens"),
            pin_file: dir.join("token.pin"),
            label: label.to_owned(),
        }
    }

    /// Writes a configuration under `dir` and initialises a token labelled `label` with [`PIN`].
    pub fn new(dir: &Path, label: &str) -> Token {
        let token = Token::at(dir, label);
        let (tokens, conf, pin_file) = (&token.tokens, &token.conf, &token.pin_file);
        std::fs::create_dir_all(tokens).expect("creating the token directory");
        std::fs::write(
            conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("writing softhsm2.conf");
        std::fs::write(pin_file, format!("{PIN}\n")).expect("writing the PIN file");
        std::fs::set_permissions(
            pin_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod 600 the PIN file");
        let out = token
            .command("softhsm2-util")
            .args([
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                PIN,
                "--so-pin",
                SO_PIN,
            ])
            .output()
            .expect("running softhsm2-util");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        token
    }

    /// A command with `SOFTHSM2_CONF` set to this token's configuration.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command.env("SOFTHSM2_CONF", &self.conf);
        command
    }

    /// Pulls the token: its directory (under [`Token::tokens`]) is copied aside, then renamed
    /// out and deleted, so it vanishes at one instant for every process using it. (SoftHSM keeps
    /// re-creating its lock files, so an in-place `rm -r` races with it.)
    pub fn pull(&self) {
        let token_dir = self.token_dir();
        copy_dir(&token_dir, &self.backup());
        let gone = self.tokens.with_extension("gone");
        std::fs::rename(&token_dir, &gone).expect("pulling the token");
        std::fs::remove_dir_all(&gone).expect("deleting the pulled token");
    }

    /// Puts a [pulled](Token::pull) token back: its copy is staged beside it and renamed in, so
    /// SoftHSM never sees half a token. Processes find it again after re-initialising the module.
    pub fn put_back(&self) {
        let staging = self.tokens.with_extension("staging");
        copy_dir(&self.backup(), &staging);
        let name = std::fs::read_to_string(self.backup().with_extension("name"))
            .expect("the pulled token's directory name");
        std::fs::rename(&staging, self.tokens.join(name)).expect("putting the token back");
    }

    /// The token's own directory (SoftHSM names it by a UUID).
    fn token_dir(&self) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.tokens)
            .expect("reading the token directory")
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(dirs.len(), 1, "one token in {}", self.tokens.display());
        let dir = dirs.remove(0);
        let name = dir
            .file_name()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        std::fs::write(self.backup().with_extension("name"), name).expect("recording the name");
        dir
    }

    fn backup(&self) -> PathBuf {
        self.tokens.with_extension("backup")
    }
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    std::fs::create_dir_all(to).expect("creating a copy of the token");
    for entry in std::fs::read_dir(from).expect("reading the token") {
        let entry = entry.expect("token file");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copying the token");
    }
}
