//! sessionfs-io: the byte plumbing the clients, the core and the emulators share, below all of
//! them: the byte-stream type of request and response bodies, `O_DIRECT` reads and writes of
//! local files with recycled aligned buffers, the one md5 of a local file, and the one
//! extension to MIME type table.

pub mod checksum;
pub mod direct;
pub mod lock;
pub mod mime;
pub mod stream;
