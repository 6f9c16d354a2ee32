//! The one place that picks errnos.
//!
//! Every failure of a filesystem operation is an [`Error`]: the errno the caller sees, a
//! lower-case message that says what failed and what the user can do, and the level at which
//! the FUSE adapter logs it, exactly once. Remote failures convert through one exhaustive match
//! on [`ErrorKind`].

use std::fmt;

use log::Level;

use sessionfs_remote::{ErrorKind, RemoteError};

/// A failed filesystem operation.
#[derive(Debug)]
pub struct Error {
    /// What the syscall returns (`libc::ENOENT`, ...).
    pub errno: i32,
    /// Says what failed and, where it helps, what to do about it.
    pub message: String,
    /// How loudly the adapter logs it: `Debug` for routine misses, `Warn` for failed
    /// operations, `Error` when data is at risk.
    pub level: Level,
}

/// Shorthand for results of filesystem operations.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A failure with an explicit errno, logged as a warning.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
            level: Level::Warn,
        }
    }

    /// A routine failure (a lookup miss) logged only at debug level.
    pub fn quiet(errno: i32, message: impl Into<String>) -> Self {
        Self {
            level: Level::Debug,
            ..Self::new(errno, message)
        }
    }

    /// The name does not exist.
    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::quiet(libc::ENOENT, format!("{what}: no such file or directory"))
    }

    /// The name is taken.
    pub fn exists(name: impl fmt::Display) -> Self {
        Self::quiet(libc::EEXIST, format!("{name}: already exists"))
    }

    /// A directory was needed.
    pub fn not_dir(message: impl Into<String>) -> Self {
        Self::quiet(libc::ENOTDIR, message)
    }

    /// A file was needed and this is a directory.
    pub fn is_dir(message: impl Into<String>) -> Self {
        Self::quiet(libc::EISDIR, message)
    }

    /// A directory that still holds entries cannot be removed.
    pub fn not_empty(name: impl fmt::Display) -> Self {
        Self::quiet(libc::ENOTEMPTY, format!("{name}: directory not empty"))
    }

    /// The mount was made with `--read-only`.
    pub fn read_only() -> Self {
        Self::quiet(libc::EROFS, "mounted read-only")
    }

    /// A name longer than the kernel's limit.
    pub fn name_too_long(message: impl Into<String>) -> Self {
        Self::new(libc::ENAMETOOLONG, message)
    }

    /// A name that is not UTF-8 (every API stores text names).
    pub fn invalid_name(what: impl fmt::Display) -> Self {
        Self::new(
            libc::EINVAL,
            format!("{what}: names must be UTF-8 to be stored remotely"),
        )
    }

    /// The layout or the API does not allow this here (files beside sessions, rm without a
    /// delete API): "not permitted" is what tools expect.
    pub fn not_permitted(message: impl Into<String>) -> Self {
        Self::new(libc::EPERM, message)
    }

    /// An operation on a handle that is closed or was opened for something else.
    pub fn bad_handle(message: impl Into<String>) -> Self {
        Self::new(libc::EBADF, message)
    }

    /// The file would grow past what the API stores.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(libc::EFBIG, message)
    }

    /// A write or truncate would make the file longer than `max`, the largest file `remote`
    /// stores (`Capabilities::max_object_bytes`): refused before anything is staged, as a
    /// local disk refuses a file past its file system's limit.
    pub fn past_largest_file(remote: impl fmt::Display, end: u64, max: u64) -> Self {
        Self::too_large(format!(
            "{remote} holds files of at most {} ({max} bytes); a file of {end} bytes cannot be stored",
            bytesize::ByteSize(max).to_string_as(true)
        ))
    }

    /// The remote refused these very bytes for good before (too large): answered without
    /// trying again, logged only at debug level, since the refusal was logged when it came.
    pub fn refused_before(why: &str) -> Self {
        Self::quiet(libc::EFBIG, why.to_string())
    }

    /// Something else is changing the object right now; trying again later can work.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(libc::EBUSY, message)
    }

    /// Local room ran out (the staging directory's `--max-staged` cap).
    pub fn no_space(message: impl Into<String>) -> Self {
        Self::new(libc::ENOSPC, message)
    }

    /// The move needs a copy: `mv` falls back to copy and delete on EXDEV.
    pub fn cross_device(message: impl Into<String>) -> Self {
        Self::quiet(libc::EXDEV, message)
    }

    /// Data came back wrong or short; the operation cannot complete.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(libc::EIO, message)
    }

    /// An extended attribute the file does not have.
    pub fn no_attribute(name: impl fmt::Display) -> Self {
        Self::quiet(libc::ENODATA, format!("no attribute {name}"))
    }

    /// The caller's buffer is too small for the answer (it asks again with the size).
    pub fn buffer_too_small(what: impl fmt::Display) -> Self {
        Self::quiet(libc::ERANGE, format!("{what}: the buffer is too small"))
    }

    /// Raises the log level: used where a failure leaves data only in the local staging area.
    pub fn at_risk(mut self) -> Self {
        self.level = Level::Error;
        self
    }

    /// Prefixes the message with what was being done.
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

/// Operations sessionfs does not carry out; [`Unsupported::error`] is the one table of their
/// errnos, levels and reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsupported {
    /// mknod of a device node, fifo or socket.
    SpecialFile,
    /// link(2).
    HardLink,
    /// rename with a flag other than RENAME_NOREPLACE (RENAME_EXCHANGE, RENAME_WHITEOUT).
    RenameFlags,
    /// setxattr.
    SetXattr,
    /// removexattr.
    RemoveXattr,
    /// getxattr/listxattr on a mount without `--xattrs`.
    XattrsOff,
    /// fallocate.
    Fallocate,
    /// copy_file_range.
    CopyFileRange,
    /// lseek with SEEK_DATA or SEEK_HOLE.
    SeekData,
}

