//! Copies of local files that keep their holes, as `cp --sparse` does.
//!
//! A file written at a large offset is mostly hole: a local disk stores only the blocks that
//! were written, and so must every local copy of it (a snapshot of committed bytes, a staged
//! copy moved to the recovery folder). The data runs are found with `SEEK_DATA`/`SEEK_HOLE` and
//! only they are copied; the destination is extended with `ftruncate`, which allocates
//! nothing. `copy_file_range` alone would not do: on ext4 (no reflink) it copies a hole as
//! written zeros. Where a file system cannot report holes (`EINVAL`, `EOPNOTSUPP`), the whole
//! file counts as one data run.
//!
//! Bytes that arrive from elsewhere (a download) have no holes to find: there, whole blocks of
//! zeros written past the end of the file are skipped instead ([`runs_to_write`]).

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

/// The unit in which written zeros become holes: a page, the block size of every common local
/// file system.
pub const HOLE_BLOCK: u64 = 4096;

/// Bytes moved per `pread`/`pwrite` where `copy_file_range` is not available.
const FALLBACK_BUFFER: usize = 1 << 20;

/// Makes `to` a copy of the first `len` bytes of `from`, holes kept: `to` is set to `len`
/// bytes (sparsely) and only `from`'s data runs are written. Returns the data bytes copied.
pub fn copy_sparse(from: &File, to: &File, len: u64) -> io::Result<u64> {
    to.set_len(0)?;
    to.set_len(len)?;
    let mut copied = 0;
    let mut offset = 0;
    while offset < len {
        let Some(run) = next_data(from, offset, len)? else {
            break;
        };
        copy_range(from, to, run.clone())?;
        copied += run.end - run.start;
        offset = run.end;
    }
    Ok(copied)
}

/// The next run of data at or after `offset`, cut at `len`; `None` when only a hole is left.
fn next_data(file: &File, offset: u64, len: u64) -> io::Result<Option<Range<u64>>> {
    let start = match seek(file, offset, libc::SEEK_DATA) {
        Ok(start) => start,
        // Past the last data: the rest is a hole.
        Err(err) if err.raw_os_error() == Some(libc::ENXIO) => return Ok(None),
        Err(err) if cannot_seek_holes(&err) => return Ok(Some(offset..len)),
        Err(err) => return Err(err),
    };
    if start >= len {
        return Ok(None);
    }
    let end = match seek(file, start, libc::SEEK_HOLE) {
        Ok(end) => end.min(len),
        Err(err) if cannot_seek_holes(&err) => len,
        Err(err) => return Err(err),
    };
    Ok(Some(start..end))
}

fn cannot_seek_holes(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
    )
}

/// `lseek(2)` with `whence`. Only its answer is used: the descriptor's own position is never
/// read (every read and write here is positional), so sharing the descriptor is safe.
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<u64> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on a descriptor we hold open; no memory is passed.
    let found = unsafe { libc::lseek(file.as_raw_fd(), offset, whence) };
    if found < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(found as u64)
}

/// Copies bytes `range` of `from` to the same place in `to`: in the kernel with
/// `copy_file_range`, else through a buffer.
fn copy_range(from: &File, to: &File, range: Range<u64>) -> io::Result<()> {
    let mut offset = range.start;
    while offset < range.end {
        let want = usize::try_from(range.end - offset)
            .unwrap_or(usize::MAX)
            .min(1 << 30);
        let mut off_in = offset as libc::loff_t;
        let mut off_out = offset as libc::loff_t;
        // SAFETY: both descriptors are open; the offsets are ours, so neither file position
        // moves.
        let copied = unsafe {
            libc::copy_file_range(
                from.as_raw_fd(),
                &mut off_in,
                to.as_raw_fd(),
                &mut off_out,
                want,
                0,
            )
        };
        if copied < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                    copy_buffered(from, to, offset..range.end)
                }
                Some(libc::EINTR) => continue,
                _ => Err(err),
            };
        }
        if copied == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended while being copied",
            ));
        }
        offset += copied as u64;
    }
    Ok(())
}

fn copy_buffered(from: &File, to: &File, range: Range<u64>) -> io::Result<()> {
    let mut buf = vec![0; FALLBACK_BUFFER.min((range.end - range.start) as usize)];
    let mut offset = range.start;
    while offset < range.end {
        let want = buf.len().min((range.end - offset) as usize);
        from.read_exact_at(&mut buf[..want], offset)?;
        to.write_all_at(&buf[..want], offset)?;
        offset += want as u64;
    }
    Ok(())
}

