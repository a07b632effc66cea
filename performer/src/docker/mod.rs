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

mod container;
mod error;
mod logs;
mod performer;
mod runtime;
mod spec;
mod supervise;
#[cfg(test)]
mod tests;

pub use error::DockerError;
pub use performer::DockerPerformer;
pub use runtime::{ContainerExit, DockerRuntime, OwnedContainer};
pub use spec::{DockerSpec, Hardening, PullPolicy, RegistryAuth, Resources};

const LABEL_NODE: &str = "io.avsnode.node";
const LABEL_AVS: &str = "io.avsnode.avs";
const LABEL_PERFORMER: &str = "io.avsnode.performer";
const LABEL_IMAGE: &str = "io.avsnode.image";
const LABEL_IMAGE_ID: &str = "io.avsnode.image-id";
const LABEL_SPEC: &str = "io.avsnode.spec";

/// Grace period between SIGTERM and SIGKILL when a performer is removed.
const STOP_GRACE_SECONDS: i32 = 10;
