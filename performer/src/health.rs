//! `grpc.health.v1.Health/Check` against a performer: one check, and the two loops both runtimes
//! use (poll until healthy; watch until unhealthy).

use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How a performer's health is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Time between steady-state checks (default 5 s).
    pub interval: Duration,
    /// Time one check may take; also the connect timeout (default 1 s).
    pub timeout: Duration,
    /// Time a starting performer has to answer SERVING (default 30 s).
    pub startup_timeout: Duration,
    /// Time between checks while starting, so a ready performer is in service at once
    /// (default 50 ms).
    pub startup_poll: Duration,
    /// Consecutive failed steady-state checks that make a performer unhealthy (default 3).
    pub failure_threshold: u32,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            startup_timeout: Duration::from_secs(30),
            startup_poll: Duration::from_millis(50),
            failure_threshold: 3,
        }
    }
}

/// Why one health check failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthCheckError {
    /// The performer answered, but not SERVING.
    #[error("health check answered {0}")]
    NotServing(&'static str),
    /// The call failed (connection refused, UNIMPLEMENTED, ...).
    #[error("health check failed ({:?}): {}", .0.code(), crate::describe(.0))]
    Call(tonic::Status),
    /// No answer within the policy's timeout.
    #[error("health check timed out after {0:?}")]
    Timeout(Duration),
}

/// One `Check` for service "" (the whole server).
pub(crate) async fn check(
    client: &HealthClient<Channel>,
    timeout: Duration,
) -> Result<(), HealthCheckError> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let answer = tokio::time::timeout(timeout, client.clone().check(request))
        .await
        .map_err(|_| HealthCheckError::Timeout(timeout))?
        .map_err(HealthCheckError::Call)?;
    match ServingStatus::try_from(answer.into_inner().status) {
        Ok(ServingStatus::Serving) => Ok(()),
        Ok(status) => Err(HealthCheckError::NotServing(status.as_str_name())),
        Err(_) => Err(HealthCheckError::NotServing("an unknown status")),
    }
}

/// Checks every `poll` until a check passes; gives up with the last failure once `deadline` (if
/// any) would pass before the next check.
pub(crate) async fn until_healthy(
    client: &HealthClient<Channel>,
    policy: &HealthPolicy,
    poll: Duration,
    deadline: Option<Instant>,
) -> Result<(), HealthCheckError> {
    loop {
        let failure = match check(client, policy.timeout).await {
            Ok(()) => return Ok(()),
            Err(failure) => failure,
        };
        if deadline.is_some_and(|deadline| Instant::now() + poll >= deadline) {
            return Err(failure);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Steady-state checks every `policy.interval`, calling `passed` after each one that passes;
/// returns the last failure once `policy.failure_threshold` checks in a row have failed.
pub(crate) async fn until_unhealthy(
    client: &HealthClient<Channel>,
    policy: &HealthPolicy,
    passed: impl Fn(),
) -> HealthCheckError {
    let mut failures = 0;
    loop {
        tokio::time::sleep(policy.interval).await;
        match check(client, policy.timeout).await {
            Ok(()) => {
                failures = 0;
                passed();
            }
            Err(failure) => {
                failures += 1;
                tracing::debug!(failures, error = %failure, "performer health check failed");
                if failures >= policy.failure_threshold.max(1) {
                    return failure;
                }
            }
        }
    }
}
