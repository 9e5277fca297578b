//! The HTTP plumbing shared by the providers: a deadline on every request, capped body
//! reads, RFC 6749 §5.2 error bodies turned into [`UpstreamError::Provider`], and token
//! responses parsed into [`UpstreamTokens`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use mcp_auth_types::SecretString;
use serde_json::{Map, Value};

use crate::UpstreamTokens;
use crate::error::{UpstreamError, sanitize};

/// The largest response body read from a provider.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// The `User-Agent` sent to providers (GitHub's API refuses requests without one).
pub(crate) const USER_AGENT: &str = concat!("mcp-auth-upstream/", env!("CARGO_PKG_VERSION"));

/// A response read whole.
pub(crate) struct Reply {
    pub status: reqwest::StatusCode,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_json(&self) -> bool {
        let ct = self.content_type.to_ascii_lowercase();
        ct.starts_with("application/json")
            || (ct.starts_with("application/") && ct.contains("+json"))
    }

    pub fn is_form(&self) -> bool {
        self.content_type
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    }

    /// The body as a JSON object.
    pub fn json_object(&self, what: &str) -> Result<Map<String, Value>, UpstreamError> {
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(UpstreamError::invalid(format!(
                "{what} is not a JSON object"
            ))),
            Err(_) => Err(UpstreamError::invalid(format!("{what} is not JSON"))),
        }
    }

    /// An RFC 6749 §5.2 error in the body (JSON, or form-encoded when `form_too`), if any.
    pub fn oauth_error(&self, form_too: bool) -> Option<UpstreamError> {
        let fields = if form_too && (self.is_form() || !self.body.starts_with(b"{")) {
            form_object(&self.body)?
        } else {
            match serde_json::from_slice::<Value>(&self.body) {
                Ok(Value::Object(m)) => m,
                _ => return None,
            }
        };
        provider_error(&fields)
    }
}

/// `UpstreamError::Provider` from an object with an `error` string member.
pub(crate) fn provider_error(fields: &Map<String, Value>) -> Option<UpstreamError> {
    let error = fields.get("error")?.as_str()?;
    Some(UpstreamError::Provider {
        error: sanitize(error, 100),
        description: fields
            .get("error_description")
            .and_then(Value::as_str)
            .map(|d| sanitize(d, 300)),
    })
}

/// A form-encoded body as a JSON object of strings.
pub(crate) fn form_object(body: &[u8]) -> Option<Map<String, Value>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
    )
}

