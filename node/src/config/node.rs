//! `[node]`: who this node is and where it keeps its state.

use std::path::PathBuf;
use std::time::Duration;

use avsnode_signer::messages::Address;
use avsnode_signing::definition::duration;
use serde::Deserialize;

use super::docker::valid_docker_name;
use super::{Config, Parsed, defaults};

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The operator's address (`0x` + 40 hex): tasks must be addressed to it, and it is signed
    /// into every result. Environment override: `AVSNODE_OPERATOR_ADDRESS`.
    pub operator_address: Parsed<Address>,
    /// Where the ledger lives; one node per directory (an OS lock enforces it). Relative paths
    /// are relative to the config file. Environment override: `AVSNODE_DATA_DIR` (which the
    /// container image sets: the file may then leave it out).
    #[serde(default)]
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

impl Config {
    /// Problems of `[node]`.
    pub(super) fn node_problems(&self, problem: &mut dyn FnMut(String, String)) {
        if let Some(e) = self.node.operator_address.error() {
            problem("node.operator_address".into(), e.to_owned());
        }
        if self.node.data_dir.as_os_str().is_empty() {
            problem(
                "node.data_dir".into(),
                "missing: where the sign-once ledger lives (or set AVSNODE_DATA_DIR)".into(),
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
    }
}
