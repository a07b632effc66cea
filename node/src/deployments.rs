//! Deployment policy: which performer serves each AVS, and when that changes — start-up (adopting
//! the docker containers a previous run left), deploys and removals through the management API,
//! reloads, and the deployments file that lets a restarted node bring its deployments back
//! (DESIGN §7).
//!
//! The mechanism is the performer crate's: a deploy swaps the AVS's [`PerformerSlot`], so new
//! tasks go to the new container, and the old one is drained and removed
//! ([`avsnode_performer::drain_and_remove`]) once no task holds it, or after the drain timeout.
//!
//! `deployments.json` in the data dir records, per docker AVS, the performer id, image and
//! environment of the current deployment. It holds env values (which may be secrets), so it is
//! written 0600 and never logged; the ledger never sees them.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use avsnode_performer::{
    DockerPerformer, DockerRuntime, DockerSpec, Hardening, HealthPolicy, Performer, PerformerSlot,
    PerformerState, ProcessPerformer, ProcessSpec, RegistryAuth, RemotePerformer, RemoteSpec,
    Resources, RestartPolicy, StartError, drain_and_remove, retire,
};
use avsnode_signer::messages::Address;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::{Config, DockerPerformerConfig, PerformerConfig};

/// Why a deploy or removal failed. Each maps to one gRPC code in the management service.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The AVS is not in the configuration.
    #[error("AVS {0} is not configured on this node")]
    UnknownAvs(String),
    /// The AVS's performer is not a docker one.
    #[error("AVS {avs}: its performer runtime is {runtime}; deploys need runtime = \"docker\"")]
    NotDocker {
        /// The AVS.
        avs: Address,
        /// Its runtime.
        runtime: &'static str,
    },
    /// Another deploy or removal for this AVS is running.
    #[error("a deploy for AVS {0} is already in progress")]
    InProgress(Address),
    /// The request is malformed (image reference, env).
    #[error("{0}")]
    Invalid(String),
    /// No performer with that id.
    #[error("no performer with id {0:?}")]
    UnknownPerformer(String),
    /// The Docker Engine is not reachable.
    #[error("the Docker Engine is not available: {0}")]
    NoDocker(String),
    /// The new performer did not start; the current one keeps serving.
    #[error("deploy to AVS {avs} failed; the current performer keeps serving: {source}")]
    Start {
        /// The AVS.
        avs: Address,
        /// Why.
        #[source]
        source: StartError,
    },
    /// The deployments file could not be written.
    #[error("writing {}: {source}", path.display())]
    Persist {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A process or remote performer did not start.
#[derive(Debug, thiserror::Error)]
#[error("AVS {avs}: performer did not start: {source}")]
pub struct PerformerStartError {
    /// The AVS.
    pub avs: Address,
    /// Why.
    #[source]
    pub source: StartError,
}

/// One deployment as `deployments.json` records it.
#[derive(Clone, Serialize, Deserialize)]
struct Record {
    avs: String,
    performer_id: String,
    image: String,
    env: Vec<(String, String)>,
    /// `config` (the configured image) or `api` (a `DeployArtifact`).
    source: String,
    deployed_at: u64,
    /// Removed through the API: the AVS stays without a performer (even with a configured image)
    /// until the next deploy.
    #[serde(default)]
    removed: bool,
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("Record")
            .field("avs", &self.avs)
            .field("performer_id", &self.performer_id)
            .field("image", &self.image)
            .field("env_names", &names)
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    deployments: Vec<Record>,
}

/// A docker AVS's deployment: what is recorded, and the performer running it (none when it could
/// not start or was removed — the record stays, so nothing is forgotten).
#[derive(Debug, Clone)]
struct Deployment {
    record: Record,
    performer: Option<Arc<DockerPerformer>>,
}

/// A docker AVS: its config, slot, and current deployment.
#[derive(Debug)]
struct DockerAvs {
    /// Replaced by a reload.
    config: Mutex<DockerPerformerConfig>,
    slot: Arc<PerformerSlot>,
    current: Mutex<Option<Deployment>>,
    /// Held by a deploy or removal; `try_lock` failing means ALREADY_EXISTS.
    busy: tokio::sync::Mutex<()>,
}

/// What `ListPerformers` reports about one performer, read live.
#[derive(Debug, Clone)]
pub struct PerformerInfo {
    /// The performer (deployment) id.
    pub performer_id: String,
    /// The AVS.
    pub avs: Address,
    /// `healthy`, `starting`, `restarting`, `unhealthy`, `failed`, or `absent`.
    pub status: String,
    /// The runtime.
    pub runtime: &'static str,
    /// The image reference as deployed (docker only).
    pub image: String,
    /// The resolved image id (docker only).
    pub image_id: String,
    /// The container (docker only).
    pub container_id: String,
    /// The container exists and runs (docker), the process runs (process).
    pub resource_healthy: bool,
    /// The last health check said SERVING.
    pub application_healthy: bool,
    /// When a health check last passed.
    pub last_health_check: Option<SystemTime>,
}

/// Every AVS's performer and the docker deployments.
#[derive(Debug)]
pub struct Deployments {
    slots: HashMap<Address, Arc<PerformerSlot>>,
    /// Process and remote performers (started from config, replaced by a reload, never
    /// deployed).
    fixed: Mutex<HashMap<Address, Arc<dyn Performer>>>,
    docker: HashMap<Address, DockerAvs>,
    runtime: Option<DockerRuntime>,
    node_id: String,
    network: String,
    log_lines_per_second: u32,
    stop_on_shutdown: bool,
    file: PathBuf,
    /// One writer of `file` at a time (deploys to different AVSs run at once).
    saving: Mutex<()>,
    metrics: Arc<avsnode_metrics::Metrics>,
}

impl Deployments {
    /// Starts every AVS's performer: process and remote ones from config (an error there stops
    /// the node, as before); docker ones from the deployments file or the configured image,
    /// adopting containers left running by a previous run. A docker performer that does not
    /// start leaves its AVS without a performer (tasks get UNAVAILABLE, `/readyz` says why)
    /// while the others serve. Owned containers no deployment wants are removed.
    pub async fn start(
        config: &Config,
        metrics: Arc<avsnode_metrics::Metrics>,
    ) -> Result<Deployments, PerformerStartError> {
        let node_id = config.node_id();
        let file = config.node.data_dir.join("deployments.json");
        let mut performers = Deployments {
            slots: HashMap::new(),
            fixed: Mutex::default(),
            docker: HashMap::new(),
            runtime: None,
            node_id,
            network: config.docker_network(),
            log_lines_per_second: config.docker.log_lines_per_second,
            stop_on_shutdown: config.docker.stop_on_shutdown,
            file,
            saving: Mutex::new(()),
            metrics,
        };
        let wants_docker = config
            .avs
            .iter()
            .any(|a| matches!(a.performer, PerformerConfig::Docker(_)));
        let docker_error = if wants_docker {
            match performers.connect_docker().await {
                Ok(()) => None,
                Err(e) => {
                    error!(error = %e, "the Docker Engine is not available: docker performers cannot start");
                    Some(e.to_string())
                }
            }
        } else {
            None
        };
        let saved = performers.load_file();

        for avs in &config.avs {
            let address = *avs.address.get();
            match &avs.performer {
                PerformerConfig::Docker(docker) => {
                    let slot = Arc::new(PerformerSlot::empty("no performer deployed"));
                    let entry = DockerAvs {
                        config: Mutex::new((**docker).clone()),
                        slot: slot.clone(),
                        current: Mutex::new(None),
                        busy: tokio::sync::Mutex::new(()),
                    };
                    performers.slots.insert(address, slot);
                    performers.docker.insert(address, entry);
                    let record = saved
                        .iter()
                        .find(|r| r.avs == address.to_string())
                        .filter(|r| {
                            // A configured image that changed replaces its old deployment; an API
                            // deployment stays until the next deploy.
                            r.source == "api" || Some(&r.image) == docker.image.as_ref()
                        })
                        .cloned()
                        .or_else(|| {
                            docker.image.as_ref().map(|image| Record {
                                avs: address.to_string(),
                                performer_id: new_performer_id(&address),
                                image: image.clone(),
                                env: Vec::new(),
                                source: "config".into(),
                                deployed_at: unix_now(),
                                removed: false,
                            })
                        });
                    let Some(record) = record else {
                        info!(avs = %address, "no image configured or deployed: waiting for a deploy");
                        continue;
                    };
                    let entry = &performers.docker[&address];
                    if record.removed {
                        info!(avs = %address, "its performer was removed: waiting for a deploy");
                        entry
                            .slot
                            .clear("the performer was removed; deploy a new one".into());
                    } else if let Some(e) = &docker_error {
                        entry
                            .slot
                            .clear(format!("the Docker Engine is not available: {e}"));
                    } else {
                        match performers.start_container(address, &record).await {
                            Ok(performer) => {
                                entry.slot.replace(performer.clone());
                                *lock(&entry.current) = Some(Deployment {
                                    record,
                                    performer: Some(performer),
                                });
                                continue;
                            }
                            Err(e) => {
                                error!(avs = %address, error = %e, "performer did not start; this AVS gets UNAVAILABLE until a deploy or a restart");
                                entry.slot.clear(e.to_string());
                            }
                        }
                    }
                    // Kept (its container spared) though nothing runs it now.
                    *lock(&entry.current) = Some(Deployment {
                        record,
                        performer: None,
                    });
                }
                other => {
                    let performer = start_performer(address, other).await?;
                    performers
                        .slots
                        .insert(address, Arc::new(PerformerSlot::new(performer.clone())));
                    lock(&performers.fixed).insert(address, performer);
                }
            }
        }
        if performers.runtime.is_some() {
            if let Err(e) = performers.save() {
                error!(error = %e, "recording the deployments failed");
            }
            performers.remove_stale().await;
        }
        Ok(performers)
    }

    async fn connect_docker(&mut self) -> Result<(), DeployError> {
        let runtime = DockerRuntime::connect()
            .await
            .map_err(|e| DeployError::NoDocker(e.to_string()))?;
        runtime
            .ensure_network(&self.network, &self.node_id, false)
            .await
            .map_err(|e| DeployError::NoDocker(e.to_string()))?;
        self.runtime = Some(runtime);
        Ok(())
    }

    /// The slot of every AVS, for the pipeline.
    pub fn slot(&self, avs: &Address) -> Arc<PerformerSlot> {
        self.slots
            .get(avs)
            .cloned()
            .unwrap_or_else(|| Arc::new(PerformerSlot::empty("no performer configured")))
    }

    async fn start_container(
        &self,
        avs: Address,
        record: &Record,
    ) -> Result<Arc<DockerPerformer>, DeployError> {
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| DeployError::NoDocker("not connected".into()))?;
        let spec = self.spec(avs, record)?;
        let performer = DockerPerformer::start(runtime, spec)
            .await
            .map_err(|source| DeployError::Start { avs, source })?;
        info!(
            %avs,
            performer = %record.performer_id,
            image = %record.image,
            container = %performer.container_id(),
            adopted = performer.adopted(),
            "docker performer serving"
        );
        Ok(Arc::new(performer))
    }

    fn spec(&self, avs: Address, record: &Record) -> Result<DockerSpec, DeployError> {
        let config = lock(&self.docker[&avs].config).clone();
        let pull = *config.pull.get();
        let auth = match &config.registry_auth {
            Some(auth) => {
                let password = std::fs::read_to_string(&auth.password_file).map_err(|e| {
                    DeployError::Invalid(format!(
                        "reading the registry password file {}: {e}",
                        auth.password_file.display()
                    ))
                })?;
                Some(RegistryAuth {
                    username: auth.username.clone(),
                    password: password.strip_suffix('\n').unwrap_or(&password).to_owned(),
                })
            }
            None => None,
        };
        // Configured env first; a deployment's env overrides it name by name.
        let mut env: Vec<(String, String)> = config
            .env
            .iter()
            .filter(|(k, _)| !record.env.iter().any(|(name, _)| name == *k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        env.extend(record.env.iter().cloned());
        // Docker refuses a CPU limit above the host's CPUs: a default of 2 must not stop a
        // performer on a 1-CPU host.
        let host_cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let cpus = config.resources.cpus.min(host_cpus);
        Ok(DockerSpec {
            node_id: self.node_id.clone(),
            avs: avs.to_string(),
            performer_id: record.performer_id.clone(),
            image: record.image.clone(),
            pull,
            auth,
            // Performers without egress get a network of their own kind, made on first use.
            network: if config.egress {
                self.network.clone()
            } else {
                format!("{}-internal", self.network)
            },
            egress: config.egress,
            port: config.port,
            env,
            hardening: Hardening {
                read_only_rootfs: config.read_only_rootfs,
                tmpfs_size: config.tmpfs_mib << 20,
                drop_capabilities: config.drop_capabilities,
                no_new_privileges: config.no_new_privileges,
                user: config.user.clone(),
                private_cgroup_namespace: true,
            },
            resources: Resources {
                memory_bytes: nonzero(config.resources.memory_mib << 20),
                // Validated to be within [0, 1024].
                nano_cpus: (cpus > 0.0).then_some((cpus * 1e9) as i64),
                pids_limit: nonzero(config.resources.pids),
            },
            health: HealthPolicy {
                interval: config.health_interval,
                startup_timeout: config.startup_timeout,
                ..HealthPolicy::default()
            },
            restart: RestartPolicy {
                crash_loop_restarts: config.max_restarts,
                crash_loop_window: config.restart_window,
                ..RestartPolicy::default()
            },
            log_lines_per_second: self.log_lines_per_second,
        })
    }

    /// Blue/green deploy of `image` with `env` for `avs`: start the new container, wait until it
    /// is healthy, switch new tasks to it, drain the old one (bounded by the AVS's
    /// `drain_timeout`) and remove it. On failure the current performer keeps serving. Returns
    /// the new performer id.
    pub async fn deploy(
        &self,
        avs: &str,
        image: String,
        env: Vec<(String, String)>,
    ) -> Result<String, DeployError> {
        let (address, entry) = self.docker_avs(avs)?;
        let _busy = entry
            .busy
            .try_lock()
            .map_err(|_| DeployError::InProgress(address))?;
        let record = Record {
            avs: address.to_string(),
            performer_id: new_performer_id(&address),
            image,
            env,
            source: "api".into(),
            deployed_at: unix_now(),
            removed: false,
        };
        self.roll_out(address, entry, record).await
    }

    /// The deploy itself; the caller holds `entry.busy`.
    async fn roll_out(
        &self,
        address: Address,
        entry: &DockerAvs,
        record: Record,
    ) -> Result<String, DeployError> {
        let label = address.to_string();
        let started = Instant::now();
        info!(avs = %address, performer = %record.performer_id, image = %record.image, "deploy: starting the new performer");
        let new = match self.start_container(address, &record).await {
            Ok(new) => new,
            Err(e) => {
                self.count_deploy(&label, "failed");
                warn!(avs = %address, error = %e, "deploy failed");
                return Err(e);
            }
        };
        let old = {
            let mut current = lock(&entry.current);
            entry.slot.replace(new.clone());
            current.replace(Deployment {
                record: record.clone(),
                performer: Some(new),
            })
        };
        info!(avs = %address, performer = %record.performer_id, elapsed = ?started.elapsed(), "deploy: new performer in service");
        if let Err(e) = self.save() {
            error!(error = %e, "recording the deployment failed; a restarted node would bring back the previous one");
        }
        if let Some(Deployment {
            record: old_record,
            performer: Some(old),
        }) = old
        {
            let drain_timeout = lock(&entry.config).drain_timeout;
            drain_and_remove(old, &old_record.performer_id, drain_timeout).await;
        }
        self.count_deploy(&label, "success");
        Ok(record.performer_id)
    }

    /// A reload, first step: what the change of `avs`'s performer from `old` to `new` needs,
    /// prepared without touching the running performer. A process or remote performer is
    /// started beside the running one; a docker performer's settings are only checked. Changes
    /// that cannot be made while serving are refused with the reason.
    pub async fn stage(
        &self,
        avs: Address,
        old: &PerformerConfig,
        new: &PerformerConfig,
    ) -> Result<Option<Staged>, String> {
        if old == new {
            return Ok(None);
        }
        match (old, new) {
            (PerformerConfig::Docker(_), PerformerConfig::Docker(new)) => {
                Ok(Some(Staged::Docker {
                    avs,
                    config: new.clone(),
                }))
            }
            (PerformerConfig::Docker(_), _) | (_, PerformerConfig::Docker(_)) => {
                Err("changing the performer's runtime to or from docker takes a restart".into())
            }
            (PerformerConfig::Process { port: was, .. }, PerformerConfig::Process { port, .. })
                if *port != 0 && port == was =>
            {
                Err(format!(
                    "a process performer on the fixed port {port} cannot start beside the running \
                     one; leave port out (0: any free port) to change it without a restart"
                ))
            }
            _ => {
                let performer = start_performer(avs, new).await.map_err(|e| e.to_string())?;
                Ok(Some(Staged::Fixed { avs, performer }))
            }
        }
    }

    /// A reload, last step: puts a staged change in service. A replaced process or remote
    /// performer stops once the tasks running on it are done (at most a minute); a docker
    /// performer whose settings changed is redeployed blue/green with them, keeping its image
    /// (the new configured image if it ran the configured one).
    pub fn commit(self: &Arc<Self>, staged: Staged) {
        match staged {
            Staged::Fixed { avs, performer } => {
                let old = lock(&self.fixed).insert(avs, performer.clone());
                if let Some(slot) = self.slots.get(&avs) {
                    slot.replace(performer);
                }
                info!(%avs, "reload: new performer in service");
                if let Some(old) = old {
                    tokio::spawn(async move {
                        retire(&avs.to_string(), old, RETIRE_TIMEOUT).await;
                    });
                }
            }
            Staged::Docker { avs, config } => {
                let Some(entry) = self.docker.get(&avs) else {
                    return;
                };
                *lock(&entry.config) = (*config).clone();
                let this = self.clone();
                tokio::spawn(async move {
                    let Some(entry) = this.docker.get(&avs) else {
                        return;
                    };
                    let _busy = entry.busy.lock().await;
                    let current = lock(&entry.current).clone();
                    let record = match current {
                        Some(d) if !d.record.removed && d.record.source == "api" => Record {
                            performer_id: new_performer_id(&avs),
                            deployed_at: unix_now(),
                            ..d.record
                        },
                        Some(d) if d.record.removed => return,
                        _ => match config.image {
                            Some(image) => Record {
                                avs: avs.to_string(),
                                performer_id: new_performer_id(&avs),
                                image,
                                env: Vec::new(),
                                source: "config".into(),
                                deployed_at: unix_now(),
                                removed: false,
                            },
                            None => return,
                        },
                    };
                    info!(%avs, image = %record.image, "reload: redeploying the docker performer with its new settings");
                    if let Err(e) = this.roll_out(avs, entry, record).await {
                        error!(%avs, error = %e, "reload: the redeploy failed; the running performer keeps serving");
                    }
                });
            }
        }
    }

    /// Stops and removes a docker performer; its AVS gets UNAVAILABLE until the next deploy (also
    /// after a restart: the removal is recorded).
    pub async fn remove(&self, performer_id: &str) -> Result<Address, DeployError> {
        let is_it = |d: &Option<Deployment>| {
            d.as_ref()
                .is_some_and(|d| d.record.performer_id == performer_id && !d.record.removed)
        };
        for (address, entry) in &self.docker {
            if !is_it(&lock(&entry.current)) {
                continue;
            }
            let _busy = entry
                .busy
                .try_lock()
                .map_err(|_| DeployError::InProgress(*address))?;
            let performer = {
                let mut current = lock(&entry.current);
                // A deploy may have replaced it before the lock was ours.
                if !is_it(&current) {
                    return Err(DeployError::UnknownPerformer(performer_id.into()));
                }
                let Some(deployment) = current.as_mut() else {
                    return Err(DeployError::UnknownPerformer(performer_id.into()));
                };
                deployment.record.removed = true;
                deployment.performer.take()
            };
            entry.slot.clear(format!(
                "performer {performer_id} was removed; deploy a new one"
            ));
            if let Err(e) = self.save() {
                error!(error = %e, "recording the removal failed");
            }
            info!(avs = %address, performer = %performer_id, "removing performer");
            match performer {
                Some(performer) => performer.remove().await,
                // It never started in this run: remove whatever container it left.
                None => self.remove_stale().await,
            }
            return Ok(*address);
        }
        Err(DeployError::UnknownPerformer(performer_id.into()))
    }

    /// Every performer's live state, optionally of one AVS.
    pub fn list(&self, avs: Option<&Address>) -> Vec<PerformerInfo> {
        let mut out = Vec::new();
        for (address, slot) in &self.slots {
            if avs.is_some_and(|a| a != address) {
                continue;
            }
            if let Some(entry) = self.docker.get(address) {
                let Some(deployment) = lock(&entry.current).clone() else {
                    continue;
                };
                if deployment.record.removed {
                    continue;
                }
                let record = deployment.record;
                let (status, image_id, container_id, last_health_check) =
                    match &deployment.performer {
                        Some(p) => (
                            p.state().to_string(),
                            p.image_id(),
                            p.container_id(),
                            p.last_health_check(),
                        ),
                        None => ("absent".to_owned(), String::new(), String::new(), None),
                    };
                out.push(PerformerInfo {
                    performer_id: record.performer_id,
                    avs: *address,
                    // Restarting or failed: the container is not running.
                    resource_healthy: status == "healthy" || status == "unhealthy",
                    application_healthy: status == "healthy",
                    status,
                    runtime: "docker",
                    image: record.image,
                    image_id,
                    container_id,
                    last_health_check,
                });
                continue;
            }
            if let Ok(p) = slot.current() {
                let state = p.state();
                out.push(PerformerInfo {
                    performer_id: format!("{}-{}", p.runtime(), short(address)),
                    avs: *address,
                    status: state.to_string(),
                    runtime: p.runtime(),
                    image: String::new(),
                    image_id: String::new(),
                    container_id: String::new(),
                    resource_healthy: !matches!(
                        state,
                        PerformerState::Failed | PerformerState::Restarting
                    ),
                    application_healthy: state == PerformerState::Healthy,
                    last_health_check: None,
                });
            }
        }
        out.sort_by(|a, b| (a.avs, &a.performer_id).cmp(&(b.avs, &b.performer_id)));
        out
    }

    /// Stops supervising every performer. Docker containers keep running, so the next start
    /// adopts them instead of cold-starting (unless `docker.stop_on_shutdown`, which removes
    /// them: the next start recreates them); process performers are stopped.
    pub async fn shutdown(&self) {
        let fixed: Vec<_> = lock(&self.fixed).values().cloned().collect();
        for performer in fixed {
            performer.shutdown().await;
        }
        for entry in self.docker.values() {
            // A deploy or removal under way finishes first: its container is then the one here.
            let _busy = entry.busy.lock().await;
            let current = lock(&entry.current).clone();
            match current.and_then(|d| d.performer) {
                Some(p) if self.stop_on_shutdown => p.remove().await,
                Some(p) => p.shutdown().await,
                None => {}
            }
        }
    }

    fn docker_avs(&self, avs: &str) -> Result<(Address, &DockerAvs), DeployError> {
        let address: Address = avs
            .parse()
            .map_err(|e| DeployError::Invalid(format!("avs_address {avs:?}: {e}")))?;
        if let Some(entry) = self.docker.get(&address) {
            return Ok((address, entry));
        }
        match lock(&self.fixed).get(&address) {
            Some(p) => Err(DeployError::NotDocker {
                avs: address,
                runtime: p.runtime(),
            }),
            None => Err(DeployError::UnknownAvs(address.to_string())),
        }
    }

    fn count_deploy(&self, avs: &str, result: &str) {
        self.metrics
            .performer_deployments
            .with_label_values(&[avs, result])
            .inc();
    }

    /// Removes owned containers that no current deployment uses (left by an earlier
    /// configuration, a crashed deploy, or a removal the node did not finish).
    async fn remove_stale(&self) {
        let Some(runtime) = &self.runtime else { return };
        let keep: Vec<String> = self
            .docker
            .values()
            .filter_map(|e| {
                lock(&e.current)
                    .as_ref()
                    .filter(|d| !d.record.removed)
                    .map(|d| d.record.performer_id.clone())
            })
            .collect();
        let owned = match runtime.owned_containers(&self.node_id).await {
            Ok(owned) => owned,
            Err(e) => {
                warn!(error = %e, "listing this node's containers failed; stale ones stay");
                return;
            }
        };
        for container in owned {
            if keep.contains(&container.performer_id) {
                continue;
            }
            info!(container = %container.name, performer = %container.performer_id, avs = %container.avs, "removing a stale container this node owns");
            if let Err(e) = runtime.remove_container(&container.id).await {
                warn!(container = %container.name, error = %e, "removing a stale container failed");
            }
        }
    }

    fn load_file(&self) -> Vec<Record> {
        match std::fs::read(&self.file) {
            Ok(bytes) => match serde_json::from_slice::<File>(&bytes) {
                Ok(file) => file.deployments,
                Err(e) => {
                    error!(file = %self.file.display(), error = %e, "the deployments file is unreadable; starting from the configured images");
                    Vec::new()
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => {
                error!(file = %self.file.display(), error = %e, "reading the deployments file failed; starting from the configured images");
                Vec::new()
            }
        }
    }

    /// Writes every current deployment (0600, atomically: a crash leaves the old file or the new
    /// one, never half of one).
    fn save(&self) -> Result<(), DeployError> {
        let _saving = lock(&self.saving);
        let mut file = File {
            version: 1,
            deployments: Vec::new(),
        };
        for entry in self.docker.values() {
            if let Some(deployment) = lock(&entry.current).as_ref() {
                file.deployments.push(deployment.record.clone());
            }
        }
        file.deployments.sort_by(|a, b| a.avs.cmp(&b.avs));
        let persist = |source| DeployError::Persist {
            path: self.file.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| persist(e.into()))?;
        write_atomic(&self.file, &json).map_err(persist)
    }
}

/// A reload's performer change, started or checked but not yet in service.
#[derive(Debug)]
pub enum Staged {
    /// A process or remote performer, running and healthy, to take over from the current one.
    Fixed {
        /// Its AVS.
        avs: Address,
        /// The new performer.
        performer: Arc<dyn Performer>,
    },
    /// New settings of a docker performer.
    Docker {
        /// Its AVS.
        avs: Address,
        /// The new settings.
        config: Box<DockerPerformerConfig>,
    },
}

impl Staged {
    /// Undoes staging (the reload was refused): stops a performer started for it.
    pub async fn discard(self) {
        if let Staged::Fixed { performer, .. } = self {
            performer.shutdown().await;
        }
    }
}

fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = path.with_extension(format!("json.tmp.{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    // `mode` applies only to a new file: a leftover temporary file keeps its own.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn nonzero(v: u64) -> Option<i64> {
    (v > 0).then(|| i64::try_from(v).unwrap_or(i64::MAX))
}

/// `0x1234abcd`: the AVS address cut to 10 characters.
fn short(avs: &Address) -> String {
    avs.to_string()[..10].to_owned()
}

/// `0x1234abcd-5f2e9a01`: the AVS and 32 random bits (also the container name's suffix).
fn new_performer_id(avs: &Address) -> String {
    format!("{}-{:08x}", short(avs), rand::random::<u32>())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// How long a replaced process or remote performer may finish its tasks before it is stopped.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a process or remote performer from its configuration.
pub(crate) async fn start_performer(
    avs: Address,
    config: &PerformerConfig,
) -> Result<Arc<dyn Performer>, PerformerStartError> {
    let performer: Arc<dyn Performer> = match config {
        PerformerConfig::Process {
            command,
            args,
            env,
            port,
        } => Arc::new(
            ProcessPerformer::start(ProcessSpec {
                name: avs.to_string(),
                program: command.clone(),
                args: args.clone(),
                env: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                port: *port,
                health: HealthPolicy::default(),
                restart: RestartPolicy::default(),
            })
            .await
            .map_err(|source| PerformerStartError { avs, source })?,
        ),
        PerformerConfig::Remote { endpoint } => Arc::new(
            RemotePerformer::connect(RemoteSpec {
                endpoint: endpoint.clone(),
                health: HealthPolicy::default(),
            })
            .await
            .map_err(|source| PerformerStartError { avs, source })?,
        ),
        PerformerConfig::Docker(_) => {
            unreachable!("docker performers are started by Deployments")
        }
    };
    info!(%avs, state = %performer.state(), "performer started");
    Ok(performer)
}
