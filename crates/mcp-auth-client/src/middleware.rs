//! A [`reqwest_middleware::Middleware`] that makes any reqwest user an OAuth-enabled MCP
//! client: it attaches the token, and on `401` refreshes or logs in, on
//! `403 insufficient_scope` steps up, then replays the request.
//!
//! ```no_run
//! # async fn demo(client: mcp_auth_client::OAuthClient) -> Result<(), Box<dyn std::error::Error>> {
//! let http = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(mcp_auth_client::OAuthMiddleware::new(client, "https://mcp.example.com/mcp"))
//!     .build();
//! let resp = http.post("https://mcp.example.com/mcp").body("{}").send().await?;
//! # Ok(()) }
//! ```

use http::Extensions;
use mcp_auth_types::challenge::Challenge;
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};

use crate::client::{OAuthClient, Token, challenge_of};
use crate::error::Error;

/// Attaches tokens for one MCP server and runs the OAuth dance when the server asks.
#[derive(Debug, Clone)]
pub struct OAuthMiddleware {
    client: OAuthClient,
    server: String,
    max_step_up: u32,
}

impl OAuthMiddleware {
    /// For requests to `server` (the MCP server URL; tokens are looked up under it).
    pub fn new(client: OAuthClient, server: impl Into<String>) -> Self {
        Self {
            client,
            server: server.into(),
            max_step_up: 3,
        }
    }

    /// Bounds the authorizations one request may trigger (default 3: the 401 and the
    /// step-ups together), so a server that keeps asking for scopes it will never grant
    /// cannot loop the user through the browser.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_step_up = n;
        self
    }
}

fn mw(e: Error) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(e)
}

fn insufficient_scope(resp: &Response) -> Option<Challenge> {
    (resp.status() == StatusCode::FORBIDDEN)
        .then(|| challenge_of(resp.headers()))
        .flatten()
        .filter(|c| c.error() == Some("insufficient_scope"))
}

#[async_trait::async_trait]
impl Middleware for OAuthMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // A stored token if there is one; otherwise go without and let the 401 drive
        // discovery, as the spec's flow starts.
        let mut token: Option<Token> = match self.client.token(&self.server).await {
            Ok(t) => Some(t),
            Err(Error::LoginRequired { .. }) => None,
            Err(e) => return Err(mw(e)),
        };
        let mut refreshed = false;
        let mut attempts = 0u32;
        loop {
            let mut attempt = req.try_clone().ok_or_else(|| {
                mw(Error::Config(
                    "the request body cannot be replayed after authorization (use a buffered body)"
                        .into(),
                ))
            })?;
            if let Some(t) = &token {
                let value =
                    http::HeaderValue::from_str(&t.authorization_header()).map_err(|_| {
                        mw(Error::Config(
                            "the access token is not a valid header value".into(),
                        ))
                    })?;
                let mut value = value;
                value.set_sensitive(true);
                attempt
                    .headers_mut()
                    .insert(http::header::AUTHORIZATION, value);
            }
            let resp = next.clone().run(attempt, extensions).await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                if refreshed {
                    return Ok(resp);
                }
                refreshed = true;
                attempts += 1;
                let challenge = challenge_of(resp.headers());
                let rejected = token
                    .as_ref()
                    .map(|t| t.record.access_token.secret().to_owned());
                token = Some(
                    self.client
                        .on_unauthorized(&self.server, rejected.as_deref(), challenge)
                        .await
                        .map_err(mw)?,
                );
                continue;
            }
            if let Some(challenge) = insufficient_scope(&resp) {
                if attempts >= self.max_step_up {
                    return Err(mw(Error::StepUpExhausted {
                        attempts,
                        scopes: challenge.param("scope").unwrap_or("").to_owned(),
                    }));
                }
                attempts += 1;
                let rejected = token
                    .as_ref()
                    .map(|t| t.record.access_token.secret().to_owned());
                token = Some(
                    self.client
                        .step_up(&self.server, rejected.as_deref(), challenge)
                        .await
                        .map_err(mw)?,
                );
                continue;
            }
            return Ok(resp);
        }
    }
}
