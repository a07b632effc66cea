//! `avsnode import`: an avsnode configuration from another node's, with what the operator must
//! still supply or decide marked in the file and listed on stderr. Secrets in the input (keys,
//! passwords) are never written out or printed: the operator moves them into key and password
//! files, following the instructions the output gives.

mod hourglass;
mod render;
mod yaml;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;

use hourglass::{BlsKeystore, ReadError};
use render::{Plan, TODO_MARK, things};

#[derive(Debug, Subcommand)]
pub(crate) enum ImportCommand {
    /// Write an avsnode configuration from a Hourglass executor config (the executor's YAML
    /// file): operator, ports, signing keys, L1 chain, and one [[avs]] per avsPerformers entry
    /// with its docker image and environment.
    ///
    /// What the operator must still supply or decide (key and password files, operator sets,
    /// contract addresses, admin keys, ...) is marked `# IMPORT TODO:` in the file, and listed
    /// on stderr; `avsnode check-config` fails until every value to supply is filled in. What
    /// is not imported, and why, is listed as `# IMPORT NOTE:`. Keys and passwords from the
    /// executor config are never copied or printed: the TODOs say how to put them in key and
    /// password files.
    HourglassConfig {
        /// The executor's YAML configuration (`executor run --config FILE`).
        executor_yaml: PathBuf,
        /// Write the configuration to this file (mode 0600: it may hold an RPC URL's API key
        /// and performer env values) instead of stdout. An inline BN254 keystore is written
        /// beside it, as <name>.bn254.json.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Overwrite --out (and the keystore beside it) if it exists.
        #[arg(long, requires = "out")]
        force: bool,
    },
}

#[allow(clippy::print_stdout, clippy::print_stderr)]
pub(crate) fn import_command(command: ImportCommand) -> anyhow::Result<()> {
    let ImportCommand::HourglassConfig {
        executor_yaml,
        out,
        force,
    } = command;
    let shown = executor_yaml.display();
    // The file holds keys: its text is wiped when dropped.
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&executor_yaml).with_context(|| format!("reading {shown}"))?,
    );
    let config = match hourglass::read(&text) {
        Ok(config) => config,
        Err(ReadError::Invalid(problems)) => bail!(
            "{}",
            problems
                .iter()
                .map(|p| format!("{shown}: {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        ),
        Err(e @ ReadError::Yaml(_)) => bail!("{shown}: {e}"),
    };

    // The inline BN254 keystore goes beside the configuration, when there is a file to go beside.
    let keystore = match (&config.bls, &out) {
        (Some(bls), Some(out)) => match &bls.keystore {
            BlsKeystore::Inline(json) => Some((keystore_beside(out)?, json)),
            BlsKeystore::File(_) => None,
        },
        _ => None,
    };
    for path in out.iter().chain(keystore.iter().map(|(path, _)| path)) {
        if path.exists() && !force {
            bail!("{} exists; pass --force to overwrite it", path.display());
        }
    }
    let keystore_name = keystore.as_ref().map(|(path, _)| file_name(path));
    let source = file_name(&executor_yaml);
    let imported = render::render(
        &config,
        &Plan {
            source: &source,
            bn254_keystore: keystore_name.as_deref(),
        },
    );

    let mut written = Vec::new();
    if let Some((path, json)) = &keystore {
        write_private(path, json.as_bytes(), force)?;
        written.push(path.display().to_string());
    }
    match &out {
        Some(path) => {
            write_private(path, imported.toml.as_bytes(), force)?;
            written.push(path.display().to_string());
        }
        None => print!("{}", imported.toml),
    }

    // The summary: never a value from the file (the RPC URL, env values), only keys and names.
    let mut summary = format!(
        "{} to supply or decide (lines starting {TODO_MARK:?} in the configuration):\n",
        things(imported.todos.len())
    );
    for todo in &imported.todos {
        summary += &format!("  {todo}\n");
    }
    if !imported.notes.is_empty() {
        summary += &format!(
            "{} not imported or ignored (\"# IMPORT NOTE:\" in the configuration):\n",
            imported.notes.len()
        );
        for note in &imported.notes {
            summary += &format!("  {note}\n");
        }
    }
    for path in written {
        summary += &format!("wrote {path} (mode 0600)\n");
    }
    eprint!("{summary}");
    Ok(())
}

/// `<dir>/<stem>.bn254.json` for the configuration `out`.
fn keystore_beside(out: &Path) -> anyhow::Result<PathBuf> {
    let stem = out
        .file_stem()
        .with_context(|| format!("--out {}: not a file name", out.display()))?;
    let mut name = stem.to_os_string();
    name.push(".bn254.json");
    Ok(out.with_file_name(name))
}

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Writes a new file, owner-only; with `force`, replaces one that exists.
fn write_private(path: &Path, contents: &[u8], force: bool) -> anyhow::Result<()> {
    if force && path.exists() {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    avsnode_keystore::write_private(path, contents)
        .with_context(|| format!("writing {}", path.display()))
}
