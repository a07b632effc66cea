//! What every runtime shares: the gRPC clients over one lazily connected channel, the state, and
//! `execute`.

use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use avsnode_proto::performer::performer_service_client::PerformerServiceClient;
use avsnode_proto::performer::{TaskRequest, TaskResponse};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tracing::Instrument;

use crate::{ExecuteError, HealthPolicy, PerformerState, StartError};

/// Well above grpc-go's default server enforcement (5 min between pings): Hourglass performers are
/// Go, and a client that pings more often gets its connection closed with `too_many_pings`. Dead
/// performers are found by the health checks, not by keepalive.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(330);

/// A performer's clients and state.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) endpoint: String,
    pub(crate) health: HealthClient<Channel>,
    tasks: PerformerServiceClient<Channel>,
    state: watch::Sender<PerformerState>,
}

impl Core {
    /// Clients for `endpoint`; nothing is connected until the first call, so a performer that is
    /// not up yet is not an error here.
    pub(crate) fn new(endpoint: String, policy: &HealthPolicy) -> Result<Self, StartError> {
        let invalid = |reason| StartError::InvalidEndpoint {
            endpoint: endpoint.clone(),
            reason,
        };
        let channel = Endpoint::from_shared(endpoint.clone()).map_err(|_| invalid("not a URI"))?;
        let uri = channel.uri();
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(invalid(
                "expected http://HOST:PORT (TLS is not supported yet)",
            ));
        }
        let channel = channel
            // A performer that does not accept a connection in a health check's time would fail
            // that check anyway.
            .connect_timeout(policy.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .connect_lazy();
        Ok(Self {
            endpoint,
            health: HealthClient::new(channel.clone()),
            // One HTTP/2 connection multiplexes concurrent tasks; clones share it.
            tasks: PerformerServiceClient::new(channel),
            state: watch::Sender::new(PerformerState::Starting),
        })
    }

    /// Fresh clients for `endpoint` sharing this core's state: a restarted container may come back
    /// on another address, and a connection to its old incarnation is dead without knowing it.
    pub(crate) fn reconnect(
        &self,
        endpoint: String,
        policy: &HealthPolicy,
    ) -> Result<Self, StartError> {
        Ok(Self {
            state: self.state.clone(),
            ..Self::new(endpoint, policy)?
        })
    }

    pub(crate) fn state(&self) -> PerformerState {
        *self.state.borrow()
    }

    /// Records a state change and logs it once (supervisor spans name the performer).
    pub(crate) fn set_state(&self, state: PerformerState, reason: Option<&dyn fmt::Display>) {
        let old = self.state.send_replace(state);
        if old == state {
            return;
        }
        let reason = reason.map(tracing::field::display);
        match state {
            PerformerState::Healthy | PerformerState::Starting => {
                tracing::info!(from = %old, to = %state, reason, "performer state changed");
            }
            PerformerState::Unhealthy | PerformerState::Restarting => {
                tracing::warn!(from = %old, to = %state, reason, "performer state changed");
            }
            PerformerState::Failed => {
                tracing::error!(from = %old, to = %state, reason, "performer state changed");
            }
        }
    }

    /// After `shutdown`: no more tasks. Not an error, so not logged as a failure.
    pub(crate) fn set_stopped(&self) {
        self.state.send_replace(PerformerState::Failed);
        tracing::info!(endpoint = %self.endpoint, "performer stopped");
    }

    pub(crate) async fn execute(
        &self,
        request: TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResponse, ExecuteError> {
        let state = self.state();
        if state != PerformerState::Healthy {
            return Err(ExecuteError::Unavailable(format!("performer is {state}")));
        }
        let mut request = tonic::Request::new(request);
        // The header lets the performer give up too; the local timer bounds a performer that
        // ignores it.
        request.set_timeout(timeout);
        let started = Instant::now();
        let status =
            match tokio::time::timeout(timeout, self.tasks.clone().execute_task(request)).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) => status,
                Err(_) => return Err(ExecuteError::DeadlineExceeded),
            };
        Err(match status.code() {
            Code::Unavailable => ExecuteError::Unavailable(crate::describe(&status)),
            Code::DeadlineExceeded => ExecuteError::DeadlineExceeded,
            // tonic's channel enforces the timeout header itself and reports it as CANCELLED.
            Code::Cancelled if started.elapsed() >= timeout => ExecuteError::DeadlineExceeded,
            // Made on this side from a broken connection (the performer died mid-task), not
            // sent by the performer: as retryable as a refused connection.
            _ if std::error::Error::source(&status).is_some() => {
                ExecuteError::Unavailable(format!("connection lost: {}", crate::describe(&status)))
            }
            _ => ExecuteError::Status(status),
        })
    }
}

/// A runtime's background task (health checks, restarts), stopped by `stop` or by dropping this.
#[derive(Debug)]
pub(crate) struct Supervisor(Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>);

impl Supervisor {
    /// Spawns `work` in `span`, which names the performer in every log line it makes.
    pub(crate) fn spawn(
        span: tracing::Span,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(
            async move {
                // A dropped sender also stops it: dropping the performer must not leak the task.
                tokio::select! {
                    () = work => {}
                    _ = stopped => {}
                }
            }
            .instrument(span),
        );
        Self(Mutex::new(Some((stop, task))))
    }

    /// Stops the work (dropping it, which kills a child spawned with `kill_on_drop`) and waits
    /// until it is gone.
    pub(crate) async fn stop(&self) {
        let running = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some((stop, task)) = running {
            drop(stop);
            if let Err(e) = task.await
                && e.is_panic()
            {
                tracing::error!("performer supervisor panicked");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use avsnode_example_performer::{Garbage, Options, serve};

    use super::*;

    /// Garbage from a performer is INTERNAL (a performer fault), not UNAVAILABLE (a lost
    /// connection), and does not make the performer unhealthy.
    #[tokio::test]
    async fn an_answer_that_is_not_a_task_response_is_internal() {
        for kind in [Garbage::Protobuf, Garbage::Unframed] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let endpoint = format!("http://{}", listener.local_addr().unwrap());
            let options = Options {
                garbage: Some(kind),
                ..Options::default()
            };
            tokio::spawn(serve(listener, options, std::future::pending()));
            let core = Core::new(endpoint, &HealthPolicy::default()).unwrap();
            core.set_state(PerformerState::Healthy, None);
            let task = TaskRequest {
                task_id: b"0x01".to_vec(),
                payload: vec![3],
            };
            match core.execute(task, Duration::from_secs(5)).await {
                Err(ExecuteError::Status(status)) => {
                    assert_eq!(status.code(), Code::Internal, "{kind:?}: {status:?}");
                }
                other => panic!("{kind:?}: expected INTERNAL, got {other:?}"),
            }
            assert_eq!(core.state(), PerformerState::Healthy, "{kind:?}");
        }
    }
}
