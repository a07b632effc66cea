//! The shared ledger's settings as a configuration names them (`[ledger.postgres]` in the
//! node's file, `[postgres]` in the remote signer's), with their problems and how to connect.
//! The duration vocabulary every configuration of the project shares lives here, at the bottom
//! of the crates that read configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::LedgerError;
use crate::postgres::{PgLedger, PgOptions};

/// The longest duration a setting may name. Far beyond any sensible value, and far from where
/// adding it to a clock reading could overflow (and panic).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Deserializes a duration setting (`"10s"`, `"500ms"`, `"1h"`), at most [`MAX_DURATION`].
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    let parsed = humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}); use e.g. \"10s\", \"500ms\", \"1h\""
        ))
    })?;
    if parsed > MAX_DURATION {
        return Err(serde::de::Error::custom(format!(
            "duration {text:?} is longer than the 100 years a setting may name"
        )));
    }
    Ok(parsed)
}

/// Where the shared ledger is and how to use it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgresql://USER@HOST:PORT/DATABASE` (or libpq's `key=value` form), without a password.
    pub url: String,
    /// A file holding the password (its first line); none: no password (e.g. `trust` or a
    /// client certificate).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Connections in the pool (default 16).
    #[serde(default = "pool_size")]
    pub pool_size: usize,
    /// How long to wait for a connection (default `"1s"`).
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub connect_timeout: Duration,
    /// The longest a statement may take, on the server and the client (default `"1s"`); past
    /// it the database counts as unavailable and the task is answered UNAVAILABLE.
    #[serde(default = "one_second", deserialize_with = "duration")]
    pub statement_timeout: Duration,
    /// TLS: a PEM file with the CA that issued the server's certificate. With it, connections
    /// use TLS and check the certificate and the URL's host name (libpq's `verify-full`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This replica's name in the ledger's rows (default: the host name). Only for people
    /// reading the table: every claim has a token of its own.
    #[serde(default)]
    pub replica: Option<String>,
    /// How long a claim holds a task before another replica may take it over (default `"5s"`):
    /// renewed every third of it while the task runs, so it bounds how long a dead replica's
    /// tasks wait, not how long a task may run.
    #[serde(default = "claim_lease", deserialize_with = "duration")]
    pub claim_lease: Duration,
}

fn pool_size() -> usize {
    16
}
fn one_second() -> Duration {
    Duration::from_secs(1)
}
fn claim_lease() -> Duration {
    Duration::from_secs(5)
}

impl PostgresConfig {
    /// Makes the password and CA files absolute with `resolve` (relative to the configuration
    /// file, as every path in it).
    pub fn resolve_paths(&mut self, resolve: impl Fn(&mut PathBuf)) {
        for path in [&mut self.password_file, &mut self.ca_file]
            .into_iter()
            .flatten()
        {
            resolve(path);
        }
    }

    /// Problems of these settings, each under `prefix` (e.g. `ledger.postgres`).
    pub fn problems(&self, prefix: &str, problem: &mut dyn FnMut(String, String)) {
        let mut at = |key: &str, text: &str| problem(format!("{prefix}.{key}"), text.into());
        match self.url.parse::<tokio_postgres::Config>() {
            Err(e) => at("url", &format!("not a PostgreSQL URL: {e}")),
            Ok(c) if c.get_password().is_some() => {
                at("url", "holds a password; put it in password_file");
            }
            Ok(_) => {}
        }
        if self.pool_size == 0 {
            at("pool_size", "at least 1");
        }
        for (key, value) in [
            ("connect_timeout", self.connect_timeout),
            ("statement_timeout", self.statement_timeout),
        ] {
            if value.is_zero() || value > Duration::from_secs(60) {
                at(key, "between 1ms and 60s");
            }
        }
        if self.claim_lease < Duration::from_millis(300) {
            at(
                "claim_lease",
                "at least 300ms (it is renewed every third of it)",
            );
        }
        if let Some(file) = &self.password_file
            && let Err(e) = std::fs::metadata(file)
        {
            at("password_file", &format!("{}: {e}", file.display()));
        }
        if let Some(file) = &self.ca_file
            && let Err(e) = std::fs::metadata(file)
        {
            at("ca_file", &format!("{}: {e}", file.display()));
        }
    }

    /// Reads the password file and connects (creating or migrating the schema).
    pub async fn connect(&self) -> Result<PgLedger, LedgerError> {
        PgLedger::connect(&self.options()?).await
    }

    /// Connects and reads the schema version without changing anything (0: no schema yet).
    pub async fn inspect(&self) -> Result<i32, LedgerError> {
        PgLedger::inspect(&self.options()?).await
    }

    fn options(&self) -> Result<PgOptions, LedgerError> {
        let password = match &self.password_file {
            Some(file) => Some(read_password(file)?),
            None => None,
        };
        let replica = self.replica.clone().unwrap_or_else(host_name);
        Ok(PgOptions {
            url: self.url.clone(),
            password,
            pool_size: self.pool_size,
            connect_timeout: self.connect_timeout,
            statement_timeout: self.statement_timeout,
            ca_file: self.ca_file.clone(),
            replica,
        })
    }
}

/// The first line of `file`, without its line ending. Errors name the file, never its content.
fn read_password(file: &std::path::Path) -> Result<String, LedgerError> {
    let text = std::fs::read_to_string(file).map_err(|source| LedgerError::Io {
        path: file.to_path_buf(),
        source,
    })?;
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "avsnode".to_owned())
}
