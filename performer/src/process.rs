//! The `process` runtime: a local executable started with `PORT`, supervised and restarted.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use avsnode_proto::performer::{TaskRequest, TaskResponse};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tracing::Instrument;

use crate::client::{Core, Supervisor};
use crate::health::{until_healthy, until_unhealthy};
use crate::restart::{RestartPolicy, Restarts};
use crate::{ExecuteError, HealthPolicy, Performer, PerformerState, StartError};

/// What to run for a `process` performer.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Names the performer in logs and errors (for example the AVS address).
    pub name: String,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// The performer's whole environment besides `PORT`: the node's own is not inherited, so a
    /// performer cannot read what the node was started with (password and PIN file paths, cloud
    /// credentials, `AVSNODE_…` overrides).
    pub env: Vec<(String, String)>,
    /// The loopback port it must listen on, passed as `PORT`; 0 picks a free one.
    pub port: u16,
    /// Health checks.
    pub health: HealthPolicy,
    /// Restarts.
    pub restart: RestartPolicy,
}

/// A local executable serving `PerformerService` on `127.0.0.1:PORT`, kept running by a
/// supervisor task: restarted when it exits or fails `failure_threshold` health checks in a row,
/// with exponential backoff, until it crash-loops.
///
/// Its output is forwarded to the node's log, one line per event. Dropping it (or
/// [`Performer::shutdown`]) kills the process.
#[derive(Debug)]
pub struct ProcessPerformer {
    shared: Arc<Shared>,
    supervisor: Supervisor,
}

#[derive(Debug)]
struct Shared {
    core: Core,
    spec: ProcessSpec,
    pid: AtomicU32,
    restarts: AtomicU32,
}

impl ProcessPerformer {
    /// Starts the program and returns once it answers SERVING.
    ///
    /// Fails if it cannot be run, exits first, or is not SERVING within `health.startup_timeout`.
    pub async fn start(mut spec: ProcessSpec) -> Result<Self, StartError> {
        if spec.port == 0 {
            spec.port = free_port().await.map_err(|source| StartError::NoPort {
                name: spec.name.clone(),
                source,
            })?;
        }
        let core = Core::new(format!("http://127.0.0.1:{}", spec.port), &spec.health)?;
        let span = tracing::info_span!("performer", name = %spec.name, runtime = "process");
        let shared = Arc::new(Shared {
            core,
            spec,
            pid: AtomicU32::new(0),
            restarts: AtomicU32::new(0),
        });
        let child = launch(&shared).instrument(span.clone()).await?;
        span.in_scope(|| shared.core.set_state(PerformerState::Healthy, None));
        let supervisor = Supervisor::spawn(span, supervise(shared.clone(), child));
        Ok(Self { shared, supervisor })
    }

    /// Where it listens, e.g. `http://127.0.0.1:41234`.
    pub fn endpoint(&self) -> String {
        self.shared.core.endpoint.clone()
    }

    /// How many times it has been restarted (for metrics and tests).
    pub fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::Relaxed)
    }

    /// The running process's id, if one is running.
    pub fn pid(&self) -> Option<u32> {
        Some(self.shared.pid.load(Ordering::Relaxed)).filter(|&pid| pid != 0)
    }
}

#[async_trait::async_trait]
impl Performer for ProcessPerformer {
    fn state(&self) -> PerformerState {
        self.shared.core.state()
    }

    fn restarts(&self) -> u32 {
        ProcessPerformer::restarts(self)
    }

    fn runtime(&self) -> &'static str {
        "process"
    }

    async fn execute(
        &self,
        request: TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResponse, ExecuteError> {
        self.shared.core.execute(request, timeout).await
    }

    async fn shutdown(&self) {
        self.supervisor.stop().await;
        self.shared.pid.store(0, Ordering::Relaxed);
        self.shared.core.set_stopped();
    }
}

/// Asks the OS for a free loopback port. Another process could take it before the performer
/// binds it; the performer then fails to start with a clear error.
async fn free_port() -> std::io::Result<u16> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    Ok(listener.local_addr()?.port())
}

/// Spawns the program and waits for its first SERVING check. The child is killed (dropped) if it
/// does not get there.
async fn launch(shared: &Shared) -> Result<Child, StartError> {
    let spec = &shared.spec;
    let mut child = Command::new(&spec.program)
        .args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .env("PORT", spec.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| StartError::Spawn {
            name: spec.name.clone(),
            program: spec.program.clone(),
            source,
        })?;
    shared.pid.store(child.id().unwrap_or(0), Ordering::Relaxed);
    forward_lines(child.stdout.take(), "stdout");
    forward_lines(child.stderr.take(), "stderr");

    let deadline = Instant::now() + spec.health.startup_timeout;
    let health = &spec.health;
    tokio::select! {
        exited = child.wait() => Err(match exited {
            Ok(status) => StartError::Exited {
                name: spec.name.clone(),
                program: spec.program.clone(),
                status,
            },
            Err(source) => StartError::Spawn {
                name: spec.name.clone(),
                program: spec.program.clone(),
                source,
            },
        }),
        ready = until_healthy(&shared.core.health, health, health.startup_poll, Some(deadline)) => {
            match ready {
                Ok(()) => Ok(child),
                Err(last) => Err(StartError::NeverHealthy {
                    name: spec.name.clone(),
                    program: spec.program.clone(),
                    timeout: health.startup_timeout,
                    last,
                }),
            }
        }
    }
}

/// Copies a child's output into the log, line by line, until it closes.
fn forward_lines(output: Option<impl AsyncRead + Unpin + Send + 'static>, stream: &'static str) {
    if let Some(output) = output {
        tokio::spawn(
            async move {
                let mut lines = BufReader::new(output).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(stream, "{line}");
                }
            }
            .in_current_span(),
        );
    }
}

/// Watches a healthy child; restarts it when it exits or fails its health checks; gives up on a
/// crash loop.
async fn supervise(shared: Arc<Shared>, mut child: Child) {
    let (core, spec) = (&shared.core, &shared.spec);
    let mut restarts = Restarts::new(spec.restart.clone());
    loop {
        tokio::select! {
            exited = child.wait() => {
                let reason = match exited {
                    Ok(status) => format!("the process exited ({status})"),
                    Err(e) => format!("waiting for the process failed: {e}"),
                };
                core.set_state(PerformerState::Restarting, Some(&reason));
            }
            failure = until_unhealthy(&core.health, &spec.health, || {}) => {
                core.set_state(PerformerState::Unhealthy, Some(&failure));
            }
        }
        // Reaps an exited child; kills an unhealthy one.
        if let Err(e) = child.kill().await {
            tracing::warn!(error = %e, "killing the performer process failed");
        }
        shared.pid.store(0, Ordering::Relaxed);

        let relaunched = restarts
            .relaunch(
                core,
                &shared.restarts,
                async || launch(&shared).await,
                async || {},
            )
            .await;
        let Some(next) = relaunched else { return };
        child = next;
        core.set_state(PerformerState::Healthy, None);
    }
}
