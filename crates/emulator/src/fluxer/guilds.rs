//! The seeded world and its read-only routes: the session user, a guest and a bot; one guild
//! owned by the user with a text channel per configured name; one DM channel between the user
//! and the guest.
//!
//! The world is seeded once, when the data directory is new, and stored as one record; later
//! starts read it back (a different `--channels` does not change an existing directory).
//! Channel type numbers are Fluxer's: 0 guild text, 1 DM.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::Identity;
use super::reply::{self, Refused};
use super::snowflake::{self, Snowflakes};
use super::{FluxerConfig, FluxerState, now_ms};
use crate::store::Store;

/// The store table holding the world record.
const WORLD_TABLE: &str = "fluxer_world";
/// Channel type of a guild text channel.
const GUILD_TEXT: u8 = 0;
/// Channel type of a DM.
const DM: u8 = 1;

/// One seeded user.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct UserRecord {
    pub id: u64,
    pub username: String,
    pub bot: bool,
}

impl UserRecord {
    /// `UserPartialResponse`.
    pub(super) fn partial(&self) -> Value {
        json!({
            "id": self.id.to_string(),
            "username": self.username,
            "discriminator": "0001",
            "global_name": self.username,
            "avatar": null,
            "avatar_color": null,
            "bot": self.bot,
            "system": false,
            "flags": 0,
        })
    }
}

/// One seeded channel.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ChannelRecord {
    pub id: u64,
    pub kind: u8,
    /// Guild channels only.
    pub name: Option<String>,
    pub guild_id: Option<u64>,
    pub position: i32,
    /// The other person of a DM.
    pub recipient: Option<u64>,
}

/// Everything seeded; immutable once loaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct World {
    pub user: UserRecord,
    pub guest: UserRecord,
    pub bot: UserRecord,
    pub guild_id: u64,
    pub guild_name: String,
    pub channels: Vec<ChannelRecord>,
}

impl World {
    /// Reads the stored world, or seeds one from `config` when there is none.
    pub(super) async fn load_or_seed(
        store: &Store,
        config: &FluxerConfig,
        ids: &Snowflakes,
    ) -> std::io::Result<World> {
        if let Some(world) = store.get_record::<World>(WORLD_TABLE, "world").await? {
            for id in world.channels.iter().map(|c| c.id).chain([world.bot.id]) {
                ids.observe(id);
            }
            return Ok(world);
        }
        let now = now_ms();
        let user = |username: &str, bot: bool| UserRecord {
            id: ids.next(now),
            username: username.to_owned(),
            bot,
        };
        let (user, guest, bot) = (
            user("sessionfs", false),
            user("guest", false),
            user("sessionfs_bot", true),
        );
        let guild_id = ids.next(now);
        let mut channels: Vec<ChannelRecord> = config
            .channels
            .iter()
            .enumerate()
            .map(|(position, name)| ChannelRecord {
                id: ids.next(now),
                kind: GUILD_TEXT,
                name: Some(name.clone()),
                guild_id: Some(guild_id),
                position: position as i32,
                recipient: None,
            })
            .collect();
        channels.push(ChannelRecord {
            id: ids.next(now),
            kind: DM,
            name: None,
            guild_id: None,
            position: 0,
            recipient: Some(guest.id),
        });
        let world = World {
            user,
            guest,
            bot,
            guild_id,
            guild_name: "sessionfs".to_owned(),
            channels,
        };
        store.put_record(WORLD_TABLE, "world", &world).await?;
        Ok(world)
    }

    /// The seeded user with this id.
    pub(super) fn user_by_id(&self, id: u64) -> &UserRecord {
        [&self.guest, &self.bot]
            .into_iter()
            .find(|u| u.id == id)
            .unwrap_or(&self.user)
    }

    /// The channel named by a `{channel_id}` path segment: 400 for a malformed id, 404
    /// `UNKNOWN_CHANNEL` for an unknown one.
    pub(super) fn channel(&self, text: &str) -> Result<&ChannelRecord, Refused> {
        let id = parse_id("channel_id", text)?;
        self.channels
            .iter()
            .find(|c| c.id == id)
            .ok_or_else(|| reply::unknown_channel().into())
    }

    fn channel_json(&self, channel: &ChannelRecord) -> Value {
        let mut out = json!({
            "id": channel.id.to_string(),
            "type": channel.kind,
            "last_message_id": null,
            "last_pin_timestamp": null,
        });
        if channel.kind == GUILD_TEXT {
            out["guild_id"] = json!(channel.guild_id.map(|id| id.to_string()));
            out["name"] = json!(channel.name);
            out["topic"] = Value::Null;
            out["position"] = json!(channel.position);
            out["parent_id"] = Value::Null;
            out["nsfw"] = json!(false);
            out["rate_limit_per_user"] = json!(0);
            out["permission_overwrites"] = json!([]);
        } else {
            let recipients: Vec<Value> = channel
                .recipient
                .map(|id| self.user_by_id(id).partial())
                .into_iter()
                .collect();
            out["recipients"] = json!(recipients);
        }
        out
    }

