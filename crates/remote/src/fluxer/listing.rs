//! Listing a channel, and the index of the attachments this client has seen.
//!
//! A listing walks `GET /channels/{id}/messages?limit=100&before=<oldest id seen>` newest first
//! through the shared cursor pager. Each attachment becomes one object: the one attachment of a
//! message with a `sessionfs:` line is named by that line, any other by its filename.
//!
//! A page whose every message was seen before ends the listing with an error: a server whose
//! pages come round again (`before` ignored every other page) would otherwise be paged until
//! the driver's bound. An attachment whose fields cannot be read is left out of the listing,
//! with one log line per message however often it is listed.
//!
//! The index remembers, per channel, each attachment's message, name and how many attachments
//! its message carries: a delete needs the message id (the object id is the attachment id) and
//! whether to delete the whole message or only the attachment. A listing replaces a channel's
//! entries but keeps those of messages newer than everything it saw (posted while it ran).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use reqwest::Method;

use super::api::{self, Message};
use super::{FluxerRemote, Payload};
use crate::paging::collect_cursor_pages;
use crate::{ErrorKind, ObjectMeta, RemoteError, RemoteResult};

/// Messages per page: the API's maximum.
const PAGE_SIZE: usize = 100;
/// Messages with unreadable attachments logged at most (each once).
const UNREADABLE_LOGGED: usize = 1024;

/// One attachment as this client last saw it.
#[derive(Clone, Debug)]
pub(super) struct Known {
    pub attachment_id: String,
    pub message_id: String,
    /// The message id as a number, so newer compares greater.
    pub order: u64,
    pub name: String,
    /// Attachments its message carries (this one included).
    pub siblings: usize,
}

/// Attachments seen, by channel and attachment id.
#[derive(Debug, Default)]
pub(super) struct Index {
    channels: Mutex<HashMap<String, HashMap<String, Known>>>,
    /// Messages whose unreadable attachments were logged.
    said: Mutex<HashSet<String>>,
}

impl Index {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, Known>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, channel: &str, attachment: &str) -> Option<Known> {
        self.lock().get(channel)?.get(attachment).cloned()
    }

    /// The attachment `id` of `channel`, listing the channel if it is not known yet.
    pub(super) async fn find(
        &self,
        remote: &FluxerRemote,
        channel: &str,
        id: &str,
    ) -> RemoteResult<Known> {
        if let Some(known) = self.get(channel, id) {
            return Ok(known);
        }
        list_channel(remote, channel).await?;
        self.get(channel, id).ok_or_else(|| {
            RemoteError::new(
                ErrorKind::NotFound,
                format!("attachment {id} is no longer in channel {channel}"),
            )
        })
    }

    /// Records the attachments of a message just posted.
    pub(super) fn insert(&self, channel: &str, known: Vec<Known>) {
        let mut channels = self.lock();
        let entries = channels.entry(channel.to_owned()).or_default();
        for k in known {
            entries.insert(k.attachment_id.clone(), k);
        }
    }

    /// Forgets a deleted attachment (its message's other attachments now have one sibling less).
    pub(super) fn forget(&self, channel: &str, gone: &Known) {
        let mut channels = self.lock();
        let Some(entries) = channels.get_mut(channel) else {
            return;
        };
        entries.remove(&gone.attachment_id);
        for k in entries.values_mut() {
            if k.message_id == gone.message_id {
                k.siblings = k.siblings.saturating_sub(1);
            }
        }
    }

    /// Logs, once per message, the attachments of `message` that could not be read.
    fn say_unreadable(&self, channel: &str, message: &Message) {
        if message.unreadable.is_empty() {
            return;
        }
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if said.len() >= UNREADABLE_LOGGED || !said.insert(message.id.clone()) {
            return;
        }
        log::warn!(
            "channel {channel}: message {} has an attachment this client cannot read ({}); it \
             is not shown",
            message.id,
            message.unreadable.join("; ")
        );
    }

    /// Replaces `channel`'s entries with a listing's, keeping entries of messages newer than
    /// `newest` (posted after the listing's first page).
    fn replace(&self, channel: &str, listed: HashMap<String, Known>, newest: u64) {
        let mut channels = self.lock();
        let entries = channels.entry(channel.to_owned()).or_default();
        let mut fresh = listed;
        for (id, k) in entries.drain() {
            if k.order > newest {
                fresh.entry(id).or_insert(k);
            }
        }
        *entries = fresh;
    }
}

