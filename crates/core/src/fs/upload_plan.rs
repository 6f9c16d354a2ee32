//! The plan of one upload of a file's staged copy: what is sent, from which copy, with which
//! journal record, and what happens to the object it supersedes. [`plan`] decides it from
//! what the content lock and the inode table say ([`UploadFacts`], read once) and the API's
//! capabilities, and touches nothing; `SessionFs::upload_locked` (`writeback`) carries it out,
//! keeping the crash-consistency order: the record says "committed" before the upload starts,
//! it goes only after the upload is stored, and a superseded object is deleted last.

use super::tree::Ino;
use super::writeback::Target;
use super::{Error, Result};
use crate::write::PendingUpload;
use sessionfs_remote::Capabilities;

/// What the content lock and the inode table say about an upload, read once.
#[derive(Clone, Debug)]
pub(super) struct UploadFacts {
    /// The staged copy differs from the remote object.
    pub(super) dirty: bool,
    /// The file's node, `None` once the inode is gone.
    pub(super) node: Option<NodeFacts>,
    /// Length of the staged copy (0 without one).
    pub(super) staged_len: u64,
    /// Why the server refused these bytes for good, if it did.
    pub(super) refused: Option<String>,
    /// Where the upload running while the file was written goes, if one runs.
    pub(super) stream_to: Option<Target>,
}

/// What the inode table says about the file being uploaded.
#[derive(Clone, Debug)]
pub(super) struct NodeFacts {
    /// Where its bytes go.
    pub(super) target: Target,
    /// Kept local (a scratch name), never uploaded.
    pub(super) local_only: bool,
    /// Still reachable by a name (not unlinked while open).
    pub(super) linked: bool,
    /// Its journal record as committed content (`None` where it is never recorded).
    pub(super) record: Option<PendingUpload>,
}

/// What an upload does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum UploadPlan {
    /// Nothing to send: the file is clean, local-only or unlinked.
    Nothing,
    /// Shorter than the API's smallest object: it stays dirty, so the upload happens once the
    /// file has grown and is flushed again.
    TooShort {
        /// The stored name it would have.
        name: String,
        /// Its length.
        len: u64,
        /// The API's smallest object.
        min: u64,
    },
    /// Send the bytes.
    Send(SendPlan),
}

/// An upload to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct SendPlan {
    /// Where the bytes go.
    pub(super) target: Target,
    /// The copy the bytes come from.
    pub(super) from: SendFrom,
    /// The record written as committed before the upload (the commit) and, if that write
    /// worked, rewritten with the server's upload id once the upload starts.
    pub(super) record: Option<PendingUpload>,
    /// The upload carries the md5 of the staged copy (the API checks it).
    pub(super) md5: bool,
    /// Once stored as a new object, the object it supersedes is deleted (an id-keyed API
    /// with delete: the name never shows two files).
    pub(super) delete_superseded: bool,
}

/// Which copy of the file's bytes an upload sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SendFrom {
    /// The upload that ran while the file was written from start to end, to the same target:
    /// it is finished (and the staged copy uploaded instead if that fails).
    Stream,
    /// The staged copy, uploaded whole (a streaming upload to another target is dropped).
    Staged,
}

