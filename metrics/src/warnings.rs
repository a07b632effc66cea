//! Warnings an unauthenticated sender can cause (a forged task, a connection over a limit) are
//! capped per second: a flood is in the metrics in full, and in the log a few lines a second with
//! a count of the rest, never thousands of lines.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A budget of `per_second` warnings; the rest are counted and the count reported with the next
/// warning let through.
#[derive(Debug)]
pub struct WarningBudget {
    /// What kind of warnings, for the line that counts the suppressed ones (`rejection`, …).
    what: &'static str,
    per_second: u32,
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    opened: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl WarningBudget {
    /// At most `per_second` warnings of kind `what` a second.
    pub const fn new(what: &'static str, per_second: u32) -> WarningBudget {
        WarningBudget {
            what,
            per_second,
            window: Mutex::new(Window {
                opened: None,
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether one more warning may be logged at `now`, and how many were suppressed in the window
    /// that `now` closed (to be said with it).
    pub fn admit(&self, now: Instant) -> (bool, u64) {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let mut suppressed = 0;
        if window
            .opened
            .is_none_or(|opened| now.duration_since(opened) >= Duration::from_secs(1))
        {
            suppressed = std::mem::take(&mut window.suppressed);
            window.opened = Some(now);
            window.logged = 0;
        }
        if window.logged < self.per_second {
            window.logged += 1;
            (true, suppressed)
        } else {
            window.suppressed += 1;
            (false, suppressed)
        }
    }

    /// Logs `warning` at warn level within the budget, first saying how many were held back.
    pub fn warn(&self, warning: impl FnOnce()) {
        let (log, suppressed) = self.admit(Instant::now());
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                "{suppressed} {} warnings were not logged (over {} a second); the metrics count \
                 them all",
                self.what,
                self.per_second
            );
        }
        if log {
            warning();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_capped_per_second_and_the_rest_counted() {
        let budget = WarningBudget::new("test", 10);
        let start = Instant::now();
        let admitted = (0..25).filter(|_| budget.admit(start).0).count();
        assert_eq!(admitted, 10);
        // Still the same window: suppressed, nothing to report yet.
        assert_eq!(budget.admit(start + Duration::from_millis(999)), (false, 0));
        // The next window lets one through and reports the 16 held back.
        assert_eq!(budget.admit(start + Duration::from_secs(1)), (true, 16));
        assert_eq!(budget.admit(start + Duration::from_secs(1)), (true, 0));
    }
}
