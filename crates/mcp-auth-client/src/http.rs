//! The HTTP layer: every request has a deadline, every body read is capped, redirects are
//! bounded (and never followed on token calls), and non-2xx answers become typed errors.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt as _;
use mcp_auth_types::ErrorResponse;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, Step, sanitize};

/// Knobs of the HTTP layer.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Deadline of one request, connection included.
    pub request_timeout: Duration,
    /// Deadline of connecting.
    pub connect_timeout: Duration,
    /// Largest body read from any server (metadata, token responses, MCP messages).
    pub max_body_bytes: usize,
    /// Redirects followed on metadata fetches (token, registration and revocation calls
    /// follow none: a redirected POST could carry secrets elsewhere).
    pub max_redirects: usize,
    /// Extra trusted CA certificates, PEM.
    pub extra_ca_pem: Vec<Vec<u8>>,
    /// `User-Agent`.
    pub user_agent: String,
    /// Use the proxies named by `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY` (and the
    /// platform's settings); `false` connects directly.
    pub proxy_from_env: bool,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_body_bytes: 1024 * 1024,
            max_redirects: 5,
            extra_ca_pem: Vec::new(),
            user_agent: format!("mcp-auth/{}", env!("CARGO_PKG_VERSION")),
            proxy_from_env: true,
        }
    }
}

/// Two reqwest clients (redirect-following for GETs of public documents, non-following for
/// everything else) with the same limits. Proxies come from `HTTPS_PROXY`/`NO_PROXY` unless
/// [`HttpOptions::proxy_from_env`] is off.
///
/// The clients are built on first use: loading the platform's trust store costs
/// milliseconds, and a process that only reads a cached token (`mcp-auth token`) never pays.
#[derive(Clone, Debug)]
pub struct Http {
    clients: Arc<OnceLock<Clients>>,
    opts: HttpOptions,
}

#[derive(Debug)]
struct Clients {
    fetch: reqwest::Client,
    api: reqwest::Client,
}

