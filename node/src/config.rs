//! The node's TOML configuration (DESIGN §9): the serde form, its validation, and environment
//! overrides. Validation collects every problem with its key path, so `avsnode check-config` and
//! start-up report them all at once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use avsnode_signer::Scheme;
use avsnode_signer::messages::{Address, EcdsaVerifier};
pub use avsnode_signing::Problem;
use avsnode_signing::SignerDefinition;
use avsnode_signing::definition::{duration, scheme};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this node is and where it keeps its state.
    pub node: NodeConfig,
    /// The task intake listener (ExecutorService, TaskStream, health, reflection).
    #[serde(default)]
    pub intake: IntakeConfig,
    /// The sign-once ledger.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// The metrics and health listener.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The management API (performer deploys). Absent: not served.
    #[serde(default)]
    pub management: Option<ManagementConfig>,
    /// How docker performers are run (network, log forwarding).
    #[serde(default)]
    pub docker: DockerConfig,
    /// Signing keys, referred to by name from operator sets (`[[signer]]` tables).
    #[serde(default, rename = "signer")]
    pub signers: Vec<SignerDefinition>,
    /// The AVSs this node serves (`[[avs]]` tables).
    #[serde(default)]
    pub avs: Vec<AvsConfig>,
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The operator's address (`0x` + 40 hex): tasks must be addressed to it, and it is signed
    /// into every result. Environment override: `AVSNODE_OPERATOR_ADDRESS`.
    pub operator_address: String,
    /// Where the ledger lives; one node per directory (an OS lock enforces it). Relative paths
    /// are relative to the config file. Environment override: `AVSNODE_DATA_DIR`.
    pub data_dir: PathBuf,
    /// How long a graceful shutdown waits for in-flight tasks (default `"30s"`).
    #[serde(default = "defaults::shutdown_grace", deserialize_with = "duration")]
    pub shutdown_grace: Duration,
    /// This node's id on the Docker host: labels the containers it owns (`io.avsnode.node`), so a
    /// restarted node adopts its own and never touches another node's. Letters, digits, `_`, `.`
    /// and `-`, at most 64 (default: the operator address, lower-case).
    #[serde(default)]
    pub id: Option<String>,
}

/// `[management]`: the `ExecutorManagementService` listener (DESIGN §7).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManagementConfig {
    /// Listen address (default `127.0.0.1:9091`, loopback only). Environment override:
    /// `AVSNODE_MANAGEMENT_LISTEN`.
    #[serde(default = "defaults::management_listen")]
    pub listen: SocketAddr,
    /// Addresses of the admin keys allowed to deploy, list and remove performers (ECDSA; not the
    /// operator's signing keys). Required while `require_auth` is on.
    #[serde(default)]
    pub admins: Vec<String>,
    /// Require a signed single-use challenge on every call (default true). Turning it off lets
    /// anyone who reaches the listener replace performers.
    #[serde(default = "defaults::yes")]
    pub require_auth: bool,
    /// Variables of avsnode's own environment a deploy may pass to a container by name
    /// (`PerformerEnv.value_from_env`). Default none: an admin cannot read the node's environment.
    #[serde(default)]
    pub env_from_node: Vec<String>,
    /// Largest management request accepted, in bytes (default 64 KiB). Requests are read
    /// before their signature can be checked, so this is what an unauthenticated caller can
    /// make the node read and decode.
    #[serde(default = "defaults::management_max_message_size")]
    pub max_message_size: usize,
    /// Management calls accepted per second from one source address (default 20, in bursts of up
    /// to five times that), checked before a request is read; beyond it, RESOURCE_EXHAUSTED.
    #[serde(default = "defaults::management_calls_per_second")]
    pub calls_per_second: f64,
    /// `[management.tls]`: serve TLS (with `client_ca`, mutual TLS). Absent: plaintext, so keep
    /// the listener on loopback.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

/// `[intake.tls]` / `[management.tls]`: serve TLS 1.2/1.3 (rustls). The files are read at start
/// and again on SIGHUP, so certificates can be rotated without a restart (connections already
/// open keep the certificate they were made with).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain, the listener's own certificate first (relative paths are relative
    /// to the config file).
    pub cert: PathBuf,
    /// PEM private key of that certificate (PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// PEM CA certificate(s) that client certificates must chain to. Set: mutual TLS, a client
    /// without such a certificate cannot connect, and on the intake each aggregator is bound to
    /// its certificate (`tls_client_names`).
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

/// `[docker]`: shared by every `runtime = "docker"` performer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// The private bridge network the node creates for its performers (default
    /// `avsnode-<node id>`). A node that itself runs in a container must be attached to it.
    #[serde(default)]
    pub network: Option<String>,
    /// Container log lines forwarded per second and performer; the rest are dropped and counted
    /// (default 50).
    #[serde(default = "defaults::log_lines_per_second")]
    pub log_lines_per_second: u32,
    /// Stop and remove the containers when the node shuts down (default false: they keep
    /// running and the next start adopts them, with no cold start).
    #[serde(default)]
    pub stop_on_shutdown: bool,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            network: None,
            log_lines_per_second: defaults::log_lines_per_second(),
            stop_on_shutdown: false,
        }
    }
}

