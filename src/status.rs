//! `sessionfs status` and `sessionfs unmount`: what a running mount is doing, asked over a
//! Unix socket that each mount serves.
//!
//! - [`uploads`]: uploads in flight (bytes sent of the staged size) and the last failure of
//!   each file, bumped by the write-back engine and the upload body.
//! - [`report`]: the report a mount answers with (request counts from the mount's own
//!   [`crate::remote::observe::RequestStats`]), its text form, and the drain's progress line.
//! - [`server`]: the mount's socket (one per mount, in [`server::socket_dir`]).
//! - [`client`]: the `status` and `unmount` commands.

pub mod client;
pub mod report;
pub mod server;
pub mod uploads;
