//! The one pagination driver for APIs that page with `offset` and `limit`.
//!
//! A backend supplies only "fetch the page at this offset"; the driver advances the offset by
//! the number of rows each page held and stops at the first short page, which is the rule the
//! APIs document (their totals may change while we page, so they are not trusted). A hard bound
//! on the number of pages turns a server that never returns a short page into an error instead
//! of an endless loop.

use std::future::Future;

use super::{RemoteError, RemoteResult};

/// Most pages one listing may take: 100 000 pages of 25 rows is 2.5 million objects.
pub const MAX_PAGES: usize = 100_000;

/// Calls `fetch_page(offset)` for offsets 0, n₀, n₀+n₁, ... until a page holds fewer than
/// `page_size` rows, and returns every row in order. Rows may repeat if the listing shifts
/// while it is paged (a new object at the head pushes the others down); callers that key
/// rows by id drop the repeats.
pub async fn collect_pages<T, F, Fut>(page_size: usize, mut fetch_page: F) -> RemoteResult<Vec<T>>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = RemoteResult<Vec<T>>>,
{
    let mut rows = Vec::new();
    let mut offset = 0u64;
    for _ in 0..MAX_PAGES {
        let page = fetch_page(offset).await?;
        let len = page.len();
        rows.extend(page);
        if len < page_size.max(1) {
            return Ok(rows);
        }
        offset += len as u64;
    }
    Err(RemoteError::protocol(format!(
        "listing did not end after {MAX_PAGES} pages of {page_size}; the server keeps \
         returning full pages"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn pages_until_a_short_page() {
        let all: Vec<u32> = (0..60).collect();
        let offsets = Mutex::new(Vec::new());
        let rows = collect_pages(25, |offset| {
            offsets.lock().unwrap().push(offset);
            let page: Vec<u32> = all.iter().copied().skip(offset as usize).take(25).collect();
            async move { Ok(page) }
        })
        .await
        .unwrap();
        assert_eq!(rows, all);
        assert_eq!(*offsets.lock().unwrap(), [0, 25, 50]);
    }

    #[tokio::test]
    async fn an_exact_multiple_ends_with_an_empty_page() {
        let calls = Mutex::new(0);
        let rows = collect_pages(2, |offset| {
            *calls.lock().unwrap() += 1;
            async move {
                Ok(if offset < 4 {
                    vec![offset, offset + 1]
                } else {
                    vec![]
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(rows, [0, 1, 2, 3]);
        assert_eq!(*calls.lock().unwrap(), 3);
    }

    #[tokio::test]
    async fn errors_stop_the_listing() {
        let result: RemoteResult<Vec<u8>> =
            collect_pages(2, |_| async { Err(RemoteError::protocol("bad page")) }).await;
        assert_eq!(result.unwrap_err().message, "bad page");
    }
}
