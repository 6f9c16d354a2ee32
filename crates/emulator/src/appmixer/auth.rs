//! Accounts and session tokens: `POST /user/auth`, `GET /user`, and the bearer check in front
//! of every files route.
//!
//! Tokens are HS256 JWTs with the docs' payload `{"id", "scope": ["user"], "iat", "exp"}`,
//! signed with a secret kept in the store (`appmixer_secret`), so a token outlives a restart
//! until its `exp`. Expiry is checked with no leeway, so a one-second TTL means one second.
//!
//! 401 messages, in the order they are checked (hapi-auth-jwt2's wording): no or a non-Bearer
//! `Authorization` → `Missing authentication`; not three dot-separated parts or undecodable →
//! `Invalid token format`; a wrong signature or algorithm, or the id of no account → `Invalid
//! token`; past `exp` → `Token expired`. A wrong e-mail or password at sign-in → `Invalid
//! username or password.` (the docs give no wording; *choice*).
//!
//! *Choice*: e-mail addresses match case-insensitively; `username` and `email` are the same
//! thing (the docs' usernames are e-mail addresses).

use std::io;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{AppmixerState, Login, reply};
use crate::store::Store;

/// The store table holding the signing secret.
const SECRET_TABLE: &str = "appmixer_secret";

/// One account: the login plus the id its files are owned by.
#[derive(Clone)]
struct Account {
    id: String,
    login: Login,
}

/// The accounts an emulator accepts; fixed for its lifetime.
pub(super) struct Accounts(Vec<Account>);

impl Accounts {
    pub(super) fn new(logins: &[Login]) -> Accounts {
        Accounts(
            logins
                .iter()
                .map(|login| Account {
                    id: user_id(&login.email),
                    login: login.clone(),
                })
                .collect(),
        )
    }

    fn by_email(&self, email: &str) -> Option<&Account> {
        self.0
            .iter()
            .find(|a| a.login.email.eq_ignore_ascii_case(email))
    }

    fn by_id(&self, id: &str) -> Option<&Account> {
        self.0.iter().find(|a| a.id == id)
    }
}

/// A 24-hex-digit id (the shape of a Mongo ObjectId) derived from the e-mail address, so it is
/// the same in every run.
fn user_id(email: &str) -> String {
    let digest = Md5::digest(format!("appmixer-user\n{}", email.to_ascii_lowercase()).as_bytes());
    crate::hex(&digest[..12])
}

/// The signing and verifying keys made from the stored secret.
pub(super) struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl Keys {
    /// Reads the secret from the store, creating it on first use.
    pub(super) async fn load(store: &Store) -> io::Result<Keys> {
        let secret = store.signing_secret(SECRET_TABLE).await?;
        Ok(Keys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
        })
    }
}

/// The JWT payload, as in the docs' example token.
#[derive(Serialize, Deserialize)]
struct Claims {
    id: String,
    scope: Vec<String>,
    iat: u64,
    exp: u64,
}

/// Who made a request; put in the request's extensions by [`require_token`].
#[derive(Clone, Debug)]
pub(super) struct Caller {
    /// The owner id of the caller's files.
    pub(super) user_id: String,
}

/// The `user` object of the sign-in answer, keys in the docs' order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SignedInUser<'a> {
    id: &'a str,
    username: &'a str,
    is_active: bool,
    email: &'a str,
    plan: &'static str,
    vendor: Option<&'static str>,
}

/// `GET /user`, keys in the docs' order.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserInfo<'a> {
    id: &'a str,
    username: &'a str,
    is_active: bool,
    email: &'a str,
    scope: [&'static str; 1],
    plan: &'static str,
}

#[derive(Serialize)]
struct SignedIn<'a> {
    user: SignedInUser<'a>,
    token: String,
}

/// `POST /user/auth` with `{"username" | "email", "password"}`.
pub(super) async fn sign_in(State(st): State<AppmixerState>, body: Bytes) -> Response {
    let Ok(value) = serde_json::from_slice::<Value>(&body) else {
        return reply::boom(
            StatusCode::BAD_REQUEST,
            "Invalid request payload JSON format",
        );
    };
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    let Some(name) = text("username").or_else(|| text("email")) else {
        return reply::invalid("payload", "username", "\"username\" is required");
    };
    let Some(password) = text("password") else {
        return reply::invalid("payload", "password", "\"password\" is required");
    };
    let account = match st.inner.accounts.by_email(name) {
        Some(account) if account.login.password == password => account,
        _ => return reply::unauthorized("Invalid username or password.", false),
    };
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(res) => return res,
    };
    let iat = chrono::Utc::now().timestamp().max(0) as u64;
    let claims = Claims {
        id: account.id.clone(),
        scope: vec!["user".to_owned()],
        iat,
        exp: iat.saturating_add(st.inner.token_ttl.as_secs()),
    };
    let token = match jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &loaded.keys.encoding,
    ) {
        Ok(token) => token,
        Err(err) => return reply::internal_error("signing a token", &err),
    };
    let email = account.login.email.as_str();
    reply::json(
        StatusCode::OK,
        &SignedIn {
            user: SignedInUser {
                id: &account.id,
                username: email,
                is_active: false,
                email,
                plan: "free",
                vendor: None,
            },
            token,
        },
    )
}

/// `GET /user`: the caller's account.
pub(super) async fn get_user(
    State(st): State<AppmixerState>,
    Extension(caller): Extension<Caller>,
) -> Response {
    let Some(account) = st.inner.accounts.by_id(&caller.user_id) else {
        return reply::unauthorized("Invalid token", false);
    };
    let email = account.login.email.as_str();
    reply::json(
        StatusCode::OK,
        &UserInfo {
            id: &account.id,
            username: email,
            is_active: false,
            email,
            scope: ["user"],
            plan: "free",
        },
    )
}

/// Why a bearer token was refused: the 401 message.
fn refusal(keys: &Keys, accounts: &Accounts, token: &str) -> Result<Caller, &'static str> {
    if token.split('.').count() != 3 {
        return Err("Invalid token format");
    }
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 0;
    validation.set_required_spec_claims(&["exp"]);
    let claims = match jsonwebtoken::decode::<Claims>(token, &keys.decoding, &validation) {
        Ok(data) => data.claims,
        Err(err) => {
            return Err(match err.kind() {
                JwtErrorKind::ExpiredSignature => "Token expired",
                JwtErrorKind::InvalidSignature | JwtErrorKind::InvalidAlgorithm => "Invalid token",
                _ => "Invalid token format",
            });
        }
    };
    match accounts.by_id(&claims.id) {
        Some(account) => Ok(Caller {
            user_id: account.id.clone(),
        }),
        None => Err("Invalid token"),
    }
}

/// Admits a request with a valid, unexpired token of a known account and records its
/// [`Caller`]; anything else is 401.
pub(super) async fn require_token(
    State(st): State<AppmixerState>,
    mut req: Request,
    next: Next,
) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .filter(|token| !token.is_empty());
    let Some(token) = token else {
        return reply::unauthorized("Missing authentication", true);
    };
    let loaded = match st.loaded().await {
        Ok(loaded) => loaded,
        Err(res) => return res,
    };
    match refusal(&loaded.keys, &st.inner.accounts, token) {
        Ok(caller) => {
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(message) => reply::unauthorized(message, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_look_like_object_ids_and_ignore_case() {
        let id = user_id("A@Example.com");
        assert_eq!(id.len(), 24);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, user_id("a@example.com"));
        assert_ne!(id, user_id("b@example.com"));
    }
}
