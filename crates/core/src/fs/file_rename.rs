//! File rename, in two steps.
//!
//! No API can rename an object, so a file moves by going up again under its new name and the
//! old object being deleted. [`plan`] decides everything from what the inode table says (read
//! once, with both content locks held) and the API's capabilities, and touches nothing: the
//! no-delete refusal, the file's object after the move, whether the upload waits in the
//! `--write-back` queue, and which objects are deleted after it. [`SessionFs::rename_file`]
//! carries the plan out in this order: stage, move the node, journal, upload (or schedule),
//! and only then delete; a failed upload is undone in one place ([`SessionFs::undo_move`]),
//! so nothing looks lost.

use std::time::SystemTime;

use super::tree::{Content, Ino, Node};
use super::{Error, Result, SessionFs};
use sessionfs_remote::{Capabilities, ObjectMeta};

/// What the inode table says about a file rename, read once both content locks are held.
#[derive(Clone, Debug)]
pub(super) struct RenameFacts {
    /// The container the file lives in before the move.
    pub(super) old_container: Option<String>,
    /// The file's object on the server, if it has one.
    pub(super) old: Option<ObjectMeta>,
    /// The file is kept local (a scratch name): its object, if any, is not its content.
    pub(super) was_local: bool,
    /// The object of the file the new name replaces, if any.
    pub(super) displaced: Option<ObjectMeta>,
    /// The new name is a scratch name: the file stays local there.
    pub(super) to_local: bool,
    /// `--write-back` is on: uploads of closed files wait for their delay.
    pub(super) write_back: bool,
}

/// What a file rename does, decided before anything changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct RenamePlan {
    /// The file's object once moved: the displaced one where an upload overwrites by name
    /// (uploading over it keeps the target name present throughout), else none.
    pub(super) remote_after_move: Option<ObjectMeta>,
    /// The file stays local under its new name (never uploaded, never journaled).
    pub(super) to_local: bool,
    /// The upload under the new name waits in the `--write-back` queue instead of running now.
    pub(super) delayed: bool,
    /// The old object, deleted once the upload is stored, unless that upload stored the file
    /// as this same object (same container and name).
    pub(super) delete_old: Option<ObjectMeta>,
    /// The displaced object, deleted once the upload is stored.
    pub(super) delete_displaced: Option<ObjectMeta>,
}

/// The refusal [`plan`] answers on an API without delete: the stored old object would stay
/// behind for good, so the rename is refused before anything is copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct NoDelete;

/// Decides a file rename from `facts` and the API's capabilities, with no side effect.
pub(super) fn plan(
    facts: &RenameFacts,
    caps: &Capabilities,
) -> std::result::Result<RenamePlan, NoDelete> {
    let stored = facts.old.is_some() && !facts.was_local;
    if stored && !caps.delete {
        return Err(NoDelete);
    }
    // With --write-back, a file the server has never seen (nor a file it replaces) just
    // moves: its upload, under the new name, waits for its delay like any other.
    // (Nothing is then deleted: there is no old object and no displaced one.)
    let delayed =
        facts.write_back && facts.old.is_none() && facts.displaced.is_none() && !facts.to_local;
    Ok(RenamePlan {
        remote_after_move: facts.displaced.clone().filter(|_| caps.overwrite_by_name),
        to_local: facts.to_local,
        delayed,
        delete_old: facts.old.clone().filter(|_| !facts.was_local),
        // As after an overwrite by a write: without delete (Lightfield) the displaced object
        // stays, older than ours, and shows with its `~id`.
        delete_displaced: (facts.displaced.clone()).filter(|_| caps.deletes_superseded()),
    })
}