/// `[intake]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// Listen address (default `0.0.0.0:9090`). Environment override: `AVSNODE_INTAKE_LISTEN`.
    #[serde(default = "defaults::intake_listen")]
    pub listen: SocketAddr,
    /// Largest gRPC message accepted, in bytes (default 4 MiB).
    #[serde(default = "defaults::max_message_size")]
    pub max_message_size: usize,
    /// Tasks one `TaskStream` may have in flight; beyond it the node stops reading that stream
    /// (HTTP/2 flow control then slows the sender). Default 256.
    #[serde(default = "defaults::stream_inflight")]
    pub stream_inflight: usize,
    /// HTTP/2 streams (calls) one connection may have open at once (default 128).
    #[serde(default = "defaults::max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Tasks the node holds at once, from every connection (being checked, queued, executed or
    /// signed); beyond it, RESOURCE_EXHAUSTED `node_overloaded` (default 16384).
    #[serde(default = "defaults::max_tasks_in_memory")]
    pub max_tasks_in_memory: usize,
    /// HTTP/2 keepalive: a PING after this long without frames (default `"30s"`) ...
    #[serde(
        default = "defaults::keepalive_interval",
        deserialize_with = "duration"
    )]
    pub keepalive_interval: Duration,
    /// ... and the connection is closed if the PING is not answered within this (default `"10s"`).
    #[serde(default = "defaults::keepalive_timeout", deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// A `TaskStream` that sends nothing for this long while no task of it is in flight is
    /// closed (default `"5m"`).
    #[serde(
        default = "defaults::stream_idle_timeout",
        deserialize_with = "duration"
    )]
    pub stream_idle_timeout: Duration,
    /// Connections the intake holds at once (default 4096; lowered at start-up to fit the
    /// process's open-files limit, with room kept for the management and metrics listeners).
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Connections held at once from one source address (default 64); more are closed as soon
    /// as they are accepted, so one source cannot take the node's sockets.
    #[serde(default = "defaults::max_connections_per_source")]
    pub max_connections_per_source: usize,
    /// A connection must send its HTTP/2 preface (or complete its TLS handshake) within this
    /// (default `"5s"`).
    #[serde(default = "defaults::handshake_timeout", deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// A connection from which nothing is read for this long is closed (default `"5m"`; more than
    /// `keepalive_interval`, whose PINGs a live client answers).
    #[serde(
        default = "defaults::connection_idle_timeout",
        deserialize_with = "duration"
    )]
    pub connection_idle_timeout: Duration,
    /// gRPC calls (unary calls and task streams) open at once on the intake (default 16384);
    /// beyond it a call is answered RESOURCE_EXHAUSTED before it is read.
    #[serde(default = "defaults::max_calls")]
    pub max_calls: usize,
    /// gRPC calls open at once from one source address, across its connections (default 1024).
    #[serde(default = "defaults::max_calls_per_source")]
    pub max_calls_per_source: usize,
    /// `[intake.tls]`: serve TLS (with `client_ca`, mutual TLS). Absent: plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl Default for IntakeConfig {
    fn default() -> Self {
        IntakeConfig {
            listen: defaults::intake_listen(),
            max_message_size: defaults::max_message_size(),
            stream_inflight: defaults::stream_inflight(),
            max_concurrent_streams: defaults::max_concurrent_streams(),
            max_tasks_in_memory: defaults::max_tasks_in_memory(),
            keepalive_interval: defaults::keepalive_interval(),
            keepalive_timeout: defaults::keepalive_timeout(),
            stream_idle_timeout: defaults::stream_idle_timeout(),
            max_connections: defaults::max_connections(),
            max_connections_per_source: defaults::max_connections_per_source(),
            handshake_timeout: defaults::handshake_timeout(),
            connection_idle_timeout: defaults::connection_idle_timeout(),
            max_calls: defaults::max_calls(),
            max_calls_per_source: defaults::max_calls_per_source(),
            tls: None,
        }
    }
}

/// `[metrics]`: Prometheus `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Listen address (default `127.0.0.1:9464`, loopback only). Environment override:
    /// `AVSNODE_METRICS_LISTEN`.
    #[serde(default = "avsnode_metrics::default_listen")]
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: avsnode_metrics::default_listen(),
        }
    }
}

/// `[ledger]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// How long signed records are kept (default `"14d"`). Must exceed every AVS's
    /// `max_staleness`, so a pruned task is always rejected as stale before it could be re-signed.
    #[serde(default = "defaults::retention", deserialize_with = "duration")]
    pub retention: Duration,
    /// Group commit: how long the ledger waits for more new records to share one fsync (default
    /// `"5ms"`; `"0s"` commits each batch at once). Adds at most this much latency per task.
    #[serde(default = "defaults::commit_delay", deserialize_with = "duration")]
    pub commit_delay: Duration,
    /// The ledger's page cache in MiB (default 16): the node's memory grows with the ledger up
    /// to this much; lookups past it read the file (usually from the OS page cache).
    #[serde(default = "defaults::ledger_cache_mib")]
    pub cache_mib: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            retention: defaults::retention(),
            commit_delay: defaults::commit_delay(),
            cache_mib: defaults::ledger_cache_mib(),
        }
    }
}

/// `[[avs]]`: one AVS this node serves.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AvsConfig {
    /// The AVS's address.
    pub address: String,
    /// Oldest `reference_timestamp` accepted (default `"1h"`); must be below `ledger.retention`.
    #[serde(default = "defaults::max_staleness", deserialize_with = "duration")]
    pub max_staleness: Duration,
    /// How far in the future a `reference_timestamp` may be (clock skew; default `"30s"`).
    #[serde(default = "defaults::max_clock_skew", deserialize_with = "duration")]
    pub max_clock_skew: Duration,
    /// Deadline of a version-1 task sent without a gRPC deadline (default `"10s"`).
    #[serde(default = "defaults::task_timeout", deserialize_with = "duration")]
    pub task_timeout: Duration,
    /// Tasks with less time than this left are rejected up front (default `"50ms"`).
    #[serde(
        default = "defaults::min_execution_time",
        deserialize_with = "duration"
    )]
    pub min_execution_time: Duration,
    /// Tasks in the performer at once (default 32).
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Tasks waiting for a performer slot; beyond it, RESOURCE_EXHAUSTED (default 1024).
    #[serde(default = "defaults::queue_depth")]
    pub queue_depth: usize,
    /// Largest task payload in bytes (default 1 MiB).
    #[serde(default = "defaults::max_payload_size")]
    pub max_payload_size: usize,
    /// Largest performer output in bytes (default 1.5 MiB − 1: the Hourglass aggregator drops
    /// outputs of 1.5 MiB or more).
    #[serde(default = "defaults::max_output_size")]
    pub max_output_size: usize,
    /// Tasks per second one aggregator may send from one network address, checked before its
    /// signature is (default 5000); excess tasks get RESOURCE_EXHAUSTED `rate_limited`.
    #[serde(default = "defaults::aggregator_rate_limit")]
    pub aggregator_rate_limit: f64,
    /// Tasks an aggregator may send at once above that rate (default 10000).
    #[serde(default = "defaults::aggregator_burst")]
    pub aggregator_burst: u32,
    /// Aggregators whose task signatures are accepted.
    pub aggregators: Vec<AggregatorConfig>,
    /// Operator sets this node signs for, each with its signer.
    pub operator_sets: Vec<OperatorSetConfig>,
    /// Where this AVS's tasks run.
    pub performer: PerformerConfig,
}

/// An aggregator allowed to send tasks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregatorConfig {
    /// The scheme of its task signatures.
    #[serde(deserialize_with = "scheme")]
    pub scheme: Scheme,
    /// Its address, as sent in `aggregator_address` (for ecdsa, also the signer recovered).
    pub address: String,
    /// For bn254: its G2 public key (128-byte EVM wire hex); for bls12-381: its 48-byte
    /// compressed public key. Not used for ecdsa.
    #[serde(default)]
    pub public_key: Option<String>,
    /// With mutual TLS on the intake (`intake.tls.client_ca`): DNS names (subjectAltName) of the
    /// client certificates this aggregator connects with. A task naming this aggregator over a
    /// connection whose certificate is valid for none of them is refused (PERMISSION_DENIED
    /// `client_certificate`). Required with mutual TLS; not allowed without it.
    #[serde(default)]
    pub tls_client_names: Vec<String>,
}