/// The parts of `data`, to be written at `offset` past a file's end, that are not whole
/// [`HOLE_BLOCK`]s of zeros (aligned to the file's offsets): writing only these leaves the
/// zero blocks as holes. Ranges are indexes into `data`, in order.
pub fn runs_to_write(offset: u64, data: &[u8]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let at = offset + pos as u64;
        let block_end = ((at / HOLE_BLOCK + 1) * HOLE_BLOCK - offset) as usize;
        let end = block_end.min(data.len());
        let block = &data[pos..end];
        let whole = block.len() as u64 == HOLE_BLOCK;
        if !(whole && is_zero(block)) {
            match runs.last_mut() {
                Some(last) if last.end == pos => last.end = end,
                _ => runs.push(pos..end),
            }
        }
        pos = end;
    }
    runs
}

fn is_zero(block: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: every bit pattern is a valid u64.
        unsafe { block.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Bytes of `file` on disk (`st_blocks`), for tests and logs.
pub fn allocated_bytes(file: &File) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(file.metadata()?.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// A file of `len` bytes with `data` at each offset of `at`, written sparsely.
    fn sparse_file(dir: &std::path::Path, len: u64, at: &[(u64, &[u8])]) -> File {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.join("from"))
            .unwrap();
        file.set_len(len).unwrap();
        for (offset, data) in at {
            file.write_all_at(data, *offset).unwrap();
        }
        file
    }

    #[test]
    fn a_copy_keeps_the_holes_and_the_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let len = 256 * MIB;
        let head = vec![7u8; 8192];
        let middle = vec![9u8; 100];
        let tail = vec![1u8; 4096];
        let from = sparse_file(
            dir.path(),
            len,
            &[(0, &head), (100 * MIB + 3, &middle), (len - 8192, &tail)],
        );
        let to = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("to"))
            .unwrap();
        let copied = copy_sparse(&from, &to, len).unwrap();
        assert!(
            copied < MIB,
            "only data runs are copied, not {copied} bytes"
        );
        assert_eq!(to.metadata().unwrap().len(), len);
        let on_disk = allocated_bytes(&to).unwrap();
        assert!(
            on_disk <= 256 * 1024,
            "a 256 MiB file with 12 KiB of data takes {on_disk} bytes"
        );
        let read = |at: u64, n: usize| {
            let mut buf = vec![0xffu8; n];
            to.read_exact_at(&mut buf, at).unwrap();
            buf
        };
        assert_eq!(read(0, 8192), head);
        assert_eq!(read(8192, 4096), vec![0; 4096]);
        assert_eq!(read(100 * MIB + 3, 100), middle);
        assert_eq!(read(200 * MIB, 4096), vec![0; 4096]);
        assert_eq!(read(len - 8192, 4096), tail);
        assert_eq!(read(len - 4096, 4096), vec![0; 4096]);
    }

    #[test]
    fn a_copy_of_part_of_a_file_cuts_the_last_run_and_overwrites_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let from = sparse_file(dir.path(), 3 * MIB, &[(MIB - 10, &[5u8; 20])]);
        let to = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("to"))
            .unwrap();
        to.write_all_at(&[3u8; 4096], 2 * MIB).unwrap();
        // Data runs are whole blocks of the file system: the block holding the 10 bytes.
        let copied = copy_sparse(&from, &to, MIB).unwrap();
        assert!((10..=2 * HOLE_BLOCK).contains(&copied), "{copied}");
        let mut copy = Vec::new();
        use std::io::Read;
        (&to).read_to_end(&mut copy).unwrap();
        let mut expected = vec![0u8; MIB as usize];
        expected[MIB as usize - 10..].fill(5);
        assert!(copy == expected, "the first MiB, nothing else");
    }

    #[test]
    fn zero_blocks_past_the_end_are_left_out_and_partial_ones_kept() {
        let block = HOLE_BLOCK as usize;
        let mut data = vec![0u8; 4 * block];
        data[block + 5] = 1;
        // Aligned: blocks 0, 2 and 3 are zeros, only block 1 is written.
        assert_eq!(runs_to_write(0, &data), vec![block..2 * block]);
        // Unaligned: the partial first and last blocks are written whatever they hold.
        let runs = runs_to_write(100, &data);
        assert_eq!(runs, vec![0..2 * block - 100, 4 * block - 100..4 * block]);
        assert_eq!(runs_to_write(0, &[]), Vec::<Range<usize>>::new());
        assert_eq!(runs_to_write(0, &[0u8; 10]), vec![0..10]);
    }
}
