//! Calls to the authorization server: a deadline on each, no redirects, bodies capped.

use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::FetchError;
use crate::error::sanitize;

/// Largest body read from the authorization server (a key set or an introspection answer).
pub(crate) const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A client for one kind of call. Redirects are not followed: an introspection POST carries
/// our client secret and the caller's token, and a key set must come from the URL the
/// issuer published, not from wherever that URL points today.
pub(crate) fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("mcp-auth-resource/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Sends the request; a `200` body is parsed as `T`, anything else is an error.
pub(crate) async fn send_json<T: DeserializeOwned>(
    url: &str,
    req: reqwest::RequestBuilder,
) -> Result<T, FetchError> {
    let network = |source| FetchError::Network {
        url: url.to_owned(),
        source,
    };
    let mut resp = req
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(network)?;
    let status = resp.status();
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(FetchError::TooLarge {
            url: url.to_owned(),
            limit: MAX_BODY_BYTES,
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(network)? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(FetchError::TooLarge {
                url: url.to_owned(),
                limit: MAX_BODY_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    if status != http::StatusCode::OK {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
            body: sanitize(&body, 200),
        });
    }
    serde_json::from_slice(&body).map_err(|source| FetchError::Parse {
        url: url.to_owned(),
        source,
        body: sanitize(&body, 200),
    })
}
