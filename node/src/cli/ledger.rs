//! `avsnode ledger`: export, import, prune and migrate the sign-once ledger — the embedded one of
//! a stopped node, or the shared PostgreSQL one a configuration names (`ledger.backend`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use avsnode::config::{Backend, Config};
use avsnode_ledger::{Collisions, EmbeddedLedger, Ledger, LedgerOptions, MigrationOptions};
use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub(crate) struct DataDirArgs {
    /// The node's configuration: its [ledger] (the embedded ledger in its data_dir, or the
    /// PostgreSQL database of ledger.backend = "postgres")…
    #[arg(
        long,
        short,
        conflicts_with = "data_dir",
        required_unless_present = "data_dir"
    )]
    config: Option<PathBuf>,
    /// …or the data directory itself.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A ledger written by an avsnode before 0.2 (or a version-1 export) keys ECDSA records by
    /// verifier address only: the verifier version that node was configured with, so its records
    /// can be migrated. Repeatable; the configuration's versions and 0–9 are tried anyway.
    #[arg(long = "verifier-version", value_name = "VERSION")]
    verifier_versions: Vec<String>,
}

impl DataDirArgs {
    /// The configuration (if given), the data directory and the verifier versions to try
    /// (given, then configured).
    fn resolve(&self) -> anyhow::Result<(Option<Config>, PathBuf, Vec<String>)> {
        let mut verifier_versions = self.verifier_versions.clone();
        match (&self.config, &self.data_dir) {
            (_, Some(dir)) => Ok((None, dir.clone(), verifier_versions)),
            (Some(path), None) => {
                let config = Config::load(path)?;
                verifier_versions.extend(config.verifier_versions());
                let dir = config.node.data_dir.clone();
                Ok((Some(config), dir, verifier_versions))
            }
            (None, None) => bail!("give --config or --data-dir"),
        }
    }

    async fn open(&self) -> anyhow::Result<Ledger> {
        let (config, dir, verifier_versions) = self.resolve()?;
        if let Some(config) = config {
            let ledger = config
                .ledger
                .open(&dir, self.options(verifier_versions, Collisions::Refuse))
                .await;
            return ledger.with_context(|| match config.ledger.backend {
                Backend::Postgres => "opening the ledger database".to_owned(),
                Backend::Embedded => format!(
                    "opening the ledger in {} (is the node stopped?)",
                    dir.display()
                ),
            });
        }
        self.open_embedded(Collisions::Refuse).map(Ledger::Embedded)
    }

    fn options(&self, verifier_versions: Vec<String>, collisions: Collisions) -> LedgerOptions {
        LedgerOptions {
            migration: MigrationOptions {
                verifier_versions,
                collisions,
            },
            ..LedgerOptions::default()
        }
    }

    fn open_embedded(&self, collisions: Collisions) -> anyhow::Result<EmbeddedLedger> {
        let (config, dir, verifier_versions) = self.resolve()?;
        if config.is_some_and(|c| c.ledger.backend == Backend::Postgres) {
            bail!("migrate is for the embedded ledger; this configuration's ledger is PostgreSQL");
        }
        EmbeddedLedger::open_with(&dir, self.options(verifier_versions, collisions)).with_context(
            || {
                format!(
                    "opening the ledger in {} (is the node stopped?)",
                    dir.display()
                )
            },
        )
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum LedgerCommand {
    /// Write every record as JSON (integers as strings) to a file or stdout.
    Export {
        #[command(flatten)]
        data_dir: DataDirArgs,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Merge records from an export (version 2, or version 1 from an older avsnode); refuses
    /// (writing nothing) if any conflicts with a record here.
    Import {
        #[command(flatten)]
        data_dir: DataDirArgs,
        /// The export file.
        file: PathBuf,
    },
    /// Migrate a ledger written by an older avsnode to the current layout (the node does it at
    /// start-up, and refuses to start if the same task was signed for two AVSs or operator sets
    /// with one key: decide here).
    Migrate {
        #[command(flatten)]
        data_dir: DataDirArgs,
        /// Keep the earliest record of each task signed for several AVSs or operator sets with
        /// one key; later requests for the others are refused. Needs --dropped-to.
        #[arg(long, requires = "dropped_to")]
        keep_earliest: bool,
        /// Where the records that --keep-earliest drops are written (JSON, the export format; a
        /// new file, written and synced before anything changes).
        #[arg(long, requires = "keep_earliest")]
        dropped_to: Option<PathBuf>,
    },
    /// Delete records older than a duration (embedded: recorded before it; PostgreSQL: tasks
    /// whose reference timestamp is before it, and such tasks stay refused for ever).
    Prune {
        #[command(flatten)]
        data_dir: DataDirArgs,
        /// E.g. `14d`. Must exceed every AVS's max_staleness, or a pruned task could be re-signed.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
    },
}

#[allow(clippy::print_stdout)]
pub(crate) async fn ledger_command(command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Export { data_dir, out } => {
            let ledger = data_dir.open().await?;
            let n = match out {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    ledger.export_json(&mut file).await?
                }
                None => ledger.export_json(&mut std::io::stdout().lock()).await?,
            };
            tracing::info!(records = n, "exported");
        }
        LedgerCommand::Import { data_dir, file } => {
            let ledger = data_dir.open().await?;
            let mut input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let (_, _, verifier_versions) = data_dir.resolve()?;
            let summary = ledger.import_json(&mut input, &verifier_versions).await?;
            println!("{summary:?}");
        }
        LedgerCommand::Migrate {
            data_dir,
            keep_earliest,
            dropped_to,
        } => {
            let collisions = match (keep_earliest, dropped_to) {
                (true, Some(dropped_to)) => Collisions::KeepEarliest { dropped_to },
                _ => Collisions::Refuse,
            };
            let ledger = data_dir.open_embedded(collisions)?;
            match ledger.migrated() {
                Some(report) => println!(
                    "migrated {} records to the current layout; dropped {}",
                    report.migrated, report.dropped
                ),
                None => println!("the ledger is already in the current layout"),
            }
        }
        LedgerCommand::Prune {
            data_dir,
            older_than,
        } => {
            let ledger = data_dir.open().await?;
            println!("pruned {} records", ledger.prune(older_than).await?);
        }
    }
    Ok(())
}
