//! Execution, DESIGN §3.1 steps 9–10: the performer call with the time left, and the checks on
//! what it returns.

use std::time::Duration;

use avsnode_performer::ExecuteError;
use avsnode_proto::performer::TaskRequest;
use tokio::time::Instant;

use super::validate::Task;
use super::{Avs, Pipeline};
use crate::pipeline::rejection::Rejection;

/// Time kept back from the performer call for signing and for the answer to reach the caller
/// before its own deadline: a tenth of the time left, between 20 and 250 ms. (A fixed 20 ms was
/// too thin on a loaded machine: the caller's timer fired before the node's answer arrived.)
fn signing_margin(left: Duration) -> Duration {
    (left / 10).clamp(Duration::from_millis(20), Duration::from_millis(250))
}

impl Pipeline {
    /// Steps 9–10: the performer call with the remaining time, and the output checks.
    pub(super) async fn execute(
        &self,
        avs: &Avs,
        task: &Task,
        deadline: Instant,
    ) -> Result<Vec<u8>, Rejection> {
        let wire_id = task.task_id.to_wire_string().into_bytes();
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = left.saturating_sub(signing_margin(left));
        if timeout.is_zero() {
            return Err(Rejection::Deadline("no time left to execute".into()));
        }
        let request = TaskRequest {
            task_id: wire_id.clone(),
            payload: task.payload.clone(),
        };
        // Held for the whole call: a deploy that swaps the slot meanwhile drains this one.
        let performer = avs
            .performer
            .current()
            .map_err(Rejection::PerformerUnavailable)?;
        let response = performer
            .execute(request, timeout)
            .await
            .map_err(|e| match e {
                ExecuteError::Unavailable(why) => Rejection::PerformerUnavailable(why),
                ExecuteError::DeadlineExceeded => Rejection::PerformerTimeout,
                ExecuteError::Status(status) => Rejection::PerformerError {
                    code: status.code(),
                    message: status.message().to_owned(),
                },
            })?;
        if Instant::now() >= deadline {
            return Err(Rejection::LateResult);
        }
        if response.result.len() > avs.config.max_output_size {
            return Err(Rejection::OutputTooLarge {
                size: response.result.len(),
                limit: avs.config.max_output_size,
            });
        }
        if response.task_id != wire_id {
            return Err(Rejection::WrongEcho);
        }
        Ok(response.result)
    }
}
