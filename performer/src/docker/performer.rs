//! The docker performer: the handle the node holds, and what it answers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use avsnode_proto::performer::{TaskRequest, TaskResponse};
use bollard::query_parameters::StopContainerOptionsBuilder;
use tracing::Instrument;

use super::STOP_GRACE_SECONDS;
use super::container::{Shared, begin, lock};
use super::error::{failed, status};
use super::runtime::{DockerRuntime, remove};
use super::spec::DockerSpec;
use super::supervise::supervise;
use crate::client::Supervisor;
use crate::{ExecuteError, Performer, PerformerState, StartError};

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
    pub(super) shared: Arc<Shared>,
    pub(super) supervisor: Supervisor,
    pub(super) adopted: bool,
    pub(super) span: tracing::Span,
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
