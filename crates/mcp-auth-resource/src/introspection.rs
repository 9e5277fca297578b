//! Opaque tokens checked by asking the authorization server (RFC 7662).

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderValue;
use mcp_auth_types::HttpUrl;
use serde_json::{Map, Value};

use crate::cache::TtlCache;
use crate::claims::{ClaimReader, check_audience, check_times};
use crate::clock::Clock;
use crate::config::IntrospectionConfig;
use crate::{Claims, ConfigError, TokenVerifier, VerifyError, fetch};

/// Members mapped to fields of [`Claims`] (or only meaningful to the protocol).
const MAPPED: &[&str] = &[
    "active",
    "iss",
    "aud",
    "exp",
    "sub",
    "client_id",
    "jti",
    "scope",
    "token_type",
];

/// Most "inactive" answers remembered.
const NEGATIVE_CAPACITY: usize = 10_000;

/// Verifies tokens with RFC 7662 introspection. Successful answers are cached by
/// [`crate::ResourceServer`] (bounded by [`IntrospectionConfig::cache_ttl`]); "inactive"
/// answers are cached here for the same time, so a client repeating a dead token does not
/// cost a call each time. That is safe in the other direction too: a token never becomes
/// active again once inactive.
pub(crate) struct IntrospectionVerifier {
    issuer: String,
    endpoint: HttpUrl,
    /// `Basic base64(urlencode(client_id) ":" urlencode(secret))`, marked sensitive.
    authorization: HeaderValue,
    audience: String,
    leeway: u64,
    cache_ttl: Duration,
    clock: Arc<dyn Clock>,
    http: reqwest::Client,
    inactive: TtlCache<()>,
}

impl IntrospectionVerifier {
    pub(crate) fn new(
        config: IntrospectionConfig,
        audience: &str,
        leeway: Duration,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, ConfigError> {
        // RFC 6749 §2.3.1: client id and secret are form-urlencoded before Basic encoding.
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let credentials = format!(
            "{}:{}",
            enc(config.client_id.as_str()),
            enc(config.client_secret.secret())
        );
        let mut authorization =
            HeaderValue::try_from(format!("Basic {}", STANDARD.encode(credentials)))
                .map_err(|_| ConfigError::Credentials)?;
        authorization.set_sensitive(true);
        Ok(Self {
            issuer: config.issuer.as_str().to_owned(),
            endpoint: config.endpoint,
            authorization,
            audience: audience.to_owned(),
            leeway: leeway.as_secs(),
            cache_ttl: config.cache_ttl,
            clock,
            http: fetch::client(config.http_timeout).map_err(ConfigError::Http)?,
            inactive: TtlCache::new(NEGATIVE_CAPACITY),
        })
    }

    fn claims(&self, answer: Map<String, Value>, now: u64) -> Result<Claims, VerifyError> {
        let r = ClaimReader(answer);
        // RFC 7662 §2.2: only `"active": true` means active; anything else does not.
        if r.0.get("active") != Some(&Value::Bool(true)) {
            return Err(VerifyError::Inactive);
        }
        // A refresh token is "active" too, but it is not a bearer credential for us.
        if let Some(t) = r.string("token_type")?
            && (t.eq_ignore_ascii_case("refresh_token")
                || t == "urn:ietf:params:oauth:token-type:refresh_token")
        {
            return Err(VerifyError::NotAnAccessToken(t));
        }
        let issuer = match r.string("iss")? {
            Some(iss) if iss != self.issuer => {
                return Err(VerifyError::WrongIssuer {
                    expected: self.issuer.clone(),
                    found: iss,
                });
            }
            Some(iss) => iss,
            None => self.issuer.clone(),
        };
        // RFC 8707: a token minted for another resource is refused even when active.
        let audience = r.audience()?.unwrap_or_default();
        if r.0.contains_key("aud") {
            check_audience(&audience, &self.audience)?;
        }
        let exp = r.numeric_date("exp")?;
        check_times(
            exp,
            r.numeric_date("nbf")?,
            r.numeric_date("iat")?,
            now,
            self.leeway,
        )?;
        let client_id = r.string("client_id")?;
        // Without `sub`, the token acts for the client itself (as RFC 9068 §2.2 puts it for
        // client-credentials tokens).
        let subject = r
            .string("sub")?
            .or_else(|| client_id.clone())
            .ok_or(VerifyError::MissingClaim("sub"))?;
        let jti = r.string("jti")?;
        let scopes = r.scope()?;
        Ok(Claims {
            subject,
            client_id,
            scopes,
            issuer,
            audience,
            expires_at: exp,
            jti,
            extra: r.into_extra(MAPPED),
        })
    }
}

#[async_trait::async_trait]
impl TokenVerifier for IntrospectionVerifier {
    async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let key = self.inactive.key(token.as_bytes());
        let now = self.clock.now_unix();
        if self.inactive.get(&key, now).is_some() {
            return Err(VerifyError::Inactive);
        }
        let url = self.endpoint.as_str();
        let req = self
            .http
            .post(url)
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .form(&[("token", token), ("token_type_hint", "access_token")]);
        let answer: Map<String, Value> = fetch::send_json(url, req)
            .await
            .map_err(VerifyError::Unavailable)?;
        let result = self.claims(answer, now);
        if matches!(result, Err(VerifyError::Inactive)) {
            let until = now.saturating_add(self.cache_ttl.as_secs());
            self.inactive.insert(key, (), until, now);
        }
        result
    }

    fn cache_ttl(&self) -> Duration {
        self.cache_ttl
    }
}
