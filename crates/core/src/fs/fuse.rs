//! The thin fuser adapter: translate each kernel request, run it on tokio, reply.
//!
//! Every callback has one shape: copy what it needs out of the request, clone the
//! `Arc<SessionFs>`, spawn on the runtime, and answer `Ok` with the matching reply and `Err`
//! through [`failed`], which logs the error once at its level and returns its errno. No fuser
//! thread waits on the network. Unsupported operations get a deliberate errno here.

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::log;

use super::error::Unsupported;
use super::namespace::SetAttr;
use super::{Attr, Caller, Error, FileKind, SessionFs};

/// Largest readahead we ask the kernel for.
const MAX_READAHEAD_BYTES: u32 = 16 << 20;
/// Requests the kernel may keep in flight to us.
const MAX_BACKGROUND: u16 = 64;

/// Open flags of a handle that may write, by its access mode.
///
/// A write-only handle (`cp`, `tar`, `rsync`, shell redirections, editors saving) bypasses the
/// kernel's page cache: its writes come straight from the writer's buffer, since the bytes are
/// staged and uploaded by us anyway and caching them too cost a page-cache copy of every
/// written byte (`cp` of 1 GiB spent more time there than in the upload). Such a handle cannot
/// carry a shared writable mapping (that needs read access).
///
/// A read-write handle goes through the page cache, writes included (written through to us at
/// once). A process that mixes `pwrite` with a `MAP_SHARED` mapping of the same pages (databases
/// do) needs the two to share one copy of each page: a direct write next to a mapping lets the
/// kernel write back a mapped page that still holds the bytes from before the direct write,
/// over them (measured: tens of words lost per 4 MiB).
fn writer_flags(read_write: bool) -> FopenFlags {
    match read_write {
        true => FopenFlags::empty(),
        false => FopenFlags::FOPEN_DIRECT_IO,
    }
}

/// Adapts [`SessionFs`] to `fuser::Filesystem`.
pub struct FuseAdapter {
    fs: Arc<SessionFs>,
    runtime: tokio::runtime::Handle,
}

impl FuseAdapter {
    /// Serves `fs`, running its operations on `runtime`.
    pub fn new(fs: Arc<SessionFs>, runtime: tokio::runtime::Handle) -> Self {
        Self { fs, runtime }
    }

    fn spawn<F>(&self, task: impl FnOnce(Arc<SessionFs>) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.runtime.spawn(task(self.fs.clone()));
    }
}

/// How often a close or fsync waiting on an upload looks whether its caller is being killed.
const KILLED_CALLER_POLL: Duration = Duration::from_millis(100);

/// Answers `reply` with what `work` returns, or with EINTR once `caller` is being killed, so
/// that Ctrl-C of a `cp` waiting in close ends it at once. The work goes on in the background
/// and its error is logged: the content was committed at the close, and an upload that fails
/// stays staged and is retried, as after any failed close.
async fn answer_empty_unless_killed(
    op: &'static str,
    caller: Caller,
    reply: ReplyEmpty,
    work: impl Future<Output = super::Result<()>> + Send + 'static,
) {
    let mut work = tokio::spawn(work);
    loop {
        tokio::select! {
            done = &mut work => {
                return match done {
                    Ok(result) => answer_empty(op, reply, result),
                    Err(panicked) => {
                        log::error!("{op} panicked: {panicked}");
                        reply.error(Errno::EIO)
                    }
                };
            }
            () = tokio::time::sleep(KILLED_CALLER_POLL) => {
                if caller.is_being_killed() {
                    log::info!(
                        "{op}: process {} was killed while it waited; the upload goes on in the \
                         background (see `sessionfs status`)",
                        caller.pid
                    );
                    reply.error(Errno::EINTR);
                    if let Ok(Err(err)) = work.await {
                        failed(op, &err);
                    }
                    return;
                }
            }
        }
    }
}

/// Answers an operation that returns nothing.
fn answer_empty(op: &str, reply: ReplyEmpty, result: super::Result<()>) {
    match result {
        Ok(()) => reply.ok(),
        Err(err) => reply.error(failed(op, &err)),
    }
}

/// Answers an operation that returns a name's entry.
fn answer_entry(op: &str, reply: ReplyEntry, result: super::Result<super::Entry>) {
    match result {
        Ok(entry) => reply.entry(&entry.ttl, &to_file_attr(&entry.attr), Generation(0)),
        Err(err) => reply.error(failed(op, &err)),
    }
}

/// Logs a failed operation once, at the error's level, and returns the errno to reply with.
fn failed(op: &str, err: &Error) -> Errno {
    log!(err.level, "{op} failed: {}", err.message);
    Errno::from_i32(err.errno)
}

fn name_of(name: &OsStr) -> Result<String, Errno> {
    name.to_str()
        .map(str::to_string)
        .ok_or_else(|| failed("name", &Error::invalid_name(name.to_string_lossy())))
}

