//! The write path: staging files now; the upload scheduler and the crash journal build on them.

pub mod staging;

pub use staging::{StagingArea, StagingFile};
