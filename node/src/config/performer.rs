//! `[avs.performer]`: the runtime that executes an AVS's tasks.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use avsnode_performer::PullPolicy;
use avsnode_signing::definition::duration;
use serde::Deserialize;

use super::{Parsed, defaults};

/// `[avs.performer]`: the runtime that executes this AVS's tasks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "runtime", rename_all = "lowercase", deny_unknown_fields)]
pub enum PerformerConfig {
    /// A local executable the node starts with `PORT` set, health-checks and restarts.
    Process {
        /// The executable (relative paths are relative to the config file).
        command: PathBuf,
        /// Its arguments.
        #[serde(default)]
        args: Vec<String>,
        /// Extra environment variables.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Loopback port to give it (default 0: pick a free one).
        #[serde(default)]
        port: u16,
    },
    /// An endpoint the node does not manage (e.g. a Kubernetes Service); health-checked only.
    Remote {
        /// `http://host:port`.
        endpoint: String,
    },
    /// A container the node runs through the Docker Engine API, hardened, on a private network.
    Docker(Box<DockerPerformerConfig>),
}

/// `[avs.performer]` with `runtime = "docker"`. Every hardening switch is on unless turned off
/// here. `Debug` shows env names, never values.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerPerformerConfig {
    /// The image: `name:tag`, `name@sha256:…`, or a local image id `sha256:…`. Absent: the AVS
    /// has no performer until one is deployed through the management API. A deployment made
    /// through the API replaces this image until the next deploy.
    #[serde(default)]
    pub image: Option<String>,
    /// `always`, `if-not-present` (default) or `never` (the image must already be present).
    #[serde(default = "defaults::pull")]
    pub pull: Parsed<PullPolicy>,
    /// Registry credentials for pulls.
    #[serde(default)]
    pub registry_auth: Option<RegistryAuthConfig>,
    /// The container port the performer listens on (default 8080, as Hourglass images do; also
    /// passed as `PORT`). Never published on the host.
    #[serde(default = "defaults::performer_port")]
    pub port: u16,
    /// Environment variables, passed when the container is created; never logged or written to
    /// the ledger.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Run as this user (`uid[:gid]` or a name in the image; default: the image's user, with a
    /// warning when that is root).
    #[serde(default)]
    pub user: Option<String>,
    /// Whether the performer may reach beyond this host (default true). `false` puts its
    /// container on an internal network (`<network>-internal`, Docker's `--internal`): the node
    /// still reaches it, it reaches no other host and not the internet. For AVSs whose
    /// performers compute from the payload alone.
    #[serde(default = "defaults::yes")]
    pub egress: bool,
    /// Read-only root filesystem (default true); a tmpfs is mounted at `/tmp` either way.
    #[serde(default = "defaults::yes")]
    pub read_only_rootfs: bool,
    /// Size of the `/tmp` tmpfs in MiB (default 64).
    #[serde(default = "defaults::tmpfs_mib")]
    pub tmpfs_mib: u64,
    /// Drop every Linux capability (default true).
    #[serde(default = "defaults::yes")]
    pub drop_capabilities: bool,
    /// `no-new-privileges` (default true).
    #[serde(default = "defaults::yes")]
    pub no_new_privileges: bool,
    /// Memory, CPU and process limits.
    #[serde(default)]
    pub resources: ResourcesConfig,
    /// How long a deploy lets the old container finish its tasks before removing it (default
    /// `"30s"`).
    #[serde(default = "defaults::drain_timeout", deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// Time between steady-state health checks (default `"5s"`; Docker `die`/`oom` events are
    /// acted on at once).
    #[serde(default = "defaults::health_interval", deserialize_with = "duration")]
    pub health_interval: Duration,
    /// Time a new container has to answer SERVING (default `"30s"`).
    #[serde(default = "defaults::startup_timeout", deserialize_with = "duration")]
    pub startup_timeout: Duration,
    /// Restarts allowed within `restart_window`; one more and the performer is marked failed and
    /// left stopped (default 5).
    #[serde(default = "defaults::max_restarts")]
    pub max_restarts: u32,
    /// See `max_restarts` (default `"60s"`).
    #[serde(default = "defaults::restart_window", deserialize_with = "duration")]
    pub restart_window: Duration,
}

impl fmt::Debug for DockerPerformerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerPerformerConfig")
            .field("image", &self.image)
            .field("pull", &self.pull)
            .field("registry_auth", &self.registry_auth)
            .field("port", &self.port)
            .field("env_names", &self.env.keys().collect::<Vec<_>>())
            .field("user", &self.user)
            .field("egress", &self.egress)
            .field("read_only_rootfs", &self.read_only_rootfs)
            .field("tmpfs_mib", &self.tmpfs_mib)
            .field("drop_capabilities", &self.drop_capabilities)
            .field("no_new_privileges", &self.no_new_privileges)
            .field("resources", &self.resources)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

/// `[avs.performer.registry_auth]`.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryAuthConfig {
    /// The registry user.
    pub username: String,
    /// A file holding the password or token (one trailing newline is ignored).
    pub password_file: PathBuf,
}

impl fmt::Debug for RegistryAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistryAuthConfig")
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .finish()
    }
}

/// `[avs.performer.resources]`: container limits; 0 means unlimited.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// Memory limit in MiB (default 1024).
    #[serde(default = "defaults::memory_mib")]
    pub memory_mib: u64,
    /// CPUs, fractional allowed (default 2).
    #[serde(default = "defaults::cpus")]
    pub cpus: f64,
    /// Processes and threads (default 512).
    #[serde(default = "defaults::pids")]
    pub pids: u64,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        ResourcesConfig {
            memory_mib: defaults::memory_mib(),
            cpus: defaults::cpus(),
            pids: defaults::pids(),
        }
    }
}
