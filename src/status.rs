//! `sessionfs status` and `sessionfs unmount`: what a running mount is doing, asked over a
//! Unix socket that each mount serves.
//!
//! - [`report`]: the report a mount answers with (request counts and uploads from the mount's
//!   own [`crate::remote::observe`] handles), its text form, and the drain's progress line.
//! - [`server`]: the mount's socket (one per mount, in [`server::socket_dir`]).
//! - [`client`]: the `status` and `unmount` commands.

pub mod client;
pub mod report;
pub mod server;
