//! A container's output forwarded to the node's log, rate-limited per container.

use std::pin::pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_stream::StreamExt;
use tracing::Instrument;

/// The task copying one run's output into the log; stopped when dropped.
#[derive(Debug)]
pub(super) struct LogFollower(Option<JoinHandle<()>>);

impl LogFollower {
    /// Waits (at most `within`) for the output of a stopped container to be copied.
    pub(super) async fn drain(&mut self, within: Duration) {
        if let Some(task) = &mut self.0 {
            let _ = tokio::time::timeout(within, task).await;
        }
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Follows the container's stdout and stderr from `since` until it stops.
pub(super) fn follow_logs(
    docker: &Docker,
    id: &str,
    lines_per_second: u32,
    since: SystemTime,
) -> LogFollower {
    if lines_per_second == 0 {
        return LogFollower(None);
    }
    let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
    // The API takes whole seconds: the timestamps drop the previous run's last lines.
    let options = LogsOptionsBuilder::new()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(true)
        .since(i32::try_from(since.as_secs()).unwrap_or(0))
        .build();
    let logs = docker.logs(id, Some(options));
    let mut limit = LineLimit::new(lines_per_second);
    let task = tokio::spawn(
        async move {
            let mut logs = pin!(logs);
            let mut report = tokio::time::interval(Duration::from_secs(1));
            report.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    output = logs.next() => match output {
                        Some(Ok(output)) => forward(&output, since, &mut limit),
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "following the container's output failed");
                            break;
                        }
                        None => break,
                    },
                    _ = report.tick() => limit.report(),
                }
            }
            limit.report();
        }
        .in_current_span(),
    );
    LogFollower(Some(task))
}

/// Logs one entry of the container's output (one line, prefixed with Docker's timestamp) unless it
/// is older than `since` or over the rate limit.
pub(super) fn forward(output: &LogOutput, since: Duration, limit: &mut LineLimit) {
    let (stream, bytes) = match output {
        LogOutput::StdOut { message } => ("stdout", message),
        LogOutput::StdErr { message } => ("stderr", message),
        LogOutput::Console { message } => ("console", message),
        LogOutput::StdIn { .. } => return,
    };
    let text = String::from_utf8_lossy(bytes);
    let text = match text.split_once(' ') {
        Some((stamp, rest)) => match parse_timestamp(stamp) {
            Some(at) if at < since => return,
            Some(_) => rest,
            None => &text,
        },
        None => &text,
    };
    for line in text.lines().filter(|line| !line.is_empty()) {
        if !limit.admit() {
            continue;
        }
        if stream == "stderr" {
            tracing::warn!(stream, "{line}");
        } else {
            tracing::info!(stream, "{line}");
        }
    }
}

/// The time since the Unix epoch of an RFC 3339 timestamp as Docker writes them
/// (`2006-01-02T15:04:05.999999999Z`, or with a `±hh:mm` offset).
pub(super) fn parse_timestamp(stamp: &str) -> Option<Duration> {
    let number = |from: usize, to: usize| -> Option<i64> {
        let digits = stamp.get(from..to)?;
        digits
            .bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| digits.parse().ok())?
    };
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators
        .iter()
        .any(|&(at, c)| stamp.as_bytes().get(at) != Some(&c))
    {
        return None;
    }
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second) = (number(11, 13)?, number(14, 16)?, number(17, 19)?);
    let mut rest = stamp.get(19..)?;
    let mut nanos = 0;
    if let Some(fraction) = rest.strip_prefix('.') {
        let digits = fraction.bytes().take_while(u8::is_ascii_digit).count();
        let scale = 10u32.checked_pow(9u32.checked_sub(u32::try_from(digits).ok()?)?)?;
        nanos = fraction[..digits].parse::<u32>().ok()? * scale;
        rest = &fraction[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|b| b.is_ascii_digit()) =>
        {
            let digit = |b: &u8| i64::from(b - b'0');
            let minutes = (digit(h1) * 10 + digit(h2)) * 60 + digit(m1) * 10 + digit(m2);
            if *sign == b'+' {
                minutes * 60
            } else {
                -minutes * 60
            }
        }
        _ => return None,
    };
    // Days from the civil date (Howard Hinnant's algorithm), years starting in March.
    let y = if month <= 2 { year - 1 } else { year };
    let (era, year_of_era) = (y.div_euclid(400), y.rem_euclid(400));
    let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    let days = era * 146_097 + day_of_era - 719_468;
    let seconds = days * 86_400 + hour * 3_600 + minute * 60 + second - offset;
    Some(Duration::new(u64::try_from(seconds).ok()?, nanos))
}

/// A token bucket for log lines: `rate` per second, bursts of twice that; counts what it drops.
#[derive(Debug)]
pub(super) struct LineLimit {
    pub(super) rate: f64,
    pub(super) burst: f64,
    pub(super) tokens: f64,
    pub(super) refilled: Instant,
    pub(super) dropped: u64,
}

impl LineLimit {
    pub(super) fn new(rate: u32) -> Self {
        let rate = f64::from(rate);
        Self {
            rate,
            burst: 2.0 * rate,
            tokens: 2.0 * rate,
            refilled: Instant::now(),
            dropped: 0,
        }
    }

    pub(super) fn admit(&mut self) -> bool {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            self.dropped += 1;
            false
        }
    }

    /// Logs (and resets) the count of dropped lines, if any; called once a second.
    pub(super) fn report(&mut self) {
        if self.dropped > 0 {
            tracing::warn!(dropped = self.dropped, "performer log lines dropped");
            self.dropped = 0;
        }
    }
}
