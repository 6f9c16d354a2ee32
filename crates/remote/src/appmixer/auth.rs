//! Signing in to Appmixer: the session token, when it expires, and signing in again; the
//! [`RequestPolicy`] of its API calls (the token on each, a sign-in again after a 401).
//!
//! Invariants: at most one sign-in runs at a time (`Auth::signing_in`), and a call that finds
//! its token already replaced uses the new one instead of signing in again; the password and
//! the token never reach a log line (no `Debug` on [`Credentials`], only the e-mail is logged).

use sessionfs_io::lock::ReadWriteLocked;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::{RequestBuilder, StatusCode};
use serde::Deserialize;

use crate::http::{HttpClient, RequestPolicy};
use crate::{ErrorKind, RemoteError, RemoteResult};

/// What to do about refused credentials, appended to a 401's message.
pub(super) const CREDENTIALS_HINT: &str = "pass --user EMAIL with its password \
    (--password-file or SESSIONFS_PASSWORD), or a valid JWT in --token";

/// An e-mail and password to sign in with. No `Debug`, so it cannot reach a log line.
pub(super) struct Credentials {
    pub(super) email: String,
    pub(super) password: String,
}

/// A JWT and when it expires (its `exp` claim, if it has one we can read).
#[derive(Clone)]
pub(super) struct Token {
    jwt: Arc<str>,
    expires: Option<SystemTime>,
}

impl Token {
    pub(super) fn new(jwt: &str) -> Token {
        Token {
            jwt: jwt.into(),
            expires: expiry_of(jwt),
        }
    }

    fn expired(&self) -> bool {
        self.expires.is_some_and(|at| SystemTime::now() >= at)
    }
}

/// The session's sign-in state. Lock order: `signing_in`, then `token`.
pub(super) struct Auth {
    /// What to sign in with; `None` when only a ready token was given.
    pub(super) login: Option<Credentials>,
    /// Held while signing in, so calls refused together sign in once.
    pub(super) signing_in: tokio::sync::Mutex<()>,
    /// The current token; `None` before the first sign-in.
    pub(super) token: RwLock<Option<Token>>,
}

/// The `exp` claim of a JWT, read without checking its signature (only the server can); a
/// token we cannot read is treated as never expiring, and the server's 401 decides.
fn expiry_of(jwt: &str) -> Option<SystemTime> {
    #[derive(Deserialize)]
    struct Claims {
        exp: u64,
    }
    let header = jsonwebtoken::decode_header(jwt).ok()?;
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.insecure_disable_signature_validation();
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let key = jsonwebtoken::DecodingKey::from_secret(&[]);
    let data = jsonwebtoken::decode::<Claims>(jwt, &key, &validation).ok()?;
    // An `exp` past what the clock can hold (above i64::MAX seconds) is "never".
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(data.claims.exp))
}

impl Auth {
    fn current(&self) -> Option<Token> {
        self.token.read_locked().clone()
    }

    /// The token to send: the current one, or a new sign-in when there is none or it expired
    /// (and we have a password).
    pub(super) async fn token(&self, http: &HttpClient) -> RemoteResult<Arc<str>> {
        match self.current() {
            Some(token) if !token.expired() || self.login.is_none() => Ok(token.jwt),
            stale => self.renew(http, stale.map(|t| t.jwt)).await,
        }
    }

    /// Signs in again unless another call already replaced `stale` (then that token is used).
    pub(super) async fn renew(
        &self,
        http: &HttpClient,
        stale: Option<Arc<str>>,
    ) -> RemoteResult<Arc<str>> {
        let _signing_in = self.signing_in.lock().await;
        if let Some(token) = self.current()
            && Some(&token.jwt) != stale.as_ref()
            && !token.expired()
        {
            return Ok(token.jwt);
        }
        let Some(login) = &self.login else {
            return Err(RemoteError::new(
                ErrorKind::PermissionDenied,
                format!("appmixer has no valid token; {CREDENTIALS_HINT}"),
            ));
        };
        let what = format!("sign in to appmixer as {}", login.email);
        let url = http.url("/user/auth");
        let body = serde_json::json!({ "email": login.email, "password": login.password });
        #[derive(Deserialize)]
        struct SignedIn {
            token: String,
        }
        let signed: SignedIn = http
            .call_json(&what, &SignIn, || async {
                Ok(http.client().post(&url).json(&body))
            })
            .await?;
        let token = Token::new(&signed.token);
        log::debug!("signed in to appmixer as {}", login.email);
        *self.token.write_locked() = Some(token.clone());
        Ok(token.jwt)
    }
}

/// Every API call but the sign-in: the current token as a bearer; after a 401, a sign-in again
/// (when there is a password) and the call sent once more; a 401 returned gets
/// [`CREDENTIALS_HINT`].
#[async_trait]
impl RequestPolicy for Auth {
    type Credential = Arc<str>;

    async fn credential(&self, http: &HttpClient) -> RemoteResult<Arc<str>> {
        self.token(http).await
    }

    fn authorize(&self, request: RequestBuilder, token: &Arc<str>) -> RequestBuilder {
        request.bearer_auth(token)
    }

    async fn renew_on_401(
        &self,
        http: &HttpClient,
        what: &str,
        refused: Arc<str>,
    ) -> RemoteResult<Option<Arc<str>>> {
        if self.login.is_none() {
            return Ok(None);
        }
        log::info!("{what}: appmixer refused the session token; signing in again");
        self.renew(http, Some(refused)).await.map(Some)
    }

    fn refine(&self, status: StatusCode, mut err: RemoteError) -> RemoteError {
        if status == StatusCode::UNAUTHORIZED {
            err.message.push_str("; ");
            err.message.push_str(CREDENTIALS_HINT);
        }
        err
    }
}

/// The sign-in itself: no token, and refused credentials with a hint on what to fix.
struct SignIn;

impl RequestPolicy for SignIn {
    type Credential = ();

    fn refine(&self, _status: StatusCode, mut err: RemoteError) -> RemoteError {
        if err.kind == ErrorKind::PermissionDenied {
            err.message.push_str(
                "; check --user and its password (--password-file or SESSIONFS_PASSWORD)",
            );
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_expires_at_its_exp_claim() {
        let claims = serde_json::json!({ "id": "u", "exp": 1_000 });
        let key = jsonwebtoken::EncodingKey::from_secret(b"k");
        let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let token = Token::new(&jwt);
        assert_eq!(
            token.expires,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000))
        );
        assert!(token.expired());
        assert!(
            !Token::new("not a jwt").expired(),
            "unreadable: the server decides"
        );
    }

    #[test]
    fn an_exp_past_what_the_clock_holds_never_expires() {
        let key = jsonwebtoken::EncodingKey::from_secret(b"k");
        for exp in [i64::MAX as u64 + 1, u64::MAX] {
            let claims = serde_json::json!({ "id": "u", "exp": exp });
            let jwt =
                jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
            let token = Token::new(&jwt);
            assert_eq!(token.expires, None, "{exp}");
            assert!(!token.expired());
        }
    }
}
