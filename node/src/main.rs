//! The `avsnode` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use avsnode::config::Config;
use avsnode::daemon::RunningNode;
use avsnode::keys;
use avsnode_keystore::Kdf;
use avsnode_ledger::{Collisions, Ledger, LedgerOptions, MigrationOptions};
use avsnode_signer::Scheme;
use avsnode_signing::LocalKey;
use clap::{Parser, Subcommand, ValueEnum};

/// avsnode: the EigenLayer AVS operator daemon. Receives tasks from aggregators, runs them in
/// each AVS's performer, and signs the results — never two different outputs for one task.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Log format: human-readable or JSON lines for log shippers.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "human",
        env = "AVSNODE_LOG_FORMAT"
    )]
    log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, `avsnode=debug,info` (env: AVSNODE_LOG). Default
    /// `info`; `warn` for the demo, whose progress bar shares the terminal.
    #[arg(long, global = true, env = "AVSNODE_LOG")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the node with a configuration file. SIGTERM or SIGINT stop it gracefully (tasks in
    /// flight finish within node.shutdown_grace); SIGHUP reloads the file: AVS, aggregator,
    /// operator-set and performer settings and the TLS certificates, without dropping tasks.
    Run {
        /// The TOML configuration; deploy/avsnode.example.toml documents every field.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a self-contained demonstration: fresh keys, the example performer, an in-process
    /// aggregator streaming signed tasks; every signature verified, a summary printed.
    Demo(avsnode::demo::DemoOptions),
    /// Check a configuration file and print a summary, or every problem with its key path.
    CheckConfig {
        /// The TOML configuration.
        file: PathBuf,
    },
    /// Create, import, list and inspect key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Deploy, list and remove docker performers through a node's management API.
    #[command(subcommand)]
    Performer(PerformerCommand),
    /// The remote signer: serve keys over gRPC with mTLS to the nodes allowed to use them.
    #[command(subcommand)]
    Signer(SignerCommand),
    /// Export, import and prune the sign-once ledger (only while the node is stopped).
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Run the example performer (used by the demo; same options as avsnode-example-performer).
    #[command(hide = true)]
    ExamplePerformer(avsnode_example_performer::Options),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Generate a new key and write it encrypted (mode 0600; never overwrites).
    Generate {
        /// ecdsa (Web3 v3 file), bn254 or bls12-381 (EIP-2335 files).
        #[arg(long, value_parser = parse_scheme)]
        scheme: Scheme,
        /// The keystore file to create.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Key derivation: scrypt (default, ~1 s and 256 MiB to unlock) or pbkdf2.
        #[arg(long, value_enum, default_value = "scrypt")]
        kdf: KdfChoice,
    },
    /// Import a key: a raw 32-byte secret (hex in a file) or another keystore file.
    Import {
        /// The scheme of the key being imported.
        #[arg(long, value_parser = parse_scheme)]
        scheme: Scheme,
        /// A file holding the secret as hex (64 digits, optional 0x).
        #[arg(
            long,
            conflicts_with = "from_keystore",
            required_unless_present = "from_keystore"
        )]
        secret_file: Option<PathBuf>,
        /// An existing keystore (any supported format) to re-encrypt.
        #[arg(long)]
        from_keystore: Option<PathBuf>,
        /// Password file of --from-keystore (prompted for otherwise).
        #[arg(long)]
        from_password_file: Option<PathBuf>,
        /// The keystore file to create.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Key derivation for the new file.
        #[arg(long, value_enum, default_value = "scrypt")]
        kdf: KdfChoice,
    },
    /// List the keystores in a folder (no password needed).
    List {
        /// The folder.
        dir: PathBuf,
    },
    /// Generate a secp256k1 key pair on a PKCS#11 token (non-extractable; it can only sign) and
    /// print its address and the `[[signer]]` lines that use it.
    HsmGenerate {
        #[command(flatten)]
        token: HsmTokenArgs,
        /// The new key's label (must be free on the token).
        #[arg(long)]
        label: String,
        /// The new key's CKA_ID in hex (default: 16 random bytes).
        #[arg(long)]
        id: Option<String>,
    },
    /// List the secp256k1 keys on a PKCS#11 token: label, id and address.
    HsmList {
        #[command(flatten)]
        token: HsmTokenArgs,
    },
    /// Show a key's public facts: scheme, address or G1/G2 keys in wire hex, BN254 operator id.
    Inspect {
        /// The keystore file.
        file: PathBuf,
        #[command(flatten)]
        password: PasswordArgs,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Where a PKCS#11 token is and how to log in to it.
#[derive(Debug, clap::Args)]
struct HsmTokenArgs {
    /// The PKCS#11 module (shared library).
    #[arg(long, default_value = "/usr/lib/softhsm/libsofthsm2.so")]
    module: PathBuf,
    /// The token's label.
    #[arg(long)]
    token_label: String,
    /// A file holding the user PIN (mode 0600; one trailing newline is ignored).
    #[arg(long)]
    pin_file: PathBuf,
    /// Accept a PIN file readable by group or other.
    #[arg(long)]
    allow_insecure_permissions: bool,
}

impl HsmTokenArgs {
    fn pin(&self) -> anyhow::Result<avsnode_signing::pkcs11::Pin> {
        avsnode_signing::check_permissions(
            "PIN file",
            &self.pin_file,
            self.allow_insecure_permissions,
        )?;
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(&self.pin_file)
                .with_context(|| format!("reading {}", self.pin_file.display()))?,
        );
        Ok(avsnode_signing::pkcs11::Pin::from_file_contents(&text))
    }
}

