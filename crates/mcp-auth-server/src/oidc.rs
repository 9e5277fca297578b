//! The server as a minimal OpenID Provider (OpenID Connect Core 1.0): an ID token beside the
//! access token when the client asked for the `openid` scope, and the UserInfo endpoint.
//! Enough for another authorization server (another `mcp-auth serve`, say) to use this one
//! as its upstream login.

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::OAuthError;
use crate::handlers::{AppState, access_revoked};
use crate::keys::IdTokenClaims;
use crate::store::unix_now;

/// The scope that asks for an ID token.
pub const OPENID: &str = "openid";

/// Whether a space-separated scope holds `openid`.
pub fn wants_id_token(scope: &str) -> bool {
    scope.split(' ').any(|s| s == OPENID)
}

/// OIDC Core §3.1.3.6: base64url of the left half of SHA-256 of the access token's ASCII.
pub fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Adds `id_token` to a token response `out` (which holds `access_token`), for `subject`
/// and `client_id`, echoing `nonce` (OIDC Core §3.1.3.3). The ID token lives as long as the
/// access token.
pub(crate) async fn add_id_token(
    s: &AppState,
    out: &mut Value,
    client_id: &str,
    subject: &str,
    nonce: Option<&str>,
) -> Result<(), OAuthError> {
    let Some(access_token) = out.get("access_token").and_then(Value::as_str) else {
        return Ok(());
    };
    let now = unix_now();
    let claims = IdTokenClaims {
        iss: s.config.issuer.clone(),
        sub: subject.to_owned(),
        aud: client_id.to_owned(),
        exp: now + s.config.ttls.access_token.as_secs(),
        iat: now,
        nonce: nonce.map(str::to_owned),
        azp: client_id.to_owned(),
        at_hash: at_hash(access_token),
    };
    let id_token = s
        .keys
        .sign_id_token(&claims)
        .await
        .map_err(|e| OAuthError::internal(&e))?;
    out["id_token"] = json!(id_token);
    Ok(())
}

/// The UserInfo claims of an account: `sub`, and `preferred_username` (the part after the
/// provider prefix).
pub fn userinfo_claims(subject: &str) -> Value {
    let username = subject.split_once(':').map_or(subject, |(_, u)| u);
    json!({"sub": subject, "preferred_username": username})
}

/// A 401 with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750 §3.1).
fn invalid_token(description: &str) -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": "invalid_token", "error_description": description})),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer error=\"invalid_token\""),
    );
    r
}

/// `GET`/`POST /userinfo` (OIDC Core §5.3): the claims of the access token's user, for a
/// token of ours, unrevoked, issued with the `openid` scope.
pub async fn userinfo(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split_once(' ')
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, t)| t.trim())
        });
    let Some(token) = token else {
        let mut r = StatusCode::UNAUTHORIZED.into_response();
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    };
    let Some(claims) = s.keys.verify(token, &s.config.issuer, None).await else {
        return invalid_token("the access token is invalid or expired");
    };
    match access_revoked(s.store.as_ref(), &s.config.tenant, &claims).await {
        Ok(false) => {}
        Ok(true) => return invalid_token("the access token was revoked"),
        Err(e) => return OAuthError::from(e).into_response(),
    }
    if !wants_id_token(&claims.scope) || claims.sub == claims.client_id {
        let mut r = (
            StatusCode::FORBIDDEN,
            axum::Json(json!({"error": "insufficient_scope", "error_description": "the token was not issued with the openid scope"})),
        )
            .into_response();
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"insufficient_scope\", scope=\"openid\""),
        );
        return r;
    }
    let mut r = axum::Json(userinfo_claims(&claims.sub)).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_hash_matches_the_oidc_core_example() {
        // OIDC Core appendix A.3: access token "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"
        // has at_hash "77QmUPtjPfzWtF2AnpK9RQ".
        assert_eq!(
            at_hash("jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y"),
            "77QmUPtjPfzWtF2AnpK9RQ"
        );
    }

    #[test]
    fn openid_is_found_only_as_a_whole_scope() {
        assert!(wants_id_token("openid mcp"));
        assert!(wants_id_token("mcp openid"));
        assert!(!wants_id_token("openidx mcp"));
        assert!(!wants_id_token(""));
    }

    #[test]
    fn userinfo_strips_the_provider_prefix_for_the_username() {
        assert_eq!(
            userinfo_claims("local:alice"),
            json!({"sub": "local:alice", "preferred_username": "alice"})
        );
        assert_eq!(
            userinfo_claims("oidc:local:bob")["preferred_username"],
            "local:bob"
        );
    }
}