    fn guild_json(&self) -> Value {
        json!({
            "id": self.guild_id.to_string(),
            "name": self.guild_name,
            "icon": null,
            "banner": null,
            "splash": null,
            "splash_card_alignment": 0,
            "vanity_url_code": null,
            "owner_id": self.user.id.to_string(),
            "system_channel_id": null,
            "system_channel_flags": 0,
            "rules_channel_id": null,
            "afk_channel_id": null,
            "afk_timeout": 300,
            "features": [],
            "verification_level": 0,
            "mfa_level": 0,
            "nsfw_level": 0,
            "nsfw": false,
            "content_warning_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "disabled_operations": 0,
            "permissions": "2251799813685247",
        })
    }

    fn guild_channels(&self) -> Vec<Value> {
        self.channels
            .iter()
            .filter(|c| c.guild_id == Some(self.guild_id))
            .map(|c| self.channel_json(c))
            .collect()
    }
}

/// A snowflake path parameter; 400 `INVALID_FORM_BODY` when malformed.
pub(super) fn parse_id(param: &str, text: &str) -> Result<u64, Refused> {
    snowflake::parse(text).ok_or_else(|| {
        reply::invalid_field(param, "INVALID_SNOWFLAKE", "Value is not a valid snowflake").into()
    })
}

/// `GET /users/@me`: the caller (`UserPrivateResponse`'s identity keys; the account-settings
/// keys a file client never reads are left out).
pub(super) async fn me(
    State(st): State<FluxerState>,
    Extension(who): Extension<Identity>,
) -> Response {
    let loaded = loaded_or_500!(st, "reading the user");
    let user = loaded.world.user_by_id(who.user_id);
    let mut out = user.partial();
    for (key, value) in [
        ("is_staff", json!(false)),
        ("acls", json!([])),
        ("traits", json!([])),
        ("email", Value::Null),
        ("verified", json!(true)),
        ("mfa_enabled", json!(false)),
        ("premium_type", json!(0)),
        ("bio", Value::Null),
        ("pronouns", Value::Null),
        ("phone", Value::Null),
    ] {
        out[key] = value;
    }
    reply::json(StatusCode::OK, &out)
}

/// `GET /users/@me/guilds`: the one guild.
pub(super) async fn my_guilds(State(st): State<FluxerState>) -> Response {
    let loaded = loaded_or_500!(st, "listing guilds");
    reply::json(StatusCode::OK, &[loaded.world.guild_json()])
}

/// `GET /users/@me/channels`: the DM channel.
pub(super) async fn my_channels(State(st): State<FluxerState>) -> Response {
    let loaded = loaded_or_500!(st, "listing DM channels");
    let world = &loaded.world;
    let dms: Vec<Value> = world
        .channels
        .iter()
        .filter(|c| c.kind == DM)
        .map(|c| world.channel_json(c))
        .collect();
    reply::json(StatusCode::OK, &dms)
}

fn known_guild(world: &World, text: &str) -> Result<(), Refused> {
    if parse_id("guild_id", text)? == world.guild_id {
        Ok(())
    } else {
        Err(reply::error(StatusCode::NOT_FOUND, "UNKNOWN_GUILD", "Unknown guild").into())
    }
}

/// `GET /guilds/{guild_id}`.
pub(super) async fn guild(State(st): State<FluxerState>, Path(guild_id): Path<String>) -> Response {
    let loaded = loaded_or_500!(st, "reading the guild");
    match known_guild(&loaded.world, &guild_id) {
        Ok(()) => reply::json(StatusCode::OK, &loaded.world.guild_json()),
        Err(res) => res.into_response(),
    }
}

/// `GET /guilds/{guild_id}/channels`.
pub(super) async fn guild_channels(
    State(st): State<FluxerState>,
    Path(guild_id): Path<String>,
) -> Response {
    let loaded = loaded_or_500!(st, "listing channels");
    match known_guild(&loaded.world, &guild_id) {
        Ok(()) => reply::json(StatusCode::OK, &loaded.world.guild_channels()),
        Err(res) => res.into_response(),
    }
}

/// `GET /channels/{channel_id}`.
pub(super) async fn channel(
    State(st): State<FluxerState>,
    Path(channel_id): Path<String>,
) -> Response {
    let loaded = loaded_or_500!(st, "reading the channel");
    match loaded.world.channel(&channel_id) {
        Ok(channel) => reply::json(StatusCode::OK, &loaded.world.channel_json(channel)),
        Err(res) => res.into_response(),
    }
}
