//! The `docker` runtime: performers in containers the node manages through the Docker Engine API.
//!
//! A container runs on a private bridge network ([`DockerRuntime::ensure_network`]) with no
//! published host ports: the node reaches it at its address on that network. It is hardened by
//! default ([`Hardening`], [`Resources`]) and labelled `io.avsnode.*`, so a restarted node finds its
//! containers and adopts one whose spec has not changed instead of replacing it.
//!
//! Supervision mirrors the `process` runtime: Docker's `die`/`oom` events and steady-state health
//! checks trigger restarts with the same backoff and crash-loop rule ([`RestartPolicy`]). dockerd
//! itself never restarts a container (restart policy `no`): the node decides.
//!
//! # Caveat
//!
//! The node connects to container addresses directly, so it must run on the Docker host (or on the
//! performer network): with a remote `DOCKER_HOST` containers start but are never reachable.

use std::collections::HashMap;
use std::fmt;
use std::pin::pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use avsnode_proto::performer::{TaskRequest, TaskResponse};
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, HostConfigCgroupnsModeEnum,
    NetworkCreateRequest, RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamExt;
use tracing::Instrument;

use crate::client::{Core, Supervisor};
use crate::health::{until_healthy, until_unhealthy};
use crate::process::Restarts;
use crate::{ExecuteError, HealthPolicy, Performer, PerformerState, RestartPolicy, StartError};

const LABEL_NODE: &str = "io.avsnode.node";
const LABEL_AVS: &str = "io.avsnode.avs";
const LABEL_PERFORMER: &str = "io.avsnode.performer";
const LABEL_IMAGE: &str = "io.avsnode.image";
const LABEL_IMAGE_ID: &str = "io.avsnode.image-id";
const LABEL_SPEC: &str = "io.avsnode.spec";

/// Grace period between SIGTERM and SIGKILL when a performer is removed.
const STOP_GRACE_SECONDS: i32 = 10;

/// When to pull a performer's image from its registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    /// Pull before every start, so a moved tag is followed.
    Always,
    /// Pull only when the image is not present locally.
    #[default]
    IfNotPresent,
    /// Never pull: the image must be present locally.
    Never,
}

impl fmt::Display for PullPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Always => "always",
            Self::IfNotPresent => "if-not-present",
            Self::Never => "never",
        })
    }
}

impl FromStr for PullPolicy {
    type Err = DockerError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(Self::Always),
            "if-not-present" => Ok(Self::IfNotPresent),
            "never" => Ok(Self::Never),
            _ => Err(DockerError::UnknownPullPolicy(s.to_owned())),
        }
    }
}

/// Credentials for pulling from a private registry.
#[derive(Clone)]
pub struct RegistryAuth {
    /// The registry user.
    pub username: String,
    /// Its password or access token; never logged.
    pub password: String,
}

impl fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// How a performer container is locked down. The default is fully hardened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    /// Read-only root filesystem (default true). The performer writes to the tmpfs at `/tmp`.
    pub read_only_rootfs: bool,
    /// Size in bytes of the tmpfs mounted at `/tmp` (`noexec,nosuid,nodev`; default 64 MiB). It is
    /// mounted whether or not the root filesystem is read-only.
    pub tmpfs_size: u64,
    /// Drop every Linux capability (default true).
    pub drop_capabilities: bool,
    /// `no-new-privileges`: setuid binaries cannot gain privileges (default true).
    pub no_new_privileges: bool,
    /// Run as this user (`uid:gid` or a name the image knows); `None` keeps the image's user
    /// (a warning is logged when that is root).
    pub user: Option<String>,
    /// A cgroup namespace of the container's own (default true): the performer sees its own
    /// cgroup as the root, not the host's hierarchy.
    pub private_cgroup_namespace: bool,
}

impl Default for Hardening {
    fn default() -> Self {
        Self {
            read_only_rootfs: true,
            tmpfs_size: 64 << 20,
            drop_capabilities: true,
            no_new_privileges: true,
            user: None,
            private_cgroup_namespace: true,
        }
    }
}

/// Resource limits of a performer container; `None` leaves a resource unlimited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes, swap included (default 1 GiB).
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU (default 2 CPUs).
    pub nano_cpus: Option<i64>,
    /// Maximum number of processes and threads (default 512).
    pub pids_limit: Option<i64>,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            memory_bytes: Some(1 << 30),
            nano_cpus: Some(2_000_000_000),
            pids_limit: Some(512),
        }
    }
}

/// What to run for a `docker` performer.
#[derive(Clone)]
pub struct DockerSpec {
    /// The node's id: label `io.avsnode.node`, so a node only ever touches its own containers.
    pub node_id: String,
    /// The AVS (lower-case `0x` address): label `io.avsnode.avs`.
    pub avs: String,
    /// The performer (deployment) id: label `io.avsnode.performer`; the container is named
    /// `avsnode-{performer_id}`.
    pub performer_id: String,
    /// The image: `name:tag`, `name@sha256:…`, or a local image id `sha256:…` (never pulled).
    pub image: String,
    /// When to pull it.
    pub pull: PullPolicy,
    /// Registry credentials for pulling.
    pub auth: Option<RegistryAuth>,
    /// The private bridge network the container joins (see [`DockerRuntime::ensure_network`]).
    pub network: String,
    /// Whether that network routes beyond this host (default true). False: it is an internal
    /// network — the node still reaches the container, the container reaches nothing else (no
    /// internet, no other hosts), for AVSs whose performers need no egress.
    pub egress: bool,
    /// The container port the performer listens on, also passed as `PORT` (Hourglass: 8080).
    pub port: u16,
    /// Environment, after `PORT`. Values may be secrets: they are never logged.
    pub env: Vec<(String, String)>,
    /// Lock-down.
    pub hardening: Hardening,
    /// Limits.
    pub resources: Resources,
    /// Health checks.
    pub health: HealthPolicy,
    /// Restarts.
    pub restart: RestartPolicy,
    /// Container log lines forwarded to the node's log per second (burst: twice that); the rest
    /// are dropped and counted. 0 forwards nothing.
    pub log_lines_per_second: u32,
}

