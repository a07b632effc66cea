//! Performer runtimes: where an AVS's tasks actually execute.
//!
//! Owns (DESIGN §7) the runtime interface, [`Performer`], and its implementations — `docker`
//! ([`DockerPerformer`]: containers managed through the Docker Engine API with bollard: private
//! bridge network, no published ports, hardened by default, labelled for adoption), `process`
//! ([`ProcessPerformer`]: a local executable started with `PORT`, supervised and restarted) and
//! `remote` ([`RemotePerformer`]: an endpoint the node does not manage, health-checked only). Also
//! owns health checks (`grpc.health.v1.Health/Check` must say SERVING, see [`HealthPolicy`]),
//! restarts with capped backoff and crash-loop detection ([`RestartPolicy`]), and the gRPC client
//! for the Hourglass `PerformerService`.
//!
//! Does not own: which performer serves which task (the node's pipeline), checking what a
//! performer returns (echoed task id, output size: the node), or the management API (the node).
//! The runtime trait lives here with its implementations, because the node depends on this crate
//! and not the other way round.

mod client;
mod docker;
mod health;
mod process;
mod remote;
mod restart;
mod rollout;
mod slot;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use avsnode_proto::performer::{TaskRequest, TaskResponse};

pub use docker::{
    ContainerExit, DockerError, DockerPerformer, DockerRuntime, DockerSpec, Hardening,
    OwnedContainer, PullPolicy, RegistryAuth, Resources,
};
pub use health::{HealthCheckError, HealthPolicy};
pub use process::{ProcessPerformer, ProcessSpec};
pub use remote::{RemotePerformer, RemoteSpec};
pub use restart::RestartPolicy;
pub use rollout::{drain_and_remove, retire};
pub use slot::PerformerSlot;

/// Whether `name` may name a performer's environment variable: `[A-Za-z_][A-Za-z0-9_]*`, and not
/// `PORT`, which the node sets. The one check behind the configuration, the management API and
/// `avsnode performer deploy`.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let well_formed = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !well_formed {
        return Err(format!(
            "env name {name:?} is not [A-Za-z_][A-Za-z0-9_]* (a letter or _, then letters, digits, _)"
        ));
    }
    if name == "PORT" {
        return Err("env name PORT is set by the node (the port the performer listens on)".into());
    }
    Ok(())
}

/// Where a performer stands, as the node and its metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PerformerState {
    /// Started, not yet answered a health check.
    Starting,
    /// Passing health checks: takes tasks.
    Healthy,
    /// Failing health checks (a remote endpoint that is down, or a process or container about to
    /// be restarted).
    Unhealthy,
    /// The process or container exited or was killed and is being restarted.
    Restarting,
    /// Given up: crash loop, or shut down. Needs an operator (or a deploy).
    Failed,
}

impl fmt::Display for PerformerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Starting => "starting",
            Self::Healthy => "healthy",
            Self::Unhealthy => "unhealthy",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
        })
    }
}

/// Why a task could not be executed. Maps one to one onto the gRPC code the node answers with
/// (DESIGN §3.1 step 9).
#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    /// Not healthy, restarting, failed, or unreachable. Retryable (UNAVAILABLE).
    #[error("performer unavailable: {0}")]
    Unavailable(String),
    /// No answer within the time the task had left (DEADLINE_EXCEEDED).
    #[error("performer did not answer before the deadline")]
    DeadlineExceeded,
    /// The performer's own error, to pass through unchanged (INTERNAL stays INTERNAL). Also an
    /// answer that is not a `TaskResponse` (a message that does not decode, a body that is not
    /// gRPC-framed): tonic makes that INTERNAL on this side, but it is the performer's fault.
    #[error("performer failed the task ({:?}): {}", .0.code(), describe(.0))]
    Status(tonic::Status),
}

