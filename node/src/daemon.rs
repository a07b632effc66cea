//! `avsnode run`: builds the live node from a validated [`Config`] (ledger, signers, performers,
//! pipeline), serves the intake, and shuts down gracefully (DESIGN §9).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::deployments::{Deployments, PerformerStartError};
use crate::management::Management;
use avsnode_chain::{Chain, ChainError, OurKey};
use avsnode_signer::messages::{Address, EcdsaVerifier, ResultCertificate};
use std::sync::OnceLock;

use avsnode_metrics::{Metrics, NodeApi, Readiness};
use avsnode_performer::PerformerState;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::{Config, ConfigError, Problem};
use crate::intake::{self, IntakeError};
use crate::listeners::ListenerLimits;
use crate::pipeline::{Avs, OperatorSet, Pipeline};
use avsnode_ledger::{Collisions, Ledger, LedgerError, LedgerOptions, MigrationOptions};
use avsnode_listener::tls::ServerTls;
use avsnode_listener::{Gate, GatedListener, raise_open_files_limit};
use avsnode_signing::{SignerError, SigningMethod};

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The ledger could not be opened (another node holds the data dir, I/O).
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A signer could not be unlocked.
    #[error(transparent)]
    Signer(#[from] SignerError),
    /// A performer did not start.
    #[error(transparent)]
    Performer(#[from] PerformerStartError),
    /// The intake listener failed.
    #[error(transparent)]
    Intake(#[from] IntakeError),
    /// A metric could not be registered: the node does not run with a metric missing.
    #[error("registering metrics: {0}")]
    Metrics(#[from] avsnode_metrics::Error),
    /// The metrics listener could not bind.
    #[error("binding the metrics listener to {addr}: {source}")]
    MetricsListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The management listener could not bind.
    #[error("binding the management listener to {addr}: {source}")]
    ManagementListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A TLS certificate, key or CA could not be used.
    #[error(transparent)]
    Tls(#[from] avsnode_listener::tls::TlsError),
    /// The chain RPC serves another chain, or cannot be used.
    #[error("[chain]: {0}")]
    Chain(String),
    /// A start-up task panicked.
    #[error("start-up task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A reload that was not applied: the running configuration is kept.
#[derive(Debug, thiserror::Error)]
#[error("reload refused; the running configuration is kept:{}", list(.0))]
pub struct ReloadError(pub Vec<Problem>);

fn list(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  {p}")).collect()
}

/// A started node: its intake is serving.
#[derive(Debug)]
pub struct RunningNode {
    pipeline: Arc<Pipeline>,
    performers: Arc<Deployments>,
    server: JoinHandle<Result<(), IntakeError>>,
    stop: tokio::sync::watch::Sender<bool>,
    grace: Duration,
    /// What is running: the last configuration applied (start or reload).
    config: tokio::sync::Mutex<Config>,
    keys: HashMap<String, Arc<SigningMethod>>,
    intake_tls: Option<Arc<ServerTls>>,
    management_tls: Option<Arc<ServerTls>>,
}

impl RunningNode {
    /// Opens the ledger, unlocks the signers, starts the performers, then serves the intake on
    /// `listener`. The configuration must be validated ([`Config::load`] does it).
    pub async fn start(
        mut config: Config,
        listener: TcpListener,
    ) -> Result<RunningNode, NodeError> {
        let problems = config.problems();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: "(configuration)".into(),
                problems,
            }
            .into());
        }
        let intake_tls = match &config.intake.tls {
            Some(tls) => Some(Arc::new(ServerTls::load("intake.tls", tls)?)),
            None => None,
        };
        let management_tls = match config.management.as_ref().and_then(|m| m.tls.as_ref()) {
            Some(tls) => Some(Arc::new(ServerTls::load("management.tls", tls)?)),
            None => None,
        };
        let metrics = Metrics::new()?;
        let open_files = raise_open_files_limit();
        let (limits, lowered) = ListenerLimits::new(&config.intake, open_files);
        if let Some(lowered) = lowered {
            warn!("{lowered}");
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let live: Arc<OnceLock<Arc<Pipeline>>> = Arc::default();
        let metrics_listener = avsnode_listener::bind(config.metrics.listen).map_err(|source| {
            NodeError::MetricsListen {
                addr: config.metrics.listen,
                source,
            }
        })?;
        info!(listen = %metrics_listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "metrics serving");
        let signers: Arc<OnceLock<NamedSigners>> = Arc::default();
        tokio::spawn(avsnode_metrics::serve(
            GatedListener::new(
                metrics_listener,
                Gate::new("metrics", limits.metrics, Some(metrics.clone())),
            ),
            metrics.clone(),
            readiness(live.clone()),
            node_report(live.clone(), signers.clone()),
            wait_for_stop(stopped.clone()),
        ));

        let ledger = config
            .ledger
            .open(
                &config.node.data_dir,
                LedgerOptions {
                    commit_delay: config.ledger.commit_delay,
                    commit_seconds: Some(metrics.ledger_commit_seconds.clone()),
                    cache_size: config.ledger.cache_mib << 20,
                    migration: MigrationOptions {
                        verifier_versions: config.verifier_versions(),
                        collisions: Collisions::Refuse,
                    },
                },
            )
            .await?;
        info!(backend = ledger.backend(), "ledger open");

        // Keystores cost about a second of scrypt each, off the async workers (`SigningMethod::open`).
        let mut keys: HashMap<String, Arc<SigningMethod>> = HashMap::new();
        for config in &config.signers {
            let key = SigningMethod::open(config).await?;
            info!(signer = %config.name, scheme = %key.scheme(), backend = key.backend(), public_key = %key.public_id(), "signer opened");
            keys.insert(config.name.clone(), Arc::new(key));
        }

        let mut named: Vec<_> = keys.iter().map(|(n, k)| (n.clone(), k.clone())).collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let _ = signers.set(named);

        let chain = match &config.chain {
            Some(settings) => {
                let chain =
                    Chain::new(settings.settings(), metrics.clone()).map_err(NodeError::Chain)?;
                match chain.start().await {
                    Ok(_) => {}
                    Err(ChainError::Refused(refusal)) => {
                        return Err(NodeError::Chain(refusal.to_string()));
                    }
                    Err(ChainError::Unavailable(why)) => warn!(
                        %why,
                        "no chain RPC endpoint answers: tasks checked on chain are UNAVAILABLE until one does"
                    ),
                }
                verifiers_from_chain(&mut config, &chain)
                    .await
                    .map_err(|problems| ConfigError::Invalid {
                        path: "(configuration)".into(),
                        problems,
                    })?;
                tokio::spawn(chain.clone().follow(stopped.clone()));
                Some(chain)
            }
            None => None,
        };

        let performers = Arc::new(Deployments::start(&config, metrics.clone()).await?);
        let avs_list = build_avs(&config, &keys, &performers)?;
        for avs in &avs_list {
            metrics.init_avs(&avs.address.to_string());
        }
        let pipeline = Pipeline::new(
            config.operator(),
            avs_list,
            ledger,
            config.ledger.claim_lease(),
            chain,
            metrics.clone(),
            config.intake.max_tasks_in_memory,
        );
        for disagreement in pipeline.check_chain().await {
            tracing::error!("{disagreement}: tasks for that operator set are refused");
        }
        let _ = live.set(pipeline.clone());
        tokio::spawn(refresh_gauges(pipeline.clone(), stopped.clone()));
        if let Some(management) = &config.management {
            let listener = avsnode_listener::bind(management.listen).map_err(|source| {
                NodeError::ManagementListen {
                    addr: management.listen,
                    source,
                }
            })?;
            let admins = management
                .require_auth
                .then(|| management.admins.iter().map(|a| *a.get()).collect());
            if admins.is_none() {
                warn!(
                    "the management API is UNAUTHENTICATED (require_auth = false): anyone who reaches it can replace performers"
                );
            }
            info!(listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "management serving");
            let service = Management::new(
                performers.clone(),
                config.operator(),
                admins,
                management.env_from_node.clone(),
                management.calls_per_second,
                metrics.clone(),
            );
            let stopped = stopped.clone();
            let tls = management_tls
                .clone()
                .map(|tls| (tls, limits.management.handshake_timeout));
            let gate = Gate::new("management", limits.management, Some(metrics.clone()));
            let max_message_size = management.max_message_size;
            tokio::spawn(async move {
                let served = crate::management::serve(
                    service,
                    gate.incoming(listener),
                    max_message_size,
                    tls,
                    wait_for_stop(stopped),
                );
                if let Err(e) = served.await {
                    tracing::error!(error = %e, "the management listener failed");
                }
            });
        }
        let options = config.intake.clone();
        info!(
            listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
            operator = %config.operator(),
            tls = match &intake_tls { None => "off", Some(t) if t.mutual() => "mutual", Some(_) => "on" },
            "intake serving"
        );
        let gate = Gate::new("intake", limits.intake, Some(metrics.clone()));
        let server = tokio::spawn(intake::serve(
            pipeline.clone(),
            gate.incoming(listener),
            options,
            intake_tls.clone(),
            wait_for_stop(stopped),
        ));
        Ok(RunningNode {
            pipeline,
            performers,
            server,
            stop,
            grace: config.node.shutdown_grace,
            config: tokio::sync::Mutex::new(config),
            keys,
            intake_tls,
            management_tls,
        })
    }

    /// The pipeline (for in-process callers such as the demo).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Runs until `signal` resolves (or the server fails), then shuts down. With `reload`, each
    /// SIGHUP on its stream reloads its config file ([`RunningNode::reload`]); a file that does
    /// not load or a change that cannot be applied is logged and the running configuration kept.
    pub async fn run_until(
        mut self,
        signal: impl Future<Output = ()>,
        reload: Option<(&std::path::Path, tokio::signal::unix::Signal)>,
    ) -> Result<(), NodeError> {
        let (config_file, mut hangups) = match reload {
            Some((file, hangups)) => (Some(file), Some(hangups)),
            None => (None, None),
        };
        let hangup = async |h: &mut Option<tokio::signal::unix::Signal>| match h {
            Some(h) => h.recv().await,
            None => std::future::pending().await,
        };
        tokio::pin!(signal);
        loop {
            tokio::select! {
                () = &mut signal => break,
                result = &mut self.server => {
                    self.stop_performers().await;
                    return result?.map_err(NodeError::from);
                }
                Some(()) = hangup(&mut hangups) => {
                    let Some(path) = config_file else { continue };
                    info!(file = %path.display(), "SIGHUP: reloading the configuration");
                    crate::systemd::reloading();
                    match Config::load(path) {
                        Ok(next) => match self.reload(next).await {
                            Ok(()) => {}
                            Err(e) => tracing::error!("{e}"),
                        },
                        Err(e) => tracing::error!(
                            "reload refused; the running configuration is kept: {e}"
                        ),
                    }
                    // Applied or refused, the node serves on.
                    crate::systemd::ready();
                }
            }
        }
        crate::systemd::stopping();
        self.shutdown().await
    }

    /// Applies `next` while serving, all or nothing: AVS settings (limits, timeouts, staleness,
    /// rate limits), aggregators and their keys, operator sets (over the signers already open),
    /// performers (process and remote ones started beside the running one and swapped in once
    /// healthy; docker ones redeployed blue/green), and the TLS certificate files. Tasks already
    /// admitted finish under the configuration they started with; nothing in flight is dropped.
    /// Settings that only take effect at a restart (listeners, ledger, node identity, signers)
    /// are logged and left as they run.
    pub async fn reload(&self, next: Config) -> Result<(), ReloadError> {
        let mut running = self.config.lock().await;
        let mut problems = next.problems();
        let problem = |path: &str, message: String| Problem {
            path: path.to_owned(),
            message,
        };

        // What waits for a restart.
        let mut later = Vec::new();
        let (mut intake, mut next_intake) = (running.intake.clone(), next.intake.clone());
        (intake.tls, next_intake.tls) = (None, None);
        let strip = |m: &Option<crate::config::ManagementConfig>| {
            m.clone().map(|mut m| {
                m.tls = None;
                m
            })
        };
        for (section, changed) in [
            ("[node]", running.node != next.node),
            ("[intake]", intake != next_intake),
            ("[ledger]", running.ledger != next.ledger),
            ("[chain]", running.chain != next.chain),
            ("[metrics]", running.metrics != next.metrics),
            (
                "[management]",
                strip(&running.management) != strip(&next.management),
            ),
            ("[docker]", running.docker != next.docker),
        ] {
            if changed {
                later.push(section);
            }
        }
        let mut next = next;
        match self.pipeline.chain() {
            Some(chain) => {
                if let Err(found) = verifiers_from_chain(&mut next, chain).await {
                    problems.extend(found);
                }
            }
            None if next
                .avs
                .iter()
                .any(|a| a.aggregators == crate::config::Aggregators::FromChain) =>
            {
                problems.push(problem(
                    "chain",
                    "aggregators from chain need [chain] when the node starts; restart the node"
                        .into(),
                ));
            }
            None => {}
        }
        if running.signers != next.signers {
            problems.push(problem(
                "signer",
                "the [[signer]] tables changed: signers are opened at start only; restart the \
                 node to change keys"
                    .into(),
            ));
        }
        let addresses = |c: &Config| -> Vec<String> {
            let mut a: Vec<String> = c.avs.iter().map(|a| a.address.get().to_string()).collect();
            a.sort();
            a
        };
        if addresses(&running) != addresses(&next) {
            problems.push(problem(
                "avs",
                format!(
                    "the set of AVSs changed ({} → {}): adding or removing an AVS takes a restart",
                    addresses(&running).join(", "),
                    addresses(&next).join(", ")
                ),
            ));
        }

        // TLS files, read and checked now, served after the commit.
        let mut tls_next = Vec::new();
        let management_tls = |c: &Config| c.management.as_ref().and_then(|m| m.tls.clone());
        for (key, tls, was, now) in [
            (
                "intake.tls",
                &self.intake_tls,
                running.intake.tls.clone(),
                next.intake.tls.clone(),
            ),
            (
                "management.tls",
                &self.management_tls,
                management_tls(&running),
                management_tls(&next),
            ),
        ] {
            match (tls, now) {
                (Some(tls), Some(now)) => match tls.prepare(&now) {
                    Ok(config) => tls_next.push((tls.clone(), config)),
                    Err(e) => problems.push(problem(key, e.to_string())),
                },
                (None, None) => {}
                (_, now) if was.is_some() != now.is_some() => {
                    problems.push(problem(key, "turning TLS on or off takes a restart".into()))
                }
                _ => {}
            }
        }

        // Deployments: the new ones start beside the running ones.
        let mut staged = Vec::new();
        if problems.is_empty() {
            for (i, avs) in next.avs.iter().enumerate() {
                let Some(old) = running
                    .avs
                    .iter()
                    .find(|a| a.address.get() == avs.address.get())
                else {
                    continue;
                };
                let address = *avs.address.get();
                match self
                    .performers
                    .stage(address, &old.performer, &avs.performer)
                    .await
                {
                    Ok(Some(s)) => staged.push(s),
                    Ok(None) => {}
                    Err(message) => problems.push(problem(&format!("avs[{i}].performer"), message)),
                }
            }
        }
        let avs = if problems.is_empty() {
            match build_avs(&next, &self.keys, &self.performers) {
                Ok(avs) => Some(avs),
                Err(e) => {
                    problems.push(problem("avs", e.to_string()));
                    None
                }
            }
        } else {
            None
        };
        let Some(avs) = avs.filter(|_| problems.is_empty()) else {
            for s in staged {
                s.discard().await;
            }
            return Err(ReloadError(problems));
        };

        // Commit.
        for avs in &avs {
            self.pipeline.metrics().init_avs(&avs.address.to_string());
        }
        self.pipeline.replace_avs(avs);
        let performers_changed = staged.len();
        for s in staged {
            self.performers.commit(s);
        }
        for (tls, config) in tls_next {
            tls.commit(config);
        }
        let mut applied = next;
        // What runs stays what the next reload compares against.
        applied.node = running.node.clone();
        applied.ledger = running.ledger.clone();
        applied.chain = running.chain.clone();
        applied.metrics = running.metrics.clone();
        applied.docker = running.docker.clone();
        let (intake_tls, management_tls) = (
            applied.intake.tls.take(),
            applied.management.as_ref().and_then(|m| m.tls.clone()),
        );
        applied.intake = running.intake.clone();
        applied.intake.tls = intake_tls;
        applied.management = running.management.clone();
        if let Some(m) = &mut applied.management {
            m.tls = management_tls;
        }
        *running = applied;
        info!(
            avs = running.avs.len(),
            performers_changed, "configuration reloaded"
        );
        if !later.is_empty() {
            warn!(
                sections = %later.join(", "),
                "reload: these sections changed and take effect at the next restart"
            );
        }
        Ok(())
    }

    /// Graceful shutdown: stop accepting connections and tasks (new tasks on open streams get
    /// UNAVAILABLE), let the tasks in the node finish within the grace period, answer the rest
    /// UNAVAILABLE, stop the performers, and close the ledger (flushing its writer).
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let deadline = Instant::now() + self.grace;
        let pipeline = &self.pipeline;
        info!(in_flight = pipeline.waiting_callers(), grace = ?self.grace, "shutting down: no new connections or tasks");
        let _ = self.stop.send(true);
        pipeline.drain();
        while pipeline.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if pipeline.in_flight() > 0 {
            warn!(
                in_flight = pipeline.in_flight(),
                "grace period over; answering unfinished tasks UNAVAILABLE (none was signed half-way: signing is all or nothing)"
            );
        }
        pipeline.cancel();
        // The cancelled answers go out; connections that stay open (idle streams) do not hold
        // the node up past that.
        let server = self.server;
        let abort = server.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), server)
            .await
            .is_err()
        {
            abort.abort();
        }
        self.performers.shutdown().await;
        let ledger = self.pipeline.ledger().clone();
        drop(self.pipeline);
        // Commits anything queued, stops the writer thread and releases the data dir's lock.
        ledger.close().await?;
        info!("stopped");
        Ok(())
    }

    async fn stop_performers(&self) {
        self.performers.shutdown().await;
    }
}

