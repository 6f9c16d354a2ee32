//! Bytes kept as the pieces they arrived in.
//!
//! A ranged GET arrives as the HTTP client's body chunks, each a slice of the buffer one
//! socket read filled. Copying them into one contiguous block cost a sixth of the mount's CPU
//! on a cold read (`perf`: `BytesMut::extend_from_slice`, the only userspace copy). Kept as
//! pieces, a block is sliced and joined without copying, and the FUSE read reply hands the
//! kernel every piece in one `writev` (see `fs::fuse`), so a byte read from the network is
//! copied once more only by the kernel, into the page cache.
//!
//! A shared piece keeps the whole buffer it was cut from alive. [`ChunksBuilder`] therefore
//! shares only pieces that fill most of such a buffer, and copies the short ones (a slow link
//! delivers many) into buffers of its own, so the bytes held stay close to the bytes counted.

use std::io::IoSlice;
use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Bytes as a list of shared pieces: cloning, slicing and appending never copy the bytes.
#[derive(Clone, Debug, Default)]
pub struct Chunks {
    pieces: Vec<Bytes>,
    len: usize,
}

impl Chunks {
    /// No bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `piece` at the end (an empty piece is not kept).
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.len += piece.len();
            self.pieces.push(piece);
        }
    }

    /// Adds every piece of `other` at the end.
    pub fn append(&mut self, other: Chunks) {
        self.len += other.len;
        self.pieces.extend(other.pieces);
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in order; none is empty.
    pub fn pieces(&self) -> &[Bytes] {
        &self.pieces
    }

    /// The pieces as I/O slices, for one vectored write.
    pub fn io_slices(&self) -> Vec<IoSlice<'_>> {
        self.pieces
            .iter()
            .map(|piece| IoSlice::new(piece))
            .collect()
    }

    /// Bytes `range` of these (clamped to the length), sharing the pieces.
    pub fn slice(&self, range: Range<usize>) -> Chunks {
        let end = range.end.min(self.len);
        let mut start = range.start.min(end);
        let mut wanted = end - start;
        let mut out = Chunks::new();
        for piece in &self.pieces {
            if wanted == 0 {
                break;
            }
            if start >= piece.len() {
                start -= piece.len();
                continue;
            }
            let take = (piece.len() - start).min(wanted);
            out.push(piece.slice(start..start + take));
            wanted -= take;
            start = 0;
        }
        out
    }

    /// The bytes in one contiguous buffer: the piece itself when there is one, else a copy.
    /// For the few callers that need one slice (a symlink target, a small local answer).
    pub fn contiguous(&self) -> Bytes {
        match self.pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut out = BytesMut::with_capacity(self.len);
                for piece in many {
                    out.extend_from_slice(piece);
                }
                out.freeze()
            }
        }
    }

    /// The bytes copied into a vector.
    pub fn to_vec(&self) -> Vec<u8> {
        self.contiguous().to_vec()
    }
}

impl From<Bytes> for Chunks {
    fn from(piece: Bytes) -> Self {
        let mut chunks = Chunks::new();
        chunks.push(piece);
        chunks
    }
}

impl From<Vec<u8>> for Chunks {
    fn from(bytes: Vec<u8>) -> Self {
        Bytes::from(bytes).into()
    }
}

impl From<&'static [u8]> for Chunks {
    fn from(bytes: &'static [u8]) -> Self {
        Bytes::from_static(bytes).into()
    }
}

/// Largest buffer of our own that short pieces are copied into.
const COPY_BUFFER_BYTES: usize = 1 << 20;

/// Collects pieces into [`Chunks`]: a piece of at least `share_at` bytes is shared as it is;
/// shorter ones are copied, runs of them into one buffer, sized to what is still expected so
/// that it never grows by reallocating.
#[derive(Debug)]
pub struct ChunksBuilder {
    out: Chunks,
    copied: Vec<u8>,
    share_at: usize,
    expected: usize,
}

impl ChunksBuilder {
    /// Collects about `expected` bytes (more or fewer are fine), sharing pieces of at least
    /// `share_at` bytes.
    pub fn new(share_at: usize, expected: usize) -> Self {
        Self {
            out: Chunks::new(),
            copied: Vec::new(),
            share_at,
            expected,
        }
    }

    /// Bytes collected so far.
    pub fn len(&self) -> usize {
        self.out.len() + self.copied.len()
    }

