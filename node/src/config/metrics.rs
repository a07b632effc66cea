//! `[metrics]`: the Prometheus listener.

use std::net::SocketAddr;

use serde::Deserialize;

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