/// The objects of a message, with the index entries that stand for them.
pub(super) fn objects_of(message: &Message) -> Vec<(ObjectMeta, Known)> {
    let named = match message.attachments.len() {
        1 => api::name_in(&message.content),
        _ => None,
    };
    let modified = message
        .timestamp
        .as_deref()
        .and_then(api::parse_time)
        .or_else(|| Some(api::snowflake_time(&message.id)));
    let order = message.id.parse().unwrap_or(0);
    message
        .attachments
        .iter()
        .map(|a| {
            let name = named.clone().unwrap_or_else(|| a.filename.clone());
            let object = ObjectMeta {
                id: a.id.clone(),
                name: name.clone(),
                size: a.size,
                modified,
                version: a.id.clone(),
                content_type: a.content_type.clone(),
                md5: None,
            };
            let known = Known {
                attachment_id: a.id.clone(),
                message_id: message.id.clone(),
                order,
                name,
                siblings: message.attachments.len(),
            };
            (object, known)
        })
        .collect()
}

/// Up to `limit` messages of `channel`, newest first, older than `before` when given.
pub(super) async fn messages_page(
    remote: &FluxerRemote,
    what: &str,
    channel: &str,
    limit: usize,
    before: Option<&str>,
) -> RemoteResult<Vec<Message>> {
    let mut path = format!("/channels/{channel}/messages?limit={limit}");
    if let Some(before) = before {
        path.push_str(&format!("&before={before}"));
    }
    remote
        .call_json::<Vec<Message>>(
            what,
            "message_list",
            channel,
            Method::GET,
            &path,
            Payload::None,
        )
        .await
}

/// Adds `page`'s message ids to `seen`; a page that holds messages but no new one is an error.
fn advanced(seen: &mut HashSet<String>, page: &[Message], what: &str) -> RemoteResult<()> {
    let mut new = false;
    for message in page {
        new |= seen.insert(message.id.clone());
    }
    if page.is_empty() || new {
        return Ok(());
    }
    Err(RemoteError::protocol(format!(
        "{what}: the listing did not advance: a page held only messages already seen (the \
         server's pages come round again)"
    )))
}

/// Every attachment in `channel`, newest message first; refreshes the channel's index.
pub(super) async fn list_channel(
    remote: &FluxerRemote,
    channel: &str,
) -> RemoteResult<Vec<ObjectMeta>> {
    let what = format!("list channel {channel}");
    let seen = Mutex::new(HashSet::new());
    let messages = collect_cursor_pages(
        PAGE_SIZE,
        |m: &Message| m.id.clone(),
        |before| {
            let (what, seen) = (&what, &seen);
            async move {
                let page = messages_page(remote, what, channel, PAGE_SIZE, before.as_deref());
                let page = page.await?;
                advanced(
                    &mut seen.lock().unwrap_or_else(|p| p.into_inner()),
                    &page,
                    what,
                )?;
                Ok(page)
            }
        },
    )
    .await?;
    let newest = messages
        .first()
        .and_then(|m| m.id.parse().ok())
        .unwrap_or(0);
    let mut objects = Vec::new();
    let mut listed = HashMap::new();
    for message in &messages {
        remote.index.say_unreadable(channel, message);
        for attachment in &message.attachments {
            remote.remember_url(attachment);
        }
        for (object, known) in objects_of(message) {
            // A message posted while we paged may come twice.
            if listed.insert(object.id.clone(), known).is_none() {
                objects.push(object);
            }
        }
    }
    remote.index.replace(channel, listed, newest);
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(ids: std::ops::Range<u32>) -> Vec<Message> {
        ids.rev()
            .map(|id| serde_json::from_value(serde_json::json!({ "id": id.to_string() })).unwrap())
            .collect()
    }

    #[test]
    fn pages_that_come_round_again_end_the_listing() {
        let mut seen = HashSet::new();
        advanced(&mut seen, &page(200..300), "list").unwrap();
        advanced(&mut seen, &page(100..200), "list").unwrap();
        advanced(&mut seen, &page(250..350), "list").expect("some rows are new");
        advanced(&mut seen, &[], "list").expect("an empty page ends the listing itself");
        let err = advanced(&mut seen, &page(200..300), "list").unwrap_err();
        assert!(err.message.contains("did not advance"), "{}", err.message);
    }
}
