//! The pagination drivers: one loop for APIs that page with `offset` and `limit` (Lightfield,
//! Appmixer), one for APIs that page with a cursor (Fluxer: `before=<oldest id seen>`).
//!
//! A backend supplies only "fetch the page at this offset" or "fetch the page before this
//! cursor"; the driver advances and stops at the first short page, which is the rule the APIs
//! document (their totals may change while we page, so they are not trusted). A hard bound on
//! the number of pages turns a server that never returns a short page into an error instead of
//! an endless loop; a cursor that does not move is an error too, and so is a full offset page
//! that holds only rows already seen (a server that ignores `offset` would otherwise be asked
//! for all of its [`MAX_PAGES`] pages).

use std::future::Future;

use super::{RemoteError, RemoteResult};

/// Most pages one listing may take: 100 000 pages of 25 rows is 2.5 million objects.
pub const MAX_PAGES: usize = 100_000;

/// Calls `fetch_page(offset)` for offsets 0, n₀, n₀+n₁, ... until a page holds fewer than
/// `page_size` rows, and returns every row in order. Rows may repeat if the listing shifts
/// while it is paged (a new object at the head pushes the others down); callers that key
/// rows by id drop the repeats. A full page whose every `key` was seen before is an error.
pub async fn collect_pages<T, C, K, F, Fut>(
    page_size: usize,
    key: K,
    mut fetch_page: F,
) -> RemoteResult<Vec<T>>
where
    C: Eq + std::hash::Hash,
    K: Fn(&T) -> C,
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = RemoteResult<Vec<T>>>,
{
    let mut rows = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut offset = 0u64;
    for _ in 0..MAX_PAGES {
        let page = fetch_page(offset).await?;
        let len = page.len();
        let mut new_rows = 0;
        for row in &page {
            new_rows += usize::from(seen.insert(key(row)));
        }
        rows.extend(page);
        if len < page_size.max(1) {
            return Ok(rows);
        }
        if new_rows == 0 {
            return Err(RemoteError::protocol(format!(
                "listing did not advance: the page at offset {offset} held only rows already \
                 seen (the server seems to ignore offset)"
            )));
        }
        offset += len as u64;
    }
    Err(RemoteError::protocol(format!(
        "listing did not end after {MAX_PAGES} pages of {page_size}; the server keeps \
         returning full pages"
    )))
}

/// Calls `fetch_page(None)`, then `fetch_page(Some(cursor))` with the cursor of the last row of
/// the previous page (`cursor_of`), until a page holds fewer than `page_size` rows, and returns
/// every row in order. For listings newest first where the next page is "before the oldest row
/// seen", so rows created while we page never shift the ones still to come.
pub async fn collect_cursor_pages<T, C, K, F, Fut>(
    page_size: usize,
    cursor_of: K,
    mut fetch_page: F,
) -> RemoteResult<Vec<T>>
where
    C: PartialEq,
    K: Fn(&T) -> C,
    F: FnMut(Option<C>) -> Fut,
    Fut: Future<Output = RemoteResult<Vec<T>>>,
{
    let mut rows: Vec<T> = Vec::new();
    for _ in 0..MAX_PAGES {
        let cursor = rows.last().map(&cursor_of);
        let page = fetch_page(cursor).await?;
        let len = page.len();
        if let (Some(last_before), Some(last_now)) = (rows.last(), page.last())
            && cursor_of(last_before) == cursor_of(last_now)
        {
            return Err(RemoteError::protocol(
                "listing did not advance: the server returned the same page twice",
            ));
        }
        rows.extend(page);
        if len < page_size.max(1) {
            return Ok(rows);
        }
    }
    Err(RemoteError::protocol(format!(
        "listing did not end after {MAX_PAGES} pages of {page_size}; the server keeps \
         returning full pages"
    )))
}

#[cfg(test)]
mod tests {
    use sessionfs_io::lock::Locked;

    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn pages_until_a_short_page() {
        let all: Vec<u32> = (0..60).collect();
        let offsets = Mutex::new(Vec::new());
        let rows = collect_pages(
            25,
            |row| *row,
            |offset| {
                offsets.locked().push(offset);
                let page: Vec<u32> = all.iter().copied().skip(offset as usize).take(25).collect();
                async move { Ok(page) }
            },
        )
        .await
        .unwrap();
        assert_eq!(rows, all);
        assert_eq!(*offsets.locked(), [0, 25, 50]);
    }

    #[tokio::test]
    async fn an_exact_multiple_ends_with_an_empty_page() {
        let calls = Mutex::new(0);
        let rows = collect_pages(
            2,
            |row| *row,
            |offset| {
                *calls.locked() += 1;
                async move {
                    Ok(if offset < 4 {
                        vec![offset, offset + 1]
                    } else {
                        vec![]
                    })
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(rows, [0, 1, 2, 3]);
        assert_eq!(*calls.locked(), 3);
    }

    #[tokio::test]
    async fn a_server_that_ignores_the_offset_is_an_error_at_its_second_page() {
        let calls = Mutex::new(0);
        let err = collect_pages(
            3,
            |row| *row,
            |_offset| {
                *calls.locked() += 1;
                async { Ok(vec![1, 2, 3]) }
            },
        )
        .await
        .unwrap_err();
        assert!(err.message.contains("did not advance"), "{}", err.message);
        assert_eq!(*calls.locked(), 2);
    }

    #[tokio::test]
    async fn a_cursor_listing_asks_before_the_oldest_row_seen() {
        // Ids newest first, as Fluxer lists messages.
        let all: Vec<u64> = (1..=250).rev().collect();
        let cursors = Mutex::new(Vec::new());
        let rows = collect_cursor_pages(
            100,
            |id: &u64| *id,
            |before| {
                cursors.locked().push(before);
                let page: Vec<u64> = all
                    .iter()
                    .copied()
                    .filter(|id| before.is_none_or(|b| *id < b))
                    .take(100)
                    .collect();
                async move { Ok(page) }
            },
        )
        .await
        .unwrap();
        assert_eq!(rows, all);
        assert_eq!(*cursors.locked(), [None, Some(151), Some(51)]);
    }

    #[tokio::test]
    async fn a_cursor_that_does_not_move_is_an_error() {
        let result = collect_cursor_pages(2, |id: &u8| *id, |_| async { Ok(vec![9, 8]) }).await;
        assert!(result.unwrap_err().message.contains("did not advance"));
    }

    #[tokio::test]
    async fn errors_stop_the_listing() {
        let result: RemoteResult<Vec<u8>> = collect_pages(
            2,
            |row: &u8| *row,
            |_| async { Err(RemoteError::protocol("bad page")) },
        )
        .await;
        assert_eq!(result.unwrap_err().message, "bad page");
    }
}
