//! What to run: the image, its pull policy and registry login, hardening and resources.

use std::fmt;
use std::str::FromStr;

use super::error::DockerError;
use crate::HealthPolicy;
use crate::restart::RestartPolicy;

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
