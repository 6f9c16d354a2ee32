//! The write path: staging files, and uploads that stream while a file is written; the crash
//! journal builds on them, and the journal of directory renames in progress.

pub mod budget;
pub mod journal;
mod records;
pub mod renames;
pub mod sparse;
pub mod staging;
pub mod stream;

pub use budget::StagedBytes;
pub use journal::{Journal, PendingUpload};
pub use renames::{DirRename, ObjectMove, RenameLog};
pub use staging::{StagingArea, StagingFile};
pub use stream::{QUEUE_BYTES, StreamingUpload};