/// Decides the upload of `ino` from `facts` and the API's capabilities, with no side effect.
/// A file gone from the inode table, or whose bytes the server refused for good, is an error.
pub(super) fn plan(ino: Ino, facts: &UploadFacts, caps: &Capabilities) -> Result<UploadPlan> {
    if !facts.dirty {
        return Ok(UploadPlan::Nothing);
    }
    let node = (facts.node.as_ref()).ok_or_else(|| Error::not_found(format!("inode {ino}")))?;
    if node.local_only || !node.linked {
        return Ok(UploadPlan::Nothing);
    }
    let min = caps.min_object_bytes;
    if facts.staged_len < min {
        return Ok(UploadPlan::TooShort {
            name: node.target.name.clone(),
            len: facts.staged_len,
            min,
        });
    }
    if let Some(why) = &facts.refused {
        // The server refused these bytes for good; only a change can help.
        return Err(Error::refused_before(why));
    }
    let from = match &facts.stream_to {
        Some(to) if *to == node.target => SendFrom::Stream,
        _ => SendFrom::Staged,
    };
    Ok(UploadPlan::Send(SendPlan {
        target: node.target.clone(),
        from,
        record: node.record.clone(),
        md5: caps.upload_md5,
        delete_superseded: caps.deletes_superseded(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionfs_remote::memory::ApiShape;

    fn target(name: &str) -> Target {
        Target {
            container: None,
            name: name.to_string(),
        }
    }

    fn record() -> PendingUpload {
        PendingUpload {
            container: None,
            path: "a".to_string(),
            symlink: false,
            staged: "staged-1".to_string(),
            committed: true,
            server_upload: None,
        }
    }

    /// A dirty, linked file of 3 bytes with a journal record, no stream.
    fn dirty() -> UploadFacts {
        UploadFacts {
            dirty: true,
            node: Some(NodeFacts {
                target: target("a"),
                local_only: false,
                linked: true,
                record: Some(record()),
            }),
            staged_len: 3,
            refused: None,
            stream_to: None,
        }
    }

    fn send(facts: &UploadFacts, shape: ApiShape) -> SendPlan {
        match plan(1, facts, &shape.capabilities()).unwrap() {
            UploadPlan::Send(send) => send,
            other => panic!("{shape:?}: {other:?}"),
        }
    }

    #[test]
    fn a_clean_file_sends_nothing_even_once_gone() {
        let facts = UploadFacts {
            dirty: false,
            node: None,
            ..dirty()
        };
        let caps = ApiShape::Mix.capabilities();
        assert_eq!(plan(1, &facts, &caps).unwrap(), UploadPlan::Nothing);
        let gone = UploadFacts {
            node: None,
            ..dirty()
        };
        assert_eq!(plan(1, &gone, &caps).unwrap_err().errno, libc::ENOENT);
    }

    #[test]
    fn local_only_and_unlinked_files_send_nothing() {
        let caps = ApiShape::Appmixer.capabilities();
        for (local_only, linked) in [(true, true), (false, false)] {
            let mut facts = dirty();
            let node = facts.node.as_mut().unwrap();
            (node.local_only, node.linked) = (local_only, linked);
            assert_eq!(plan(1, &facts, &caps).unwrap(), UploadPlan::Nothing);
        }
    }

    #[test]
    fn an_empty_file_waits_on_an_api_without_empty_objects() {
        let facts = UploadFacts {
            staged_len: 0,
            ..dirty()
        };
        let expected = UploadPlan::TooShort {
            name: "a".to_string(),
            len: 0,
            min: 1,
        };
        let lightfield = ApiShape::Lightfield.capabilities();
        assert_eq!(plan(1, &facts, &lightfield).unwrap(), expected);
        // Refused bytes that are also too short still wait: the length is checked first.
        let refused = UploadFacts {
            refused: Some("too large".to_string()),
            ..facts.clone()
        };
        assert_eq!(plan(1, &refused, &lightfield).unwrap(), expected);
        assert!(matches!(
            plan(1, &facts, &ApiShape::Mix.capabilities()).unwrap(),
            UploadPlan::Send(_)
        ));
    }

    #[test]
    fn bytes_refused_for_good_are_not_sent_again() {
        let facts = UploadFacts {
            refused: Some("413: too large".to_string()),
            ..dirty()
        };
        for shape in ApiShape::ALL {
            let err = plan(1, &facts, &shape.capabilities()).unwrap_err();
            assert_eq!(err.errno, libc::EFBIG, "{shape:?}");
        }
    }

    #[test]
    fn the_stream_is_finished_only_when_it_goes_to_the_target() {
        assert_eq!(send(&dirty(), ApiShape::Mix).from, SendFrom::Staged);
        let same = UploadFacts {
            stream_to: Some(target("a")),
            ..dirty()
        };
        assert_eq!(send(&same, ApiShape::Mix).from, SendFrom::Stream);
        let renamed = UploadFacts {
            stream_to: Some(target("b")),
            ..dirty()
        };
        assert_eq!(send(&renamed, ApiShape::Mix).from, SendFrom::Staged);
    }

    #[test]
    fn the_committed_record_goes_with_the_upload() {
        let send = send(&dirty(), ApiShape::Fluxer);
        assert_eq!(send.record, Some(record()));
        assert_eq!(send.target, target("a"));
    }

    #[test]
    fn only_an_id_keyed_api_with_delete_deletes_what_an_upload_supersedes() {
        let expected = [
            (ApiShape::Mix, false, false),
            (ApiShape::Lightfield, false, true),
            (ApiShape::Appmixer, true, false),
            (ApiShape::Fluxer, true, false),
        ];
        for (shape, delete_superseded, md5) in expected {
            let send = send(&dirty(), shape);
            assert_eq!(send.delete_superseded, delete_superseded, "{shape:?}");
            assert_eq!(send.md5, md5, "{shape:?}");
        }
    }
}
