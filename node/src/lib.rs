//! The avsnode daemon.
//!
//! Owns (DESIGN §3, §5, §9): the TOML configuration and its validation ([`config`]), the intake
//! services ([`intake`]), the task pipeline — shape, addressee, deadline, freshness, aggregator
//! signature ([`validate`]), ledger fast path, admission with single flight, execution, output
//! checks, sign-and-commit ([`pipeline`]) — the sign-once [`ledger`], the live signers
//! ([`signing`]), the performers of each AVS and their deploys ([`performers`], [`management`]), and the `avsnode` command line (keys, demo). It depends on every other crate;
//! nothing depends on it.
//!
//! # Invariant
//!
//! For one (signing key, what the digest binds, task id) the node releases signatures over at most
//! one digest, for one AVS and operator set, and the record holding them is durably committed
//! before any signature leaves the process: the pipeline signs through
//! [`avsnode_ledger::Ledger::sign_once`] and answers only from the durably committed record it returns
//! (whose signatures may be an earlier attempt's). Signatures that lose the check (another digest
//! or origin already recorded) are dropped in memory, never stored or released.

pub mod aggregator;
pub mod config;
pub mod connections;
pub mod daemon;
pub mod demo;
pub mod deployments;

pub mod intake;
pub mod keys;

pub mod management;
pub mod pipeline;

pub mod tls;

pub mod warnings;
