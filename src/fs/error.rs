//! The one place that picks errnos.
//!
//! Every failure of a filesystem operation is an [`Error`]: the errno the caller sees, a
//! lower-case message that says what failed and what the user can do, and the level at which
//! the FUSE adapter logs it, exactly once. Remote failures convert through one exhaustive match
//! on [`ErrorKind`].

use std::fmt;

use log::Level;

use crate::remote::{ErrorKind, RemoteError};

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
    fn a_missing_object_is_logged_quietly() {
        let err: Error = RemoteError::new(ErrorKind::NotFound, "gone").into();
        assert_eq!(err.level, Level::Debug);
        let err: Error = RemoteError::new(ErrorKind::Unavailable, "down").into();
        assert_eq!(err.level, Level::Warn);
    }
}
