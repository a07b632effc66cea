//! The default of every setting that has one.

use std::net::SocketAddr;
use std::time::Duration;

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
pub(super) fn pull() -> super::Parsed<avsnode_performer::PullPolicy> {
    super::Parsed::new("if-not-present")
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