/// The pipeline's AVSs from `config`, with the open `keys` and the performers' slots.
fn build_avs(
    config: &Config,
    keys: &HashMap<String, Arc<SigningMethod>>,
    performers: &Deployments,
) -> Result<Vec<Avs>, NodeError> {
    let mut avs_list = Vec::new();
    for (i, avs) in config.avs.iter().enumerate() {
        let address = *avs.address.get();
        let aggregators = avs
            .aggregators
            .list()
            .iter()
            .map(|a| (*a.address.get(), a.key().clone()))
            .collect();
        let mut operator_sets = HashMap::new();
        for (j, set) in avs.operator_sets.iter().enumerate() {
            let Some(key) = keys.get(&set.signer).cloned() else {
                continue;
            };
            let verifier = set.ecdsa_verifier();
            // Config validation checked this; a key whose scheme the set does not fit still stops
            // the node rather than signing under the wrong certificate.
            let certificate =
                ResultCertificate::new(key.scheme(), verifier.as_ref()).map_err(|e| {
                    NodeError::from(ConfigError::Invalid {
                        path: "(configuration)".into(),
                        problems: vec![Problem {
                            path: format!("avs[{i}].operator_sets[{j}]"),
                            message: e.to_string(),
                        }],
                    })
                })?;
            let chain_key = config
                .chain
                .as_ref()
                .and_then(|_| OurKey::new(key.scheme(), &key.public_bytes()));
            operator_sets.insert(
                set.id,
                OperatorSet {
                    id: set.id,
                    key_id: key.key_id(),
                    key,
                    certificate,
                    verifier,
                    chain_key,
                },
            );
        }
        avs_list.push(Avs::new(
            address,
            avs.clone(),
            aggregators,
            operator_sets,
            performers.slot(&address),
        ));
    }

    Ok(avs_list)
}

