//! `avsnode signer`: the remote signer.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub(crate) enum SignerCommand {
    /// Serve the keys of a signer configuration (mTLS; typed requests only; its own sign-once
    /// ledger) until SIGINT or SIGTERM.
    Serve {
        /// The signer's TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
}
