//! The avsnode daemon.
//!
//! Will own (DESIGN §3, §5, §7, §9): the TOML configuration and its validation, the intake
//! services (`ExecutorService/SubmitTask`, `TaskStream/Open`, health, reflection), the task
//! pipeline (shape, addressee, deadline, freshness, aggregator signature, ledger fast path,
//! admission, execution, output checks, record-sign-store), the sign-once ledger, the management
//! API, and the `avsnode` command line. It depends on every other crate; nothing depends on it.
//!
//! # Invariant (to come with the ledger)
//!
//! For one (signing key, domain, task id) the node releases signatures over at most one digest,
//! and the record saying so is durably committed before any signature leaves the process.
