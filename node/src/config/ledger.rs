//! `[ledger]`: the sign-once ledger's settings.

use std::path::Path;
use std::time::Duration;

use avsnode_ledger::{EmbeddedLedger, Ledger, LedgerError, LedgerOptions};

use avsnode_ledger::settings::PostgresConfig;
use avsnode_signing::definition::duration;
use serde::Deserialize;

use super::{Config, defaults};

/// `[ledger]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Where the sign-once records live: `embedded` (default: redb in `node.data_dir`, one
    /// node) or `postgres` (shared by several replicas of this operator; `[ledger.postgres]`).
    #[serde(default)]
    pub backend: Backend,
    /// `[ledger.postgres]`: the shared ledger, with `backend = "postgres"`.
    #[serde(default)]
    pub postgres: Option<PostgresConfig>,
    /// How long signed records are kept (default `"14d"`). Must exceed every AVS's
    /// `max_staleness`, so a pruned task is always rejected as stale before it could be re-signed.
    #[serde(default = "defaults::retention", deserialize_with = "duration")]
    pub retention: Duration,
    /// Group commit (embedded): how long the ledger waits for more new records to share one fsync (default
    /// `"5ms"`; `"0s"` commits each batch at once). Adds at most this much latency per task.
    #[serde(default = "defaults::commit_delay", deserialize_with = "duration")]
    pub commit_delay: Duration,
    /// The ledger's page cache in MiB (default 16): the node's memory grows with the ledger up
    /// to this much; lookups past it read the file (usually from the OS page cache).
    #[serde(default = "defaults::ledger_cache_mib")]
    pub cache_mib: usize,
}

/// `ledger.backend`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// redb in the node's data directory.
    #[default]
    Embedded,
    /// PostgreSQL (`[ledger.postgres]`).
    Postgres,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            backend: Backend::Embedded,
            postgres: None,
            retention: defaults::retention(),
            commit_delay: defaults::commit_delay(),
            cache_mib: defaults::ledger_cache_mib(),
        }
    }
}

impl LedgerConfig {
    /// Opens the configured ledger: the embedded one in `data_dir` (with `options`; off the
    /// async workers), or a pool of connections to PostgreSQL with its schema brought up to
    /// date.
    pub async fn open(
        &self,
        data_dir: &Path,
        options: LedgerOptions,
    ) -> Result<Ledger, LedgerError> {
        if let (Backend::Postgres, Some(postgres)) = (self.backend, &self.postgres) {
            return postgres.connect().await.map(Ledger::Postgres);
        }
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || EmbeddedLedger::open_with(&dir, options))
            .await
            .map_err(|_| LedgerError::Closed)?
            .map(Ledger::Embedded)
    }

    /// How long a claim on the shared ledger holds a task before another replica may take it.
    pub fn claim_lease(&self) -> Duration {
        self.postgres
            .as_ref()
            .map_or(Duration::from_secs(5), |p| p.claim_lease)
    }
}

impl Config {
    /// Problems of `[ledger]`.
    pub(super) fn ledger_problems(&self, problem: &mut dyn FnMut(String, String)) {
        match (self.ledger.backend, &self.ledger.postgres) {
            (Backend::Postgres, None) => problem(
                "ledger.backend".into(),
                "\"postgres\" needs [ledger.postgres] with at least url".into(),
            ),
            (Backend::Embedded, Some(_)) => problem(
                "ledger.postgres".into(),
                "set, but ledger.backend is \"embedded\": set backend = \"postgres\" to use it"
                    .into(),
            ),
            (Backend::Postgres, Some(postgres)) => postgres.problems("ledger.postgres", problem),
            (Backend::Embedded, None) => {}
        }
        if self.ledger.commit_delay > Duration::from_millis(100) {
            problem(
                "ledger.commit_delay".into(),
                "at most 100ms: every new task waits this long".into(),
            );
        }
    }
}
