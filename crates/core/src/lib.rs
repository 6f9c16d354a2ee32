//! sessionfs-core: the filesystem core. `fs` answers the kernel's requests from the inode table
//! and the remote (through the `Remote` trait of `sessionfs-remote`, and nothing else of it),
//! `cache` keeps blocks of remote objects under the one memory budget, and `write` stages,
//! journals and uploads what is written.

pub mod cache;
pub mod fs;
pub mod write;