impl SessionFs {
    /// Renames file `ino` from `name` in `parent` to `new_name` in `new_parent`, over `target`
    /// (the file there, if any); the caller has made every check that needs no content lock.
    pub(super) async fn rename_file(
        &self,
        ino: Ino,
        target: Option<Ino>,
        (parent, name): (Ino, &str),
        (new_parent, new_name): (Ino, &str),
    ) -> Result<()> {
        let content = self.content_of(ino)?;
        // The file being replaced may be uploading right now (a flush from another process):
        // its upload must land before ours, or it would overwrite the renamed file. Both locks
        // are taken in inode order so that crossing renames cannot deadlock.
        let target_content = target.and_then(|t| self.content_of(t).ok().map(|c| (t, c)));
        let (mut state, target_state) = match &target_content {
            Some((t, target_content)) if *t < ino => {
                let target_state = target_content.lock().await;
                (content.lock().await, Some(target_state))
            }
            Some((_, target_content)) => {
                let state = content.lock().await;
                (state, Some(target_content.lock().await))
            }
            None => (content.lock().await, None),
        };
        let facts = self.rename_facts(ino, target, name, new_name)?;
        let plan = plan(&facts, self.remote.capabilities()).map_err(|NoDelete| {
            Error::not_permitted(format!(
                "rename {name}: {} has no delete, so a stored file cannot be renamed; \
                     copy it instead",
                self.remote.describe()
            ))
        })?;
        // The API has no move: the bytes go up again under the new name, so stage them first.
        self.ensure_staged(ino, &mut state, false).await?;
        {
            let mut tree = self.tree();
            tree.move_node(ino, new_parent, new_name);
            let node = tree.get_mut(ino).expect("moved file");
            node.meta.ctime = Some(SystemTime::now());
            let file = node.file_mut().expect("moved file");
            file.local_only = plan.to_local;
            file.remote = plan.remote_after_move.clone();
        }
        // The replaced file's bytes are gone, as on a local disk: nothing of it stays pending.
        if let Some(mut target_state) = target_state {
            self.mark_clean(&mut target_state);
        }
        // The journal's record must name the new path.
        state.journaled = false;
        if plan.to_local {
            self.mark_clean(&mut state);
        } else {
            self.mark_dirty(ino, &mut state);
        }
        if plan.delayed {
            if let Some(delayed) = &self.delayed
                && state.committed
            {
                delayed.schedule(ino);
            }
        } else if let Err(err) = self.upload_locked(ino, &mut state).await {
            self.undo_move(ino, (parent, name), &facts, &mut state);
            return Err(err.context(format!("rename {name} to {new_name}")));
        }
        self.delete_after_rename(ino, &facts, &plan, name, new_name)
            .await?;
        if !self.handles.is_open(ino) {
            self.drop_staged_if_unused(ino, &mut state);
        }
        drop(state);
        self.touch_dir(parent);
        self.touch_dir(new_parent);
        Ok(())
    }

    /// Reads what [`plan`] needs from the inode table.
    fn rename_facts(
        &self,
        ino: Ino,
        target: Option<Ino>,
        name: &str,
        new_name: &str,
    ) -> Result<RenameFacts> {
        let tree = self.tree();
        let node = tree.get(ino).ok_or_else(|| Error::not_found(name))?;
        let file = node.file().expect("checked by the caller");
        let displaced = target.and_then(|t| {
            tree.get(t)
                .and_then(Node::file)
                .and_then(|f| f.remote.clone())
        });
        Ok(RenameFacts {
            old_container: node.container.clone(),
            old: file.remote.clone(),
            was_local: file.local_only,
            displaced,
            to_local: self.config.scratch.matches(new_name),
            write_back: self.delayed.is_some(),
        })
    }

    /// Puts the file back under its old name, with its old object, so nothing looks lost; it
    /// stays dirty (and journaled again under that name) for a later try.
    fn undo_move(
        &self,
        ino: Ino,
        (parent, name): (Ino, &str),
        facts: &RenameFacts,
        state: &mut Content,
    ) {
        let mut tree = self.tree();
        tree.move_node(ino, parent, name);
        let file = tree
            .get_mut(ino)
            .and_then(Node::file_mut)
            .expect("moved file");
        file.remote = facts.old.clone();
        file.local_only = facts.was_local;
        drop(tree);
        state.journaled = false;
        self.mark_dirty(ino, state);
    }

