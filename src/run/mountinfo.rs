//! `/proc/self/mountinfo`: the line of the mount at a path (the last one there, which is the
//! one on top), for the readahead knob of our mount, for telling our mount from one mounted
//! later on the same path, and for `remount`.

use std::path::Path;

/// One line of mountinfo, the fields we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountLine {
    /// `major:minor` of the mounted filesystem (for FUSE, one number per connection).
    pub device: String,
    /// Per-mount options: `rw,nosuid,nodev,relatime`.
    pub options: String,
    /// `fuse.sessionfs`, `ext4`, ...
    pub fs_type: String,
    /// What `mount` showed as the source, unescaped.
    pub source: String,
    /// The superblock's options: `rw,user_id=0,...`.
    pub super_options: String,
}

impl MountLine {
    /// Whether the filesystem itself (not just this mount) is read-only.
    pub fn super_read_only(&self) -> bool {
        self.super_options.split(',').any(|option| option == "ro")
    }
}

/// The mount at `mountpoint` now, read from `/proc/self/mountinfo`.
pub fn mount_at(mountpoint: &Path) -> Option<MountLine> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    line_of(&table, mountpoint)
}

/// The last mount at `mountpoint` in a `/proc/self/mountinfo` table.
pub fn line_of(table: &str, mountpoint: &Path) -> Option<MountLine> {
    let wanted = mountpoint.as_os_str().as_encoded_bytes();
    table.lines().rev().find_map(|line| {
        // ID PARENT MAJOR:MINOR ROOT POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
        let (left, right) = line.split_once(" - ")?;
        let mut fields = left.split(' ');
        let device = fields.nth(2)?;
        let point = fields.nth(1)?;
        let options = fields.next()?;
        if unescape(point) != wanted {
            return None;
        }
        let mut fields = right.split(' ');
        Some(MountLine {
            device: device.to_string(),
            options: options.to_string(),
            fs_type: fields.next()?.to_string(),
            source: String::from_utf8_lossy(&unescape(fields.next()?)).into_owned(),
            super_options: fields.next().unwrap_or_default().to_string(),
        })
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
96 22 0:40 / /tmp/other ro,noexec - fuse.sessionfs work: ro,user_id=0
97 95 0:41 / /tmp/my\\040mnt rw - fuse.sessionfs my\\040host rw
";

    #[test]
    fn finds_the_last_mount_at_a_path_with_escapes() {
        let line = line_of(TABLE, Path::new("/tmp/my mnt")).unwrap();
        assert_eq!(line.device, "0:41");
        assert_eq!(line.source, "my host");
        let line = line_of(TABLE, Path::new("/tmp/other")).unwrap();
        assert_eq!(line.device, "0:40");
        assert_eq!(line.fs_type, "fuse.sessionfs");
        assert_eq!(line.source, "work:");
        assert_eq!(line.options, "ro,noexec");
        assert!(line.super_read_only());
        assert_eq!(line_of(TABLE, Path::new("/tmp/none")), None);
    }

    #[test]
    fn unescapes_octal_and_keeps_other_backslashes() {
        assert_eq!(unescape(r"a\040b\134c\x"), b"a b\\c\\x");
    }
}