impl fmt::Debug for DockerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env_names: Vec<&str> = self.env.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("DockerSpec")
            .field("node_id", &self.node_id)
            .field("avs", &self.avs)
            .field("performer_id", &self.performer_id)
            .field("image", &self.image)
            .field("pull", &self.pull)
            .field("auth", &self.auth)
            .field("network", &self.network)
            .field("port", &self.port)
            .field("env_names", &env_names)
            .field("hardening", &self.hardening)
            .field("resources", &self.resources)
            .field("health", &self.health)
            .field("restart", &self.restart)
            .field("log_lines_per_second", &self.log_lines_per_second)
            .finish()
    }
}

/// A failed Docker Engine request, or a malformed docker setting. Never holds env values or
/// registry passwords.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The Docker Engine could not be reached.
    #[error("cannot reach the Docker Engine at {host}: {source}")]
    Connect {
        /// `DOCKER_HOST`, or the default socket.
        host: String,
        /// Why.
        #[source]
        source: Box<BollardError>,
    },
    /// A request failed.
    #[error("cannot {action} {object}: {source}")]
    Request {
        /// What was asked, e.g. `create container`.
        action: &'static str,
        /// Of what: a container, image or network name or id.
        object: String,
        /// The engine's answer (boxed: errors travel up through every `Result`).
        #[source]
        source: Box<BollardError>,
    },
    /// A pull policy that is not `always`, `if-not-present` or `never`.
    #[error("unknown pull policy {0:?}: expected always, if-not-present or never")]
    UnknownPullPolicy(String),
    /// The engine's state does not fit the configuration (a network of the wrong kind).
    #[error("{0}")]
    Invalid(String),
}

impl DockerError {
    /// Whether the engine answered 404 (no such container, image or network).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Request { source, .. } if status(source) == Some(404))
    }
}

fn status(error: &BollardError) -> Option<u16> {
    match error {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn failed(action: &'static str, object: &str) -> impl FnOnce(BollardError) -> DockerError {
    let object = object.to_owned();
    move |source| DockerError::Request {
        action,
        object,
        source: Box::new(source),
    }
}

/// How a container stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerExit {
    /// Its exit code; `None` if the container is gone.
    pub code: Option<i64>,
    /// The kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
}

impl fmt::Display for ContainerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.code {
            Some(code) => write!(f, "exit code {code}")?,
            None => f.write_str("container removed")?,
        }
        if self.oom_killed {
            f.write_str(", out of memory")?;
        }
        Ok(())
    }
}

/// A container carrying this node's label, as [`DockerRuntime::owned_containers`] lists it.
#[derive(Debug, Clone)]
pub struct OwnedContainer {
    /// The container id.
    pub id: String,
    /// Its name, without Docker's leading `/`.
    pub name: String,
    /// Label `io.avsnode.avs`.
    pub avs: String,
    /// Label `io.avsnode.performer`.
    pub performer_id: String,
    /// Whether it is running.
    pub running: bool,
    /// The image reference it was started from (label `io.avsnode.image`).
    pub image: String,
}

/// A connection to the Docker Engine, shared (cloned) by all docker performers of a node.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    /// Docker 20.10 happily creates two networks with one name when asked at the same time:
    /// this node's callers take turns.
    network_lock: Arc<tokio::sync::Mutex<()>>,
}

impl DockerRuntime {
    /// Connects to the engine `DOCKER_HOST` names (`unix://…` or `tcp://…`), else to
    /// `/var/run/docker.sock`, and settles on the API version both sides speak.
    pub async fn connect() -> Result<Self, DockerError> {
        let host = std::env::var("DOCKER_HOST")
            .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
        let connect = |source| DockerError::Connect {
            host: host.clone(),
            source: Box::new(source),
        };
        let docker = Docker::connect_with_defaults()
            .map_err(connect)?
            // Older engines (20.10 speaks 1.41) refuse requests for a newer API version.
            .negotiate_version()
            .await
            .map_err(connect)?;
        Ok(Self {
            docker,
            network_lock: Arc::default(),
        })
    }

