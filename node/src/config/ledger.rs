//! `[ledger]`: the sign-once ledger's settings.

use std::time::Duration;

use avsnode_signing::definition::duration;
use serde::Deserialize;

use super::{Config, defaults};

/// `[ledger]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// How long signed records are kept (default `"14d"`). Must exceed every AVS's
    /// `max_staleness`, so a pruned task is always rejected as stale before it could be re-signed.
    #[serde(default = "defaults::retention", deserialize_with = "duration")]
    pub retention: Duration,
    /// Group commit: how long the ledger waits for more new records to share one fsync (default
    /// `"5ms"`; `"0s"` commits each batch at once). Adds at most this much latency per task.
    #[serde(default = "defaults::commit_delay", deserialize_with = "duration")]
    pub commit_delay: Duration,
    /// The ledger's page cache in MiB (default 16): the node's memory grows with the ledger up
    /// to this much; lookups past it read the file (usually from the OS page cache).
    #[serde(default = "defaults::ledger_cache_mib")]
    pub cache_mib: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            retention: defaults::retention(),
            commit_delay: defaults::commit_delay(),
            cache_mib: defaults::ledger_cache_mib(),
        }
    }
}

impl Config {
    /// Problems of `[ledger]`.
    pub(super) fn ledger_problems(&self, problem: &mut dyn FnMut(String, String)) {
        if self.ledger.commit_delay > Duration::from_millis(100) {
            problem(
                "ledger.commit_delay".into(),
                "at most 100ms: every new task waits this long".into(),
            );
        }
    }
}
