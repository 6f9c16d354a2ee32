//! Real-mount tests: each mounts sessionfs through /dev/fuse over a loopback emulator and drives
//! ordinary tools (`cp`, `ls -l`, `mv`, `rm`, `stat`, `df`, `touch`) against it.

mod appmixer;
mod cli;
mod container;
mod crash;
mod dirs;
mod errors;
mod faults;
mod files;
mod fluxer;
mod fstab;
mod harness;
mod hostile;
mod lightfield;
mod max_staged;
mod metadata;
mod open_files;
mod read;
mod readme;
mod reference;
mod remotes;
mod remount;
mod scenarios;
mod sessions;
mod soak;
mod sparse;
mod status;
mod tools;
mod two_mounts;
mod write_back;