    /// Whether nothing was collected yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds `piece` at the end.
    pub fn push(&mut self, piece: Bytes) {
        if piece.len() >= self.share_at {
            self.flush();
            self.out.push(piece);
            return;
        }
        let mut rest = &piece[..];
        while !rest.is_empty() {
            if self.copied.capacity() == 0 {
                let still_expected = self.expected.saturating_sub(self.len());
                self.copied
                    .reserve_exact(still_expected.max(rest.len()).min(COPY_BUFFER_BYTES));
            }
            let room = self.copied.capacity() - self.copied.len();
            let take = room.min(rest.len());
            self.copied.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.copied.len() == self.copied.capacity() {
                self.flush();
            }
        }
    }

    /// The collected bytes.
    pub fn finish(mut self) -> Chunks {
        self.flush();
        self.out
    }

    fn flush(&mut self) {
        if !self.copied.is_empty() {
            let mut copied = std::mem::take(&mut self.copied);
            copied.shrink_to_fit();
            self.out.push(Bytes::from(copied));
        }
    }
}

/// Equal when the bytes are, however they are split into pieces.
impl PartialEq for Chunks {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.to_vec() == other.to_vec()
    }
}

impl Eq for Chunks {}

impl PartialEq<[u8]> for Chunks {
    fn eq(&self, other: &[u8]) -> bool {
        self.len == other.len() && self.to_vec() == other
    }
}

impl PartialEq<&[u8]> for Chunks {
    fn eq(&self, other: &&[u8]) -> bool {
        *self == **other
    }
}

impl<const N: usize> PartialEq<&[u8; N]> for Chunks {
    fn eq(&self, other: &&[u8; N]) -> bool {
        *self == other[..]
    }
}

impl PartialEq<Vec<u8>> for Chunks {
    fn eq(&self, other: &Vec<u8>) -> bool {
        *self == other[..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &'static [u8], at: &[usize]) -> Chunks {
        let mut chunks = Chunks::new();
        let mut from = 0;
        for &to in at.iter().chain(std::iter::once(&text.len())) {
            chunks.push(Bytes::from_static(&text[from..to]));
            from = to;
        }
        chunks
    }

    #[test]
    fn slices_across_pieces_without_empty_pieces() {
        let chunks = split(b"abcdefghij", &[3, 3, 7]);
        assert_eq!(chunks.len(), 10);
        assert_eq!(chunks.pieces().len(), 3, "the empty piece is not kept");
        for start in 0..=10 {
            for end in start..=12 {
                let got = chunks.slice(start..end);
                let want = &b"abcdefghij"[start..end.min(10)];
                assert_eq!(got, want, "{start}..{end}");
                assert!(got.pieces().iter().all(|p| !p.is_empty()));
            }
        }
        assert!(chunks.slice(12..20).is_empty());
    }

    #[test]
    fn appending_and_flattening_keep_the_order() {
        let mut chunks = split(b"abc", &[1]);
        chunks.append(split(b"defg", &[2]));
        assert_eq!(chunks.pieces().len(), 4);
        assert_eq!(chunks.contiguous(), Bytes::from_static(b"abcdefg"));
        let one = Chunks::from(Bytes::from_static(b"xyz"));
        assert_eq!(
            one.contiguous().as_ptr(),
            one.pieces()[0].as_ptr(),
            "one piece is not copied"
        );
        let joined: Vec<u8> = chunks.io_slices().iter().flat_map(|s| s.to_vec()).collect();
        assert_eq!(joined, b"abcdefg");
    }

    #[test]
    fn the_builder_shares_long_pieces_and_copies_short_ones_together() {
        let long = Bytes::from(vec![7u8; 100]);
        let mut builder = ChunksBuilder::new(50, 180);
        for piece in [&b"ab"[..], b"cd", b"ef"] {
            builder.push(Bytes::from_static(piece));
        }
        builder.push(long.clone());
        builder.push(Bytes::from_static(b"gh"));
        assert_eq!(builder.len(), 108);
        let chunks = builder.finish();
        let pieces = chunks.pieces();
        assert_eq!(pieces.len(), 3, "three short pieces copied into one buffer");
        assert_eq!(pieces[0], &b"abcdef"[..]);
        assert_eq!(
            pieces[1].as_ptr(),
            long.as_ptr(),
            "the long piece is shared"
        );
        assert_eq!(pieces[2], &b"gh"[..]);
    }

    #[test]
    fn copied_runs_never_outgrow_their_buffer() {
        let mut builder = ChunksBuilder::new(usize::MAX, 10);
        let piece = Bytes::from(vec![1u8; 3 * COPY_BUFFER_BYTES / 2]);
        builder.push(piece.slice(..4));
        builder.push(piece.clone());
        let chunks = builder.finish();
        assert_eq!(chunks.len(), 4 + piece.len());
        assert!(chunks.pieces().iter().all(|p| p.len() <= COPY_BUFFER_BYTES));
        assert!(chunks.to_vec().iter().all(|&b| b == 1));
    }
}
