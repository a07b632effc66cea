//! `[docker]`: what every docker performer shares, and Docker object names.

use serde::Deserialize;

use super::{Config, defaults};

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

/// Docker object names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, kept short.
pub(super) fn valid_docker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

impl Config {
    /// Problems of `[docker]`.
    pub(super) fn docker_problems(&self, problem: &mut dyn FnMut(String, String)) {
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
    }
}
