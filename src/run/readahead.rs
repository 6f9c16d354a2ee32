//! The kernel's readahead window for a mount. FUSE takes the smaller of the daemon's
//! `max_readahead` and the backing device's `read_ahead_kb`, which starts at 128 KiB: a
//! sequential read then reaches the daemon as 128 KiB requests, one round trip through
//! `/dev/fuse` each. Raising the window to the largest read the kernel sends (1 MiB, our
//! `max_write` in pages) makes those requests 1 MiB, and a cold loopback read of 1 GiB took
//! 1.15 s instead of 1.8 s. It needs root (the advice to `echo 1024 > read_ahead_kb` that
//! FUSE filesystems give their users does too); without it the mount still works.

use std::path::Path;

/// The window we ask for, in KiB: one FUSE read of the largest size (`max_pages` of 4 KiB).
const READ_AHEAD_KIB: u64 = 1024;

/// Raises the readahead window of the mount at `mountpoint` to [`READ_AHEAD_KIB`], never
/// lowering one an administrator set higher. Failing (not root, no sysfs) is logged at debug
/// level: it only costs speed.
pub fn widen(mountpoint: &Path) {
    let Some(device) = super::mountinfo::mount_at(mountpoint).map(|line| line.device) else {
        log::debug!(
            "no mountinfo line for {}; readahead left as is",
            mountpoint.display()
        );
        return;
    };
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    let current = std::fs::read_to_string(&knob)
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok());
    if current.is_some_and(|kib| kib >= READ_AHEAD_KIB) {
        return;
    }
    match std::fs::write(&knob, READ_AHEAD_KIB.to_string()) {
        Ok(()) => log::debug!(
            "readahead of {} set to {READ_AHEAD_KIB} KiB",
            mountpoint.display()
        ),
        Err(err) => {
            log::debug!("cannot raise readahead in {knob} ({err}); reads stay in 128 KiB requests")
        }
    }
}
