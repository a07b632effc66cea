//! systemd's notify protocol, for `deploy/avsnode.service` (`Type=notify`, `WatchdogSec=`):
//! `READY=1` once the intake serves, `RELOADING=1` … `READY=1` around a SIGHUP reload,
//! `STOPPING=1` when the node starts to stop, and `WATCHDOG=1` every half of the watchdog
//! interval while the runtime runs. Outside systemd (no `NOTIFY_SOCKET`) every call does nothing.

use sd_notify::NotifyState;
use tracing::warn;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        warn!(error = %e, "cannot notify systemd");
    }
}

/// The node serves.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("serving")]);
}

/// A reload starts (the monotonic time systemd 253 and later require with it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// The node stops.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// With `WatchdogSec=` (systemd sets `WATCHDOG_USEC`): pings every half of it from the async
/// runtime, so a node whose workers are wedged is restarted.
pub fn spawn_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval / 2);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