fn to_file_attr(attr: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.atime,
        mtime: attr.mtime,
        ctime: attr.ctime,
        crtime: attr.mtime,
        kind: match attr.kind {
            FileKind::Dir => FileType::Directory,
            FileKind::File => FileType::RegularFile,
            FileKind::Symlink => FileType::Symlink,
        },
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

/// Answers a getxattr/listxattr: the size when asked for it, else the value if it fits.
fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() <= size as usize {
        reply.data(value);
    } else {
        reply.error(failed("xattr", &Error::buffer_too_small("xattr")));
    }
}

/// Who sent `req`.
fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

fn to_system_time(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let wanted = InitFlags::FUSE_ASYNC_READ
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_MAX_PAGES
            | InitFlags::FUSE_BIG_WRITES
            | InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP;
        let supported = wanted & config.capabilities();
        let _ = config.add_capabilities(supported);
        let _ = config
            .set_max_readahead(MAX_READAHEAD_BYTES)
            .or_else(|max| config.set_max_readahead(max));
        let _ = config
            .set_max_write(1 << 20)
            .or_else(|max| config.set_max_write(max));
        let _ = config.set_max_background(MAX_BACKGROUND);
        Ok(())
    }

    fn destroy(&mut self) {
        let fs = self.fs.clone();
        match self.runtime.block_on(async move { fs.drain().await }) {
            Ok(0) => {}
            Ok(n) => log::info!("uploaded {n} pending file(s) at unmount"),
            Err(err) => log::error!(
                "some files could not be uploaded at unmount: {}",
                err.message
            ),
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(errno) => return reply.error(errno),
        };
        self.spawn(move |fs| async move {
            answer_entry("lookup", reply, fs.lookup(parent.0, &name).await)
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttl = self.fs.config.metadata_ttl;
        self.spawn(move |fs| async move {
            match fs.getattr(ino.0).await {
                Ok(attr) => reply.attr(&ttl, &to_file_attr(&attr)),
                Err(err) => reply.error(failed("getattr", &err)),
            }
        });
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let ttl = self.fs.config.metadata_ttl;
        let changes = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(to_system_time),
            mtime: mtime.map(to_system_time),
        };
        let caller = caller(req);
        self.spawn(move |fs| async move {
            match fs.setattr(ino.0, changes, caller).await {
                Ok(attr) => reply.attr(&ttl, &to_file_attr(&attr)),
                Err(err) => reply.error(failed("setattr", &err)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            let err = Unsupported::SpecialFile.error(format!("{name:?}"));
            return reply.error(failed("mknod", &err));
        }
        let name = match name_of(name) {
            Ok(name) => name,
            Err(errno) => return reply.error(errno),
        };
        let caller = caller(req);
        self.spawn(move |fs| async move {
            let created = fs.create(parent.0, &name, mode, false, caller).await;
            match created {
                Ok((entry, opened)) => {
                    let _ = fs.release(entry.attr.ino, opened.fh).await;
                    reply.entry(&entry.ttl, &to_file_attr(&entry.attr), Generation(0));
                }
                Err(err) => reply.error(failed("mknod", &err)),
            }
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(errno) => return reply.error(errno),
        };
        let caller = caller(req);
        self.spawn(move |fs| async move {
            answer_entry(
                "mkdir",
                reply,
                fs.mkdir(parent.0, &name, mode, caller).await,
            )
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(errno) => return reply.error(errno),
        };
        self.spawn(move |fs| async move {
            answer_empty("unlink", reply, fs.unlink(parent.0, &name).await)
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(errno) => return reply.error(errno),
        };
        self.spawn(move |fs| async move {
            answer_empty("rmdir", reply, fs.rmdir(parent.0, &name).await)
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, target) = match (name_of(link_name), target.to_str()) {
            (Ok(name), Some(target)) => (name, target.to_string()),
            (Err(errno), _) => return reply.error(errno),
            (Ok(name), None) => {
                let err = Error::invalid_name(format!("target of {name:?}"));
                return reply.error(failed("symlink", &err));
            }
        };
        let caller = caller(req);
        self.spawn(move |fs| async move {
            let linked = fs.symlink(parent.0, &name, &target, caller).await;
            answer_entry("symlink", reply, linked)
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn(move |fs| async move {
            match fs.readlink(ino.0).await {
                Ok(target) => reply.data(&target),
                Err(err) => reply.error(failed("readlink", &err)),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (name_of(name), name_of(newname)) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(errno), _) | (_, Err(errno)) => return reply.error(errno),
        };
        // Anything beyond "do not replace" (exchange, whiteout, a flag added later) would be
        // carried out as a plain rename if it were let through.
        if flags.bits() & !RenameFlags::RENAME_NOREPLACE.bits() != 0 {
            let err = Unsupported::RenameFlags.error(format!("{name:?} ({flags:?})"));
            return reply.error(failed("rename", &err));
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        self.spawn(move |fs| async move {
            match fs
                .rename(parent.0, &name, newparent.0, &newname, no_replace)
                .await
            {
                Ok(()) => reply.ok(),
                Err(err) => reply.error(failed("rename", &err)),
            }
        });
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let err = Unsupported::HardLink.error(format!("{newname:?}"));
        reply.error(failed("link", &err));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let writable = flags.acc_mode() != OpenAccMode::O_RDONLY;
        let read_write = flags.acc_mode() == OpenAccMode::O_RDWR;
        let truncate = flags.0 & libc::O_TRUNC != 0;
        let direct = flags.0 & libc::O_DIRECT != 0;
        self.spawn(move |fs| async move {
            match fs.open(ino.0, writable, truncate, direct).await {
                Ok(opened) => {
                    let flags = if writable {
                        writer_flags(read_write)
                    } else if opened.keep_cache {
                        FopenFlags::FOPEN_KEEP_CACHE
                    } else {
                        FopenFlags::empty()
                    };
                    reply.opened(FileHandle(opened.fh), flags)
                }
                Err(err) => reply.error(failed("open", &err)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn(move |fs| async move {
            match fs.read(ino.0, fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(err) => reply.error(failed("read", &err)),
            }
        });
    }

    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = sessionfs_io::direct::write_buffer(offset, data);
        let caller = caller(req);
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        self.spawn(move |fs| async move {
            match fs.write(ino.0, fh.0, offset, data).await {
                Ok(written) => {
                    fs.written_by(ino.0, caller, kill);
                    reply.written(written)
                }
                Err(err) => reply.error(failed("write", &err)),
            }
        });
    }

    fn flush(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let caller = caller(req);
        self.spawn(move |fs| async move {
            let work = async move { fs.flush(ino.0, fh.0).await };
            answer_empty_unless_killed("flush", caller, reply, work).await
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn(move |fs| async move {
            answer_empty("release", reply, fs.release(ino.0, fh.0).await)
        });
    }

    fn fsync(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let caller = caller(req);
        self.spawn(move |fs| async move {
            let work = async move { fs.fsync(ino.0).await };
            answer_empty_unless_killed("fsync", caller, reply, work).await
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.spawn(move |fs| async move {
            match fs.opendir(ino.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(err) => reply.error(failed("opendir", &err)),
            }
        });
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.fs.readdir(fh.0, offset) {
            Ok(entries) => {
                for (next, name, attr) in entries {
                    let kind = to_file_attr(&attr).kind;
                    if reply.add(INodeNo(attr.ino), next, kind, &name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(err) => reply.error(failed("readdir", &err)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let ttl = self.fs.config.metadata_ttl;
        match self.fs.readdir(fh.0, offset) {
            Ok(entries) => {
                for (next, name, attr) in entries {
                    // `.` and `..` must not carry attributes the kernel would cache as lookups.
                    let ttl = if name == "." || name == ".." {
                        Duration::ZERO
                    } else {
                        ttl
                    };
                    if reply.add(
                        INodeNo(attr.ino),
                        next,
                        &name,
                        &ttl,
                        &to_file_attr(&attr),
                        Generation(0),
                    ) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(err) => reply.error(failed("readdirplus", &err)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Directory changes are made on the remote before the call that made them returns.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let stats = self.fs.statfs();
        reply.statfs(
            stats.blocks,
            stats.blocks_free,
            stats.blocks_free,
            stats.files,
            stats.files_free,
            stats.block_size,
            stats.name_max,
            stats.block_size,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_string_lossy();
        match self.fs.getxattr(ino.0, &name) {
            Ok(value) => reply_xattr(reply, size, &value),
            Err(err) => reply.error(failed("getxattr", &err)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(names) => reply_xattr(reply, size, &names),
            Err(err) => reply.error(failed("listxattr", &err)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let err = Unsupported::SetXattr.error(format!("{name:?}"));
        reply.error(failed("setxattr", &err));
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let err = Unsupported::RemoveXattr.error(format!("{name:?}"));
        reply.error(failed("removexattr", &err));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // Permissions are checked by the kernel (`default_permissions`).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name_of(name) {
            Ok(name) => name,
            Err(errno) => return reply.error(errno),
        };
        let truncate = flags & libc::O_TRUNC != 0;
        let read_write = flags & libc::O_ACCMODE == libc::O_RDWR;
        let caller = caller(req);
        self.spawn(move |fs| async move {
            match fs.create(parent.0, &name, mode, truncate, caller).await {
                Ok((entry, opened)) => reply.created(
                    &entry.ttl,
                    &to_file_attr(&entry.attr),
                    Generation(0),
                    FileHandle(opened.fh),
                    writer_flags(read_write),
                ),
                Err(err) => reply.error(failed("create", &err)),
            }
        });
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(failed("fallocate", &Unsupported::Fallocate.error(ino)));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        _fh_in: FileHandle,
        _offset_in: u64,
        _ino_out: INodeNo,
        _fh_out: FileHandle,
        _offset_out: u64,
        _len: u64,
        _flags: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let err = Unsupported::CopyFileRange.error(ino_in);
        reply.error(failed("copy_file_range", &err));
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _offset: i64,
        _whence: i32,
        reply: fuser::ReplyLseek,
    ) {
        reply.error(failed("lseek", &Unsupported::SeekData.error(ino)));
    }
}
