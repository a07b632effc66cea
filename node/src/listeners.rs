//! The connection limits of the node's listeners: how the open-files limit is shared between the
//! intake, the management API and the metrics endpoint, and what `avsnode signer serve` admits.

use std::time::Duration;

use avsnode_listener::{ConnectionLimits, HTTP1_REQUEST_LINE_MIN, HTTP2_PREFACE_LEN};

/// Connections the management listener holds at once, and from one address.
const MANAGEMENT_CONNECTIONS: (usize, usize) = (64, 16);
/// Connections the metrics listener holds at once, and from one address: its own bound, so an
/// intake flood never takes the scraper's place.
const METRICS_CONNECTIONS: (usize, usize) = (64, 16);
/// Open files kept for everything else: the ledger, performers, the Docker socket, logs.
const RESERVED_FILES: u64 = 256;
/// How long the management and metrics listeners keep a silent connection.
const QUIET_LISTENER_IDLE: Duration = Duration::from_secs(120);

/// What the remote signer's listener (`avsnode signer serve`) admits: nodes keep a connection or a
/// few each; a stalled handshake or a silent connection is closed, and one address cannot hold
/// the signer's sockets.
pub const SIGNER_LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 1024,
    max_per_source: 64,
    handshake_timeout: Duration::from_secs(5),
    preface_len: HTTP2_PREFACE_LEN,
    idle_timeout: Duration::from_secs(300),
};

/// The connection limits of the node's three listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// The intake (from `[intake]`).
    pub intake: ConnectionLimits,
    /// The management API.
    pub management: ConnectionLimits,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub metrics: ConnectionLimits,
}

impl ListenerLimits {
    /// The limits for `intake`'s settings within `open_files` (the process's open-files limit):
    /// the intake gets what is left after the management and metrics listeners and a reserve,
    /// so a full intake never leaves the node without a descriptor for a scrape or a deploy.
    /// Also says when that lowered `intake.max_connections`.
    pub fn new(
        intake: &crate::config::IntakeConfig,
        open_files: u64,
    ) -> (ListenerLimits, Option<String>) {
        let others = (MANAGEMENT_CONNECTIONS.0 + METRICS_CONNECTIONS.0) as u64;
        let room = open_files.saturating_sub(RESERVED_FILES + others).max(16);
        let max_connections = intake
            .max_connections
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        let lowered = (max_connections < intake.max_connections).then(|| {
            format!(
                "intake.max_connections lowered from {} to {max_connections} to fit the \
                 open-files limit of {open_files} (raise LimitNOFILE to allow more)",
                intake.max_connections
            )
        });
        let quiet =
            |(max_connections, max_per_source): (usize, usize), preface_len| ConnectionLimits {
                max_connections,
                max_per_source,
                handshake_timeout: intake.handshake_timeout,
                preface_len,
                idle_timeout: QUIET_LISTENER_IDLE,
            };
        let limits = ListenerLimits {
            intake: ConnectionLimits {
                max_connections,
                max_per_source: intake.max_connections_per_source,
                handshake_timeout: intake.handshake_timeout,
                preface_len: HTTP2_PREFACE_LEN,
                idle_timeout: intake.connection_idle_timeout,
            },
            management: quiet(MANAGEMENT_CONNECTIONS, HTTP2_PREFACE_LEN),
            metrics: quiet(METRICS_CONNECTIONS, HTTP1_REQUEST_LINE_MIN),
        };
        (limits, lowered)
    }
}
