//! The one cache of expiring download URLs (Lightfield's presigned URLs, Fluxer's attachment
//! URLs): a URL is reused until shortly before it expires, then fetched again.

use sessionfs_io::lock::Locked;
use std::future::Future;
use std::num::NonZeroUsize;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use lru::LruCache;

use super::http::HttpClient;
use super::{RemoteError, RemoteResult};

/// A URL is treated as expired this long before its stated expiry, so a read that starts with
/// it does not meet the expiry halfway.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Download URLs by object id, each with its expiry, at most `capacity` of them.
#[derive(Debug)]
pub struct UrlCache {
    /// Held only for one lookup or insert.
    urls: Mutex<LruCache<String, (String, SystemTime)>>,
}

impl UrlCache {
    /// A cache of at most `capacity` URLs.
    pub fn new(capacity: usize) -> Self {
        Self {
            urls: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity.max(1)).expect("non-zero"),
            )),
        }
    }

    /// The URL for `id` if one is cached that does not expire within [`EXPIRY_MARGIN`].
    pub fn get(&self, id: &str) -> Option<String> {
        let mut urls = self.urls.locked();
        match urls.get(id) {
            Some((url, expires)) if *expires > SystemTime::now() + EXPIRY_MARGIN => {
                Some(url.clone())
            }
            _ => None,
        }
    }

    /// Remembers `url` for `id` until `expires`.
    pub fn put(&self, id: &str, url: String, expires: SystemTime) {
        self.urls.locked().put(id.to_owned(), (url, expires));
    }

    /// Forgets `id`'s URL (refused by the server before its expiry).
    pub fn forget(&self, id: &str) {
        self.urls.locked().pop(id);
    }
}

/// Reads bytes `range` from the download URL `url(false)` gives (a cached one); when storage
/// refuses it as `stale` says (an expired URL answers 403 even before the expiry it was handed
/// out with), once more from `url(true)`, a fresh one. The bytes come from one URL or the
/// other, never a mix of answers.
pub async fn read_with_fresh_url<F, Fut>(
    http: &HttpClient,
    what: &str,
    range: &Range<u64>,
    stale: impl Fn(&RemoteError) -> bool,
    url: F,
) -> RemoteResult<Bytes>
where
    F: Fn(bool) -> Fut,
    Fut: Future<Output = RemoteResult<String>>,
{
    let cached = url(false).await?;
    match http.read_url_range(what, &cached, range).await {
        Err(err) if stale(&err) => {
            log::debug!("{}; reading again from a fresh url", err.message);
            let fresh = url(true).await?;
            http.read_url_range(what, &fresh, range).await
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_reused_until_close_to_their_expiry() {
        let cache = UrlCache::new(2);
        let now = SystemTime::now();
        cache.put("a", "u1".into(), now + Duration::from_secs(3600));
        cache.put("b", "u2".into(), now + EXPIRY_MARGIN / 2);
        assert_eq!(cache.get("a").as_deref(), Some("u1"));
        assert_eq!(cache.get("b"), None, "expires within the margin");
        cache.forget("a");
        assert_eq!(cache.get("a"), None);
    }
}
