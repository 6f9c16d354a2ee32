//! Extended attributes: the remote identity of a file, read-only.
//!
//! `user.sessionfs.id`, `user.sessionfs.name` (the stored, encoded name),
//! `user.sessionfs.md5` and `user.sessionfs.content_type` expose what the server knows about a
//! file, for scripts and for debugging name encoding. Nothing else is stored: setting any
//! attribute answers ENOTSUP, which `cp -a` and `rsync -X` treat as "not supported here".

use super::error::Unsupported;
use super::tree::{DirOrigin, Ino, NodeKind};
use super::{Error, Result, SessionFs};

/// Prefix of every attribute we expose.
const PREFIX: &str = "user.sessionfs.";

impl SessionFs {
    /// `(name, value)` of every attribute `ino` has.
    fn xattrs(&self, ino: Ino) -> Result<Vec<(String, String)>> {
        if !self.config.xattrs {
            // ENOSYS, once, makes the kernel answer every later xattr call itself.
            return Err(Unsupported::XattrsOff.error("getxattr"));
        }
        let tree = self.tree();
        let node = tree
            .get(ino)
            .ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
        let mut out = Vec::new();
        let mut push = |key: &str, value: Option<&String>| {
            if let Some(value) = value {
                out.push((format!("{PREFIX}{key}"), value.clone()));
            }
        };
        match &node.kind {
            NodeKind::File(file) => {
                if let Some(object) = &file.remote {
                    push("id", Some(&object.id));
                    push("name", Some(&object.name));
                    push("md5", object.md5.as_ref());
                    push("content_type", object.content_type.as_ref());
                }
            }
            NodeKind::Dir(dir) => match &dir.origin {
                DirOrigin::Container(container) => push("id", Some(&container.id)),
                DirOrigin::Marker(object) => push("name", Some(&object.name)),
                _ => {}
            },
        }
        Ok(out)
    }

    /// The value of attribute `name`; ENODATA when `ino` has no such attribute.
    pub fn getxattr(&self, ino: Ino, name: &str) -> Result<Vec<u8>> {
        self.xattrs(ino)?
            .into_iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.into_bytes())
            .ok_or_else(|| Error::no_attribute(name))
    }

    /// The names of `ino`'s attributes, each followed by a NUL, as `listxattr(2)` returns them.
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for (key, _) in self.xattrs(ino)? {
            out.extend_from_slice(key.as_bytes());
            out.push(0);
        }
        Ok(out)
    }
}