impl Http {
    /// Checks the options (extra CA certificates parse); builds nothing yet.
    pub fn new(opts: HttpOptions) -> Result<Self> {
        for pem in &opts.extra_ca_pem {
            reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("extra CA certificate: {e}")))?;
        }
        Ok(Self {
            clients: Arc::new(OnceLock::new()),
            opts,
        })
    }

    fn build(&self, redirects: usize) -> Result<reqwest::Client> {
        let opts = &self.opts;
        let mut b = reqwest::Client::builder()
            .timeout(opts.request_timeout)
            .connect_timeout(opts.connect_timeout)
            .user_agent(opts.user_agent.clone())
            .redirect(if redirects == 0 {
                reqwest::redirect::Policy::none()
            } else {
                reqwest::redirect::Policy::limited(redirects)
            });
        if !opts.proxy_from_env {
            b = b.no_proxy();
        }
        for pem in &opts.extra_ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| Error::Config(format!("extra CA certificate: {e}")))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        b.build()
            .map_err(|e| Error::Config(format!("HTTP client: {e}")))
    }

    fn clients(&self) -> Result<&Clients> {
        if let Some(c) = self.clients.get() {
            return Ok(c);
        }
        let built = Clients {
            fetch: self.build(self.opts.max_redirects)?,
            api: self.build(0)?,
        };
        // Another thread may have won the race; either value is equivalent.
        let _ = self.clients.set(built);
        self.clients
            .get()
            .ok_or_else(|| Error::Config("HTTP client initialisation failed".into()))
    }

    /// The options in use.
    pub fn options(&self) -> &HttpOptions {
        &self.opts
    }

    /// The non-redirecting client (for callers that build their own requests).
    pub fn client(&self) -> Result<&reqwest::Client> {
        Ok(&self.clients()?.api)
    }

    /// GET a JSON document; `Ok(None)` on 404 (and other 4xx that mean "not here"), so
    /// discovery can try the next URL.
    pub async fn get_json_optional<T: DeserializeOwned>(
        &self,
        step: Step,
        url: &str,
        extra_headers: &[(String, String)],
    ) -> Result<Option<T>> {
        let mut req = self
            .clients()?
            .fetch
            .get(url)
            .header(http::header::ACCEPT, "application/json");
        for (k, v) in extra_headers {
            req = req.header(k, v);
        }
        let resp = req.send().await.map_err(|source| Error::Network {
            step,
            url: url.to_owned(),
            source,
        })?;
        let status = resp.status();
        if matches!(status.as_u16(), 400 | 401 | 403 | 404 | 405 | 406 | 410) {
            tracing::debug!(%url, status = status.as_u16(), "no document here");
            return Ok(None);
        }
        let body = self.read_body(step, url, resp).await?;
        if !status.is_success() {
            return Err(Error::Status {
                step,
                url: url.to_owned(),
                status: status.as_u16(),
                body: sanitize(&String::from_utf8_lossy(&body), 200),
            });
        }
        parse_json(step, url, &body).map(Some)
    }

    /// POSTs a request built by the caller (form or JSON) without following redirects, and
    /// parses a 2xx JSON body as `T` or an error body as an RFC 6749 error.
    pub async fn send_oauth<T: DeserializeOwned>(
        &self,
        step: Step,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T> {
        self.send_oauth_with_headers(step, req, url).await.0
    }

    /// [`Self::send_oauth`], also giving the response's headers (empty when no response
    /// arrived), for what rides on them: `DPoP-Nonce` (RFC 9449 §8).
    pub async fn send_oauth_with_headers<T: DeserializeOwned>(
        &self,
        step: Step,
        req: reqwest::RequestBuilder,
        url: &str,
    ) -> (Result<T>, http::HeaderMap) {
        let resp = match req
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
        {
            Ok(r) => r,
            Err(source) => {
                let e = Error::Network {
                    step,
                    url: url.to_owned(),
                    source,
                };
                return (Err(e), http::HeaderMap::new());
            }
        };
        let headers = resp.headers().clone();
        (self.oauth_result(step, url, resp).await, headers)
    }

    async fn oauth_result<T: DeserializeOwned>(
        &self,
        step: Step,
        url: &str,
        resp: reqwest::Response,
    ) -> Result<T> {
        let status = resp.status();
        let body = self.read_body(step, url, resp).await?;
        if status.is_success() {
            return parse_json(step, url, &body);
        }
        if let Ok(error) = serde_json::from_slice::<ErrorResponse>(&body) {
            return Err(Error::OAuth {
                step,
                error: Box::new(error),
            });
        }
        Err(Error::Status {
            step,
            url: url.to_owned(),
            status: status.as_u16(),
            body: sanitize(&String::from_utf8_lossy(&body), 200),
        })
    }

    /// The builder for a POST on the non-redirecting client.
    pub fn post(&self, url: &str) -> Result<reqwest::RequestBuilder> {
        Ok(self.clients()?.api.post(url))
    }

    /// Reads a body up to the configured limit.
    pub async fn read_body(
        &self,
        step: Step,
        url: &str,
        resp: reqwest::Response,
    ) -> Result<Vec<u8>> {
        read_capped(step, url, resp, self.opts.max_body_bytes).await
    }
}

/// Reads at most `limit` bytes of a body; more is an error, not a truncation.
pub async fn read_capped(
    step: Step,
    url: &str,
    resp: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>> {
    if resp.content_length().is_some_and(|l| l > limit as u64) {
        return Err(Error::BodyTooLarge {
            step,
            url: url.to_owned(),
            limit,
        });
    }
    let mut out = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|source| Error::Network {
            step,
            url: url.to_owned(),
            source,
        })?;
        if out.len() + chunk.len() > limit {
            return Err(Error::BodyTooLarge {
                step,
                url: url.to_owned(),
                limit,
            });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn parse_json<T: DeserializeOwned>(step: Step, url: &str, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidResponse {
        step,
        url: url.to_owned(),
        // Only the position: serde_json's message may quote values, and a token response's
        // values are secrets.
        message: format!(
            "not the expected JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ),
    })
}
