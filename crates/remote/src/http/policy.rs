//! How one backend's API calls differ, and the one call wrapper around that.
//!
//! A backend states its [`RequestPolicy`]: the credential a request carries, whether a 401 is
//! worth renewing it (Appmixer signs in again; static keys cannot be renewed), how one attempt
//! goes out (Fluxer's pacer waits first and learns from the answer's rate-limit headers), and
//! what the API's refusal means (a hint on what to fix, a kind from its envelope). The wrapper
//! does the rest once: build, authorize, send, renew once after a 401, check the status, refine
//! the error, retry temporary failures ([`HttpClient::call`]), decode JSON
//! ([`HttpClient::call_json`]).
//!
//! Invariants: one attempt renews its credential at most once, and sends again at most once;
//! a credential goes only into headers the policy marks sensitive, never into a log line or an
//! error message (errors carry the server's message, never the request).

use std::future::Future;

use async_trait::async_trait;
use reqwest::{RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use super::HttpClient;
use crate::{RemoteError, RemoteResult};

/// One backend's way of making API calls; see the module doc.
#[async_trait]
pub trait RequestPolicy: Sync {
    /// What a request is authorized with: a token that a 401 may replace, or `()` where there
    /// is none or the policy holds a static key itself.
    type Credential: Default + Send + Sync;

    /// The credential for the next attempt (Appmixer signs in first when it has none or it
    /// expired). The default is `Credential::default()`.
    async fn credential(&self, _http: &HttpClient) -> RemoteResult<Self::Credential> {
        Ok(Self::Credential::default())
    }

    /// Puts `credential` (and any static key) on `request`, in headers marked sensitive. The
    /// default sends the request as it is.
    fn authorize(&self, request: RequestBuilder, _credential: &Self::Credential) -> RequestBuilder {
        request
    }

    /// After a 401 to a request sent with `refused`: the credential to send it once more with,
    /// or `None` to return the 401 as it is (the default: nothing to renew).
    async fn renew_on_401(
        &self,
        _http: &HttpClient,
        _what: &str,
        _refused: Self::Credential,
    ) -> RemoteResult<Option<Self::Credential>> {
        Ok(None)
    }

    /// Sends one authorized attempt and returns the answer whatever its status; a failure to
    /// get one is [`HttpClient::transport_error`]. Fluxer paces around it.
    async fn exchange(
        &self,
        http: &HttpClient,
        what: &str,
        request: RequestBuilder,
    ) -> RemoteResult<Response> {
        http.transmit(what, request).await
    }

    /// Refines the error made of an answer with the unsuccessful `status`: a hint on what to
    /// fix, the kind the API's envelope names, whether a retry may help. The default keeps it.
    fn refine(&self, _status: StatusCode, err: RemoteError) -> RemoteError {
        err
    }
}

/// Requests with no credential and no refinement: Mix, and presigned storage URLs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Plain;

impl RequestPolicy for Plain {
    type Credential = ();
}

impl HttpClient {
    /// Sends the request `build` makes as `policy` says, once, and after a 401 that the policy
    /// renews its credential for, once more; the answer is returned whatever its status (for
    /// callers that read statuses themselves, as ranged reads do).
    pub async fn signed<P, F, Fut>(
        &self,
        what: &str,
        policy: &P,
        build: &F,
    ) -> RemoteResult<Response>
    where
        P: RequestPolicy,
        F: Fn() -> Fut,
        Fut: Future<Output = RemoteResult<RequestBuilder>>,
    {
        let credential = policy.credential(self).await?;
        let request = policy.authorize(build().await?, &credential);
        let response = policy.exchange(self, what, request).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        let Some(renewed) = policy.renew_on_401(self, what, credential).await? else {
            return Ok(response);
        };
        let request = policy.authorize(build().await?, &renewed);
        policy.exchange(self, what, request).await
    }

    /// One [`Self::signed`] attempt that must succeed: an unsuccessful answer becomes its error,
    /// refined by the policy. For steps a driver retries itself (upload parts).
    pub async fn attempt<P, F, Fut>(
        &self,
        what: &str,
        policy: &P,
        build: &F,
    ) -> RemoteResult<Response>
    where
        P: RequestPolicy,
        F: Fn() -> Fut,
        Fut: Future<Output = RemoteResult<RequestBuilder>>,
    {
        let response = self.signed(what, policy, build).await?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(self.refused(what, policy, response).await)
    }

    /// The error an unsuccessful `response` stands for, refined by `policy`.
    pub async fn refused<P: RequestPolicy>(
        &self,
        what: &str,
        policy: &P,
        response: Response,
    ) -> RemoteError {
        let status = response.status();
        policy.refine(status, self.status_error(what, response).await)
    }

    /// An API call: [`Self::attempt`] with the shared retries (`build` runs again for each
    /// attempt, so streamed bodies are reopened). The final error names `what` and the
    /// endpoint.
    pub async fn call<P, F, Fut>(&self, what: &str, policy: &P, build: F) -> RemoteResult<Response>
    where
        P: RequestPolicy,
        F: Fn() -> Fut,
        Fut: Future<Output = RemoteResult<RequestBuilder>>,
    {
        self.retrying(|| self.attempt(what, policy, &build)).await
    }

    /// An API call ([`Self::call`]) whose answer is JSON of type `T`.
    pub async fn call_json<T, P, F, Fut>(&self, what: &str, policy: &P, build: F) -> RemoteResult<T>
    where
        T: DeserializeOwned,
        P: RequestPolicy,
        F: Fn() -> Fut,
        Fut: Future<Output = RemoteResult<RequestBuilder>>,
    {
        let response = self.call(what, policy, build).await?;
        self.json(what, response).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use axum::http::HeaderMap;

    use super::*;
    use crate::ErrorKind;
    use crate::http::{RetryConfig, error_envelope_message};

    /// The status and body a test server answers, from the request's `Authorization` header and
    /// its number (1 for the first).
    type Answer = fn(Option<&str>, u32) -> (u16, &'static str);

    /// A client of a server on loopback that answers by `answer`, and the requests it got.
    async fn serve(answer: Answer) -> (HttpClient, Arc<AtomicU32>) {
        let requests = Arc::new(AtomicU32::new(0));
        let counted = requests.clone();
        let app = axum::Router::new().fallback(move |headers: HeaderMap| {
            let number = counted.fetch_add(1, Ordering::SeqCst) + 1;
            let authorization = headers.get("authorization").and_then(|v| v.to_str().ok());
            let (status, body) = answer(authorization, number);
            async move { (StatusCode::from_u16(status).unwrap(), body) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let retry = RetryConfig {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryConfig::default()
        };
        let http = HttpClient::new(&format!("http://{address}"), error_envelope_message)
            .unwrap()
            .with_retry(retry);
        (http, requests)
    }

    fn get(http: &HttpClient) -> impl Fn() -> std::future::Ready<RemoteResult<RequestBuilder>> {
        let request = http.client().get(http.url("/thing"));
        move || std::future::ready(Ok(request.try_clone().expect("no body")))
    }

    /// A token that a 401 renews, as Appmixer's: `old` until renewed, then `new`.
    #[derive(Default)]
    struct Renewing {
        renewals: AtomicU32,
    }

    #[async_trait]
    impl RequestPolicy for Renewing {
        type Credential = String;

        async fn credential(&self, _http: &HttpClient) -> RemoteResult<String> {
            let renewed = self.renewals.load(Ordering::SeqCst) > 0;
            Ok(if renewed { "new" } else { "old" }.to_owned())
        }

        fn authorize(&self, request: RequestBuilder, token: &String) -> RequestBuilder {
            request.bearer_auth(token)
        }

        async fn renew_on_401(
            &self,
            _http: &HttpClient,
            _what: &str,
            refused: String,
        ) -> RemoteResult<Option<String>> {
            assert_eq!(refused, "old", "the refused token is the one sent");
            self.renewals.fetch_add(1, Ordering::SeqCst);
            Ok(Some("new".to_owned()))
        }

        fn refine(&self, status: StatusCode, mut err: RemoteError) -> RemoteError {
            if status == StatusCode::UNAUTHORIZED {
                err.message.push_str("; sign in again");
            }
            err
        }
    }

    const EXPIRED: &str = r#"{"error":{"message":"token expired"}}"#;

    #[tokio::test]
    async fn a_401_renews_the_credential_once_then_succeeds() {
        let (http, requests) = serve(|authorization, _| match authorization {
            Some("Bearer new") => (200, r#"{"ok":true}"#),
            _ => (401, EXPIRED),
        })
        .await;
        let policy = Renewing::default();
        let answer: serde_json::Value = http
            .call_json("get thing", &policy, get(&http))
            .await
            .unwrap();
        assert_eq!(answer, serde_json::json!({ "ok": true }));
        assert_eq!(policy.renewals.load(Ordering::SeqCst), 1);
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_second_401_is_returned_with_the_hint() {
        let (http, requests) = serve(|_, _| (401, EXPIRED)).await;
        let policy = Renewing::default();
        let err = http
            .call_json::<serde_json::Value, _, _, _>("get thing", &policy, get(&http))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert!(!err.temporary);
        assert!(err.message.starts_with("get thing: "), "{}", err.message);
        assert!(err.message.contains("token expired"), "{}", err.message);
        assert!(err.message.ends_with("; sign in again"), "{}", err.message);
        assert_eq!(policy.renewals.load(Ordering::SeqCst), 1, "renewed once");
        assert_eq!(requests.load(Ordering::SeqCst), 2, "sent again once");
    }

    /// A static key, as Lightfield's and Fluxer's.
    struct StaticKey;

    impl RequestPolicy for StaticKey {
        type Credential = ();

        fn authorize(&self, request: RequestBuilder, _credential: &()) -> RequestBuilder {
            request.bearer_auth("k")
        }
    }

    #[tokio::test]
    async fn the_policys_authorization_reaches_the_request() {
        let (http, requests) = serve(|authorization, _| match authorization {
            Some("Bearer k") => (200, r#""keyed""#),
            None => (200, r#""plain""#),
            Some(_) => (403, "{}"),
        })
        .await;
        let keyed: String = http.call_json("get", &StaticKey, get(&http)).await.unwrap();
        assert_eq!(keyed, "keyed");
        let plain: String = http.call_json("get", &Plain, get(&http)).await.unwrap();
        assert_eq!(plain, "plain");
        // A 401 to a policy with nothing to renew is answered as it is, and not sent again.
        let (http, requests_401) = serve(|_, _| (401, EXPIRED)).await;
        let err = http.call("get", &StaticKey, get(&http)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::PermissionDenied);
        assert_eq!(requests_401.load(Ordering::SeqCst), 1);
        assert_eq!(requests.load(Ordering::SeqCst), 2);
    }

    /// A refusal made temporary, as Mix's cut forms, and each attempt counted where it goes out,
    /// as Fluxer's pacer does.
    #[derive(Default)]
    struct CountedRetrying {
        exchanges: AtomicU32,
    }

    #[async_trait]
    impl RequestPolicy for CountedRetrying {
        type Credential = ();

        async fn exchange(
            &self,
            http: &HttpClient,
            what: &str,
            request: RequestBuilder,
        ) -> RemoteResult<Response> {
            self.exchanges.fetch_add(1, Ordering::SeqCst);
            http.transmit(what, request).await
        }

        fn refine(&self, _status: StatusCode, mut err: RemoteError) -> RemoteError {
            err.temporary |= err.kind == ErrorKind::InvalidInput;
            err
        }
    }

    #[tokio::test]
    async fn a_refusal_the_policy_makes_temporary_is_retried_through_its_exchange() {
        let (http, requests) = serve(|_, number| match number {
            1 => (400, r#"{"error":{"message":"cut"}}"#),
            _ => (200, "{}"),
        })
        .await;
        let policy = CountedRetrying::default();
        http.call("post", &policy, get(&http)).await.unwrap();
        assert_eq!(requests.load(Ordering::SeqCst), 2);
        assert_eq!(policy.exchanges.load(Ordering::SeqCst), 2);
        assert_eq!(http.retry_config().retries.get(), 1);
    }
}
