//! The `remote` runtime: an endpoint the node does not manage (for example a Kubernetes Service).

use std::sync::Arc;
use std::time::Duration;

use avsnode_proto::performer::{TaskRequest, TaskResponse};
use tracing::Instrument;

use crate::client::{Core, Supervisor};
use crate::health::{check, until_healthy, until_unhealthy};
use crate::{ExecuteError, HealthPolicy, Performer, PerformerState, StartError};

/// Where a `remote` performer is.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    /// `http://HOST:PORT`.
    pub endpoint: String,
    /// Health checks.
    pub health: HealthPolicy,
}

/// A performer someone else runs: health-checked on an interval, never restarted. Unhealthy while
/// checks fail, healthy again as soon as one passes.
#[derive(Debug)]
pub struct RemotePerformer {
    core: Arc<Core>,
    supervisor: Supervisor,
}

impl RemotePerformer {
    /// Checks the endpoint once (so the state is known on return) and starts the health loop.
    ///
    /// Only a malformed endpoint is an error: one that is down is
    /// [`PerformerState::Unhealthy`] until a check passes.
    pub async fn connect(spec: RemoteSpec) -> Result<Self, StartError> {
        let core = Arc::new(Core::new(spec.endpoint, &spec.health)?);
        let span = tracing::info_span!("performer", endpoint = %core.endpoint, runtime = "remote");
        async {
            match check(&core.health, spec.health.timeout).await {
                Ok(()) => core.set_state(PerformerState::Healthy, None),
                Err(failure) => core.set_state(PerformerState::Unhealthy, Some(&failure)),
            }
        }
        .instrument(span.clone())
        .await;
        let supervisor = Supervisor::spawn(span, monitor(core.clone(), spec.health));
        Ok(Self { core, supervisor })
    }

    /// The endpoint as configured.
    pub fn endpoint(&self) -> String {
        self.core.endpoint.clone()
    }
}

async fn monitor(core: Arc<Core>, policy: HealthPolicy) {
    loop {
        if core.state() == PerformerState::Healthy {
            let failure = until_unhealthy(&core.health, &policy, || {}).await;
            core.set_state(PerformerState::Unhealthy, Some(&failure));
        } else if until_healthy(&core.health, &policy, policy.interval, None)
            .await
            .is_ok()
        {
            core.set_state(PerformerState::Healthy, None);
        }
    }
}

#[async_trait::async_trait]
impl Performer for RemotePerformer {
    fn state(&self) -> PerformerState {
        self.core.state()
    }

    fn runtime(&self) -> &'static str {
        "remote"
    }

    async fn execute(
        &self,
        request: TaskRequest,
        timeout: Duration,
    ) -> Result<TaskResponse, ExecuteError> {
        self.core.execute(request, timeout).await
    }

    async fn shutdown(&self) {
        self.supervisor.stop().await;
        self.core.set_stopped();
    }
}
