//! `avsnode performer`: deploy, list and remove performers through a running node's management API.

use std::path::PathBuf;

use anyhow::{Context, bail};
use avsnode_signing::LocalKey;
use clap::Subcommand;

use super::{PasswordArgs, open_keystore};

#[derive(Debug, Subcommand)]
pub(crate) enum PerformerCommand {
    /// Blue/green deploy: start the image, wait until healthy, switch new tasks to it, drain and
    /// remove the old container. Prints the new performer id.
    Deploy {
        #[command(flatten)]
        node: ManagementArgs,
        /// The AVS address.
        #[arg(long)]
        avs: String,
        /// The image: `name:tag`, `name@sha256:…`, or a local image id `sha256:…`.
        #[arg(long)]
        image: String,
        /// An environment variable for the container, `NAME=VALUE` (repeatable). The value is on
        /// this command line (process listings, shell history): pass secrets with
        /// --env-from-env or --env-file instead.
        #[arg(long = "env", value_name = "NAME=VALUE", value_parser = parse_env)]
        env: Vec<(String, String)>,
        /// An environment variable for the container whose value is this command's own
        /// environment variable of the same name (`NAME`), or of another (`NAME=FROM`)
        /// (repeatable).
        #[arg(long = "env-from-env", value_name = "NAME[=FROM]")]
        env_from_env: Vec<String>,
        /// A file of `NAME=VALUE` lines (blank lines and lines starting with `#` are skipped;
        /// the value is the rest of the line, unquoted) (repeatable; keep it chmod 600).
        #[arg(long = "env-file", value_name = "FILE")]
        env_file: Vec<PathBuf>,
    },
    /// List performers and their live state.
    List {
        #[command(flatten)]
        node: ManagementArgs,
        /// Only this AVS's.
        #[arg(long, default_value = "")]
        avs: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stop and remove a performer (its AVS gets UNAVAILABLE until the next deploy).
    Remove {
        #[command(flatten)]
        node: ManagementArgs,
        /// The performer id (from `deploy` or `list`).
        performer_id: String,
    },
}

#[derive(Debug, clap::Args)]
pub(crate) struct ManagementArgs {
    /// The node's management listener.
    #[arg(
        long,
        env = "AVSNODE_MANAGEMENT_URL",
        default_value = "http://127.0.0.1:9091"
    )]
    node: String,
    /// The node's operator address (challenges are issued for it).
    #[arg(long, env = "AVSNODE_OPERATOR_ADDRESS")]
    operator: String,
    /// The admin key: an ECDSA keystore whose address is in the node's `management.admins`.
    #[arg(long, env = "AVSNODE_ADMIN_KEY", required_unless_present = "no_auth")]
    admin_key: Option<PathBuf>,
    #[command(flatten)]
    password: PasswordArgs,
    /// Send calls unsigned (only a node with `require_auth = false` accepts them).
    #[arg(long, conflicts_with = "admin_key")]
    no_auth: bool,
}

impl ManagementArgs {
    async fn connect(&self) -> anyhow::Result<avsnode::management::AdminClient> {
        let operator = self
            .operator
            .parse()
            .map_err(|e| anyhow::anyhow!("--operator {:?}: {e}", self.operator))?;
        let key = match &self.admin_key {
            None => None,
            Some(path) => {
                match open_keystore(
                    path,
                    self.password.password_file.as_deref(),
                    "Admin keystore password: ",
                    self.password.allow_insecure_permissions,
                )? {
                    LocalKey::Ecdsa(key) => Some(key),
                    other => bail!(
                        "{}: admin keys are ecdsa; this is a {} key",
                        path.display(),
                        other.scheme()
                    ),
                }
            }
        };
        avsnode::management::AdminClient::connect(&self.node, operator, key)
            .await
            .map_err(|s| anyhow::anyhow!("{}", s.message()))
    }
}

pub(crate) fn parse_env(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=VALUE".to_owned())?;
    avsnode_performer::check_env_name(name)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The environment of a deploy from `--env`, `--env-from-env` and `--env-file`, in that order
/// (a name given twice is refused: which value wins would be a guess). Values are never printed.
pub(crate) fn deploy_env(
    env: Vec<(String, String)>,
    env_from_env: &[String],
    env_files: &[PathBuf],
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = env;
    for spec in env_from_env {
        let (name, from) = spec.split_once('=').unwrap_or((spec, spec));
        avsnode_performer::check_env_name(name)
            .map_err(|e| anyhow::anyhow!("--env-from-env: {e}"))?;
        let value = std::env::var(from).map_err(|_| {
            anyhow::anyhow!("--env-from-env {spec}: {from} is not set in this environment")
        })?;
        out.push((name.to_owned(), value));
    }
    for file in env_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("reading --env-file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = parse_env(line).map_err(|e| {
                anyhow::anyhow!("--env-file {} line {}: {e}", file.display(), n + 1)
            })?;
            out.push((name, value));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (name, _) in &out {
        if !names.insert(name.as_str()) {
            bail!("env {name} is given twice");
        }
    }
    Ok(out)
}

#[allow(clippy::print_stdout)]
pub(crate) fn performer_command(command: PerformerCommand) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let failed = |s: tonic::Status| anyhow::anyhow!("{:?}: {}", s.code(), s.message());
    runtime.block_on(async {
        match command {
            PerformerCommand::Deploy {
                node,
                avs,
                image,
                env,
                env_from_env,
                env_file,
            } => {
                let env = deploy_env(env, &env_from_env, &env_file)?;
                let mut client = node.connect().await?;
                let answer = client.deploy(&avs, "", &image, env).await.map_err(failed)?;
                println!("{}\n{}", answer.deployment_id, answer.message);
            }
            PerformerCommand::List { node, avs, json } => {
                let mut client = node.connect().await?;
                let performers = client.list(&avs).await.map_err(failed)?;
                if json {
                    let rows: Vec<_> = performers
                        .iter()
                        .map(|p| {
                            serde_json::json!({
                                "performer_id": p.performer_id,
                                "avs_address": p.avs_address,
                                "status": p.status,
                                "artifact_registry": p.artifact_registry,
                                "artifact_tag": p.artifact_tag,
                                "artifact_digest": p.artifact_digest,
                                "container_id": p.container_id,
                                "resource_healthy": p.resource_healthy,
                                "application_healthy": p.application_healthy,
                                "last_health_check": p.last_health_check,
                            })
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else if performers.is_empty() {
                    println!("no performers");
                } else {
                    println!(
                        "{:<22} {:<44} {:<11} {:<14} IMAGE",
                        "PERFORMER", "AVS", "STATUS", "CONTAINER"
                    );
                    for p in performers {
                        let image = match (p.artifact_registry.as_str(), p.artifact_tag.as_str()) {
                            ("", _) => p.artifact_digest.clone(),
                            (r, "") => format!("{r}@{}", p.artifact_digest),
                            (r, t) => format!("{r}:{t}"),
                        };
                        let container: String = p.container_id.chars().take(12).collect();
                        println!(
                            "{:<22} {:<44} {:<11} {:<14} {image}",
                            p.performer_id, p.avs_address, p.status, container
                        );
                    }
                }
            }
            PerformerCommand::Remove { node, performer_id } => {
                let mut client = node.connect().await?;
                let answer = client.remove(&performer_id).await.map_err(failed)?;
                println!("{}", answer.message);
            }
        }
        anyhow::Ok(())
    })
}
