//! `[intake]`: the task listener, its limits, and the TLS of any listener (`[intake.tls]`, `[management.tls]`).

use std::net::SocketAddr;
use std::time::Duration;

use avsnode_signing::definition::duration;
use serde::Deserialize;

use super::{Config, TlsConfig, defaults};

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

impl Config {
    /// Problems of `[intake]`.
    pub(super) fn intake_problems(&self, problem: &mut dyn FnMut(String, String)) {
        if self.intake.max_message_size < 1024 {
            problem(
                "intake.max_message_size".into(),
                "must be at least 1024 bytes".into(),
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
    }
}
