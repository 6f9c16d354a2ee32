//! `NAME:SUBDIR`: which container of a remote a path names, by the names a mount of the whole
//! remote shows (the inode table's own naming of containers and their groups), so the client
//! layer never needs to know how directories are named.

use std::collections::HashMap;

use super::tree::{DirOrigin, ROOT_INO, Tree};
use sessionfs_remote::{Container, ErrorKind, Remote, RemoteError, RemoteResult};

/// The container of `remote` whose directory is `path` in a mount of all of it (`session`, or
/// `guild/channel` where containers are grouped), named exactly as that mount names it. Fails
/// when the API has no containers or no directory is `path`.
pub async fn container_at(remote: &dyn Remote, path: &str) -> RemoteResult<Container> {
    if !remote.capabilities().containers {
        return Err(RemoteError::new(
            ErrorKind::InvalidInput,
            format!(
                "{} has no directories at the top, so there is no {path:?} to mount alone; \
                 mount NAME: instead",
                remote.describe()
            ),
        ));
    }
    let containers = remote.list_containers().await?;
    let mut tree = Tree::new(true);
    tree.merge_containers(containers, &HashMap::new(), std::time::Instant::now());
    let mut ino = ROOT_INO;
    for part in path.split('/').filter(|part| !part.is_empty()) {
        ino = tree
            .child(ino, part)
            .ok_or_else(|| not_found(remote, path))?;
    }
    match tree
        .get(ino)
        .and_then(|node| node.dir())
        .map(|dir| &dir.origin)
    {
        Some(DirOrigin::Container(container)) => Ok(container.clone()),
        _ => Err(not_found(remote, path)),
    }
}

fn not_found(remote: &dyn Remote, path: &str) -> RemoteError {
    RemoteError::new(
        ErrorKind::NotFound,
        format!(
            "{} has no container {path:?} (a directory at the top of a mount of all of it, or \
             GROUP/CONTAINER)",
            remote.describe()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessionfs_remote::memory::{ApiShape, MemoryRemote};

    #[tokio::test]
    async fn a_path_names_the_container_a_whole_mount_shows_there() {
        let remote = MemoryRemote::new();
        let work = remote.create_container("work").await.unwrap();
        remote.create_container("home").await.unwrap();
        assert_eq!(container_at(&remote, "work").await.unwrap(), work);
        assert_eq!(container_at(&remote, "/work/").await.unwrap(), work);
        let missing = container_at(&remote, "nowhere").await.unwrap_err();
        assert_eq!(missing.kind, ErrorKind::NotFound);
        let flat = MemoryRemote::shaped(ApiShape::Appmixer);
        let refused = container_at(&flat, "work").await.unwrap_err();
        assert_eq!(refused.kind, ErrorKind::InvalidInput);
    }
}