/// An operator set this node signs for.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorSetConfig {
    /// The operator set id.
    pub id: u32,
    /// The `[[signer]]` whose key signs results for this set; its scheme is the set's scheme.
    pub signer: String,
    /// ecdsa only: the certificate verifier contract (part of the EIP-712 domain).
    #[serde(default)]
    pub verifier: Option<String>,
    /// ecdsa only: the verifier contract's `version()` string, e.g. `"1.2.3"`. The EIP-712
    /// `version` is derived from it by the contract's rule (its first character, as
    /// eigenlayer-contracts v1.7.0–v1.9.0 do); a bare `"1"` means the same.
    #[serde(default)]
    pub verifier_version: Option<String>,
    /// ecdsa only, optional: the verifier's `domainSeparator()` as read from chain (`0x` + 64 hex).
    /// When set, the node refuses to start unless the domain it derives from `verifier` and
    /// `verifier_version` is exactly this one.
    #[serde(default)]
    pub verifier_domain_separator: Option<String>,
}

/// `0x` and 64 hex digits.
fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(text.strip_prefix("0x")?, &mut out).ok()?;
    Some(out)
}

impl OperatorSetConfig {
    /// The ECDSA certificate verifier, if both fields are set and the address parses (validation
    /// reports the rest).
    pub fn ecdsa_verifier(&self) -> Option<EcdsaVerifier> {
        Some(EcdsaVerifier {
            address: self.verifier.as_deref()?.parse().ok()?,
            version: self.verifier_version.clone()?,
        })
    }
}

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
    Docker(DockerPerformerConfig),
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
    pub pull: String,
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

mod defaults {
    use super::*;

    pub(super) fn ledger_cache_mib() -> usize {
        16
    }

    pub(super) fn yes() -> bool {
        true
    }
    pub(super) fn management_listen() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9091))
    }
    pub(super) fn log_lines_per_second() -> u32 {
        50
    }
    pub(super) fn pull() -> String {
        "if-not-present".into()
    }
    pub(super) fn performer_port() -> u16 {
        8080
    }
    pub(super) fn tmpfs_mib() -> u64 {
        64
    }
    pub(super) fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn health_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn startup_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn max_restarts() -> u32 {
        5
    }
    pub(super) fn restart_window() -> Duration {
        Duration::from_secs(60)
    }
    pub(super) fn memory_mib() -> u64 {
        1024
    }
    pub(super) fn cpus() -> f64 {
        2.0
    }
    pub(super) fn pids() -> u64 {
        512
    }
    pub(super) fn shutdown_grace() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn intake_listen() -> SocketAddr {
        SocketAddr::from(([0, 0, 0, 0], 9090))
    }
    pub(super) fn max_message_size() -> usize {
        4 << 20
    }
    pub(super) fn stream_inflight() -> usize {
        256
    }
    pub(super) fn max_concurrent_streams() -> u32 {
        128
    }
    pub(super) fn max_tasks_in_memory() -> usize {
        16384
    }
    pub(super) fn keepalive_interval() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn keepalive_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn max_connections() -> usize {
        4096
    }
    pub(super) fn max_connections_per_source() -> usize {
        64
    }
    pub(super) fn handshake_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub(super) fn connection_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn max_calls() -> usize {
        16384
    }
    pub(super) fn max_calls_per_source() -> usize {
        1024
    }
    pub(super) fn management_max_message_size() -> usize {
        64 << 10
    }
    pub(super) fn management_calls_per_second() -> f64 {
        20.0
    }
    pub(super) fn stream_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub(super) fn aggregator_rate_limit() -> f64 {
        5000.0
    }
    pub(super) fn aggregator_burst() -> u32 {
        10000
    }
    pub(super) fn retention() -> Duration {
        Duration::from_secs(14 * 24 * 3600)
    }
    pub(super) fn commit_delay() -> Duration {
        Duration::from_millis(5)
    }
    pub(super) fn max_staleness() -> Duration {
        Duration::from_secs(3600)
    }
    pub(super) fn max_clock_skew() -> Duration {
        Duration::from_secs(30)
    }
    pub(super) fn task_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub(super) fn min_execution_time() -> Duration {
        Duration::from_millis(50)
    }
    pub(super) fn max_concurrency() -> usize {
        32
    }
    pub(super) fn queue_depth() -> usize {
        1024
    }
    pub(super) fn max_payload_size() -> usize {
        1 << 20
    }
    pub(super) fn max_output_size() -> usize {
        (3 << 19) - 1
    }
}

/// Docker object names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, kept short.
fn valid_docker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (toml names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and shows the line.
        message: String,
    },
    /// The file parsed but is not a usable configuration.
    #[error("{} problem(s) in {}:\n{}", problems.len(), path.display(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

impl Config {
    /// Every configured ECDSA verifier version string: what a migration of an older ledger tries
    /// first (`avsnode_ledger::MigrationOptions`).
    pub fn verifier_versions(&self) -> Vec<String> {
        self.avs
            .iter()
            .flat_map(|a| &a.operator_sets)
            .filter_map(|set| set.verifier_version.clone())
            .collect()
    }

