//! Blue/green roll-out, the performer side: once a slot hands out the new performer, the old one
//! is drained (every task still running on it finishes, up to a timeout) and then stopped or
//! removed. Which performer an AVS should run, and when, is the node's deployment policy.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use crate::{DockerPerformer, Performer};

/// Waits until nothing but the caller holds `old`, or `timeout`; returns how many still hold it.
/// The slot no longer hands `old` out, so every other holder is a task still running on it.
async fn drain<T: ?Sized>(old: &Arc<T>, timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    while Arc::strong_count(old) > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Arc::strong_count(old) - 1
}

/// Stops a process or remote performer that a reload replaced, once no task runs on it (at most
/// `timeout`). `name` names it in the log (the AVS).
pub async fn retire(name: &str, old: Arc<dyn Performer>, timeout: Duration) {
    let still_running = drain(&old, timeout).await;
    info!(avs = %name, tasks_still_running = still_running, "reload: stopping the replaced performer");
    old.shutdown().await;
}

/// Removes a replaced docker performer's container once no task runs on it (at most
/// `timeout`); `id` is its performer id.
pub async fn drain_and_remove(old: Arc<DockerPerformer>, id: &str, timeout: Duration) {
    let holders = drain(&old, timeout).await;
    if holders > 0 {
        warn!(performer = %id, tasks = holders, "drain timeout: removing the old performer with tasks still running");
    } else {
        info!(performer = %id, "old performer drained");
    }
    old.remove().await;
}
