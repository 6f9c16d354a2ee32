//! The `Authorization` forms of `UserMiddleware.parseAuthHeader`: a raw session token, `Bot
//! <token>`, `Bearer <token>`. A value with leading or trailing spaces is ignored, as upstream.
//!
//! The emulator has no OAuth2 tokens, so `Bearer <token>` is tried (as upstream does after
//! OAuth2) as a session token; it is then a session login and passes the chunked routes' user
//! check. A bot token is only valid after `Bot `. Missing or unknown → 401 `UNAUTHORIZED`.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::FluxerState;
use super::reply::{self, Refused};

/// How the request logged in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Login {
    /// A user's session token (raw or after `Bearer `).
    Session,
    /// `Bot <token>`.
    Bot,
}

/// Who sent a request; put in the request extensions by [`authenticate`].
#[derive(Clone, Debug)]
pub(super) struct Identity {
    /// The seeded user the token belongs to.
    pub user_id: u64,
    pub login: Login,
    /// Names the client for the rate limits (one bucket set per token).
    pub client: String,
}

impl Identity {
    /// The chunked routes are `DefaultUserOnly`: bots get 403 `ACCESS_DENIED`.
    pub(super) fn require_user(&self) -> Result<(), Refused> {
        match self.login {
            Login::Session => Ok(()),
            Login::Bot => {
                Err(reply::error(StatusCode::FORBIDDEN, "ACCESS_DENIED", "Access denied").into())
            }
        }
    }
}

/// Resolves the token to a seeded user (401 otherwise) and records it in the extensions.
pub(super) async fn authenticate(
    State(st): State<FluxerState>,
    mut req: Request,
    next: Next,
) -> Response {
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(err) => return reply::internal_error("authenticating", &err),
    };
    let config = &st.inner.config;
    let world = &loaded.world;
    let session = |token: &str| {
        if token == st.inner.session_token {
            Some(world.user.id)
        } else if config.guest_token.as_deref() == Some(token) {
            Some(world.guest.id)
        } else {
            None
        }
    };
    let found = value
        .filter(|v| !v.is_empty() && v.trim() == *v)
        .and_then(|v| {
            if let Some(token) = v.strip_prefix("Bot ") {
                let bot = config.bot_token.as_deref() == Some(token);
                bot.then_some((world.bot.id, Login::Bot, token))
            } else if let Some(token) = v.strip_prefix("Bearer ") {
                session(token).map(|id| (id, Login::Session, token))
            } else if v.contains(' ') {
                None
            } else {
                session(v).map(|id| (id, Login::Session, v))
            }
        });
    let Some((user_id, login, token)) = found else {
        return reply::error(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "Unauthorized");
    };
    let identity = Identity {
        user_id,
        login,
        client: token.to_owned(),
    };
    req.extensions_mut().insert(identity);
    next.run(req).await
}
