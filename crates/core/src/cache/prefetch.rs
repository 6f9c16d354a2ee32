//! The per-handle sequential detector that decides how far ahead to fetch.
//!
//! Each open handle has a [`Prefetcher`]. A read that starts at the beginning of the file or
//! near where the previous read ended is *sequential*: the window doubles (from
//! [`INITIAL_WINDOW_BYTES`] up to the cap the caller passes, which follows the memory budget)
//! and the caller is told which bytes beyond the read to fetch. Any other read is *random*:
//! the window closes and only the blocks asked for are fetched.
//!
//! The kernel sends reads of one stream slightly out of order (async reads, several fuser
//! threads), so once a stream is open "near" is a tolerance: up to
//! [`BACKWARD_TOLERANCE_BYTES`] behind the furthest position seen or
//! [`FORWARD_TOLERANCE_BYTES`] past it keeps the stream (and its window) alive. After a random
//! read only a read starting exactly where it ended opens a new stream. New fetches are asked
//! for in batches: only when less than three quarters of a window is left ahead of the reader.
//! Each batch is then a quarter window or more and splits into several requests, and between
//! three quarters and all of the window stays in flight: over a network with a round trip per
//! request the pipe stays full (with half a window, the in-flight count sagged to half).
//!
//! Blocks a stream has left behind (further back than the tolerance) are [`consumed`]: the
//! kernel holds their bytes in its page cache now, so the caller can give their memory back.
//!
//! [`consumed`]: Prefetcher::consumed

use std::ops::Range;

/// First prefetch window of a sequential stream.
pub const INITIAL_WINDOW_BYTES: u64 = 2 << 20;
/// How far behind the furthest read a read may start and still count as sequential.
pub const BACKWARD_TOLERANCE_BYTES: u64 = 4 << 20;
/// How far past the furthest read a read may start and still count as sequential.
pub const FORWARD_TOLERANCE_BYTES: u64 = 16 << 20;

/// Sequential-access detector and prefetch window of one handle.
#[derive(Debug, Default)]
pub struct Prefetcher {
    /// End of the furthest read of the current stream.
    furthest: u64,
    /// Current window in bytes; 0 while the access is random.
    window: u64,
    /// End of what has been asked for ahead of the reader.
    ahead: u64,
    /// Bytes before this were reported consumed (or precede the stream).
    released: u64,
}

impl Prefetcher {
    /// Records a read of `len` bytes at `offset` in a file of `size` bytes and returns the byte
    /// range to fetch ahead of it, if any. `max_window` caps the window.
    pub fn on_read(
        &mut self,
        offset: u64,
        len: u64,
        size: u64,
        max_window: u64,
    ) -> Option<Range<u64>> {
        let end = (offset + len).min(size);
        let sequential = if self.window > 0 {
            offset + BACKWARD_TOLERANCE_BYTES >= self.furthest
                && offset <= self.furthest + FORWARD_TOLERANCE_BYTES
        } else {
            // After random reads only an exact continuation starts a stream.
            offset == self.furthest
        } || offset == 0;
        if !sequential {
            // A stream that starts later starts here: nothing before it is its to release.
            *self = Self {
                furthest: end,
                window: 0,
                ahead: 0,
                released: end,
            };
            return None;
        }
        if offset == 0 && self.furthest > BACKWARD_TOLERANCE_BYTES {
            // Reading the file again from the start: a new stream.
            *self = Self::default();
        }
        self.furthest = self.furthest.max(end);
        self.window = if self.window == 0 {
            INITIAL_WINDOW_BYTES
        } else {
            self.window * 2
        }
        .min(max_window.max(1));
        let ahead_from = self.ahead.max(self.furthest);
        if ahead_from >= size || ahead_from >= self.furthest + self.window * 3 / 4 {
            return None;
        }
        let ahead_to = (self.furthest + self.window).min(size);
        self.ahead = ahead_to;
        Some(ahead_from..ahead_to)
    }