/// Sends `req` with a deadline and reads the whole response (at most [`MAX_BODY`] bytes).
pub(crate) async fn send(
    endpoint: &'static str,
    req: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Reply, UpstreamError> {
    let http = |source| UpstreamError::Http { endpoint, source };
    let mut resp = req
        .header(reqwest::header::USER_AGENT, USER_AGENT)
        .timeout(timeout)
        .send()
        .await
        .map_err(http)?;
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
        return Err(UpstreamError::invalid(format!(
            "the {endpoint} answered a body over {MAX_BODY} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(UpstreamError::invalid(format!(
                "the {endpoint} answered a body over {MAX_BODY} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

/// Fails unless the reply is 2xx: with the provider's OAuth error when the body holds one,
/// else with the status.
pub(crate) fn expect_success(
    endpoint: &'static str,
    reply: &Reply,
    form_too: bool,
) -> Result<(), UpstreamError> {
    if reply.status.is_success() {
        return Ok(());
    }
    Err(reply
        .oauth_error(form_too)
        .unwrap_or(UpstreamError::Status {
            endpoint,
            status: reply.status.as_u16(),
        }))
}

/// A parsed token endpoint response.
pub(crate) struct TokenReply {
    pub tokens: UpstreamTokens,
    pub id_token: Option<String>,
}

/// Parses a successful token response (RFC 6749 §5.1). `form_too` also accepts the
/// form-encoded bodies GitHub sends by default. An `error` member is a provider error even
/// with status 200 (GitHub's way).
pub(crate) fn token_reply(
    reply: &Reply,
    form_too: bool,
    previous_refresh: Option<&str>,
) -> Result<TokenReply, UpstreamError> {
    expect_success("token endpoint", reply, form_too)?;
    let fields = if reply.is_json() || !form_too || reply.body.starts_with(b"{") {
        reply.json_object("the token response")?
    } else {
        form_object(&reply.body).ok_or_else(|| {
            UpstreamError::invalid("the token response is neither JSON nor a form")
        })?
    };
    if let Some(e) = provider_error(&fields) {
        return Err(e);
    }
    let access_token = fields
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| UpstreamError::invalid("the token response has no access_token"))?;
    // RFC 6749 §7.1: the client must understand the token type; only Bearer is used here.
    // GitHub sends "bearer"; the comparison is case-insensitive (RFC 6749 §5.1).
    let token_type = fields
        .get("token_type")
        .and_then(Value::as_str)
        .ok_or_else(|| UpstreamError::invalid("the token response has no token_type"))?;
    if !token_type.eq_ignore_ascii_case("bearer") {
        return Err(UpstreamError::invalid(format!(
            "token_type {:?} is not Bearer",
            sanitize(token_type, 40)
        )));
    }
    let now = unix_now();
    let refresh_token = fields
        .get("refresh_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .or(previous_refresh)
        .map(SecretString::new);
    let scope = fields
        .get("scope")
        .and_then(Value::as_str)
        .map(|s| sanitize(s, 2000));
    Ok(TokenReply {
        tokens: UpstreamTokens {
            access_token: SecretString::new(access_token),
            token_type: "Bearer".to_owned(),
            refresh_token,
            expires_at: seconds(fields.get("expires_in")).map(|s| now.saturating_add(s)),
            scope,
            refresh_token_expires_at: seconds(fields.get("refresh_token_expires_in"))
                .map(|s| now.saturating_add(s)),
        },
        id_token: fields
            .get("id_token")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// A duration in seconds, as a number or (form bodies, some servers) a string.
fn seconds(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// `Authorization: Basic` for `client_secret_basic`: RFC 6749 §2.3.1 form-urlencodes the id
/// and secret before base64.
pub(crate) fn basic_auth(client_id: &str, secret: &SecretString) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(secret.secret()));
    format!("Basic {}", STANDARD.encode(raw))
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks that an endpoint URL is `https` (or `http` when allowed), with a host.
pub(crate) fn check_endpoint(raw: &str, what: &str, allow_http: bool) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{what} {raw:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_http => {}
        "http" => return Err(format!("{what} {raw:?} is not https")),
        other => return Err(format!("{what} has scheme {other:?}, not https")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("{what} {raw:?} has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{what} must not carry credentials"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, ct: &str, body: &str) -> Reply {
        Reply {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            content_type: ct.into(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn json_token_response() {
        let r = reply(
            200,
            "application/json",
            r#"{"access_token":"at","token_type":"Bearer","expires_in":"3600","scope":"openid email"}"#,
        );
        let t = token_reply(&r, false, Some("old-rt")).unwrap();
        assert_eq!(t.tokens.access_token.secret(), "at");
        assert_eq!(t.tokens.refresh_token.unwrap().secret(), "old-rt");
        assert!(t.tokens.expires_at.unwrap() >= unix_now() + 3599);
        assert_eq!(t.tokens.scope.as_deref(), Some("openid email"));
    }

    #[test]
    fn form_token_response_only_when_allowed() {
        let body = "access_token=gho_x&scope=read%3Auser&token_type=bearer";
        let r = reply(
            200,
            "application/x-www-form-urlencoded; charset=utf-8",
            body,
        );
        let t = token_reply(&r, true, None).unwrap();
        assert_eq!(t.tokens.access_token.secret(), "gho_x");
        assert_eq!(t.tokens.scope.as_deref(), Some("read:user"));
        assert!(t.tokens.refresh_token.is_none());
        assert!(matches!(
            token_reply(&r, false, None),
            Err(UpstreamError::InvalidResponse(_))
        ));
    }

    #[test]
    fn errors_with_200_and_with_400() {
        let r = reply(
            200,
            "application/x-www-form-urlencoded",
            "error=bad_verification_code&error_description=The+code+passed+is+incorrect+or+expired.",
        );
        let e = token_reply(&r, true, None).err().unwrap();
        assert!(e.is_invalid_grant());
        let r = reply(400, "application/json", r#"{"error":"invalid_grant"}"#);
        assert!(
            token_reply(&r, false, None)
                .err()
                .unwrap()
                .is_invalid_grant()
        );
        let r = reply(502, "text/html", "<html>bad gateway</html>");
        assert!(matches!(
            token_reply(&r, false, None),
            Err(UpstreamError::Status { status: 502, .. })
        ));
    }

    #[test]
    fn refuses_non_bearer_and_missing_token() {
        let r = reply(
            200,
            "application/json",
            r#"{"access_token":"a","token_type":"DPoP"}"#,
        );
        assert!(token_reply(&r, false, None).is_err());
        let r = reply(200, "application/json", r#"{"token_type":"Bearer"}"#);
        assert!(token_reply(&r, false, None).is_err());
    }

    #[test]
    fn basic_auth_encodes_per_rfc6749() {
        assert_eq!(
            basic_auth("a b", &SecretString::new("p:w")),
            format!("Basic {}", STANDARD.encode("a+b:p%3Aw"))
        );
    }

    #[test]
    fn endpoints_must_be_https() {
        assert!(check_endpoint("https://idp.example.com/t", "x", false).is_ok());
        assert!(check_endpoint("http://idp.example.com/t", "x", false).is_err());
        assert!(check_endpoint("http://127.0.0.1:8/t", "x", false).is_err());
        assert!(check_endpoint("http://127.0.0.1:8/t", "x", true).is_ok());
        assert!(check_endpoint("javascript:alert(1)", "x", true).is_err());
        assert!(check_endpoint("https://u:p@idp.example.com/", "x", false).is_err());
    }
}
