//! The write path: staging files, and uploads that stream while a file is written; the crash
//! journal builds on them.

pub mod budget;
pub mod journal;
pub mod staging;
pub mod stream;

pub use budget::StagedBytes;
pub use journal::{Journal, PendingUpload};
pub use staging::{StagingArea, StagingFile};
pub use stream::{QUEUE_BYTES, StreamingUpload};
