//! `[management]`: the management API listener.

use std::net::SocketAddr;

use avsnode_signer::messages::Address;
use serde::Deserialize;

use super::{Config, Parsed, TlsConfig, defaults};

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
    pub admins: Vec<Parsed<Address>>,
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

impl Config {
    /// Problems of `[management]`.
    pub(super) fn management_problems(&self, problem: &mut dyn FnMut(String, String)) {
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

        if let Some(management) = &self.management {
            for (i, admin) in management.admins.iter().enumerate() {
                if let Some(e) = admin.error() {
                    problem(format!("management.admins[{i}]"), e.to_owned());
                }
            }
            if management.require_auth && management.admins.is_empty() {
                problem(
                    "management.admins".into(),
                    "no admin key listed: nobody could use the management API (list one, or set require_auth = false to run it unauthenticated)".into(),
                );
            }
        }
    }
}
