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
    let Some(device) = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|table| device_of(&table, mountpoint))
    else {
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

/// The `major:minor` of the last mount at `mountpoint` in a `/proc/self/mountinfo` table.
fn device_of(table: &str, mountpoint: &Path) -> Option<String> {
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    table.lines().rev().find_map(|line| {
        let mut fields = line.split(' ');
        let device = fields.nth(2)?;
        let point = fields.nth(1)?;
        (unescape(point) == wanted).then(|| device.to_string())
    })
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
95 22 0:39 / /tmp/my\\040mnt rw,nosuid,nodev,relatime shared:50 - fuse.sessionfs sessionfs rw
96 22 0:40 / /tmp/other rw - fuse.sessionfs sessionfs rw
97 95 0:41 / /tmp/my\\040mnt rw - fuse.sessionfs sessionfs rw
";

    #[test]
    fn finds_the_last_mount_at_a_path_with_escapes() {
        assert_eq!(
            device_of(TABLE, Path::new("/tmp/my mnt")).as_deref(),
            Some("0:41")
        );
        assert_eq!(
            device_of(TABLE, Path::new("/tmp/other")).as_deref(),
            Some("0:40")
        );
        assert_eq!(device_of(TABLE, Path::new("/tmp/none")), None);
    }

    #[test]
    fn unescapes_octal_and_keeps_other_backslashes() {
        assert_eq!(unescape(r"a\040b\134c\x"), b"a b\\c\\x");
    }
}