    /// Creates the bridge network `name`, labelled `io.avsnode.node={node_id}`, unless it exists;
    /// `internal`: with no route beyond this host (Docker's `--internal`). An existing network of
    /// that name must be internal exactly when asked for.
    pub async fn ensure_network(
        &self,
        name: &str,
        node_id: &str,
        internal: bool,
    ) -> Result<(), DockerError> {
        let _turn = self.network_lock.lock().await;
        match self.docker.inspect_network(name, None).await {
            Ok(network) if network.internal.unwrap_or(false) == internal => return Ok(()),
            Ok(_) => {
                return Err(DockerError::Invalid(format!(
                    "the Docker network {name} exists but {} internal; remove it (docker network \
                     rm {name}) so the node can create it as configured",
                    if internal { "is not" } else { "is" }
                )));
            }
            Err(e) if status(&e) == Some(404) => {}
            Err(e) => return Err(failed("inspect network", name)(e)),
        }
        let request = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(internal),
            labels: Some(HashMap::from([(LABEL_NODE.to_owned(), node_id.to_owned())])),
            ..Default::default()
        };
        match self.docker.create_network(request).await {
            Ok(_) => {
                tracing::info!(network = name, internal, "created the performer network");
                Ok(())
            }
            // Created by someone else in the meantime.
            Err(e) if status(&e) == Some(409) => Ok(()),
            Err(e) => Err(failed("create network", name)(e)),
        }
    }

    /// Every container (running or not) labelled `io.avsnode.node={node_id}`.
    pub async fn owned_containers(
        &self,
        node_id: &str,
    ) -> Result<Vec<OwnedContainer>, DockerError> {
        let containers = list(&self.docker, &[(LABEL_NODE, node_id)]).await?;
        Ok(containers
            .into_iter()
            .map(|c| {
                let label = |name: &str| {
                    c.labels
                        .as_ref()
                        .and_then(|labels| labels.get(name))
                        .cloned()
                        .unwrap_or_default()
                };
                OwnedContainer {
                    name: c
                        .names
                        .as_ref()
                        .and_then(|names| names.first())
                        .map(|name| name.trim_start_matches('/').to_owned())
                        .unwrap_or_default(),
                    avs: label(LABEL_AVS),
                    performer_id: label(LABEL_PERFORMER),
                    running: c.state == Some(ContainerSummaryStateEnum::RUNNING),
                    image: Some(label(LABEL_IMAGE))
                        .filter(|image| !image.is_empty())
                        .or(c.image)
                        .unwrap_or_default(),
                    id: c.id.unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Kills and removes a container (and its anonymous volumes). One that does not exist is
    /// already removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        remove(&self.docker, id).await
    }
}

/// A summary of every container (running or not) carrying all of `labels`.
async fn list(
    docker: &Docker,
    labels: &[(&str, &str)],
) -> Result<Vec<bollard::models::ContainerSummary>, DockerError> {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let filters = HashMap::from([("label", labels.clone())]);
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .map_err(failed("list containers labelled", &labels.join(",")))
}

async fn remove(docker: &Docker, id: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker.remove_container(id, Some(options)).await {
        Err(e) if status(&e) != Some(404) => Err(failed("remove container", id)(e)),
        _ => Ok(()),
    }
}

/// A performer in a container on the node's private network, kept running by a supervisor task:
/// restarted (the same container, or a new one if it is gone) when it dies, runs out of memory or
/// fails `failure_threshold` health checks in a row, with exponential backoff, until it
/// crash-loops. A crash-looping container is left stopped, not removed, for its logs.
///
/// Its output is forwarded to the node's log, rate-limited. [`Performer::shutdown`] (and dropping
/// it) stops supervising but leaves the container running, for the next node to adopt;
/// [`DockerPerformer::remove`] stops and removes it.
#[derive(Debug)]
pub struct DockerPerformer {
    shared: Arc<Shared>,
    supervisor: Supervisor,
    adopted: bool,
    span: tracing::Span,
}

#[derive(Debug)]
struct Shared {
    docker: Docker,
    spec: DockerSpec,
    image_id: String,
    fingerprint: String,
    container_id: Mutex<String>,
    /// Replaced at each (re)start: the container's address may change, and a connection to its
    /// previous run is dead without knowing it. Every core shares one state.
    core: RwLock<Arc<Core>>,
    restarts: AtomicU32,
    last_health_check: Mutex<Option<SystemTime>>,
}

impl Shared {
    fn core(&self) -> Arc<Core> {
        self.core
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn container_id(&self) -> String {
        lock(&self.container_id).clone()
    }

    fn healthy_now(&self) {
        *lock(&self.last_health_check) = Some(SystemTime::now());
    }

    fn error(&self, source: DockerError) -> StartError {
        StartError::Docker {
            name: self.spec.performer_id.clone(),
            source,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl DockerPerformer {
    /// Starts the performer and returns once it answers SERVING.
    ///
    /// Adopts a running container of this performer id and node whose `io.avsnode.spec` label
    /// matches this spec (same image id, port, env, hardening and limits) instead of starting a
    /// new one. Otherwise removes every container of this performer id, then creates and starts
    /// one; if that is not SERVING within `health.startup_timeout` (or stops first), removes it
    /// and fails.
    pub async fn start(runtime: &DockerRuntime, spec: DockerSpec) -> Result<Self, StartError> {
        let span = tracing::info_span!(
            "performer",
            avs = %spec.avs,
            performer = %spec.performer_id,
            runtime = "docker"
        );
        runtime
            .ensure_network(&spec.network, &spec.node_id, !spec.egress)
            .await
            .map_err(|source| StartError::Docker {
                name: spec.performer_id.clone(),
                source,
            })?;
        let (shared, run, adopted) = begin(runtime.docker.clone(), spec)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| shared.core().set_state(PerformerState::Healthy, None));
        let supervisor = Supervisor::spawn(span.clone(), supervise(shared.clone(), run));
        Ok(Self {
            shared,
            supervisor,
            adopted,
            span,
        })
    }

    /// The performer (deployment) id.
    pub fn performer_id(&self) -> &str {
        &self.shared.spec.performer_id
    }

    /// The current container's id.
    pub fn container_id(&self) -> String {
        self.shared.container_id()
    }

    /// The image id (`sha256:…`) the container runs.
    pub fn image_id(&self) -> String {
        self.shared.image_id.clone()
    }

    /// The image reference as given.
    pub fn image(&self) -> &str {
        &self.shared.spec.image
    }

    /// Whether `start` adopted a running container instead of starting one.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// How many times it has been restarted.
    pub fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// When a health check last answered SERVING.
    pub fn last_health_check(&self) -> Option<SystemTime> {
        *lock(&self.shared.last_health_check)
    }

    /// Where it listens now: `http://<container address on the network>:<port>`.
    pub fn endpoint(&self) -> String {
        self.shared.core().endpoint.clone()
    }

    /// Stops supervising, then stops the container (SIGTERM, SIGKILL after 10 s) and removes it.
    pub async fn remove(&self) {
        self.supervisor.stop().await;
        let (docker, id) = (&self.shared.docker, self.shared.container_id());
        async {
            let options = StopContainerOptionsBuilder::new()
                .t(STOP_GRACE_SECONDS)
                .build();
            match docker.stop_container(&id, Some(options)).await {
                Err(e) if status(&e) != Some(404) => tracing::warn!(
                    container = %id,
                    error = %failed("stop container", &id)(e),
                    "stopping the performer container failed; removing it anyway"
                ),
                _ => {}
            }
            match remove(docker, &id).await {
                Ok(()) => tracing::info!(container = %id, "removed the performer container"),
                Err(e) => tracing::warn!(
                    container = %id,
                    error = %e,
                    "removing the performer container failed"
                ),
            }
            self.shared.core().set_stopped();
        }
        .instrument(self.span.clone())
        .await;
    }
}

#[async_trait::async_trait]
impl Performer for DockerPerformer {
    fn state(&self) -> PerformerState {
        self.shared.core().state()
    }

    fn restarts(&self) -> u32 {
        DockerPerformer::restarts(self)
    }

    fn runtime(&self) -> &'static str {
        "docker"
    }

    async fn execute(
        &self,
        request: TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResponse, ExecuteError> {
        let core = self.shared.core();
        core.execute(request, timeout).await
    }

    /// Stops supervising and takes no more tasks; the container keeps running, so a restarted
    /// node adopts it. [`DockerPerformer::remove`] removes it.
    async fn shutdown(&self) {
        self.supervisor.stop().await;
        self.span.in_scope(|| self.shared.core().set_stopped());
    }
}

/// Finds or starts the container; returns once it is SERVING.
async fn begin(docker: Docker, spec: DockerSpec) -> Result<(Arc<Shared>, Run, bool), StartError> {
    let image_id = resolve_image(&docker, &spec).await?;
    let fingerprint = fingerprint(&spec, &image_id);
    // Holds the state until the container has an address; never connected to.
    let unplaced = Core::new(
        format!("http://container.invalid:{}", spec.port),
        &spec.health,
    )?;
    let shared = Arc::new(Shared {
        docker,
        image_id,
        fingerprint,
        container_id: Mutex::new(String::new()),
        core: RwLock::new(Arc::new(unplaced)),
        restarts: AtomicU32::new(0),
        last_health_check: Mutex::new(None),
        spec,
    });
    let spec = &shared.spec;

    let existing = list(
        &shared.docker,
        &[
            (LABEL_NODE, &spec.node_id),
            (LABEL_PERFORMER, &spec.performer_id),
        ],
    )
    .await
    .map_err(|e| shared.error(e))?;
    let adoptable = existing.iter().find(|c| {
        c.state == Some(ContainerSummaryStateEnum::RUNNING)
            && c.labels
                .as_ref()
                .and_then(|labels| labels.get(LABEL_SPEC))
                .is_some_and(|label| *label == shared.fingerprint)
    });
    if let Some(id) = adoptable.and_then(|c| c.id.clone()) {
        match launch(&shared, &id, Launch::Adopt).await {
            Ok(run) => {
                tracing::info!(container = %id, "adopted the running container");
                for other in existing
                    .iter()
                    .filter_map(|c| c.id.as_ref())
                    .filter(|&c| *c != id)
                {
                    remove_logged(&shared.docker, other).await;
                }
                return Ok((shared, run, true));
            }
            Err(e) => tracing::warn!(
                container = %id,
                error = &e as &(dyn std::error::Error + 'static),
                "the running container is not usable; replacing it"
            ),
        }
    }
    for container in existing.iter().filter_map(|c| c.id.as_ref()) {
        tracing::info!(container = %container, "removing the performer's previous container");
        remove(&shared.docker, container)
            .await
            .map_err(|e| shared.error(e))?;
    }

    let id = create(&shared).await?;
    match launch(&shared, &id, Launch::Start).await {
        Ok(run) => Ok((shared, run, false)),
        Err(e) => {
            remove_logged(&shared.docker, &id).await;
            Err(e)
        }
    }
}

async fn remove_logged(docker: &Docker, id: &str) {
    if let Err(e) = remove(docker, id).await {
        tracing::warn!(container = %id, error = %e, "removing a performer container failed");
    }
}

/// The image's id, pulled first if the policy says so.
async fn resolve_image(docker: &Docker, spec: &DockerSpec) -> Result<String, StartError> {
    let image = spec.image.as_str();
    let error = |source| StartError::Docker {
        name: spec.performer_id.clone(),
        source,
    };
    let is_id = image.starts_with("sha256:");
    if spec.pull == PullPolicy::Always
        && !is_id
        && let Err(e) = pull(docker, image, spec.auth.as_ref()).await
    {
        // A registry outage must not stop a performer whose image is here (nor, at a node
        // restart, turn an adoptable container into a removed one).
        match docker.inspect_image(image).await {
            Ok(inspect) => {
                tracing::warn!(image, error = %e, "pulling failed; using the local image");
                return Ok(inspect.id.unwrap_or_else(|| image.to_owned()));
            }
            Err(_) => return Err(error(e)),
        }
    }
    match docker.inspect_image(image).await {
        Ok(inspect) => return Ok(inspect.id.unwrap_or_else(|| image.to_owned())),
        Err(e) if status(&e) == Some(404) => {}
        Err(e) => return Err(error(failed("inspect image", image)(e))),
    }
    let missing = |why| StartError::ImageMissing {
        name: spec.performer_id.clone(),
        image: image.to_owned(),
        why,
    };
    if is_id {
        return Err(missing("an image id cannot be pulled"));
    }
    match spec.pull {
        PullPolicy::Never => return Err(missing("the pull policy is never")),
        // Just pulled, yet not there: someone removed it in between.
        PullPolicy::Always => return Err(missing("it disappeared right after the pull")),
        PullPolicy::IfNotPresent => {}
    }
    pull(docker, image, spec.auth.as_ref())
        .await
        .map_err(error)?;
    let inspect = docker
        .inspect_image(image)
        .await
        .map_err(|e| error(failed("inspect image", image)(e)))?;
    Ok(inspect.id.unwrap_or_else(|| image.to_owned()))
}

async fn pull(
    docker: &Docker,
    image: &str,
    auth: Option<&RegistryAuth>,
) -> Result<(), DockerError> {
    tracing::info!(image, "pulling the performer image");
    let mut options = CreateImageOptionsBuilder::new().from_image(image);
    // Without a tag or digest the engine pulls every tag of the repository.
    let name = image.rsplit('/').next().unwrap_or(image);
    if !image.contains('@') && !name.contains(':') {
        options = options.tag("latest");
    }
    let credentials = auth.map(|auth| DockerCredentials {
        username: Some(auth.username.clone()),
        password: Some(auth.password.clone()),
        ..Default::default()
    });
    let mut progress = pin!(docker.create_image(Some(options.build()), None, credentials));
    while let Some(step) = progress.next().await {
        step.map_err(failed("pull image", image))?;
    }
    Ok(())
}

/// The `io.avsnode.spec` label: equal for two specs exactly when their containers would be
/// configured alike, so only an identical container is adopted.
fn fingerprint(spec: &DockerSpec, image_id: &str) -> String {
    fn field(hash: &mut Sha256, bytes: &[u8]) {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    fn optional(hash: &mut Sha256, value: Option<&[u8]>) {
        field(hash, &[u8::from(value.is_some())]);
        field(hash, value.unwrap_or_default());
    }
    let mut hash = Sha256::new();
    let h = &mut hash;
    field(h, b"avsnode docker spec v2");
    field(h, image_id.as_bytes());
    field(h, spec.network.as_bytes());
    field(h, &[u8::from(spec.egress)]);
    field(h, &spec.port.to_be_bytes());
    field(h, &(spec.env.len() as u64).to_be_bytes());
    for (name, value) in &spec.env {
        field(h, name.as_bytes());
        field(h, value.as_bytes());
    }
    let hardening = &spec.hardening;
    field(
        h,
        &[
            u8::from(hardening.read_only_rootfs),
            u8::from(hardening.drop_capabilities),
            u8::from(hardening.no_new_privileges),
            u8::from(hardening.private_cgroup_namespace),
        ],
    );
    field(h, &hardening.tmpfs_size.to_be_bytes());
    optional(h, hardening.user.as_deref().map(str::as_bytes));
    let resources = &spec.resources;
    for limit in [
        resources.memory_bytes,
        resources.nano_cpus,
        resources.pids_limit,
    ] {
        optional(h, limit.map(i64::to_be_bytes).as_ref().map(|b| &b[..]));
    }
    hex::encode(hash.finalize())
}

fn container_name(performer_id: &str) -> String {
    format!("avsnode-{performer_id}")
}

/// Creates (does not start) the performer's container.
async fn create(shared: &Shared) -> Result<String, StartError> {
    let spec = &shared.spec;
    let name = container_name(&spec.performer_id);
    let hardening = &spec.hardening;
    let resources = &spec.resources;
    let env = std::iter::once(format!("PORT={}", spec.port))
        .chain(
            spec.env
                .iter()
                .map(|(name, value)| format!("{name}={value}")),
        )
        .collect();
    let labels = HashMap::from(
        [
            (LABEL_NODE, spec.node_id.as_str()),
            (LABEL_AVS, &spec.avs),
            (LABEL_PERFORMER, &spec.performer_id),
            (LABEL_IMAGE, &spec.image),
            (LABEL_IMAGE_ID, &shared.image_id),
            (LABEL_SPEC, &shared.fingerprint),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let body = ContainerCreateBody {
        // The id, not the reference: a tag moved since resolving must not change what runs.
        image: Some(shared.image_id.clone()),
        env: Some(env),
        labels: Some(labels),
        user: hardening.user.clone(),
        exposed_ports: Some(vec![format!("{}/tcp", spec.port)]),
        host_config: Some(HostConfig {
            network_mode: Some(spec.network.clone()),
            // Reached on the private network only.
            publish_all_ports: Some(false),
            port_bindings: None,
            readonly_rootfs: Some(hardening.read_only_rootfs),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                format!("rw,noexec,nosuid,nodev,size={}", hardening.tmpfs_size),
            )])),
            cap_drop: hardening.drop_capabilities.then(|| vec!["ALL".to_owned()]),
            security_opt: hardening
                .no_new_privileges
                .then(|| vec!["no-new-privileges:true".to_owned()]),
            cgroupns_mode: Some(if hardening.private_cgroup_namespace {
                HostConfigCgroupnsModeEnum::PRIVATE
            } else {
                HostConfigCgroupnsModeEnum::HOST
            }),
            memory: resources.memory_bytes,
            // Equal to the memory limit: no swap on top of it.
            memory_swap: resources.memory_bytes,
            nano_cpus: resources.nano_cpus,
            pids_limit: resources.pids_limit,
            // The node restarts performers (with backoff and crash-loop detection), not dockerd.
            restart_policy: Some(DockerRestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    if hardening.user.is_none() {
        warn_if_root(shared).await;
    }
    let options = CreateContainerOptionsBuilder::new().name(&name).build();
    let created = shared
        .docker
        .create_container(Some(options), body)
        .await
        .map_err(|e| shared.error(failed("create container", &name)(e)))?;
    for warning in &created.warnings {
        tracing::warn!(container = %name, warning, "the Docker Engine warned creating the container");
    }
    tracing::info!(container = %created.id, name = %name, image = %spec.image, "created the performer container");
    Ok(created.id)
}

/// Whether an image's `USER` (`name`, `uid`, `uid:gid`; empty when unset) is root.
fn runs_as_root(user: &str) -> bool {
    matches!(
        user.split(':').next().unwrap_or_default(),
        "" | "root" | "0"
    )
}

/// Says so when the image's own user, which the container runs as, is root.
async fn warn_if_root(shared: &Shared) {
    let user = match shared.docker.inspect_image(&shared.image_id).await {
        Ok(image) => image.config.and_then(|c| c.user).unwrap_or_default(),
        Err(_) => return,
    };
    if runs_as_root(&user) {
        tracing::warn!(
            image = %shared.spec.image,
            "the performer runs as root inside its container (the image's user); set \
             [avs.performer] user = \"65534:65534\" (or another non-root uid) unless it needs root"
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Launch {
    /// Start the (created or stopped) container.
    Start,
    /// It is running already.
    Adopt,
}

/// One run of the container, as supervision needs it.
#[derive(Debug)]
struct Run {
    /// Just before it started (or was adopted): Docker events since then are about this run.
    since: SystemTime,
    _logs: LogFollower,
}

/// Starts container `id` (unless adopting it), connects to its address, follows its logs, and
/// waits until it answers SERVING.
async fn launch(shared: &Arc<Shared>, id: &str, how: Launch) -> Result<Run, StartError> {
    let (docker, spec) = (&shared.docker, &shared.spec);
    let since = SystemTime::now();
    if how == Launch::Start {
        docker
            .start_container(id, None)
            .await
            .map_err(|e| shared.error(failed("start container", id)(e)))?;
    }
    *lock(&shared.container_id) = id.to_owned();
    let inspect = docker
        .inspect_container(id, None)
        .await
        .map_err(|e| shared.error(failed("inspect container", id)(e)))?;
    // A container that exits at once has no address by the time it is inspected.
    if let Some(state) = inspect.state.as_ref()
        && state.running == Some(false)
    {
        return Err(StartError::ContainerExited {
            name: spec.performer_id.clone(),
            image: spec.image.clone(),
            exit: ContainerExit {
                code: state.exit_code,
                oom_killed: state.oom_killed.unwrap_or(false),
            },
        });
    }
    let networks = inspect
        .network_settings
        .and_then(|settings| settings.networks)
        .unwrap_or_default();
    let address = networks
        .get(&spec.network)
        // A network given by id is listed under its name; then it is the only one.
        .or_else(|| networks.values().next().filter(|_| networks.len() == 1))
        .and_then(|endpoint| endpoint.ip_address.clone())
        .filter(|address| !address.is_empty())
        .ok_or_else(|| StartError::NoAddress {
            name: spec.performer_id.clone(),
            container: id.to_owned(),
            network: spec.network.clone(),
        })?;
    let core = shared
        .core()
        .reconnect(format!("http://{address}:{}", spec.port), &spec.health)?;
    *shared.core.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(core);
    let core = shared.core();
    let mut logs = follow_logs(docker, id, spec.log_lines_per_second, since);

    let health = &spec.health;
    let deadline = Instant::now() + health.startup_timeout;
    tokio::select! {
        exit = exited(docker, id) => {
            // Its last words explain the exit: let them reach the log.
            logs.drain(Duration::from_secs(1)).await;
            Err(StartError::ContainerExited {
                name: spec.performer_id.clone(),
                image: spec.image.clone(),
                exit,
            })
        }
        ready = until_healthy(&core.health, health, health.startup_poll, Some(deadline)) => {
            match ready {
                Ok(()) => {
                    shared.healthy_now();
                    Ok(Run { since, _logs: logs })
                }
                Err(last) => Err(StartError::ContainerNeverHealthy {
                    name: spec.performer_id.clone(),
                    image: spec.image.clone(),
                    timeout: health.startup_timeout,
                    last,
                }),
            }
        }
    }
}

/// Completes when the container is not running (at once if it is not).
async fn exited(docker: &Docker, id: &str) -> ContainerExit {
    let options = WaitContainerOptionsBuilder::new()
        .condition("not-running")
        .build();
    let mut wait = pin!(docker.wait_container(id, Some(options)));
    let code = match wait.next().await {
        Some(Ok(answer)) => Some(answer.status_code),
        // bollard reports a non-zero exit as an error.
        Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Some(code),
        Some(Err(e)) if status(&e) == Some(404) => None,
        other => {
            // Cannot watch: the health checks will notice instead.
            if let Some(Err(e)) = other {
                tracing::debug!(container = %id, error = %e, "waiting for the container failed");
            }
            return std::future::pending().await;
        }
    };
    let oom_killed = match docker.inspect_container(id, None).await {
        Ok(inspect) => inspect
            .state
            .and_then(|state| state.oom_killed)
            .unwrap_or(false),
        Err(_) => false,
    };
    ContainerExit { code, oom_killed }
}

/// Whether the container is running now.
async fn running(docker: &Docker, id: &str) -> bool {
    docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|inspect| inspect.state)
        .and_then(|state| state.running)
        .unwrap_or(false)
}

/// Kills the container (if running) and waits until it has stopped.
async fn kill(docker: &Docker, id: &str) {
    match docker.kill_container(id, None).await {
        // 409: not running; 404: gone.
        Err(e) if !matches!(status(&e), Some(404 | 409)) => tracing::warn!(
            container = %id,
            error = %failed("kill container", id)(e),
            "killing the performer container failed"
        ),
        _ => {}
    }
    // The kill is only sent: a start before the container has stopped would do nothing.
    if tokio::time::timeout(Duration::from_secs(10), exited(docker, id))
        .await
        .is_err()
    {
        tracing::warn!(container = %id, "the performer container did not stop within 10 s of SIGKILL");
    }
}

/// Watches a healthy container; restarts it when it dies or fails its health checks; gives up
/// on a crash loop, leaving the container stopped.
async fn supervise(shared: Arc<Shared>, mut run: Run) {
    let docker = &shared.docker;
    let mut restarts = Restarts::new(shared.spec.restart.clone());
    loop {
        let (core, id) = (shared.core(), shared.container_id());
        tokio::select! {
            exit = died(docker, &id, run.since) => {
                let reason = format!("the container stopped ({exit})");
                core.set_state(PerformerState::Restarting, Some(&reason));
            }
            failure = until_unhealthy(&core.health, &shared.spec.health, || shared.healthy_now()) => {
                core.set_state(PerformerState::Unhealthy, Some(&failure));
            }
        }
        kill(docker, &id).await;

        run = loop {
            if let Err(crash_loop) = restarts.next(&core, &shared.restarts).await {
                core.set_state(PerformerState::Failed, Some(&crash_loop));
                return;
            }
            match relaunch(&shared).await {
                Ok(run) => {
                    restarts.succeeded();
                    break run;
                }
                Err(e) => {
                    restarts.failed();
                    tracing::warn!(
                        error = &e as &(dyn std::error::Error + 'static),
                        "restarting the performer failed"
                    );
                    kill(docker, &shared.container_id()).await;
                }
            }
        };
        shared.core().set_state(PerformerState::Healthy, None);
    }
}

/// Starts the container again, or a new one if it is gone.
async fn relaunch(shared: &Arc<Shared>) -> Result<Run, StartError> {
    let id = shared.container_id();
    let id = match shared.docker.inspect_container(&id, None).await {
        Ok(_) => id,
        Err(e) if status(&e) == Some(404) => {
            tracing::warn!(container = %id, "the performer container is gone; creating a new one");
            create(shared).await?
        }
        Err(e) => return Err(shared.error(failed("inspect container", &id)(e))),
    };
    launch(shared, &id, Launch::Start).await
}

/// Completes when Docker reports that this run of the container died (`die`, after `oom` if the
/// kernel killed it for memory). Re-subscribes if the event stream breaks.
async fn died(docker: &Docker, id: &str, since: SystemTime) -> ContainerExit {
    let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
    // Replays from the start of this run: a death before the subscription is not missed.
    let since = format!("{}.{:09}", since.as_secs(), since.subsec_nanos());
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("container", vec![id]),
        ("event", vec!["die", "oom"]),
    ]);
    let mut oom_killed = false;
    loop {
        let options = EventsOptionsBuilder::new()
            .since(&since)
            .filters(&filters)
            .build();
        let mut events = pin!(docker.events(Some(options)));
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(e) => {
                    tracing::warn!(error = %e, "the Docker event stream failed; subscribing again");
                    break;
                }
            };
            match event.action.as_deref() {
                Some("oom") => oom_killed = true,
                // Docker stamps the previous run's `die` after the state change we waited for:
                // it may be replayed, and then the container is running.
                Some("die") if running(docker, id).await => oom_killed = false,
                Some("die") => {
                    let code = event
                        .actor
                        .and_then(|actor| actor.attributes)
                        .and_then(|attributes| attributes.get("exitCode")?.parse().ok());
                    return ContainerExit { code, oom_killed };
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The task copying one run's output into the log; stopped when dropped.
#[derive(Debug)]
struct LogFollower(Option<JoinHandle<()>>);

impl LogFollower {
    /// Waits (at most `within`) for the output of a stopped container to be copied.
    async fn drain(&mut self, within: Duration) {
        if let Some(task) = &mut self.0 {
            let _ = tokio::time::timeout(within, task).await;
        }
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Follows the container's stdout and stderr from `since` until it stops.
fn follow_logs(docker: &Docker, id: &str, lines_per_second: u32, since: SystemTime) -> LogFollower {
    if lines_per_second == 0 {
        return LogFollower(None);
    }
    let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
    // The API takes whole seconds: the timestamps drop the previous run's last lines.
    let options = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(i32::try_from(since.as_secs()).unwrap_or(0))
        .build();
    let logs = docker.logs(id, Some(options));
    let mut limit = LineLimit::new(lines_per_second);
    let task = tokio::spawn(
        async move {
            let mut logs = pin!(logs);
            let mut report = tokio::time::interval(Duration::from_secs(1));
            report.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    output = logs.next() => match output {
                        Some(Ok(output)) => forward(&output, since, &mut limit),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "following the container's output failed");
                            break;
                        }
                        None => break,
                    },
                    _ = report.tick() => limit.report(),
                }
            }
            limit.report();
        }
        .in_current_span(),
    );
    LogFollower(Some(task))
}

/// Logs one entry of the container's output (one line, prefixed with Docker's timestamp) unless it
/// is older than `since` or over the rate limit.
fn forward(output: &LogOutput, since: Duration, limit: &mut LineLimit) {
    let (stream, bytes) = match output {
        LogOutput::StdOut { message } => ("stdout", message),
        LogOutput::StdErr { message } => ("stderr", message),
        LogOutput::Console { message } => ("console", message),
        LogOutput::StdIn { .. } => return,
    };
    let text = String::from_utf8_lossy(bytes);
    let text = match text.split_once(' ') {
        Some((stamp, rest)) => match parse_timestamp(stamp) {
            Some(at) if at < since => return,
            Some(_) => rest,
            None => &text,
        },
        None => &text,
    };
    for line in text.lines().filter(|line| !line.is_empty()) {
        if !limit.admit() {
            continue;
        }
        if stream == "stderr" {
            tracing::warn!(stream, "{line}");
        } else {
            tracing::info!(stream, "{line}");
        }
    }
}

/// The time since the Unix epoch of an RFC 3339 timestamp as Docker writes them
/// (`2006-01-02T15:04:05.999999999Z`, or with a `±hh:mm` offset).
fn parse_timestamp(stamp: &str) -> Option<Duration> {
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = stamp.get(from..to)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, c)| stamp.as_bytes().get(at) != Some(&c))
    {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut rest = stamp.get(19..)?;
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let scale = 10u32.checked_pow(9u32.checked_sub(u32::try_from(digits).ok()?)?)?;
        nanos = fraction[..digits].parse::<u32>().ok()? * scale;
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
        {
            let digit = |b: &u8| i64::from(b - b'0');
            let minutes = (digit(h1) * 10 + digit(h2)) * 60 + digit(m1) * 10 + digit(m2);
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm), years starting in March.
    let y = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (y.div_euclid(400), y.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    Some(Duration::new(u64::try_from(seconds).ok()?, nanos))
}

/// A token bucket for log lines: `rate` per second, bursts of twice that; counts what it drops.
#[derive(Debug)]
struct LineLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl LineLimit {
    fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            refilled: Instant::now(),
            dropped: 0,
        }
    }

    fn admit(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Logs (and resets) the count of dropped lines, if any; called once a second.
    fn report(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(dropped = self.dropped, "performer log lines dropped");
            self.dropped = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec() -> DockerSpec {
        DockerSpec {
            node_id: "node".into(),
            avs: "0x00000000000000000000000000000000000000aa".into(),
            performer_id: "p1".into(),
            image: "example:1".into(),
            pull: PullPolicy::default(),
            auth: Some(RegistryAuth {
                username: "me".into(),
                password: "hunter2".into(),
            }),
            network: "avsnode".into(),
            egress: true,
            port: 8080,
            env: vec![("API_KEY".into(), "s3cret".into())],
            hardening: Hardening::default(),
            resources: Resources::default(),
            health: HealthPolicy::default(),
            restart: RestartPolicy::default(),
            log_lines_per_second: 50,
        }
    }

    #[test]
    fn pull_policy_round_trips() {
        for policy in [
            PullPolicy::Always,
            PullPolicy::IfNotPresent,
            PullPolicy::Never,
        ] {
            assert_eq!(policy.to_string().parse::<PullPolicy>().unwrap(), policy);
        }
        assert_eq!(PullPolicy::default(), PullPolicy::IfNotPresent);
        let err = "sometimes".parse::<PullPolicy>().unwrap_err();
        assert!(err.to_string().contains("if-not-present"), "{err}");
    }

    #[test]
    fn debug_hides_secrets() {
        let debug = format!("{:?}", spec());
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(
            debug.contains("API_KEY") && debug.contains("<redacted>"),
            "{debug}"
        );
    }

    #[test]
    fn an_unset_or_zero_image_user_is_root() {
        for root in ["", "root", "0", "0:0", "root:root"] {
            assert!(runs_as_root(root), "{root:?}");
        }
        for other in ["65534", "65534:65534", "nobody", "1000:0"] {
            assert!(!runs_as_root(other), "{other:?}");
        }
    }

    #[test]
    fn fingerprint_changes_with_the_container_config_only() {
        let base = fingerprint(&spec(), "sha256:aa");
        assert_eq!(base, fingerprint(&spec(), "sha256:aa"));
        assert_eq!(base.len(), 64);
        assert_ne!(base, fingerprint(&spec(), "sha256:bb"));
        let changes: [fn(&mut DockerSpec); 8] = [
            |s| s.env[0].1 = "other".into(),
            |s| s.port = 9090,
            |s| s.hardening.user = Some("65534".into()),
            |s| s.hardening.read_only_rootfs = false,
            |s| s.resources.pids_limit = None,
            |s| s.network = "other".into(),
            |s| s.egress = false,
            |s| s.hardening.private_cgroup_namespace = false,
        ];
        for change in changes {
            let mut changed = spec();
            change(&mut changed);
            assert_ne!(base, fingerprint(&changed, "sha256:aa"), "{changed:?}");
        }
        let mut health_only = spec();
        health_only.health.interval = Duration::from_secs(1);
        health_only.log_lines_per_second = 1;
        assert_eq!(base, fingerprint(&health_only, "sha256:aa"));
    }

    #[test]
    fn parses_docker_timestamps() {
        let at = |stamp| parse_timestamp(stamp).map(|d| (d.as_secs(), d.subsec_nanos()));
        assert_eq!(at("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            at("2026-11-22T13:37:37.362071Z"),
            Some((1_795_354_657, 362_071_000))
        );
        assert_eq!(at("2000-02-29T23:59:59.000000001Z"), Some((951_868_799, 1)));
        assert_eq!(
            at("2026-11-22T15:37:37.5+02:00"),
            Some((1_795_354_657, 500_000_000))
        );
        assert_eq!(at("2026-11-22T10:37:37-03:00"), Some((1_795_354_657, 0)));
        for bad in [
            "",
            "hello",
            "2026-11-22 13:37:37Z",
            "2026-11-22T13:37:37",
            "2026-1x-22T13:37:37Z",
        ] {
            assert_eq!(at(bad), None, "{bad}");
        }
    }

    #[test]
    fn line_limit_allows_bursts_then_the_rate() {
        let mut limit = LineLimit::new(5);
        let admitted = (0..100).filter(|_| limit.admit()).count();
        assert_eq!(admitted, 10);
        assert_eq!(limit.dropped, 90);
        limit.report();
        assert_eq!(limit.dropped, 0);
    }
}