/// Why a performer could not be started or connected.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The endpoint is not an `http://HOST:PORT` URI.
    #[error("invalid performer endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No free loopback port could be found for the process.
    #[error("performer {name}: no free loopback port")]
    NoPort {
        /// The performer's name.
        name: String,
        /// The bind error.
        #[source]
        source: std::io::Error,
    },
    /// The program could not be started (or waited for).
    #[error("performer {name}: cannot run {}", program.display())]
    Spawn {
        /// The performer's name.
        name: String,
        /// The program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The program exited before its first SERVING health check.
    #[error("performer {name}: {} exited ({status}) before becoming healthy", program.display())]
    Exited {
        /// The performer's name.
        name: String,
        /// The program.
        program: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
    },
    /// The program ran but never answered SERVING within the startup timeout.
    #[error(
        "performer {name}: {} never became healthy within {timeout:?}",
        program.display()
    )]
    NeverHealthy {
        /// The performer's name.
        name: String,
        /// The program.
        program: PathBuf,
        /// The startup timeout.
        timeout: Duration,
        /// The last failed health check.
        #[source]
        last: HealthCheckError,
    },
    /// A Docker Engine request failed.
    #[error("performer {name}: {source}")]
    Docker {
        /// The performer's name (its id).
        name: String,
        /// The request and the engine's answer.
        #[source]
        source: DockerError,
    },
    /// The image is not present locally and may not be pulled.
    #[error("performer {name}: image {image} is not present locally and {why}")]
    ImageMissing {
        /// The performer's name (its id).
        name: String,
        /// The image reference.
        image: String,
        /// Why it is not pulled (for example "the pull policy is never").
        why: &'static str,
    },
    /// The container has no address on the performer network.
    #[error("performer {name}: container {container} has no address on network {network}")]
    NoAddress {
        /// The performer's name (its id).
        name: String,
        /// The container id.
        container: String,
        /// The network.
        network: String,
    },
    /// The container stopped before its first SERVING health check.
    #[error("performer {name}: the container of {image} stopped ({exit}) before becoming healthy")]
    ContainerExited {
        /// The performer's name (its id).
        name: String,
        /// The image reference.
        image: String,
        /// How it stopped.
        exit: ContainerExit,
    },
    /// The container ran but never answered SERVING within the startup timeout.
    #[error("performer {name}: the container of {image} never became healthy within {timeout:?}")]
    ContainerNeverHealthy {
        /// The performer's name (its id).
        name: String,
        /// The image reference.
        image: String,
        /// The startup timeout.
        timeout: Duration,
        /// The last failed health check.
        #[source]
        last: HealthCheckError,
    },
}

/// A status's message and its root cause: for transport failures tonic says "tcp connect error"
/// and keeps "Connection refused" in the source chain.
fn describe(status: &tonic::Status) -> String {
    let mut message = status.message().to_owned();
    let mut cause = std::error::Error::source(status);
    while let Some(next) = cause.and_then(std::error::Error::source) {
        cause = Some(next);
    }
    if let Some(cause) = cause.map(ToString::to_string)
        && !message.contains(&cause)
    {
        message = format!("{message}: {cause}");
    }
    message
}

/// A running performer, whatever its runtime: what the node's pipeline executes tasks on.
#[async_trait::async_trait]
pub trait Performer: Send + Sync + fmt::Debug {
    /// The current state. Only a [`PerformerState::Healthy`] performer takes tasks.
    fn state(&self) -> PerformerState;

    /// Runs one task, giving the performer at most `timeout`.
    ///
    /// Returns [`ExecuteError::Unavailable`] at once when the performer is not healthy (never
    /// waits for the deadline). Calls run concurrently over one shared HTTP/2 connection.
    async fn execute(
        &self,
        request: TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResponse, ExecuteError>;

    /// How many times the runtime has restarted the performer (0 for unmanaged runtimes).
    fn restarts(&self) -> u32 {
        0
    }

    /// The runtime's name for metrics and logs (`process`, `remote`, …).
    fn runtime(&self) -> &'static str;

    /// Stops supervising (and, for a managed runtime, stops the performer). Afterwards the state is
    /// [`PerformerState::Failed`] and `execute` returns `Unavailable`.
    async fn shutdown(&self);
}

#[cfg(test)]
mod env_name_tests {
    use super::check_env_name;

    #[test]
    fn env_names_are_shell_identifiers_and_not_port() {
        for good in ["A", "_", "API_KEY", "a1", "_X_9"] {
            assert_eq!(check_env_name(good), Ok(()), "{good}");
        }
        for bad in ["", "1A", "A-B", "A=B", "A B", "É", "PORT", "A\n"] {
            assert!(check_env_name(bad).is_err(), "{bad:?}");
        }
    }
}
