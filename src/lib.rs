//! sessionfs: mount remote file APIs as a local drive with FUSE.
//!
//! Module map (see `DEVELOPMENT.md`): `cli` parses the command line, `run` owns the mount
//! lifecycle, `fs` is the filesystem core and its thin fuser adapter, `cache` keeps blocks of
//! remote objects under the one memory budget, `remote` speaks to the APIs, `write` stages and
//! uploads, and `emulator` serves faithful copies of the APIs for tests and for the zero-setup
//! mount.

pub mod backend;
pub mod cache;
pub mod checksum;
pub mod cli;
pub mod direct;
pub mod emulator;
pub mod fs;
pub mod mime;
pub mod remote;
pub mod run;
pub mod status;
pub mod stream;
pub mod write;
