//! The subcommands of `avsnode`, one module each; `main.rs` holds the root and the dispatch.

pub(crate) mod bench;
pub(crate) mod import;
pub(crate) mod keys;
pub(crate) mod ledger;
pub(crate) mod performer;
pub(crate) mod signer;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use avsnode_keystore::{Keystore, Password};
use avsnode_signing::{LocalKey, check_permissions};

/// How a command gets a keystore's password (shared by `keys` and `performer`).
#[derive(Debug, clap::Args)]
pub(crate) struct PasswordArgs {
    /// A file holding the password (one trailing newline ignored); prompted for otherwise.
    #[arg(long)]
    pub(crate) password_file: Option<PathBuf>,
    /// Accept key and password files readable by group or other.
    #[arg(long)]
    pub(crate) allow_insecure_permissions: bool,
}

impl PasswordArgs {
    /// The password from `--password-file`, or prompted for (twice with `confirm`).
    pub(crate) fn read(&self, prompt: &str, confirm: bool) -> anyhow::Result<Password> {
        read_password(
            self.password_file.as_deref(),
            prompt,
            confirm,
            self.allow_insecure_permissions,
        )
    }
}

/// Decrypts the keystore at `path` (its permissions checked first) with the password from
/// `password_file` or the prompt.
pub(crate) fn open_keystore(
    path: &Path,
    password_file: Option<&Path>,
    prompt: &str,
    allow_insecure: bool,
) -> anyhow::Result<LocalKey> {
    check_permissions("keystore", path, allow_insecure)?;
    let password = read_password(password_file, prompt, false, allow_insecure)?;
    LocalKey::decrypt(&Keystore::read(path)?, &password)
        .with_context(|| format!("decrypting {}", path.display()))
}

/// Where a password comes from: a file (one trailing newline ignored) or an interactive prompt.
/// Never a command-line argument (it would show in `ps` and shell history).
fn read_password(
    file: Option<&Path>,
    prompt: &str,
    confirm: bool,
    allow_insecure: bool,
) -> anyhow::Result<Password> {
    if let Some(path) = file {
        check_permissions("password file", path, allow_insecure)?;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading password file {}", path.display()))?,
        );
        return Ok(Password::from_file_contents(&text));
    }
    let first = zeroize::Zeroizing::new(
        rpassword::prompt_password(prompt)
            .context("reading the password from the terminal (or pass --password-file)")?,
    );
    if confirm {
        let second = zeroize::Zeroizing::new(rpassword::prompt_password("Repeat the password: ")?);
        if *first != *second {
            bail!("the passwords do not match");
        }
    }
    Ok(Password::new(first.as_str()))
}
