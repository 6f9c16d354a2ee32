//! sessionfs: mount remote file APIs as a local drive with FUSE.
//!
//! This package is the binary's layer: `cli` parses the command line, `run` owns the mount
//! lifecycle, `status` answers `sessionfs status`, and `backend` is the one place that joins
//! each API's client to its emulator. The layers below are crates of their own (see
//! `DEVELOPMENT.md`, "Crates"), re-exported here under the module names they had, so tests and
//! tools keep one path: `fs`, `cache` and `write` (`sessionfs-core`), `remote`
//! (`sessionfs-remote`), `emulator` (`sessionfs-emulator`), and the shared byte plumbing
//! (`sessionfs-io`).

pub mod backend;
pub mod cli;
pub mod run;
pub mod status;

pub use sessionfs_core::{cache, fs, write};
pub use sessionfs_emulator as emulator;
pub use sessionfs_io::{checksum, direct, mime, stream};
pub use sessionfs_remote as remote;