/// With `[chain]`: every ECDSA operator set's verifier is read from chain — its `version()`
/// where the file gives none — and the domain the node derives must be the contract's
/// `domainSeparator()`, or the node would sign certificates the verifier rejects.
async fn verifiers_from_chain(config: &mut Config, chain: &Chain) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    for (i, avs) in config.avs.iter_mut().enumerate() {
        for (j, set) in avs.operator_sets.iter_mut().enumerate() {
            let Some(address) = set.verifier.as_ref().and_then(|v| v.ok()).copied() else {
                continue;
            };
            let at = format!("avs[{i}].operator_sets[{j}].verifier");
            let (version, domain) = match chain.verifier_domain(address).await {
                Ok(read) => read,
                Err(e) if set.verifier_version.is_some() => {
                    warn!(verifier = %address, error = %e, "cannot read the certificate verifier's domain from chain; using verifier_version as configured");
                    continue;
                }
                Err(e) => {
                    problems.push(Problem {
                        path: at,
                        message: format!("cannot read version() and domainSeparator() from chain (set verifier_version to start without): {e}"),
                    });
                    continue;
                }
            };
            let version = set.verifier_version.get_or_insert(version).clone();
            let derived = EcdsaVerifier { address, version }.domain_separator();
            match derived {
                Ok(derived) if derived == domain => {}
                Ok(derived) => problems.push(Problem {
                    path: at,
                    message: format!(
                        "the contract's domainSeparator() is 0x{}, but the domain derived from verifier_version {:?} is 0x{}: check verifier_version",
                        hex::encode(domain),
                        set.verifier_version.as_deref().unwrap_or_default(),
                        hex::encode(derived)
                    ),
                }),
                Err(e) => problems.push(Problem {
                    path: at,
                    message: e.to_string(),
                }),
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// `avsnode check-config` with `[chain]`: connects, checks the chain id and the ECDSA verifiers'
/// domains, and compares each configured operator set with the chain at its head. The lines to
/// print, and whether the chain agrees with the file.
pub async fn chain_report(config: &mut Config) -> Result<Vec<String>, NodeError> {
    let Some(settings) = &config.chain else {
        return Ok(Vec::new());
    };
    let chain = Chain::new(settings.settings(), Metrics::new()?).map_err(NodeError::Chain)?;
    let head = chain
        .start()
        .await
        .map_err(|e| NodeError::Chain(e.to_string()))?;
    let mut lines = vec![format!(
        "chain: chain id {} confirmed, head block {head}",
        settings.chain_id
    )];
    verifiers_from_chain(config, &chain)
        .await
        .map_err(|problems| ConfigError::Invalid {
            path: "(configuration)".into(),
            problems,
        })?;
    let operator = config.operator();
    let mut disagreements = Vec::new();
    for (i, avs) in config.avs.iter().enumerate() {
        let address = *avs.address.get();
        for (j, set) in avs.operator_sets.iter().enumerate() {
            let Some(signer) = config.signers.iter().find(|s| s.name == set.signer) else {
                continue;
            };
            let standing = chain
                .standing(address, set.id, operator, 0)
                .await
                .map_err(|e| NodeError::Chain(e.to_string()))?;
            lines.push(format!(
                "chain: avs {address} set {}: member {}, executor sets {:?}, curve type {}, registered key {}",
                set.id,
                if standing.member { "yes" } else { "NO" },
                standing.executor_sets,
                standing.curve,
                standing.key
            ));
            if let Err(refusal) = standing.admits_scheme(signer.scheme) {
                disagreements.push(Problem {
                    path: format!("avs[{i}].operator_sets[{j}]"),
                    message: format!("the chain disagrees: {refusal}"),
                });
            }
        }
    }
    if disagreements.is_empty() {
        Ok(lines)
    } else {
        Err(ConfigError::Invalid {
            path: "(chain)".into(),
            problems: disagreements,
        }
        .into())
    }
}

/// Resolves once the node is told to stop.
async fn wait_for_stop(mut stopped: tokio::sync::watch::Receiver<bool>) {
    let _ = stopped.wait_for(|s| *s).await;
}

/// `/readyz`: ready once the ledger is open, the signers are unlocked (both done before the
/// pipeline exists) and every AVS's performer is healthy; otherwise the parts that are not.
fn readiness(live: Arc<OnceLock<Arc<Pipeline>>>) -> Readiness {
    Arc::new(move || {
        let Some(pipeline) = live.get() else {
            return Err(vec![
                "starting: opening the ledger, unlocking signers, starting performers".into(),
            ]);
        };
        let ledger = pipeline
            .ledger()
            .unavailable()
            .map(|why| format!("ledger unavailable: {why}"));
        let chain = pipeline.chain().map(|chain| {
            chain
                .status()
                .err()
                .map(|why| format!("chain unavailable: {why}"))
                .into_iter()
                .chain(pipeline.chain_disagreements())
        });
        let not_ready: Vec<String> = ledger
            .into_iter()
            .chain(chain.into_iter().flatten())
            .chain(
                pipeline
                    .avs()
                    .into_iter()
                    .filter_map(|avs| match avs.performer.current() {
                        Ok(p) if p.state() == PerformerState::Healthy => None,
                        Ok(p) => Some(format!("performer of AVS {} is {}", avs.address, p.state())),
                        Err(why) => Some(format!("AVS {} has no performer: {why}", avs.address)),
                    }),
            )
            .collect();
        if not_ready.is_empty() {
            Ok(())
        } else {
            Err(not_ready)
        }
    })
}

/// The opened signers by `[[signer]]` name, in name order (set once they are unlocked).
type NamedSigners = Vec<(String, Arc<SigningMethod>)>;

/// The EigenLayer AVS node API's report (docs/OPERATING.md "The EigenLayer node API"): one
/// service per AVS performer, the ledger, each signer and the chain reader. Healthy (200) when
/// every one is up; partially healthy (206) while starting, or while some are down but the ledger
/// answers and at least one AVS's performer serves; unhealthy (503) otherwise.
fn node_report(
    live: Arc<OnceLock<Arc<Pipeline>>>,
    signers: Arc<OnceLock<NamedSigners>>,
) -> NodeApi {
    use avsnode_metrics::{NodeHealth, NodeReport, NodeService, ServiceStatus};
    let up_down = |up: bool| {
        if up {
            ServiceStatus::Up
        } else {
            ServiceStatus::Down
        }
    };
    Arc::new(move || {
        let Some(pipeline) = live.get() else {
            return NodeReport {
                health: NodeHealth::PartiallyHealthy,
                services: vec![NodeService {
                    id: "node".into(),
                    name: "avsnode".into(),
                    description:
                        "starting: opening the ledger, unlocking signers, starting performers"
                            .into(),
                    status: ServiceStatus::Initializing,
                }],
            };
        };
        let ledger_up = pipeline.ledger().unavailable().is_none();
        let mut services = vec![NodeService {
            id: "ledger".into(),
            name: "sign-once ledger".into(),
            description: format!("the {} sign-once ledger", pipeline.ledger().backend()),
            status: up_down(ledger_up),
        }];
        let mut avs = pipeline.avs();
        avs.sort_by_key(|a| a.address.to_string());
        let mut serving = 0;
        for avs in avs {
            let (status, runtime) = match avs.performer.current() {
                Ok(p) => (
                    match p.state() {
                        PerformerState::Healthy => ServiceStatus::Up,
                        PerformerState::Starting => ServiceStatus::Initializing,
                        _ => ServiceStatus::Down,
                    },
                    p.runtime(),
                ),
                Err(_) => (ServiceStatus::Down, "none deployed"),
            };
            serving += usize::from(status == ServiceStatus::Up);
            services.push(NodeService {
                id: format!("performer-{}", avs.address),
                name: format!("performer of AVS {}", avs.address),
                description: format!("runs the AVS's tasks ({runtime})"),
                status,
            });
        }
        for (name, key) in signers.get().into_iter().flatten() {
            services.push(NodeService {
                id: format!("signer-{name}"),
                name: format!("signer {name}"),
                description: format!("{} key, {} backend", key.scheme(), key.backend()),
                status: up_down(!key.is_down()),
            });
        }
        if let Some(chain) = pipeline.chain() {
            services.push(NodeService {
                id: "chain".into(),
                name: "chain reader".into(),
                description: "aggregator keys and operator-set membership read from L1".into(),
                status: up_down(chain.status().is_ok()),
            });
        }
        let health = if services.iter().all(|s| s.status == ServiceStatus::Up) {
            NodeHealth::Healthy
        } else if ledger_up && serving > 0 {
            NodeHealth::PartiallyHealthy
        } else {
            NodeHealth::Unhealthy
        };
        NodeReport { health, services }
    })
}

/// The window `eigen_performance_score` looks back over.
const PERFORMANCE_WINDOW: Duration = Duration::from_secs(300);

/// `eigen_performance_score{avs_name}` from `window`'s oldest sample to now: of the AVS's tasks
/// answered (signed, answered from the ledger, or failed by the node or its performer — not
/// tasks refused by a check), the percentage not failed; with none answered, 100 while its
/// performer is healthy and 0 while it is not.
fn performance_score(window: &VecDeque<(Instant, u64, u64)>, healthy: bool) -> i64 {
    let (Some(first), Some(last)) = (window.front(), window.back()) else {
        return if healthy { 100 } else { 0 };
    };
    let ok = last.1.saturating_sub(first.1);
    let failed = last.2.saturating_sub(first.2);
    match ok + failed {
        0 if healthy => 100,
        0 => 0,
        total => i64::try_from((100 * ok + total / 2) / total).unwrap_or(100),
    }
}

/// Keeps the gauges that describe state (ledger size, performer health and restarts, readiness)
/// current, once a second, until the node stops.
async fn refresh_gauges(pipeline: Arc<Pipeline>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let metrics = pipeline.metrics().clone();
    let ready = readiness(Arc::new(OnceLock::from(pipeline.clone())));
    // Per AVS: which performer (by allocation; a deploy brings a new one) and its restarts.
    let mut restarts_seen: HashMap<Address, (usize, u32)> = HashMap::new();
    // Per AVS: (when, tasks answered well, tasks failed), a sample a second over the window.
    let mut outcomes: HashMap<Address, VecDeque<(Instant, u64, u64)>> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        // The probe lets a replica notice its database is back without waiting for a task.
        let up = pipeline.ledger().probe().await.is_ok();
        metrics.ledger_up.set(i64::from(up));
        // Counting a shared ledger's rows is a scan: every 30 s there, every second embedded.
        let count_now =
            matches!(pipeline.ledger(), Ledger::Embedded(_)) || ticks.is_multiple_of(30);
        ticks += 1;
        if up
            && count_now
            && let Ok(records) = pipeline.ledger().len().await
        {
            metrics
                .ledger_records
                .set(i64::try_from(records).unwrap_or(i64::MAX));
        }
        for avs in pipeline.avs() {
            let label = avs.address.to_string();
            let count = |outcome: &str| {
                metrics
                    .tasks_completed
                    .with_label_values(&[label.as_str(), outcome])
                    .get()
            };
            let window = outcomes.entry(avs.address).or_default();
            let now = Instant::now();
            window.push_back((now, count("signed") + count("cached"), count("failed")));
            while window
                .front()
                .is_some_and(|(at, _, _)| now.duration_since(*at) > PERFORMANCE_WINDOW)
            {
                window.pop_front();
            }
            let healthy = avs
                .performer
                .current()
                .is_ok_and(|p| p.state() == PerformerState::Healthy);
            metrics
                .performance_score
                .with_label_values(&[label.as_str()])
                .set(performance_score(window, healthy));
            let Ok(performer) = avs.performer.current() else {
                // Only docker AVSs can be without a performer (none deployed yet, or removed).
                metrics
                    .performer_up
                    .with_label_values(&[label.as_str(), "docker"])
                    .set(0);
                continue;
            };
            let up = performer.state() == PerformerState::Healthy;
            metrics
                .performer_up
                .with_label_values(&[label.as_str(), performer.runtime()])
                .set(i64::from(up));
            let restarts = performer.restarts();
            let instance = Arc::as_ptr(&performer).cast::<()>() as usize;
            let seen = restarts_seen.entry(avs.address).or_insert((instance, 0));
            if seen.0 != instance {
                *seen = (instance, 0);
            }
            if restarts > seen.1 {
                metrics
                    .performer_restarts
                    .with_label_values(&[label.as_str()])
                    .inc_by(u64::from(restarts - seen.1));
                seen.1 = restarts;
            }
        }
        // Our standing on chain, at its head: from the cache, read again when an event closed it.
        if let Some(chain) = pipeline.chain() {
            chain.gauges();
            if ticks.is_multiple_of(5) {
                pipeline.check_chain().await;
            }
        }
        metrics.ready.set(i64::from(ready().is_ok()));
    }
}
