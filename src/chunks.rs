//! Bytes kept as the pieces they arrived in.
//!
//! A ranged GET arrives as the HTTP client's body chunks, each a slice of the buffer one
//! socket read filled. Copying them into one contiguous block cost a sixth of the mount's CPU
//! on a cold read (`perf`: `BytesMut::extend_from_slice`, the only userspace copy). Kept as
//! pieces, a block is sliced and joined without copying, and the FUSE read reply hands the
//! kernel every piece in one `writev` (see `fs::fuse`), so a byte read from the network is
//! copied once more only by the kernel, into the page cache.

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
}
