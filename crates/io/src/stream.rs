//! The byte-stream type that request bodies, downloads and emulator responses share.
//!
//! It lives apart from both the client (`remote`) and the emulators so that neither imports
//! the other to speak of a body produced while it is sent.

use bytes::Bytes;

/// A body produced while it is sent: chunks of bytes, or the I/O error that ended it.
pub type ByteStream = futures::stream::BoxStream<'static, std::io::Result<Bytes>>;
