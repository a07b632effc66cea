//! The `avsnode` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use avsnode::config::Config;
use avsnode::daemon::RunningNode;
use clap::{Parser, Subcommand, ValueEnum};

mod cli;

use cli::bench::{BenchOptions, bench_command};
use cli::import::{ImportCommand, import_command};
use cli::keys::{KeysCommand, keys_command};
use cli::ledger::{LedgerCommand, ledger_command};
use cli::performer::{PerformerCommand, performer_command};
use cli::signer::SignerCommand;

/// avsnode: the EigenLayer AVS operator daemon. Receives tasks from aggregators, runs them in
/// each AVS's performer, and signs the results — never two different outputs for one task.
#[derive(Debug, Parser)]
#[command(version = avsnode_metrics::VERSION)]
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
    /// `info`; `warn` for the demo and the bench, whose progress shares the terminal.
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
    /// Load a running node with signed tasks and measure its throughput and latency (open or
    /// closed loop, stream or unary); exit non-zero if any task fails.
    #[command(long_about = cli::bench::LONG_ABOUT, after_long_help = cli::bench::AFTER_HELP)]
    Bench(BenchOptions),
    /// Check a configuration file and print a summary, or every problem with its key path.
    CheckConfig {
        /// The TOML configuration.
        file: PathBuf,
    },
    /// Create, import, list and inspect key files.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Write an avsnode configuration from another node's configuration (the Hourglass
    /// executor's), listing what is left to supply or decide.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Deploy, list and remove docker performers through a node's management API.
    #[command(subcommand)]
    Performer(PerformerCommand),
    /// The remote signer: serve keys over gRPC with mTLS to the nodes allowed to use them.
    #[command(subcommand)]
    Signer(SignerCommand),
    /// Export, import and prune the sign-once ledger (only while the node is stopped).
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// Ask a running node whether it is healthy: GET /eigen/node/health on its metrics
    /// listener. Exit 0 when it is healthy or partially healthy (it still serves), 1 otherwise
    /// (for a container HEALTHCHECK, which has no shell or curl).
    Healthcheck {
        /// The node's metrics listener; default: the configuration's, else
        /// AVSNODE_METRICS_LISTEN, else 127.0.0.1:9464.
        #[arg(long, env = "AVSNODE_METRICS_LISTEN")]
        metrics: Option<std::net::SocketAddr>,
        /// Take the metrics listener from this configuration file.
        #[arg(long, short, conflicts_with = "metrics")]
        config: Option<PathBuf>,
    },
    /// Print shell completions for SHELL to stdout, e.g. `avsnode completions bash >
    /// /etc/bash_completion.d/avsnode`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, e.g. `avsnode man > /usr/share/man/man1/avsnode.1`.
    Man,
    /// Run the example performer (used by the demo; same options as avsnode-example-performer).
    #[command(hide = true)]
    ExamplePerformer(avsnode_example_performer::Options),
}

/// jemalloc with its background thread: memory freed after a burst (a flood's connections and
/// streams) goes back to the OS within seconds, where glibc's per-thread arenas kept it.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Demo(_) | Command::Bench(_)) {
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
    // Colours only on a terminal: not in files, journald or `docker logs`.
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
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
                let listener = avsnode_listener::bind(config.intake.listen)
                    .with_context(|| format!("binding the intake to {}", config.intake.listen))?;
                let node = RunningNode::start(config, listener).await?;
                avsnode::systemd::ready();
                avsnode::systemd::spawn_watchdog();
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
        Command::Bench(options) => return bench_command(options),
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
                        && let Err(e) = avsnode_listener::tls::ServerTls::load(key, tls)
                    {
                        println!("{}: {e}", file.display());
                        return Ok(ExitCode::FAILURE);
                    }
                }
                // The shared ledger: reachable, and a schema this avsnode can use.
                if let Some(postgres) = &config.ledger.postgres
                    && config.ledger.backend == avsnode::config::Backend::Postgres
                {
                    let known = avsnode_ledger::postgres::SCHEMA_VERSION;
                    match runtime()?.block_on(postgres.inspect()) {
                        Ok(found) if found > known => {
                            println!(
                                "{}: ledger.postgres: the database has schema version {found}, newer than this avsnode knows ({known})",
                                file.display()
                            );
                            return Ok(ExitCode::FAILURE);
                        }
                        Ok(found) => println!(
                            "ledger: PostgreSQL reachable, schema version {found} (this avsnode writes {known}; it migrates at start-up)"
                        ),
                        Err(e) => {
                            println!("{}: ledger.postgres: {e}", file.display());
                            return Ok(ExitCode::FAILURE);
                        }
                    }
                }
                // The chain: the right chain, and what it says of each operator set.
                let mut config = config;
                match runtime()?.block_on(avsnode::daemon::chain_report(&mut config)) {
                    Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
                    Err(e) => {
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
        Command::Import(command) => import_command(command)?,
        Command::Ledger(command) => runtime()?.block_on(ledger_command(command))?,
        Command::Performer(command) => performer_command(command)?,
        Command::Signer(SignerCommand::Serve { config }) => {
            let config = avsnode_signing::remote::SignerServiceConfig::load(&config)?;
            runtime()?.block_on(async {
                let listener = avsnode_listener::bind(config.listen)
                    .with_context(|| format!("binding the signer to {}", config.listen))?;
                let incoming =
                    avsnode_listener::Gate::new("signer", avsnode::listeners::SIGNER_LIMITS, None)
                        .incoming(listener);
                avsnode_signing::remote::serve(config, incoming, shutdown_signal()).await?;
                anyhow::Ok(())
            })?;
        }
        Command::Healthcheck { metrics, config } => {
            let addr = match (metrics, config) {
                (Some(addr), _) => addr,
                (None, Some(file)) => Config::load(&file)?.metrics.listen,
                (None, None) => avsnode_metrics::default_listen(),
            };
            return Ok(healthcheck(addr));
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "avsnode",
                &mut std::io::stdout(),
            );
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command())
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
        }
        Command::ExamplePerformer(options) => return Ok(avsnode_example_performer::run(options)),
    }
    Ok(ExitCode::SUCCESS)
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

/// `avsnode healthcheck`: the node API's health at `addr`, printed; success for 200 and 206.
#[allow(clippy::print_stdout)]
fn healthcheck(addr: std::net::SocketAddr) -> ExitCode {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let answer = (|| -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(
            format!("GET /eigen/node/health HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes(),
        )?;
        let mut text = String::new();
        stream.read_to_string(&mut text)?;
        Ok(text)
    })();
    let status = answer
        .as_ref()
        .ok()
        .and_then(|text| text.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok());
    match (status, &answer) {
        (Some(200), _) => {
            println!("healthy");
            ExitCode::SUCCESS
        }
        (Some(206), _) => {
            println!("partially healthy (see /eigen/node/services)");
            ExitCode::SUCCESS
        }
        (Some(code), _) => {
            println!("not healthy: HTTP {code} from http://{addr}/eigen/node/health");
            ExitCode::FAILURE
        }
        (None, Err(e)) => {
            println!("not healthy: no answer from {addr}: {e}");
            ExitCode::FAILURE
        }
        (None, Ok(_)) => {
            println!("not healthy: {addr} did not answer HTTP");
            ExitCode::FAILURE
        }
    }
}
