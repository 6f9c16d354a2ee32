//! systemd's readiness protocol for a `Type=notify` unit: READY=1 once the mount answers,
//! STOPPING=1 when it starts to drain. Nothing happens outside systemd (no `NOTIFY_SOCKET`).

use sd_notify::NotifyState;

/// The mount answers: systemd may start what waits for it.
pub fn ready() {
    notify(NotifyState::Ready, "ready");
}

/// The mount is uploading what is pending and unmounting.
pub fn stopping() {
    notify(NotifyState::Stopping, "stopping");
}

fn notify(state: NotifyState<'_>, what: &str) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(err) = sd_notify::notify(&[state]) {
        log::warn!("cannot tell systemd that the mount is {what} (NOTIFY_SOCKET): {err}");
    }
}