    /// Reads, applies environment overrides, resolves relative paths against the file's folder,
    /// and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, path, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], from text, with `env` looking up environment overrides.
    pub fn from_toml(
        text: &str,
        path: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let mut problems = config.apply_env(&env);
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        problems.extend(config.problems());
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    fn apply_env(&mut self, env: &impl Fn(&str) -> Option<String>) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(v) = env("AVSNODE_OPERATOR_ADDRESS") {
            self.node.operator_address = v;
        }
        if let Some(v) = env("AVSNODE_DATA_DIR") {
            self.node.data_dir = v.into();
        }
        if let Some(v) = env("AVSNODE_METRICS_LISTEN") {
            match v.parse() {
                Ok(addr) => self.metrics.listen = addr,
                Err(e) => problems.push(Problem {
                    path: "AVSNODE_METRICS_LISTEN".into(),
                    message: format!("invalid socket address {v:?}: {e}"),
                }),
            }
        }
        if let Some(v) = env("AVSNODE_MANAGEMENT_LISTEN") {
            match (v.parse(), &mut self.management) {
                (Ok(addr), Some(management)) => management.listen = addr,
                (Ok(_), None) => problems.push(Problem {
                    path: "AVSNODE_MANAGEMENT_LISTEN".into(),
                    message: "set, but the file has no [management] section".into(),
                }),
                (Err(e), _) => problems.push(Problem {
                    path: "AVSNODE_MANAGEMENT_LISTEN".into(),
                    message: format!("invalid socket address {v:?}: {e}"),
                }),
            }
        }
        if let Some(v) = env("AVSNODE_INTAKE_LISTEN") {
            match v.parse() {
                Ok(addr) => self.intake.listen = addr,
                Err(e) => problems.push(Problem {
                    path: "AVSNODE_INTAKE_LISTEN".into(),
                    message: format!("invalid socket address {v:?}: {e}"),
                }),
            }
        }
        for signer in &mut self.signers {
            signer.apply_env(&env);
        }
        problems
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.node.data_dir);
        let tls = self
            .intake
            .tls
            .iter_mut()
            .chain(self.management.iter_mut().filter_map(|m| m.tls.as_mut()));
        for tls in tls {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
            if let Some(ca) = &mut tls.client_ca {
                resolve(ca);
            }
        }
        for signer in &mut self.signers {
            signer.resolve_paths(base);
        }
        for avs in &mut self.avs {
            match &mut avs.performer {
                // A bare program name is looked up on PATH, like a shell would.
                PerformerConfig::Process { command, .. } if command.components().count() > 1 => {
                    resolve(command);
                }
                PerformerConfig::Docker(docker) => {
                    if let Some(auth) = &mut docker.registry_auth {
                        resolve(&mut auth.password_file);
                    }
                }
                _ => {}
            }
        }
    }

    /// Every problem with this configuration (empty when it is usable).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut problem = |path: String, message: String| out.push(Problem { path, message });

        if let Err(e) = self.node.operator_address.parse::<Address>() {
            problem("node.operator_address".into(), e.to_string());
        }
        if self.intake.max_message_size < 1024 {
            problem(
                "intake.max_message_size".into(),
                "must be at least 1024 bytes".into(),
            );
        }
        if self.ledger.commit_delay > Duration::from_millis(100) {
            problem(
                "ledger.commit_delay".into(),
                "at most 100ms: every new task waits this long".into(),
            );
        }
        if self.intake.stream_inflight == 0 {
            problem("intake.stream_inflight".into(), "must be at least 1".into());
        }
        if self.intake.max_concurrent_streams == 0 {
            problem(
                "intake.max_concurrent_streams".into(),
                "must be at least 1".into(),
            );
        }
        if self.intake.max_tasks_in_memory < self.intake.stream_inflight {
            problem(
                "intake.max_tasks_in_memory".into(),
                format!(
                    "must be at least intake.stream_inflight ({})",
                    self.intake.stream_inflight
                ),
            );
        }
        for (key, value) in [
            ("intake.keepalive_interval", self.intake.keepalive_interval),
            ("intake.keepalive_timeout", self.intake.keepalive_timeout),
            (
                "intake.stream_idle_timeout",
                self.intake.stream_idle_timeout,
            ),
            ("intake.handshake_timeout", self.intake.handshake_timeout),
        ] {
            if value.is_zero() {
                problem(key.into(), "must be more than 0".into());
            }
        }
        if self.intake.connection_idle_timeout <= self.intake.keepalive_interval {
            problem(
                "intake.connection_idle_timeout".into(),
                format!(
                    "must be more than intake.keepalive_interval ({}): a live client answers the \
                     keepalive PINGs, and only those keep an idle connection open",
                    humantime::format_duration(self.intake.keepalive_interval)
                ),
            );
        }
        for (key, value) in [
            ("intake.max_connections", self.intake.max_connections),
            (
                "intake.max_connections_per_source",
                self.intake.max_connections_per_source,
            ),
            ("intake.max_calls", self.intake.max_calls),
            (
                "intake.max_calls_per_source",
                self.intake.max_calls_per_source,
            ),
        ] {
            if value == 0 {
                problem(key.into(), "must be at least 1".into());
            }
        }
        if let Some(m) = &self.management {
            if m.max_message_size < 1024 {
                problem(
                    "management.max_message_size".into(),
                    "must be at least 1024 bytes".into(),
                );
            }
            if !(m.calls_per_second > 0.0 && m.calls_per_second.is_finite()) {
                problem(
                    "management.calls_per_second".into(),
                    "must be more than 0".into(),
                );
            }
        }

        let mut names = HashSet::new();
        for (i, signer) in self.signers.iter().enumerate() {
            for p in signer.problems(&format!("signer[{i}]")) {
                problem(p.path, p.message);
            }
            if !names.insert(signer.name.as_str()) {
                problem(
                    format!("signer[{i}].name"),
                    format!("duplicate signer name {:?}", signer.name),
                );
            }
        }
        if self.avs.is_empty() {
            problem(
                "avs".into(),
                "no [[avs]] configured: the node would serve nothing".into(),
            );
        }

        let mutual_tls = self
            .intake
            .tls
            .as_ref()
            .is_some_and(|t| t.client_ca.is_some());
        let mut avs_seen = HashSet::new();
        for (i, avs) in self.avs.iter().enumerate() {
            let at = |key: &str| format!("avs[{i}].{key}");
            match avs.address.parse::<Address>() {
                Ok(a) if !avs_seen.insert(a) => {
                    problem(at("address"), format!("AVS {a} is configured twice"))
                }
                Ok(_) => {}
                Err(e) => problem(at("address"), e.to_string()),
            }
            if avs.max_staleness >= self.ledger.retention {
                problem(
                    at("max_staleness"),
                    format!(
                        "must be below ledger.retention ({}), or a pruned task could be signed again",
                        humantime::format_duration(self.ledger.retention)
                    ),
                );
            }
            if !(avs.aggregator_rate_limit.is_finite() && avs.aggregator_rate_limit > 0.0) {
                problem(
                    at("aggregator_rate_limit"),
                    "must be a positive number of tasks per second".into(),
                );
            }
            if avs.aggregator_burst == 0 {
                problem(at("aggregator_burst"), "must be at least 1".into());
            }
            if avs.max_concurrency == 0 {
                problem(at("max_concurrency"), "must be at least 1".into());
            }
            if avs.task_timeout <= avs.min_execution_time {
                problem(at("task_timeout"), "must exceed min_execution_time".into());
            }
            if avs.aggregators.is_empty() {
                problem(
                    at("aggregators"),
                    "no aggregator configured: every task would be refused".into(),
                );
            }
            for (j, agg) in avs.aggregators.iter().enumerate() {
                let at = |key: &str| format!("avs[{i}].aggregators[{j}].{key}");
                if let Err(e) = agg.address.parse::<Address>() {
                    problem(at("address"), e.to_string());
                }
                if let Err(message) = avsnode_signer::VerifyingKey::from_config(
                    agg.scheme,
                    &agg.address,
                    agg.public_key.as_deref(),
                ) {
                    problem(at("public_key"), message);
                }
                match (mutual_tls, agg.tls_client_names.is_empty()) {
                    (true, true) => problem(
                        at("tls_client_names"),
                        "required with mutual TLS on the intake (intake.tls.client_ca): the DNS \
                         names of this aggregator's client certificate"
                            .into(),
                    ),
                    (false, false) => problem(
                        at("tls_client_names"),
                        "only used with mutual TLS on the intake; set intake.tls.client_ca".into(),
                    ),
                    _ => {}
                }
                for name in &agg.tls_client_names {
                    if rustls_pki_types::DnsName::try_from(name.as_str()).is_err() {
                        problem(
                            at("tls_client_names"),
                            format!("{name:?} is not a DNS name"),
                        );
                    }
                }
            }
            if avs.operator_sets.is_empty() {
                problem(at("operator_sets"), "no operator set configured".into());
            }
            let mut ids = HashSet::new();
            for (j, set) in avs.operator_sets.iter().enumerate() {
                let at = |key: &str| format!("avs[{i}].operator_sets[{j}].{key}");
                if !ids.insert(set.id) {
                    problem(
                        at("id"),
                        format!("operator set {} is configured twice", set.id),
                    );
                }
                let Some(signer) = self.signers.iter().find(|s| s.name == set.signer) else {
                    problem(at("signer"), format!("no signer named {:?}", set.signer));
                    continue;
                };
                let is_ecdsa = signer.scheme == Scheme::Ecdsa;
                match (&set.verifier, is_ecdsa) {
                    (Some(v), true) => {
                        if let Err(e) = v.parse::<Address>() {
                            problem(at("verifier"), e.to_string());
                        }
                    }
                    (None, true) => problem(
                        at("verifier"),
                        "required for an ecdsa operator set (the EIP-712 verifyingContract)".into(),
                    ),
                    (Some(_), false) => problem(
                        at("verifier"),
                        format!(
                            "only ecdsa operator sets have a verifier; signer {:?} is {}",
                            signer.name, signer.scheme
                        ),
                    ),
                    (None, false) => {}
                }
                match (&set.verifier_version, is_ecdsa) {
                    (Some(v), true) => {
                        let verifier = EcdsaVerifier {
                            address: Address([0; 20]),
                            version: v.clone(),
                        };
                        if let Err(e) = verifier.eip712_version() {
                            problem(at("verifier_version"), e.to_string());
                        }
                    }
                    (None, true) => problem(
                        at("verifier_version"),
                        "required for an ecdsa operator set: the verifier contract's version(), \
                         e.g. \"1.0.0\""
                            .into(),
                    ),
                    (Some(_), false) => problem(
                        at("verifier_version"),
                        "only ecdsa operator sets have a verifier version".into(),
                    ),
                    (None, false) => {}
                }
                if let Some(pinned) = &set.verifier_domain_separator {
                    match (parse_hex32(pinned), set.ecdsa_verifier()) {
                        (None, _) => problem(
                            at("verifier_domain_separator"),
                            "expected 0x and 64 hex digits".into(),
                        ),
                        (Some(_), None) => problem(
                            at("verifier_domain_separator"),
                            "only ecdsa operator sets with a verifier and verifier_version have one"
                                .into(),
                        ),
                        (Some(pinned), Some(verifier)) => {
                            if let Ok(derived) = verifier.domain_separator()
                                && derived != pinned
                            {
                                problem(
                                    at("verifier_domain_separator"),
                                    format!(
                                        "the domain separator of verifier {} with version {:?} \
                                         is 0x{}, not this one: check verifier and \
                                         verifier_version against the contract's version()",
                                        verifier.address,
                                        verifier.version,
                                        hex::encode(derived)
                                    ),
                                );
                            }
                        }
                    }
                }
            }
            match &avs.performer {
                PerformerConfig::Process { command, .. } if command.as_os_str().is_empty() => {
                    problem(at("performer.command"), "must not be empty".into());
                }
                PerformerConfig::Remote { endpoint }
                    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) =>
                {
                    problem(
                        at("performer.endpoint"),
                        format!("{endpoint:?} must start with http:// or https://"),
                    );
                }
                PerformerConfig::Docker(docker) => {
                    let at = |key: &str| format!("avs[{i}].performer.{key}");
                    if docker.image.as_deref().is_some_and(str::is_empty) {
                        problem(
                            at("image"),
                            "must not be empty (leave it out to deploy later)".into(),
                        );
                    }
                    if let Err(e) = docker.pull.parse::<avsnode_performer::PullPolicy>() {
                        problem(at("pull"), e.to_string());
                    }
                    if docker.port == 0 {
                        problem(at("port"), "must not be 0".into());
                    }
                    if docker.startup_timeout.is_zero() || docker.health_interval.is_zero() {
                        problem(
                            at("health_interval"),
                            "health_interval and startup_timeout must be above 0".into(),
                        );
                    }
                    if docker.tmpfs_mib > 1 << 20 || docker.resources.memory_mib > 1 << 30 {
                        problem(
                            at("resources.memory_mib"),
                            "memory_mib and tmpfs_mib must be at most 1 TiB".into(),
                        );
                    }
                    if !(docker.resources.cpus >= 0.0 && docker.resources.cpus <= 1024.0) {
                        problem(
                            at("resources.cpus"),
                            "must be between 0 (unlimited) and 1024".into(),
                        );
                    }
                }
                _ => {}
            }
            let env = match &avs.performer {
                PerformerConfig::Process { env, .. } => Some(env),
                PerformerConfig::Docker(docker) => Some(&docker.env),
                PerformerConfig::Remote { .. } => None,
            };
            for name in env.into_iter().flat_map(BTreeMap::keys) {
                if let Err(why) = avsnode_performer::check_env_name(name) {
                    problem(at("performer.env"), why);
                }
            }
        }
        if let Some(network) = &self.docker.network
            && (!valid_docker_name(network)
                || ["bridge", "host", "none"].contains(&network.as_str()))
        {
            problem(
                "docker.network".into(),
                format!(
                    "{network:?}: a private network's name (not bridge, host or none): letters, digits, '_', '.' and '-' only, at most 64"
                ),
            );
        }
        if let Some(id) = &self.node.id
            && !valid_docker_name(id)
        {
            problem(
                "node.id".into(),
                format!("{id:?}: letters, digits, '_', '.' and '-' only, at most 64"),
            );
        }
        if let Some(management) = &self.management {
            for (i, admin) in management.admins.iter().enumerate() {
                if let Err(e) = admin.parse::<Address>() {
                    problem(format!("management.admins[{i}]"), e.to_string());
                }
            }
            if management.require_auth && management.admins.is_empty() {
                problem(
                    "management.admins".into(),
                    "no admin key listed: nobody could use the management API (list one, or set require_auth = false to run it unauthenticated)".into(),
                );
            }
        }
        out
    }

    /// This node's id on the Docker host (`node.id`, default the operator address).
    pub fn node_id(&self) -> String {
        self.node
            .id
            .clone()
            .unwrap_or_else(|| self.operator().to_string())
    }

    /// The docker network for performers (`docker.network`, default `avsnode-<node id>`).
    pub fn docker_network(&self) -> String {
        self.docker
            .network
            .clone()
            .unwrap_or_else(|| format!("avsnode-{}", self.node_id()))
    }

    /// The operator address (validated).
    pub fn operator(&self) -> Address {
        self.node
            .operator_address
            .parse()
            .unwrap_or(Address([0; 20]))
    }

    /// A few lines for `check-config`: listeners, signers, AVSs and operator sets.
    pub fn summary(&self) -> String {
        let tls = |t: &Option<TlsConfig>| match t {
            None => "plaintext",
            Some(t) if t.client_ca.is_some() => "mutual TLS",
            Some(_) => "TLS",
        };
        let mut s = format!(
            "operator {}\ndata dir {}\nintake listens on {} ({})\nmetrics listen on {}\n",
            self.operator(),
            self.node.data_dir.display(),
            self.intake.listen,
            tls(&self.intake.tls),
            self.metrics.listen
        );
        match &self.management {
            Some(m) => {
                s += &format!(
                    "management listens on {} ({}, {})\n",
                    m.listen,
                    tls(&m.tls),
                    if m.require_auth {
                        format!("{} admin key(s)", m.admins.len())
                    } else {
                        "UNAUTHENTICATED".into()
                    }
                )
            }
            None => s += "management API off (no [management] section)\n",
        }
        for signer in &self.signers {
            s += &format!(
                "signer {:?}: {} from {}\n",
                signer.name,
                signer.scheme,
                signer.location()
            );
        }
        for avs in &self.avs {
            let sets: Vec<String> = avs
                .operator_sets
                .iter()
                .map(|o| format!("{} ({})", o.id, o.signer))
                .collect();
            // What an operator compares with the verifier's domainSeparator() on chain.
            for set in &avs.operator_sets {
                if let Some(verifier) = set.ecdsa_verifier()
                    && let (Ok(version), Ok(domain)) =
                        (verifier.eip712_version(), verifier.domain_separator())
                {
                    s += &format!(
                        "avs {} operator set {}: ecdsa verifier {} version {:?} (EIP-712 version \
                         {version:?}), domain separator 0x{}\n",
                        avs.address.to_lowercase(),
                        set.id,
                        verifier.address,
                        verifier.version,
                        hex::encode(domain)
                    );
                }
            }
            let runtime = match &avs.performer {
                PerformerConfig::Process { command, .. } => {
                    format!("process {}", command.display())
                }
                PerformerConfig::Remote { endpoint } => format!("remote {endpoint}"),
                PerformerConfig::Docker(docker) => match &docker.image {
                    Some(image) => format!("docker {image}"),
                    None => "docker (deployed through the management API)".into(),
                },
            };
            s += &format!(
                "avs {}: operator sets {}; {} aggregator(s); performer {runtime}\n",
                avs.address.to_lowercase(),
                sets.join(", "),
                avs.aggregators.len()
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use avsnode_signing::SignerBackend;

    const VALID: &str = r#"
[node]
operator_address = "0x1111111111111111111111111111111111111111"
data_dir = "data"

[[signer]]
name = "bn254-main"
scheme = "bn254"
keystore = "keys/bn254.json"
password_file = "keys/bn254.pass"

[[signer]]
name = "ecdsa-main"
scheme = "ecdsa"
keystore = "keys/ecdsa.json"
password_file = "keys/ecdsa.pass"

[[avs]]
address = "0x2222222222222222222222222222222222222222"
max_staleness = "30m"
aggregators = [{ scheme = "ecdsa", address = "0x3333333333333333333333333333333333333333" }]
operator_sets = [
  { id = 0, signer = "bn254-main" },
  { id = 1, signer = "ecdsa-main", verifier = "0x4444444444444444444444444444444444444444", verifier_version = "1" },
]
[avs.performer]
runtime = "process"
command = "./performer"
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/avsnode/avsnode.toml"), |_| None)
    }

    fn problems(text: &str) -> Vec<String> {
        match parse(text) {
            Err(ConfigError::Invalid { problems, .. }) => {
                problems.iter().map(|p| p.to_string()).collect()
            }
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    #[test]
    fn valid_config_with_defaults_and_resolved_paths() {
        let config = parse(VALID).unwrap();
        assert_eq!(config.intake.listen, "0.0.0.0:9090".parse().unwrap());
        assert_eq!(config.intake.max_message_size, 4 << 20);
        assert_eq!(config.ledger.retention, Duration::from_secs(14 * 86400));
        let avs = &config.avs[0];
        assert_eq!(avs.max_staleness, Duration::from_secs(1800));
        assert_eq!(avs.task_timeout, Duration::from_secs(10));
        assert_eq!(avs.max_output_size, 1_572_863);
        assert_eq!(config.node.data_dir, Path::new("/etc/avsnode/data"));
        assert_eq!(
            config.signers[0].keystore.as_deref(),
            Some(Path::new("/etc/avsnode/keys/bn254.json"))
        );
        assert!(
            matches!(&avs.performer, PerformerConfig::Process { command, .. } if command == Path::new("/etc/avsnode/./performer"))
        );
        let summary = config.summary();
        assert!(
            summary.contains("operator sets 0 (bn254-main), 1 (ecdsa-main)"),
            "{summary}"
        );
    }

    #[test]
    fn the_documented_example_is_valid() {
        let text = include_str!("../../deploy/avsnode.example.toml");
        let config =
            Config::from_toml(text, Path::new("deploy/avsnode.example.toml"), |_| None).unwrap();
        assert_eq!(config.avs[0].operator_sets.len(), 2);
        let PerformerConfig::Docker(docker) = &config.avs[1].performer else {
            panic!("the second AVS runs in docker")
        };
        assert!(docker.read_only_rootfs && docker.drop_capabilities && docker.no_new_privileges);
        assert_eq!(docker.port, 8080);
        assert!(config.management.as_ref().is_some_and(|m| m.require_auth));
    }

    #[test]
    fn docker_performers_are_hardened_unless_told_otherwise() {
        let text = VALID.replace(
            "runtime = \"process\"\ncommand = \"./performer\"",
            "runtime = \"docker\"\nimage = \"perf:v1\"",
        );
        let config = parse(&text).unwrap();
        let PerformerConfig::Docker(docker) = &config.avs[0].performer else {
            panic!("docker performer expected")
        };
        assert!(docker.read_only_rootfs && docker.drop_capabilities && docker.no_new_privileges);
        assert_eq!(docker.pull, "if-not-present");
        assert_eq!(
            (docker.resources.memory_mib, docker.resources.pids),
            (1024, 512)
        );
        assert_eq!(
            config.node_id(),
            "0x1111111111111111111111111111111111111111"
        );
        assert_eq!(
            config.docker_network(),
            "avsnode-0x1111111111111111111111111111111111111111"
        );

        let bad = text
            .replace(
                "image = \"perf:v1\"",
                "image = \"perf:v1\"\npull = \"sometimes\"\nenv = { PORT = \"1\", \"A-B\" = \"2\" }",
            )
            .replace("[node]\n", "[node]\nid = \"no/slashes\"\n")
            + "\n[management]\nadmins = []\n";
        let found = problems(&bad);
        for expected in [
            "avs[0].performer.pull:",
            "avs[0].performer.env: env name PORT is set by the node",
            "avs[0].performer.env: env name \"A-B\" is not [A-Za-z_][A-Za-z0-9_]*",
            "node.id:",
            "management.admins: no admin key",
        ] {
            assert!(
                found.iter().any(|p| p.starts_with(expected)),
                "{expected} in {found:?}"
            );
        }
        let unknown = text.replace(
            "image = \"perf:v1\"",
            "image = \"perf:v1\"\nprivileged = true",
        );
        assert!(
            matches!(parse(&unknown), Err(ConfigError::Parse { message, .. }) if message.contains("privileged"))
        );
    }

    #[test]
    fn misspelt_key_is_an_error_naming_it() {
        let text = VALID.replace("max_staleness", "max_stalenes");
        let Err(ConfigError::Parse { message, .. }) = parse(&text) else {
            panic!("expected a parse error")
        };
        assert!(message.contains("max_stalenes"), "{message}");
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let text = VALID.replace("\"30m\"", "\"30 parsecs\"");
        let Err(ConfigError::Parse { message, .. }) = parse(&text) else {
            panic!("expected a parse error")
        };
        assert!(
            message.contains("invalid duration") && message.contains("\"10s\""),
            "{message}"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = VALID
            .replace("signer = \"ecdsa-main\"", "signer = \"ecdsa-mian\"")
            .replace("0x1111111111111111111111111111111111111111", "0x11")
            .replace("max_staleness = \"30m\"", "max_staleness = \"30d\"");
        let found = problems(&text);
        assert!(
            found.contains(
                &"avs[0].operator_sets[1].signer: no signer named \"ecdsa-mian\"".to_string()
            ),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("node.operator_address: address")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].max_staleness: must be below ledger.retention")),
            "{found:?}"
        );
        assert_eq!(found.len(), 3, "{found:?}");
    }

    #[test]
    fn ecdsa_sets_need_a_verifier_and_others_must_not_have_one() {
        let text = VALID
            .replace(", verifier = \"0x4444444444444444444444444444444444444444\", verifier_version = \"1\"", "")
            .replace("{ id = 0, signer = \"bn254-main\" }", "{ id = 0, signer = \"bn254-main\", verifier = \"0x4444444444444444444444444444444444444444\" }");
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[1].verifier: required")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[1].verifier_version: required")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[0].verifier: only ecdsa")),
            "{found:?}"
        );
    }

    /// The EIP-712 version is derived from the contract's version() by the contract's rule, and
    /// check-config shows the domain separator to compare with the chain's. Expected values from
    /// Python (pycryptodome keccak) with the contract's formula.
    #[test]
    fn the_verifier_domain_follows_the_contract_version_rule() {
        const DOMAIN_V1: &str = "37aafd5b959ddb0422981a2e32b0c68eb8549960c37da7042756e66128fb4ea5";
        // What an avsnode that hashed "1.2.3" whole signed under: a domain the chain rejects.
        const WHOLE_STRING: &str =
            "4d32332108f315a7210233b3b0dae692dfa7b701b51f5d32bd11f565ded0f2bf";
        let text = VALID.replace("verifier_version = \"1\"", "verifier_version = \"1.2.3\"");
        let summary = parse(&text).expect("valid").summary();
        assert!(
            summary.contains(&format!(
                "operator set 1: ecdsa verifier 0x4444444444444444444444444444444444444444 \
                 version \"1.2.3\" (EIP-712 version \"1\"), domain separator 0x{DOMAIN_V1}"
            )),
            "{summary}"
        );
        assert!(!summary.contains(WHOLE_STRING), "{summary}");

        let pinned = |domain: &str| {
            text.replace(
                "verifier_version = \"1.2.3\"",
                &format!(
                    "verifier_version = \"1.2.3\", verifier_domain_separator = \"0x{domain}\""
                ),
            )
        };
        parse(&pinned(DOMAIN_V1)).expect("the pinned domain matches");
        let found = problems(&pinned(WHOLE_STRING));
        assert!(
            found.iter().any(|p| p.starts_with(
                "avs[0].operator_sets[1].verifier_domain_separator: the domain separator"
            ) && p.contains(DOMAIN_V1)),
            "{found:?}"
        );
        let found = problems(&text.replace("\"1.2.3\"", "\"\""));
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].operator_sets[1].verifier_version: certificate verifier: the verifier version is empty")),
            "{found:?}"
        );
    }

    #[test]
    fn durations_are_bounded() {
        let text = VALID.replace("[node]\n", "[node]\nshutdown_grace = \"1000000000y\"\n");
        let error = parse(&text)
            .expect_err("a duration of a billion years")
            .to_string();
        assert!(error.contains("longer than the 100 years"), "{error}");
    }

    #[test]
    fn aggregator_keys_are_checked() {
        let text = VALID.replace(
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\" }",
            "{ scheme = \"bn254\", address = \"0x3333333333333333333333333333333333333333\", public_key = \"0x1234\" }",
        );
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("avs[0].aggregators[0].public_key: BN254 G2")),
            "{found:?}"
        );
    }

    #[test]
    fn mutual_tls_binds_every_aggregator_to_certificate_names() {
        let aggregator =
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\" }";
        let mtls = VALID.replacen(
            "[[signer]]",
            "[intake.tls]\ncert = \"tls/intake.pem\"\nkey = \"tls/intake.key\"\nclient_ca = \"/pki/aggregators.pem\"\n\n[[signer]]",
            1,
        );
        assert_eq!(
            problems(&mtls),
            [
                "avs[0].aggregators[0].tls_client_names: required with mutual TLS on the intake (intake.tls.client_ca): the DNS names of this aggregator's client certificate"
            ]
        );
        let named = mtls.replace(
            aggregator,
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\", tls_client_names = [\"agg.example.org\"] }",
        );
        let config = parse(&named).unwrap();
        let tls = config.intake.tls.as_ref().unwrap();
        assert_eq!(tls.cert, Path::new("/etc/avsnode/tls/intake.pem"));
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(Path::new("/pki/aggregators.pem"))
        );
        let bad_name = named.replace("agg.example.org", "not a name");
        assert_eq!(
            problems(&bad_name),
            ["avs[0].aggregators[0].tls_client_names: \"not a name\" is not a DNS name"]
        );
        let without_mtls = VALID.replace(
            aggregator,
            "{ scheme = \"ecdsa\", address = \"0x3333333333333333333333333333333333333333\", tls_client_names = [\"agg.example.org\"] }",
        );
        assert_eq!(
            problems(&without_mtls),
            [
                "avs[0].aggregators[0].tls_client_names: only used with mutual TLS on the intake; set intake.tls.client_ca"
            ]
        );
    }

    /// `VALID` with the ecdsa signer's key lines replaced by `backend`.
    fn with_ecdsa_backend(backend: &str, scheme: &str) -> String {
        VALID.replace(
            "name = \"ecdsa-main\"\nscheme = \"ecdsa\"\nkeystore = \"keys/ecdsa.json\"\npassword_file = \"keys/ecdsa.pass\"",
            &format!("name = \"ecdsa-main\"\nscheme = \"{scheme}\"\n{backend}"),
        )
    }

    #[test]
    fn pkcs11_and_remote_signers_parse_and_resolve_paths() {
        let pkcs11 = with_ecdsa_backend(
            r#"pkcs11 = { module = "/usr/lib/softhsm/libsofthsm2.so", token_label = "avs", key_label = "op", pin_file = "keys/pin" }"#,
            "ecdsa",
        );
        let config = parse(&pkcs11).unwrap();
        let SignerBackend::Pkcs11(p) = config.signers[1].backend().unwrap() else {
            panic!("expected a pkcs11 backend");
        };
        assert_eq!(p.pin_file, Path::new("/etc/avsnode/keys/pin"));
        assert_eq!(p.module, Path::new("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(config.signers[1].backend_label(), "pkcs11");
        assert!(
            config
                .summary()
                .contains("PKCS#11 token \"avs\", key label \"op\"")
        );

        let remote = with_ecdsa_backend(
            r#"remote = { url = "https://signer:9500", ca = "tls/ca.pem", cert = "tls/node.pem", key = "tls/node.key", timeout = "500ms" }"#,
            "ecdsa",
        );
        let config = parse(&remote).unwrap();
        let SignerBackend::Remote(r) = config.signers[1].backend().unwrap() else {
            panic!("expected a remote backend");
        };
        assert_eq!(r.key, Path::new("/etc/avsnode/tls/node.key"));
        assert_eq!(r.timeout, Duration::from_millis(500));
        assert_eq!(r.key_name, None);
        assert!(
            config
                .summary()
                .contains("remote signer https://signer:9500, key \"ecdsa-main\"")
        );

        // The PIN file has an environment override like password files.
        let env = |name: &str| {
            (name == "AVSNODE_SIGNER_ECDSA_MAIN_PIN_FILE").then(|| "/run/secrets/pin".to_string())
        };
        let config =
            Config::from_toml(&pkcs11, Path::new("/etc/avsnode/avsnode.toml"), env).unwrap();
        let SignerBackend::Pkcs11(p) = config.signers[1].backend().unwrap() else {
            panic!("expected a pkcs11 backend");
        };
        assert_eq!(p.pin_file, Path::new("/run/secrets/pin"));
    }

    #[test]
    fn signer_backend_mistakes_are_named() {
        let bn254_over_pkcs11 = with_ecdsa_backend(
            r#"pkcs11 = { module = "m.so", token_label = "avs", key_label = "op", pin_file = "pin" }"#,
            "bn254",
        );
        let found = problems(&bn254_over_pkcs11);
        assert!(
            found.iter().any(|p| p.starts_with("signer[1].pkcs11:")
                && p.contains("PKCS#11 has no pairing curves")),
            "{found:?}"
        );
        let both = with_ecdsa_backend(
            "keystore = \"k.json\"\npassword_file = \"k.pass\"\nremote = { url = \"https://s:1\", ca = \"a\", cert = \"b\", key = \"c\" }",
            "ecdsa",
        );
        assert!(
            problems(&both)
                .iter()
                .any(|p| p.starts_with("signer[1]: more than one backend")),
            "{:?}",
            problems(&both)
        );
        let none = with_ecdsa_backend("", "ecdsa");
        assert!(
            problems(&none)
                .iter()
                .any(|p| p.starts_with("signer[1]: no key"))
        );
        let no_password = with_ecdsa_backend("keystore = \"k.json\"", "ecdsa");
        assert!(
            problems(&no_password)
                .iter()
                .any(|p| p == "signer[1]: keystore needs password_file")
        );
        let label_and_id = with_ecdsa_backend(
            r#"pkcs11 = { module = "m.so", token_label = "avs", key_label = "op", key_id = "01", pin_file = "pin" }"#,
            "ecdsa",
        );
        assert!(
            problems(&label_and_id)
                .iter()
                .any(|p| p == "signer[1].pkcs11: give exactly one of key_label and key_id")
        );
        let bad_id = with_ecdsa_backend(
            r#"pkcs11 = { module = "m.so", token_label = "avs", key_id = "zz", pin_file = "pin" }"#,
            "ecdsa",
        );
        assert!(
            problems(&bad_id)
                .iter()
                .any(|p| p.starts_with("signer[1].pkcs11.key_id:"))
        );
        let plain = with_ecdsa_backend(
            r#"remote = { url = "http://signer:9500", ca = "a", cert = "b", key = "c" }"#,
            "ecdsa",
        );
        assert!(
            problems(&plain)
                .iter()
                .any(|p| p.starts_with("signer[1].remote.url:") && p.contains("mutual TLS"))
        );
    }

    #[test]
    fn environment_overrides_ports_data_dir_and_password_files() {
        let env = |name: &str| match name {
            "AVSNODE_INTAKE_LISTEN" => Some("127.0.0.1:7000".to_string()),
            "AVSNODE_DATA_DIR" => Some("/var/lib/avsnode".to_string()),
            "AVSNODE_SIGNER_ECDSA_MAIN_PASSWORD_FILE" => Some("/run/secrets/ecdsa".to_string()),
            _ => None,
        };
        let config = Config::from_toml(VALID, Path::new("/etc/avsnode/avsnode.toml"), env).unwrap();
        assert_eq!(config.intake.listen, "127.0.0.1:7000".parse().unwrap());
        assert_eq!(config.node.data_dir, Path::new("/var/lib/avsnode"));
        assert_eq!(
            config.signers[1].password_file.as_deref(),
            Some(Path::new("/run/secrets/ecdsa"))
        );
        assert_eq!(
            config.signers[0].password_file.as_deref(),
            Some(Path::new("/etc/avsnode/keys/bn254.pass"))
        );

        let bad = |name: &str| (name == "AVSNODE_INTAKE_LISTEN").then(|| "nowhere".to_string());
        let Err(ConfigError::Invalid { problems, .. }) =
            Config::from_toml(VALID, Path::new("x.toml"), bad)
        else {
            panic!("expected a problem")
        };
        assert_eq!(problems[0].path, "AVSNODE_INTAKE_LISTEN");
    }
}
