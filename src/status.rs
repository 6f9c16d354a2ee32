//! `sessionfs status` and `sessionfs unmount`: what a running mount is doing, asked over a
//! Unix socket that each mount serves.
//!
//! - [`counters`]: process-wide request, error and retry counts, bumped by the HTTP client.
//! - [`uploads`]: uploads in flight (bytes sent of the staged size) and the last failure of
//!   each file, bumped by the write-back engine and the upload body.
//! - [`report`]: the report a mount answers with, its text form, and the drain's progress line.
//! - [`server`]: the mount's socket (one per mount, in [`server::socket_dir`]).
//! - [`client`]: the `status` and `unmount` commands.

pub mod client;
pub mod counters;
pub mod report;
pub mod server;
pub mod uploads;
