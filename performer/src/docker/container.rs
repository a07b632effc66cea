//! One performer's container: created (or adopted) hardened and labelled, launched, health-checked.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerSummaryStateEnum, HostConfig, HostConfigCgroupnsModeEnum,
    RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, EventsOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_stream::StreamExt;

use super::error::{DockerError, failed, status};
use super::logs::{LogFollower, follow_logs};
use super::runtime::{ContainerExit, list, remove};
use super::spec::{DockerSpec, PullPolicy, RegistryAuth};
use super::{LABEL_AVS, LABEL_IMAGE, LABEL_IMAGE_ID, LABEL_NODE, LABEL_PERFORMER, LABEL_SPEC};
use crate::StartError;
use crate::client::Core;
use crate::health::until_healthy;

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) docker: Docker,
    pub(super) spec: DockerSpec,
    pub(super) image_id: String,
    pub(super) fingerprint: String,
    pub(super) container_id: Mutex<String>,
    /// Replaced at each (re)start: the container's address may change, and a connection to its
    /// previous run is dead without knowing it. Every core shares one state.
    pub(super) core: RwLock<Arc<Core>>,
    pub(super) restarts: AtomicU32,
    pub(super) last_health_check: Mutex<Option<SystemTime>>,
}

impl Shared {
    pub(super) fn core(&self) -> Arc<Core> {
        self.core
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn container_id(&self) -> String {
        lock(&self.container_id).clone()
    }

    pub(super) fn healthy_now(&self) {
        *lock(&self.last_health_check) = Some(SystemTime::now());
    }

    pub(super) fn error(&self, source: DockerError) -> StartError {
        StartError::Docker {
            name: self.spec.performer_id.clone(),
            source,
        }
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Finds or starts the container; returns once it is SERVING.
pub(super) async fn begin(
    docker: Docker,
    spec: DockerSpec,
) -> Result<(Arc<Shared>, Run, bool), StartError> {
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

pub(super) async fn remove_logged(docker: &Docker, id: &str) {
    if let Err(e) = remove(docker, id).await {
        tracing::warn!(container = %id, error = %e, "removing a performer container failed");
    }
}

/// The image's id, pulled first if the policy says so.
pub(super) async fn resolve_image(
    docker: &Docker,
    spec: &DockerSpec,
) -> Result<String, StartError> {
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

pub(super) async fn pull(
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
pub(super) fn fingerprint(spec: &DockerSpec, image_id: &str) -> String {
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

pub(super) fn container_name(performer_id: &str) -> String {
    format!("avsnode-{performer_id}")
}

/// Creates (does not start) the performer's container.
pub(super) async fn create(shared: &Shared) -> Result<String, StartError> {
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
pub(super) fn runs_as_root(user: &str) -> bool {
    matches!(
        user.split(':').next().unwrap_or_default(),
        "" | "root" | "0"
    )
}

/// Says so when the image's own user, which the container runs as, is root.
pub(super) async fn warn_if_root(shared: &Shared) {
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
pub(super) enum Launch {
    /// Start the (created or stopped) container.
    Start,
    /// It is running already.
    Adopt,
}

/// One run of the container, as supervision needs it.
#[derive(Debug)]
pub(super) struct Run {
    /// Just before it started (or was adopted): Docker events since then are about this run.
    pub(super) since: SystemTime,
    pub(super) _logs: LogFollower,
}

/// Starts container `id` (unless adopting it), connects to its address, follows its logs, and
/// waits until it answers SERVING.
pub(super) async fn launch(shared: &Arc<Shared>, id: &str, how: Launch) -> Result<Run, StartError> {
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
pub(super) async fn exited(docker: &Docker, id: &str) -> ContainerExit {
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
pub(super) async fn running(docker: &Docker, id: &str) -> bool {
    docker
        .inspect_container(id, None)
        .await
        .ok()
        .and_then(|inspect| inspect.state)
        .and_then(|state| state.running)
        .unwrap_or(false)
}

/// Kills the container (if running) and waits until it has stopped.
pub(super) async fn kill(docker: &Docker, id: &str) {
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

/// Completes when Docker reports that this run of the container died (`die`, after `oom` if the
/// kernel killed it for memory). Re-subscribes if the event stream breaks.
pub(super) async fn died(docker: &Docker, id: &str, since: SystemTime) -> ContainerExit {
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