#[derive(Debug, Subcommand)]
enum SignerCommand {
    /// Serve the keys of a signer configuration (mTLS; typed requests only; its own sign-once
    /// ledger) until SIGINT or SIGTERM.
    Serve {
        /// The signer's TOML configuration.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum PerformerCommand {
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
struct ManagementArgs {
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
                avsnode_signing::check_permissions(
                    "admin keystore",
                    path,
                    self.password.allow_insecure_permissions,
                )?;
                let password = keys::read_password(
                    self.password.password_file.as_deref(),
                    "Admin keystore password: ",
                    false,
                    self.password.allow_insecure_permissions,
                )?;
                match keys::open(path, &password)? {
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

fn parse_env(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once('=')
        .ok_or_else(|| "expected NAME=VALUE".to_owned())?;
    avsnode_performer::check_env_name(name)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// The environment of a deploy from `--env`, `--env-from-env` and `--env-file`, in that order
/// (a name given twice is refused: which value wins would be a guess). Values are never printed.
fn deploy_env(
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
fn performer_command(command: PerformerCommand) -> anyhow::Result<()> {
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

#[derive(Debug, clap::Args)]
struct PasswordArgs {
    /// A file holding the password (one trailing newline ignored); prompted for otherwise.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// Accept key and password files readable by group or other.
    #[arg(long)]
    allow_insecure_permissions: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KdfChoice {
    Scrypt,
    Pbkdf2,
    /// Cheap parameters: tests and demos only, protects nothing.
    #[value(hide = true)]
    InsecureLight,
}

impl KdfChoice {
    fn kdf(self) -> Kdf {
        match self {
            KdfChoice::Scrypt => Kdf::scrypt_default(),
            KdfChoice::Pbkdf2 => Kdf::pbkdf2_default(),
            KdfChoice::InsecureLight => Kdf::light(),
        }
    }
}

#[derive(Debug, clap::Args)]
struct DataDirArgs {
    /// The node's configuration (its data_dir is used)…
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
    /// The data directory and the verifier versions to try (given, then configured).
    fn resolve(&self) -> anyhow::Result<(PathBuf, Vec<String>)> {
        let mut verifier_versions = self.verifier_versions.clone();
        let dir = match (&self.config, &self.data_dir) {
            (_, Some(dir)) => dir.clone(),
            (Some(config), None) => {
                let config = Config::load(config)?;
                verifier_versions.extend(config.verifier_versions());
                config.node.data_dir
            }
            (None, None) => bail!("give --config or --data-dir"),
        };
        Ok((dir, verifier_versions))
    }

    fn open(&self) -> anyhow::Result<Ledger> {
        self.open_with(Collisions::Refuse)
    }

    fn open_with(&self, collisions: Collisions) -> anyhow::Result<Ledger> {
        let (dir, verifier_versions) = self.resolve()?;
        let options = LedgerOptions {
            migration: MigrationOptions {
                verifier_versions,
                collisions,
            },
            ..LedgerOptions::default()
        };
        Ledger::open_with(&dir, options).with_context(|| {
            format!(
                "opening the ledger in {} (is the node stopped?)",
                dir.display()
            )
        })
    }
}

#[derive(Debug, Subcommand)]
enum LedgerCommand {
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
    /// Delete records older than a duration.
    Prune {
        #[command(flatten)]
        data_dir: DataDirArgs,
        /// E.g. `14d`. Must exceed every AVS's max_staleness, or a pruned task could be re-signed.
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Duration,
    },
}

fn parse_scheme(s: &str) -> Result<Scheme, String> {
    s.parse().map_err(|e: avsnode_signer::Error| e.to_string())
}

/// jemalloc with its background thread: memory freed after a burst (a flood's connections and
/// streams) goes back to the OS within seconds, where glibc's per-thread arenas kept it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(
        cli.log_format,
        cli.log_level.as_deref().unwrap_or(default_level),
    );
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(e) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Libraries whose own debug and trace output can carry what must never be logged — the Docker
/// client writes request bodies (a container's env values) and the HTTP stacks headers (the
/// Docker registry credentials header) — are held to info, whatever level is asked for.
const QUIET_DEPENDENCIES: [&str; 9] = [
    "bollard",
    "hyper",
    "hyper_util",
    "h2",
    "tonic",
    "tower",
    "rustls",
    "tokio_rustls",
    "cryptoki",
];

fn init_logging(format: LogFormat, level: &str) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let quiet = Targets::new()
        .with_default(LevelFilter::TRACE)
        .with_targets(QUIET_DEPENDENCIES.map(|target| (target, LevelFilter::INFO)));
    let registry = tracing_subscriber::registry().with(filter).with(quiet);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match format {
        LogFormat::Human => registry.with(layer).init(),
        LogFormat::Json => registry.with(layer.json()).init(),
    }
}

#[allow(clippy::print_stdout)]
fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the runtime")
    };
    match command {
        Command::Run { config: file } => {
            let config = Config::load(&file)?;
            runtime()?.block_on(async {
                // Before anything slow: SIGTERM, SIGINT and SIGHUP during start-up are handled
                // once the node serves (a reload right after start), never fatal.
                let stop = shutdown_signal();
                let hangups =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                        .context("installing the SIGHUP handler")?;
                let listener = avsnode::connections::bind(config.intake.listen)
                    .with_context(|| format!("binding the intake to {}", config.intake.listen))?;
                let node = RunningNode::start(config, listener).await?;
                node.run_until(stop, Some((&file, hangups))).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Demo(options) => {
            let passed = runtime()?.block_on(avsnode::demo::run(options))?;
            return Ok(if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                // The TLS files too: a reload would refuse them.
                let tls = [
                    ("intake.tls", config.intake.tls.as_ref()),
                    (
                        "management.tls",
                        config.management.as_ref().and_then(|m| m.tls.as_ref()),
                    ),
                ];
                for (key, tls) in tls {
                    if let Some(tls) = tls
                        && let Err(e) = avsnode::tls::ServerTls::load(key, tls)
                    {
                        println!("{}: {e}", file.display());
                        return Ok(ExitCode::FAILURE);
                    }
                }
                print!("ok\n{}", config.summary())
            }
            Err(e) => {
                println!("{e}");
                return Ok(ExitCode::FAILURE);
            }
        },
        Command::Keys(command) => keys_command(command)?,
        Command::Ledger(command) => ledger_command(command)?,
        Command::Performer(command) => performer_command(command)?,
        Command::Signer(SignerCommand::Serve { config }) => {
            let config = avsnode_signing::remote::SignerServiceConfig::load(&config)?;
            runtime()?.block_on(async {
                let listener = avsnode::connections::bind(config.listen)
                    .with_context(|| format!("binding the signer to {}", config.listen))?;
                let incoming = avsnode::connections::Gate::new(
                    "signer",
                    avsnode::connections::SIGNER_LIMITS,
                    None,
                )
                .incoming(listener);
                avsnode_signing::remote::serve(config, incoming, shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
        }
        Command::ExamplePerformer(options) => runtime()?.block_on(async {
            let listener = tokio::net::TcpListener::bind((options.host, options.port))
                .await
                .with_context(|| format!("binding {}:{}", options.host, options.port))?;
            avsnode_example_performer::serve(listener, options, shutdown_signal()).await?;
            anyhow::Ok(())
        })?,
    }
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout)]
fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    match command {
        KeysCommand::Generate {
            scheme,
            out,
            password,
            kdf,
        } => {
            let pw = keys::read_password(
                password.password_file.as_deref(),
                "New keystore password: ",
                true,
                password.allow_insecure_permissions,
            )?;
            let key = LocalKey::generate(scheme);
            keys::write_private(&out, &keys::encrypt(&key, &pw, &kdf.kdf())?.to_json())?;
            println!(
                "wrote {}\n{}",
                out.display(),
                serde_json::to_string_pretty(&keys::describe(&key))?
            );
        }
        KeysCommand::Import {
            scheme,
            secret_file,
            from_keystore,
            from_password_file,
            out,
            password,
            kdf,
        } => {
            let key = match (secret_file, from_keystore) {
                (Some(path), _) => {
                    avsnode_signing::check_permissions(
                        "secret file",
                        &path,
                        password.allow_insecure_permissions,
                    )?;
                    let text = zeroize::Zeroizing::new(
                        std::fs::read_to_string(&path)
                            .with_context(|| format!("reading {}", path.display()))?,
                    );
                    let secret = zeroize::Zeroizing::new(
                        hex::decode(text.trim().trim_start_matches("0x"))
                            .with_context(|| format!("{}: not hex", path.display()))?,
                    );
                    LocalKey::from_secret(scheme, &secret).with_context(|| {
                        format!("{}: not a valid {scheme} secret", path.display())
                    })?
                }
                (None, Some(path)) => {
                    avsnode_signing::check_permissions(
                        "keystore",
                        &path,
                        password.allow_insecure_permissions,
                    )?;
                    let pw = keys::read_password(
                        from_password_file.as_deref(),
                        "Password of the keystore to import: ",
                        false,
                        password.allow_insecure_permissions,
                    )?;
                    let key = keys::open(&path, &pw)?;
                    if key.scheme() != scheme {
                        bail!(
                            "{} holds a {} key, not {scheme}",
                            path.display(),
                            key.scheme()
                        );
                    }
                    key
                }
                (None, None) => bail!("give --secret-file or --from-keystore"),
            };
            let pw = keys::read_password(
                password.password_file.as_deref(),
                "New keystore password: ",
                true,
                password.allow_insecure_permissions,
            )?;
            keys::write_private(&out, &keys::encrypt(&key, &pw, &kdf.kdf())?.to_json())?;
            println!(
                "wrote {}\n{}",
                out.display(),
                serde_json::to_string_pretty(&keys::describe(&key))?
            );
        }
        KeysCommand::HsmGenerate { token, label, id } => {
            let key_id = id
                .map(|id| {
                    hex::decode(id.trim_start_matches("0x"))
                        .ok()
                        .filter(|id| !id.is_empty())
                        .with_context(|| format!("--id {id:?} is not a non-empty hex string"))
                })
                .transpose()?;
            let spec = avsnode_signing::pkcs11::Pkcs11Spec {
                module: token.module.clone(),
                token_label: token.token_label.clone(),
                key_label: Some(label.clone()),
                key_id,
                pin: token.pin()?,
            };
            let public = avsnode_signing::pkcs11::generate(&spec)?;
            println!(
                "generated a secp256k1 key on token {:?}: label {label:?}, address {}\n\n\
                 [[signer]]\nname = \"{label}\"\nscheme = \"ecdsa\"\n\
                 pkcs11 = {{ module = {:?}, token_label = {:?}, key_label = {label:?}, pin_file = {:?} }}",
                token.token_label,
                public.address(),
                token.module.display().to_string(),
                token.token_label,
                token.pin_file.display().to_string(),
            );
        }
        KeysCommand::HsmList { token } => {
            let keys =
                avsnode_signing::pkcs11::list(&token.module, &token.token_label, &token.pin()?)?;
            if keys.is_empty() {
                println!("no secp256k1 keys on token {:?}", token.token_label);
            }
            for key in keys {
                println!(
                    "label {:?}  id {}  address {}",
                    key.label,
                    hex::encode(&key.id),
                    key.address
                );
            }
        }
        KeysCommand::List { dir } => {
            for line in keys::list(&dir)? {
                println!("{line}");
            }
        }
        KeysCommand::Inspect {
            file,
            password,
            json,
        } => {
            avsnode_signing::check_permissions(
                "keystore",
                &file,
                password.allow_insecure_permissions,
            )?;
            let pw = keys::read_password(
                password.password_file.as_deref(),
                "Keystore password: ",
                false,
                password.allow_insecure_permissions,
            )?;
            let facts = keys::describe(&keys::open(&file, &pw)?);
            if json {
                println!("{}", serde_json::to_string_pretty(&facts)?);
            } else if let Some(map) = facts.as_object() {
                for (k, v) in map {
                    println!("{k}: {}", v.as_str().unwrap_or_default());
                }
            }
        }
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn ledger_command(command: LedgerCommand) -> anyhow::Result<()> {
    match command {
        LedgerCommand::Export { data_dir, out } => {
            let ledger = data_dir.open()?;
            let n = match out {
                Some(path) => {
                    let mut file = std::fs::File::create(&path)
                        .with_context(|| format!("creating {}", path.display()))?;
                    ledger.export_json(&mut file)?
                }
                None => ledger.export_json(&mut std::io::stdout().lock())?,
            };
            tracing::info!(records = n, "exported");
        }
        LedgerCommand::Import { data_dir, file } => {
            let ledger = data_dir.open()?;
            let mut input = std::fs::File::open(&file)
                .with_context(|| format!("opening {}", file.display()))?;
            let (_, verifier_versions) = data_dir.resolve()?;
            let summary = ledger.import_json(&mut input, &verifier_versions)?;
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
            let ledger = data_dir.open_with(collisions)?;
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
            let ledger = data_dir.open()?;
            let cutoff = avsnode::pipeline::validate::now_unix_ms()
                .saturating_sub(older_than.as_millis() as u64);
            println!("pruned {} records", ledger.prune(cutoff)?);
        }
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called, not when it is
/// first polled: a signal during start-up is then seen once the node serves, instead of killing
/// the process (and orphaning the performers it started).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = handlers else {
            tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}
