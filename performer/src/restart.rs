//! The one restart rule every managed runtime (process, docker) follows: a backoff that doubles
//! with each restart in the crash-loop window, and no restart at all once the window is full.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::PerformerState;
use crate::client::Core;

/// How a crashed or unhealthy process or container is restarted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Wait before the first restart; doubles with each restart in the crash-loop window
    /// (default 200 ms).
    pub initial_backoff: Duration,
    /// Cap on that wait (default 30 s).
    pub max_backoff: Duration,
    /// Restarts allowed within `crash_loop_window`; one more and the performer is
    /// [`PerformerState::Failed`] and left alone (default 5).
    pub crash_loop_restarts: u32,
    /// See `crash_loop_restarts` (default 60 s).
    pub crash_loop_window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(30),
            crash_loop_restarts: 5,
            crash_loop_window: Duration::from_secs(60),
        }
    }
}

impl RestartPolicy {
    /// The wait before a restart, given how many restarts the window already holds.
    fn backoff(&self, recent_restarts: usize) -> Duration {
        let factor = 2u32.saturating_pow(u32::try_from(recent_restarts).unwrap_or(u32::MAX));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// The restart rule every managed runtime follows: a backoff that doubles with each restart in the
/// crash-loop window, and no restart at all once the window holds `crash_loop_restarts`.
#[derive(Debug)]
pub(crate) struct Restarts {
    policy: RestartPolicy,
    recent: VecDeque<Instant>,
    /// Restarts in a row that never became healthy: with a slow startup timeout fewer than
    /// `crash_loop_restarts` fit in the window, and such a performer must still be given up on.
    unhealthy_in_a_row: u32,
}

/// Why a performer is not restarted again.
#[derive(Debug)]
pub(crate) struct CrashLoop {
    restarts: usize,
    /// `None`: that many restarts in a row never became healthy.
    window: Option<Duration>,
}

impl fmt::Display for CrashLoop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.window {
            Some(window) => write!(
                f,
                "crash loop: restarted {} times within {window:?}; not restarting again",
                self.restarts
            ),
            None => write!(
                f,
                "crash loop: {} restarts in a row never became healthy; not restarting again",
                self.restarts
            ),
        }
    }
}

impl Restarts {
    pub(crate) fn new(policy: RestartPolicy) -> Self {
        Self {
            policy,
            recent: VecDeque::new(),
            unhealthy_in_a_row: 0,
        }
    }

    /// Restarts until a launch serves, under the rule: each attempt waits its backoff
    /// ([`Restarts::next`]); a failed one is logged, then `cleanup` runs (the docker runtime stops
    /// a container that failed to come up). On a crash loop the performer is marked
    /// [`PerformerState::Failed`] and `None` returned: the supervisor stops.
    pub(crate) async fn relaunch<T, E, L, C>(
        &mut self,
        core: &Core,
        count: &AtomicU32,
        mut launch: impl FnMut() -> L,
        mut cleanup: impl FnMut() -> C,
    ) -> Option<T>
    where
        E: std::error::Error + 'static,
        L: Future<Output = Result<T, E>>,
        C: Future<Output = ()>,
    {
        loop {
            if let Err(crash_loop) = self.next(core, count).await {
                core.set_state(PerformerState::Failed, Some(&crash_loop));
                return None;
            }
            match launch().await {
                Ok(run) => {
                    self.unhealthy_in_a_row = 0;
                    return Some(run);
                }
                Err(e) => {
                    self.unhealthy_in_a_row += 1;
                    tracing::warn!(
                        error = &e as &(dyn std::error::Error + 'static),
                        "restarting the performer failed"
                    );
                    cleanup().await;
                }
            }
        }
    }

    /// Takes the next restart: marks the performer restarting, waits out the backoff and counts
    /// the restart in `count`. A crash loop instead returns at once, changing nothing: the caller
    /// marks the performer failed and stops.
    async fn next(&mut self, core: &Core, count: &AtomicU32) -> Result<(), CrashLoop> {
        let policy = &self.policy;
        let now = Instant::now();
        while self
            .recent
            .front()
            .is_some_and(|&at| now.duration_since(at) > policy.crash_loop_window)
        {
            self.recent.pop_front();
        }
        if self.unhealthy_in_a_row >= policy.crash_loop_restarts {
            return Err(CrashLoop {
                restarts: self.unhealthy_in_a_row as usize,
                window: None,
            });
        }
        if self.recent.len() >= policy.crash_loop_restarts as usize {
            return Err(CrashLoop {
                restarts: self.recent.len(),
                window: Some(policy.crash_loop_window),
            });
        }
        core.set_state(PerformerState::Restarting, None);
        tokio::time::sleep(policy.backoff(self.recent.len())).await;
        self.recent.push_back(Instant::now());
        count.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}