    /// Deletes what the plan says goes once the renamed file is stored: the old object (unless
    /// the upload stored the file as that same object), then the displaced one.
    async fn delete_after_rename(
        &self,
        ino: Ino,
        facts: &RenameFacts,
        plan: &RenamePlan,
        name: &str,
        new_name: &str,
    ) -> Result<()> {
        let (new_container, new_remote) = {
            let tree = self.tree();
            let node = tree.get(ino).expect("moved file");
            (
                node.container.clone(),
                node.file().and_then(|f| f.remote.clone()),
            )
        };
        if let Some(old) = &plan.delete_old {
            let same_object = new_container == facts.old_container
                && new_remote.is_some_and(|n| n.name == old.name);
            if !same_object {
                self.delete_remote(facts.old_container.as_deref(), old, name)
                    .await?;
            }
        }
        if let Some(displaced) = &plan.delete_displaced {
            self.delete_remote(new_container.as_deref(), displaced, new_name)
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionfs_remote::memory::ApiShape;

    fn object(id: &str) -> ObjectMeta {
        ObjectMeta {
            id: id.to_string(),
            name: id.to_string(),
            size: 3,
            modified: None,
            version: "1".to_string(),
            content_type: None,
            md5: None,
        }
    }

    /// A stored file renamed to a plain name over nothing, without `--write-back`.
    fn stored() -> RenameFacts {
        RenameFacts {
            old_container: None,
            old: Some(object("old")),
            was_local: false,
            displaced: None,
            to_local: false,
            write_back: false,
        }
    }

    /// A file the server has never seen.
    fn never_uploaded() -> RenameFacts {
        RenameFacts {
            old: None,
            ..stored()
        }
    }

    #[test]
    fn a_stored_file_on_an_api_without_delete_is_refused() {
        let caps = ApiShape::Lightfield.capabilities();
        assert_eq!(plan(&stored(), &caps), Err(NoDelete));
        let with_write_back = RenameFacts {
            write_back: true,
            ..stored()
        };
        assert_eq!(plan(&with_write_back, &caps), Err(NoDelete));
    }

    #[test]
    fn a_scratch_file_or_a_new_one_moves_on_an_api_without_delete() {
        let caps = ApiShape::Lightfield.capabilities();
        let scratch = RenameFacts {
            was_local: true,
            ..stored()
        };
        let plan_of_scratch = plan(&scratch, &caps).unwrap();
        assert_eq!(plan_of_scratch.delete_old, None);
        assert!(!plan_of_scratch.delayed);
        assert_eq!(plan(&never_uploaded(), &caps).unwrap().delete_old, None);
    }

    #[test]
    fn over_a_stored_file_on_lightfield_the_displaced_object_stays() {
        let facts = RenameFacts {
            displaced: Some(object("displaced")),
            ..never_uploaded()
        };
        let plan = plan(&facts, &ApiShape::Lightfield.capabilities()).unwrap();
        assert_eq!(plan.delete_displaced, None);
        assert_eq!(plan.remote_after_move, None);
        assert!(!plan.delayed);
    }

    #[test]
    fn over_a_stored_file_an_id_keyed_api_deletes_the_displaced_object() {
        let facts = RenameFacts {
            displaced: Some(object("displaced")),
            ..stored()
        };
        for shape in [ApiShape::Appmixer, ApiShape::Fluxer] {
            let plan = plan(&facts, &shape.capabilities()).unwrap();
            assert_eq!(
                plan.delete_displaced,
                Some(object("displaced")),
                "{shape:?}"
            );
            assert_eq!(plan.delete_old, Some(object("old")), "{shape:?}");
            assert_eq!(plan.remote_after_move, None, "{shape:?}");
        }
    }

    #[test]
    fn over_a_stored_file_by_name_the_upload_overwrites_the_displaced_object() {
        let facts = RenameFacts {
            displaced: Some(object("displaced")),
            ..stored()
        };
        let plan = plan(&facts, &ApiShape::Mix.capabilities()).unwrap();
        assert_eq!(plan.remote_after_move, Some(object("displaced")));
        assert_eq!(plan.delete_displaced, None);
        assert_eq!(plan.delete_old, Some(object("old")));
    }

    #[test]
    fn a_file_never_uploaded_waits_for_its_delay_under_write_back() {
        let facts = RenameFacts {
            write_back: true,
            ..never_uploaded()
        };
        for shape in ApiShape::ALL {
            let plan = plan(&facts, &shape.capabilities()).unwrap();
            assert!(plan.delayed, "{shape:?}");
            assert_eq!((plan.delete_old, plan.delete_displaced), (None, None));
        }
        // Without --write-back it goes up at once.
        let plan_now = plan(&never_uploaded(), &ApiShape::Mix.capabilities()).unwrap();
        assert!(!plan_now.delayed);
    }

    #[test]
    fn under_write_back_a_stored_displaced_or_scratch_file_goes_up_at_once() {
        let caps = ApiShape::Appmixer.capabilities();
        let cases = [
            RenameFacts {
                write_back: true,
                ..stored()
            },
            RenameFacts {
                write_back: true,
                displaced: Some(object("displaced")),
                ..never_uploaded()
            },
        ];
        for facts in cases {
            assert!(!plan(&facts, &caps).unwrap().delayed, "{facts:?}");
        }
        let to_scratch = RenameFacts {
            write_back: true,
            to_local: true,
            ..never_uploaded()
        };
        let plan = plan(&to_scratch, &caps).unwrap();
        assert!(plan.to_local && !plan.delayed);
    }
}
