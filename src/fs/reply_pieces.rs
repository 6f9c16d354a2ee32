//! Read replies of several pieces, written straight to the FUSE device.
//!
//! The block cache keeps bytes as the pieces they arrived in ([`Chunks`]), and a 1 MiB kernel
//! read spans many of them. fuser 0.18 answers a read with one `&[u8]`, which would mean
//! copying every piece into one buffer first: the copy we removed from the cache. So this
//! writes the reply itself, the way fuser does: a `fuse_out_header` and the payload in one
//! `writev`, which the kernel takes as one message and copies from each piece straight into
//! the page cache.
//!
//! A reply must go to the descriptor its request was read from. The mount reads every request
//! from one descriptor (fuser's `clone_fd` stays off), and [`PieceReplier::attach`] keeps a
//! duplicate of it. Until it is attached, and for replies of one piece, fuser answers as usual.

use std::fs::File;
use std::io::{IoSlice, Write};
use std::os::fd::BorrowedFd;
use std::sync::OnceLock;

use fuser::ReplyData;

use crate::chunks::Chunks;

/// Size of `struct fuse_out_header`: `len: u32, error: i32, unique: u64`.
const HEADER_BYTES: usize = 16;
/// Most slices one `writev` takes on Linux (`UIO_MAXIOV`); the header is one of them.
const MAX_SLICES: usize = 1024;

/// Writes multi-piece read replies to the mount's FUSE device.
#[derive(Debug, Default)]
pub struct PieceReplier {
    device: OnceLock<File>,
}

impl PieceReplier {
    /// Keeps a duplicate of the session's device descriptor (the one every request is read
    /// from). Called once, before the session serves its first request.
    pub fn attach(&self, device: BorrowedFd<'_>) -> std::io::Result<()> {
        let file = File::from(device.try_clone_to_owned()?);
        // A second attach keeps the first descriptor: both name the same device.
        let _ = self.device.set(file);
        Ok(())
    }

    /// Answers request `unique` with `data`.
    pub fn reply(&self, unique: u64, reply: ReplyData, data: &Chunks) {
        let pieces = data.pieces();
        let device = match (pieces, self.device.get()) {
            ([], _) => return reply.data(&[]),
            ([one], _) => return reply.data(one),
            (_, Some(device)) if pieces.len() < MAX_SLICES => device,
            _ => return reply.data(&data.contiguous()),
        };
        match write_reply(device, unique, data) {
            Ok(()) => answered(reply),
            // The kernel no longer waits for this request (its reader was interrupted).
            Err(err) if err.raw_os_error() == Some(libc::ENOENT) => answered(reply),
            Err(err) => {
                log::debug!("vectored read reply refused ({err}); answering with one buffer");
                reply.data(&data.contiguous())
            }
        }
    }
}

/// Writes the header and every piece of `data` as the answer to request `unique`.
fn write_reply(mut device: &File, unique: u64, data: &Chunks) -> std::io::Result<()> {
    let len = HEADER_BYTES + data.len();
    let mut header = [0u8; HEADER_BYTES];
    header[..4].copy_from_slice(&(len as u32).to_ne_bytes());
    // Bytes 4..8 are the error: 0.
    header[8..].copy_from_slice(&unique.to_ne_bytes());
    let mut slices = Vec::with_capacity(1 + data.pieces().len());
    slices.push(IoSlice::new(&header));
    slices.extend(data.io_slices());
    // The device takes a whole message or none of it.
    let written = device.write_vectored(&slices)?;
    if written == len {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "wrote {written} of {len} reply bytes"
        )))
    }
}

/// Disposes of a reply that was answered by [`write_reply`]. Dropping it would make fuser send
/// a second answer (EIO) for the same request, and fuser has no way to mark it answered, so it
/// is forgotten. It owns no memory of its own: the request id and a reference to fuser's
/// shared device handle, whose count stays raised, so that handle lives as long as the
/// process, like our duplicate.
fn answered(reply: ReplyData) {
    std::mem::forget(reply);
}
