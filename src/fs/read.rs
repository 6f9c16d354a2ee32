//! The read path: staged copies are read locally; remote objects by ranged GETs with read-ahead.

use bytes::Bytes;

use super::handles::Handle;
use super::tree::Ino;
use super::{Error, Result, SessionFs};
use crate::remote::Remote;

impl<R: Remote + ?Sized> SessionFs<R> {
    /// Reads from the staged copy if there is one, else from the remote with read-ahead.
    pub async fn read(&self, ino: Ino, fh: u64, offset: u64, size: u32) -> Result<Bytes> {
        let content = self.content_of(ino)?;
        {
            let state = content.lock().await;
            if let Some(staged) = &state.staged {
                return Ok(Bytes::from(staged.read_at(offset, size as usize)?));
            }
        }
        let (container, object) = self.remote_object(ino)?;
        if offset >= object.size {
            return Ok(Bytes::new());
        }
        let handle = self
            .handles
            .get(fh)
            .ok_or_else(|| Error::new(libc::EBADF, "read on a closed handle"))?;
        let Handle::File { readahead, .. } = &*handle else {
            return Err(Error::new(libc::EISDIR, "read on a directory handle"));
        };
        let mut ra = readahead.lock().await;
        if let Some(bytes) = ra.get(&object.version, offset, size as u64, object.size) {
            ra.next_offset = offset + bytes.len() as u64;
            return Ok(bytes);
        }
        let window = ra.next_window(offset).max(size as u64);
        let end = (offset + window).min(object.size);
        let data = self
            .remote
            .read(container.as_deref(), &object, offset..end)
            .await?;
        ra.start = offset;
        ra.data = data;
        ra.version = object.version.clone();
        let bytes = ra
            .get(&object.version, offset, size as u64, object.size)
            .unwrap_or_default();
        ra.next_offset = offset + bytes.len() as u64;
        Ok(bytes)
    }
}