impl Unsupported {
    /// The error `what` (the name or operation) gets for this operation.
    pub fn error(self, what: impl fmt::Display) -> Error {
        let (errno, level, why) = match self {
            // EPERM: what `cp -a` and `tar` expect from a filesystem that cannot hold them.
            Self::SpecialFile => (
                libc::EPERM,
                Level::Warn,
                "device nodes, fifos and sockets cannot be stored remotely",
            ),
            Self::HardLink => (
                libc::EPERM,
                Level::Warn,
                "hard links cannot be stored remotely",
            ),
            Self::RenameFlags => (
                libc::EINVAL,
                Level::Warn,
                "only RENAME_NOREPLACE is supported: exchanging two names atomically or leaving \
                 a whiteout is not",
            ),
            // ENOTSUP: tools (cp -a, rsync -X) treat it as "this filesystem has no xattrs".
            Self::SetXattr | Self::RemoveXattr => (
                libc::ENOTSUP,
                Level::Debug,
                "extended attributes are not stored",
            ),
            // ENOSYS once: the kernel stops asking for xattrs on this mount.
            Self::XattrsOff => (
                libc::ENOSYS,
                Level::Debug,
                "extended attributes are off (mount with --xattrs)",
            ),
            Self::Fallocate => (
                libc::ENOTSUP,
                Level::Debug,
                "space cannot be reserved remotely",
            ),
            // ENOSYS: the kernel then copies with plain reads and writes, which stage as usual.
            Self::CopyFileRange => (
                libc::ENOSYS,
                Level::Debug,
                "the kernel copies with reads and writes instead",
            ),
            // ENOSYS: the kernel then treats the file as all data.
            Self::SeekData => (
                libc::ENOSYS,
                Level::Debug,
                "holes are not tracked; the file is all data",
            ),
        };
        Error {
            errno,
            message: format!("{what}: {why}"),
            level,
        }
    }
}

/// The errno for each kind of remote failure.
pub fn errno_for(kind: ErrorKind) -> i32 {
    match kind {
        ErrorKind::NotFound => libc::ENOENT,
        ErrorKind::PermissionDenied => libc::EACCES,
        ErrorKind::AlreadyExists => libc::EEXIST,
        // EAGAIN tells the caller that trying again later can work, which is true of a 429.
        ErrorKind::RateLimited => libc::EAGAIN,
        ErrorKind::TooLarge => libc::EFBIG,
        // The API has no such operation: "not permitted" is what tools expect (rm on a
        // read-only store), where ENOTSUP would read as a broken filesystem.
        ErrorKind::Unsupported => libc::EPERM,
        ErrorKind::InvalidInput => libc::EINVAL,
        ErrorKind::NoSpace => libc::ENOSPC,
        // Another client changed the object; ESTALE is the signal NFS and gcsfuse use.
        ErrorKind::Conflict => libc::ESTALE,
        ErrorKind::Unavailable | ErrorKind::Protocol => libc::EIO,
    }
}

impl From<RemoteError> for Error {
    fn from(err: RemoteError) -> Self {
        let level = match err.kind {
            ErrorKind::NotFound => Level::Debug,
            _ => Level::Warn,
        };
        Self {
            errno: errno_for(err.kind),
            message: err.message,
            level,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        let errno = if errno == libc::ENOSPC || errno == libc::EDQUOT {
            libc::ENOSPC
        } else {
            errno
        };
        Self::new(errno, format!("local staging area: {err}")).at_risk()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_remote_kind_has_a_deliberate_errno() {
        let table = [
            (ErrorKind::NotFound, libc::ENOENT),
            (ErrorKind::PermissionDenied, libc::EACCES),
            (ErrorKind::AlreadyExists, libc::EEXIST),
            (ErrorKind::RateLimited, libc::EAGAIN),
            (ErrorKind::TooLarge, libc::EFBIG),
            (ErrorKind::Unsupported, libc::EPERM),
            (ErrorKind::InvalidInput, libc::EINVAL),
            (ErrorKind::NoSpace, libc::ENOSPC),
            (ErrorKind::Conflict, libc::ESTALE),
            (ErrorKind::Unavailable, libc::EIO),
            (ErrorKind::Protocol, libc::EIO),
        ];
        for (kind, errno) in table {
            let err: Error = RemoteError::new(kind, "x").into();
            assert_eq!(err.errno, errno, "{kind:?}");
        }
    }

    #[test]
    fn every_unsupported_operation_has_a_deliberate_errno() {
        let table = [
            (Unsupported::SpecialFile, libc::EPERM),
            (Unsupported::HardLink, libc::EPERM),
            (Unsupported::RenameFlags, libc::EINVAL),
            (Unsupported::SetXattr, libc::ENOTSUP),
            (Unsupported::RemoveXattr, libc::ENOTSUP),
            (Unsupported::XattrsOff, libc::ENOSYS),
            (Unsupported::Fallocate, libc::ENOTSUP),
            (Unsupported::CopyFileRange, libc::ENOSYS),
            (Unsupported::SeekData, libc::ENOSYS),
        ];
        for (op, errno) in table {
            let err = op.error("x");
            assert_eq!(err.errno, errno, "{op:?}");
            assert!(err.message.starts_with("x: "), "{}", err.message);
        }
    }

    #[test]
    fn a_missing_object_is_logged_quietly() {
        let err: Error = RemoteError::new(ErrorKind::NotFound, "gone").into();
        assert_eq!(err.level, Level::Debug);
        let err: Error = RemoteError::new(ErrorKind::Unavailable, "down").into();
        assert_eq!(err.level, Level::Warn);
    }
}
