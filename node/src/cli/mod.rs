//! The subcommands of `avsnode`, one module each; `main.rs` holds the root and the dispatch.

pub(crate) mod keys;
pub(crate) mod ledger;
pub(crate) mod performer;
pub(crate) mod signer;

use std::path::PathBuf;

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
