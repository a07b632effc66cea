//! The avsnode daemon.
//!
//! Owns (DESIGN §3, §7, §9): the TOML configuration, one module per section, each reporting its
//! own problems ([`config`]); the intake services ([`intake`]) and the limits each listener
//! gets ([`listeners`]; the gates and TLS themselves are `avsnode-listener`'s); the task pipeline, one module per stage ([`pipeline`]:
//! validate, admission, execute, sign); which performer serves each AVS and its deploys
//! ([`deployments`], [`management`]); start-up, reload and shutdown ([`daemon`]); the demo ([`demo`], whose
//! aggregator is `avsnode-aggregator`) and the load generator it shares with `avsnode bench`
//! ([`load`]). The ledger, the signing methods, the performer
//! runtimes and the listeners' admission are crates of their own (`avsnode-ledger`,
//! `avsnode-signing`, `avsnode-performer`, `avsnode-listener`);
//! this crate depends on them and nothing depends on it.
//!
//! # Invariant
//!
//! For one (signing key, what the digest binds, task id) the node releases signatures over at most
//! one digest, for one AVS and operator set, and the record holding them is durably committed
//! before any signature leaves the process: the pipeline signs through
//! [`avsnode_ledger::Ledger::sign_once`] and answers only from the durably committed record it
//! returns (whose signatures may be an earlier attempt's). Signatures that lose the check (another
//! digest or origin already recorded) are dropped in memory, never stored or released.

pub mod config;
pub mod daemon;
pub mod demo;
pub mod deployments;
pub mod intake;
pub mod listeners;
pub mod load;
pub mod management;
pub mod pipeline;
pub mod systemd;
