//! Watching a running container: restarts on death or failed health checks, under the one restart rule.

use std::sync::Arc;

use super::container::{Launch, Run, Shared, create, died, kill, launch};
use super::error::{failed, status};
use crate::health::until_unhealthy;
use crate::restart::Restarts;
use crate::{PerformerState, StartError};

/// Watches a healthy container; restarts it when it dies or fails its health checks; gives up
/// on a crash loop, leaving the container stopped.
pub(super) async fn supervise(shared: Arc<Shared>, mut run: Run) {
    let docker = &shared.docker;
    let mut restarts = Restarts::new(shared.spec.restart.clone());
    loop {
        let (core, id) = (shared.core(), shared.container_id());
        tokio::select! {
            exit = died(docker, &id, run.since) => {
                let reason = format!("the container stopped ({exit})");
                core.set_state(PerformerState::Restarting, Some(&reason));
            }
            failure = until_unhealthy(&core.health, &shared.spec.health, || shared.healthy_now()) => {
                core.set_state(PerformerState::Unhealthy, Some(&failure));
            }
        }
        kill(docker, &id).await;

        let relaunched = restarts
            .relaunch(
                &core,
                &shared.restarts,
                || relaunch(&shared),
                || {
                    let id = shared.container_id();
                    async move { kill(docker, &id).await }
                },
            )
            .await;
        let Some(next) = relaunched else { return };
        run = next;
        shared.core().set_state(PerformerState::Healthy, None);
    }
}

/// Starts the container again, or a new one if it is gone.
pub(super) async fn relaunch(shared: &Arc<Shared>) -> Result<Run, StartError> {
    let id = shared.container_id();
    let id = match shared.docker.inspect_container(&id, None).await {
        Ok(_) => id,
        Err(e) if status(&e) == Some(404) => {
            tracing::warn!(container = %id, "the performer container is gone; creating a new one");
            create(shared).await?
        }
        Err(e) => return Err(shared.error(failed("inspect container", &id)(e))),
    };
    launch(shared, &id, Launch::Start).await
}