    /// The current window (0 while random).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Indexes of the `block_size` blocks the current stream has newly left behind, each
    /// reported once; none while the access is random.
    pub fn consumed(&mut self, block_size: u64) -> Option<Range<u64>> {
        if self.window == 0 {
            return None;
        }
        let first = self.released.div_ceil(block_size);
        let last = self.furthest.saturating_sub(BACKWARD_TOLERANCE_BYTES) / block_size;
        if last <= first {
            return None;
        }
        self.released = last * block_size;
        Some(first..last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const SIZE: u64 = 1 << 30;
    const CAP: u64 = 64 * MIB;

    #[test]
    fn a_stream_reports_the_blocks_it_left_behind_once() {
        let mut p = Prefetcher::default();
        p.on_read(0, MIB, SIZE, CAP);
        assert_eq!(p.consumed(MIB), None, "still within the tolerance");
        for i in 1..10 {
            p.on_read(i * MIB, MIB, SIZE, CAP);
        }
        assert_eq!(p.consumed(MIB), Some(0..6));
        assert_eq!(p.consumed(MIB), None);
        p.on_read(10 * MIB, MIB, SIZE, CAP);
        assert_eq!(p.consumed(MIB), Some(6..7));
        // A random read ends the stream; a new one releases only from where it began.
        p.on_read(500 * MIB, 4096, SIZE, CAP);
        assert_eq!(p.consumed(MIB), None);
        for i in 0..8 {
            p.on_read(500 * MIB + 4096 + i * MIB, MIB, SIZE, CAP);
        }
        assert_eq!(p.consumed(MIB), Some(501..504));
    }

    #[test]
    fn the_window_doubles_up_to_the_cap_on_sequential_reads() {
        let mut p = Prefetcher::default();
        let first = p.on_read(0, 128 << 10, SIZE, CAP).unwrap();
        assert_eq!(first, (128 << 10)..(128 << 10) + INITIAL_WINDOW_BYTES);
        let mut offset = 128 << 10;
        let mut windows = vec![p.window()];
        while offset < 200 * MIB {
            p.on_read(offset, 128 << 10, SIZE, CAP);
            windows.push(p.window());
            offset += 128 << 10;
        }
        assert!(windows.windows(2).all(|w| w[1] == (w[0] * 2).min(CAP)));
        assert_eq!(p.window(), CAP);
    }

    #[test]
    fn fetches_ahead_come_in_batches_of_at_least_a_quarter_window() {
        let mut p = Prefetcher::default();
        let mut fetched = Vec::new();
        let mut offset = 0;
        while offset < 300 * MIB {
            if let Some(range) = p.on_read(offset, MIB, SIZE, CAP) {
                fetched.push(range);
            }
            offset += MIB;
        }
        // Contiguous, never overlapping, and large once the window is open.
        assert!(fetched.windows(2).all(|w| w[0].end == w[1].start));
        assert!(fetched.iter().skip(6).all(|r| r.end - r.start >= CAP / 4));
        assert!(fetched.last().unwrap().end >= 300 * MIB);
    }

    #[test]
    fn slightly_out_of_order_reads_keep_the_window() {
        let mut p = Prefetcher::default();
        for i in 0..8 {
            p.on_read(i * MIB, MIB, SIZE, CAP);
        }
        let open = p.window();
        // The kernel answers 9 before 8, then 8.
        p.on_read(9 * MIB, MIB, SIZE, CAP);
        p.on_read(8 * MIB, MIB, SIZE, CAP);
        assert!(p.window() >= open);
    }

    #[test]
    fn a_far_seek_closes_the_window_and_fetches_nothing_ahead() {
        let mut p = Prefetcher::default();
        for i in 0..8 {
            p.on_read(i * MIB, MIB, SIZE, CAP);
        }
        assert_eq!(p.on_read(500 * MIB, 4096, SIZE, CAP), None);
        assert_eq!(p.window(), 0);
        assert_eq!(p.on_read(100 * MIB, 4096, SIZE, CAP), None);
        assert_eq!(p.on_read(7 * MIB, 4096, SIZE, CAP), None);
    }

    #[test]
    fn nothing_is_fetched_past_the_end() {
        let mut p = Prefetcher::default();
        assert_eq!(p.on_read(0, 4096, 1000, CAP), None);
        let mut p = Prefetcher::default();
        assert_eq!(p.on_read(0, 4096, MIB, CAP), Some(4096..MIB));
    }
}
