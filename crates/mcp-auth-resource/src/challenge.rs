//! The one place where refusals become responses: status, RFC 6750 error code and the
//! `WWW-Authenticate` challenge (RFC 6750 §3, RFC 9728 §5.1).
//!
//! | refusal | status | `error` |
//! |---|---|---|
//! | no bearer token | 401 | (none, RFC 6750 §3.1) |
//! | malformed request | 400 | `invalid_request` |
//! | bad token | 401 | `invalid_token` |
//! | JWKS / introspection unreachable | 503 | (no challenge) |
//! | missing scopes | 403 | `insufficient_scope` |
//!
//! Every challenge carries `resource_metadata` (the path-inserted metadata URL) and, when
//! the operation needs scopes, `scope` naming all of them, so a client can discover the
//! authorization server and ask for the right scopes in one step. The reason a token was
//! refused goes to the log, never into the response.

use std::sync::Arc;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use mcp_auth_types::ScopeSet;

use crate::AuthError;

/// A refused request, ready to become a response (`IntoResponse`).
///
/// Returned by [`crate::ResourceServer::authenticate`], by the [`crate::Authenticated`]
/// extractor, and by [`crate::Authenticated::ensure_scopes`] for checks inside a handler.
#[derive(Debug)]
pub struct Rejection {
    error: AuthError,
    /// Every scope the operation needs (the route's and the handler's).
    required: ScopeSet,
    resource_metadata: Option<Arc<str>>,
    /// Set when the resource accepts DPoP: a `DPoP` challenge goes with the `Bearer` one.
    dpop: Option<DpopChallenge>,
}

/// The `DPoP` side of a refusal (RFC 9449 §7.1).
#[derive(Debug, Clone, Default)]
pub(crate) struct DpopChallenge {
    /// The request presented its token with the `DPoP` scheme: the error code goes on the
    /// `DPoP` challenge rather than the `Bearer` one.
    pub scheme_used: bool,
}

impl Rejection {
    pub(crate) fn new(
        error: AuthError,
        required: ScopeSet,
        resource_metadata: Option<Arc<str>>,
    ) -> Self {
        Self {
            error,
            required,
            resource_metadata,
            dpop: None,
        }
    }

    /// Adds the `DPoP` challenge of a resource that accepts DPoP.
    pub(crate) fn with_dpop(mut self, challenge: DpopChallenge) -> Self {
        self.dpop = Some(challenge);
        self
    }

    /// Why the request was refused (for logs and tests; never sent to the client).
    pub fn error(&self) -> &AuthError {
        &self.error
    }

    /// The error, consuming the rejection.
    pub fn into_error(self) -> AuthError {
        self.error
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        match &self.error {
            AuthError::MissingToken => StatusCode::UNAUTHORIZED,
            AuthError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
            AuthError::Token(e) if e.is_unavailable() => StatusCode::SERVICE_UNAVAILABLE,
            AuthError::Token(_) => StatusCode::UNAUTHORIZED,
            AuthError::InsufficientScope { .. } => StatusCode::FORBIDDEN,
            AuthError::Dpop(_) => StatusCode::UNAUTHORIZED,
        }
    }

    /// The RFC 6750 §3.1 error code, if the response carries one.
    pub fn error_code(&self) -> Option<&'static str> {
        match &self.error {
            AuthError::MissingToken => None,
            AuthError::InvalidRequest(_) => Some("invalid_request"),
            AuthError::Token(e) if e.is_unavailable() => None,
            AuthError::Token(_) => Some("invalid_token"),
            AuthError::InsufficientScope { .. } => Some("insufficient_scope"),
            AuthError::Dpop(r) => Some(r.error_code()),
        }
    }

    /// The nonce to send in a `DPoP-Nonce` header (RFC 9449 §9), when the refusal asks for one.
    pub fn dpop_nonce(&self) -> Option<&str> {
        match &self.error {
            AuthError::Dpop(crate::dpop::DpopRefusal::UseNonce { nonce }) => Some(nonce),
            _ => None,
        }
    }

    /// The `DPoP` challenge (RFC 9449 §7.1), for a resource that accepts DPoP: the accepted
    /// algorithms, and the error code when the request used the `DPoP` scheme.
    pub fn dpop_challenge(&self) -> Option<String> {
        let d = self.dpop.as_ref()?;
        if matches!(&self.error, AuthError::Token(e) if e.is_unavailable()) {
            return None;
        }
        let mut out = String::from("DPoP");
        let mut first = true;
        push_param(
            &mut out,
            &mut first,
            "algs",
            &mcp_auth_types::dpop::ACCEPTED_ALGS.join(" "),
        );
        if let Some(url) = &self.resource_metadata {
            push_param(&mut out, &mut first, "resource_metadata", url);
        }
        if d.scheme_used
            && let Some(code) = self.error_code()
        {
            push_param(&mut out, &mut first, "error", code);
        }
        Some(out)
    }

    /// The `WWW-Authenticate` value; `None` for `503`, which is no authentication problem.
    pub fn www_authenticate(&self) -> Option<String> {
        if matches!(&self.error, AuthError::Token(e) if e.is_unavailable()) {
            return None;
        }
        let mut out = String::from("Bearer");
        let mut first = true;
        if let Some(url) = &self.resource_metadata {
            push_param(&mut out, &mut first, "resource_metadata", url);
        }
        if !self.required.is_empty() {
            push_param(&mut out, &mut first, "scope", &self.required.to_string());
        }
        let on_dpop = self.dpop.as_ref().is_some_and(|d| d.scheme_used);
        if !on_dpop && let Some(code) = self.error_code() {
            push_param(&mut out, &mut first, "error", code);
        }
        Some(out)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match (self.error_code(), status) {
            (Some(code), _) => format!("{{\"error\":\"{code}\"}}"),
            (None, StatusCode::SERVICE_UNAVAILABLE) => {
                "{\"error\":\"temporarily_unavailable\"}".to_owned()
            }
            (None, _) => String::new(),
        };
        let has_body = !body.is_empty();
        let mut resp = Response::new(if has_body {
            Body::from(body)
        } else {
            Body::empty()
        });
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        if has_body {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        if let Some(challenge) = self.www_authenticate() {
            let value = HeaderValue::try_from(challenge).unwrap_or_else(|e| {
                // Unreachable: every value is a URL, a scope list or a fixed code.
                tracing::error!(error = %e, "unrepresentable challenge; sending a bare one");
                HeaderValue::from_static("Bearer")
            });
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(challenge) = self.dpop_challenge()
            && let Ok(value) = HeaderValue::try_from(challenge)
        {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
        if let Some(nonce) = self.dpop_nonce()
            && let Ok(value) = HeaderValue::try_from(nonce)
        {
            headers.insert("dpop-nonce", value);
        }
        resp
    }
}

fn push_param(out: &mut String, first: &mut bool, name: &str, value: &str) {
    out.push_str(if *first { " " } else { ", " });
    *first = false;
    out.push_str(name);
    out.push('=');
    push_quoted(out, value);
}

/// RFC 9110 §5.6.4 quoted-string: `"` and `\` are escaped with a backslash; control
/// characters (other than tab), which no quoted-string may hold, are dropped.
fn push_quoted(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VerifyError;
    use mcp_auth_types::parse_www_authenticate;

    fn rm() -> Option<Arc<str>> {
        Some(Arc::from(
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp",
        ))
    }

    fn scopes(s: &str) -> ScopeSet {
        s.parse().unwrap()
    }

    #[test]
    fn quoting_escapes_quote_and_backslash() {
        let mut s = String::new();
        push_quoted(&mut s, r#"a"b\c	d"#);
        assert_eq!(s, r#""a\"b\\c	d""#);
        let mut s = String::new();
        push_quoted(&mut s, "x\r\ny");
        assert_eq!(s, r#""xy""#);
    }

    #[test]
    fn quoted_values_parse_back() {
        let r = Rejection::new(
            AuthError::MissingToken,
            ScopeSet::new(),
            Some(Arc::from(r#"https://a.example/"q"\x"#)),
        );
        let header = r.www_authenticate().unwrap();
        let ch = parse_www_authenticate(&header).unwrap();
        assert_eq!(
            ch[0].resource_metadata(),
            Some(r#"https://a.example/"q"\x"#)
        );
    }

    #[test]
    fn missing_token_has_no_error_code() {
        let r = Rejection::new(AuthError::MissingToken, scopes("mcp:read"), rm());
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            r.www_authenticate().unwrap(),
            r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="mcp:read""#
        );
    }

    #[test]
    fn statuses_and_codes() {
        let cases = [
            (
                AuthError::InvalidRequest("x"),
                StatusCode::BAD_REQUEST,
                Some("invalid_request"),
            ),
            (
                AuthError::Token(VerifyError::BadSignature),
                StatusCode::UNAUTHORIZED,
                Some("invalid_token"),
            ),
            (
                AuthError::InsufficientScope {
                    required: scopes("a b"),
                    granted: scopes("a"),
                },
                StatusCode::FORBIDDEN,
                Some("insufficient_scope"),
            ),
        ];
        for (error, status, code) in cases {
            let r = Rejection::new(error, scopes("a b"), rm());
            assert_eq!(r.status(), status);
            assert_eq!(r.error_code(), code);
            let ch = parse_www_authenticate(&r.www_authenticate().unwrap()).unwrap();
            assert_eq!(ch[0].error(), code);
            assert_eq!(ch[0].param("scope"), Some("a b"));
        }
    }

    #[test]
    fn unavailable_is_503_without_challenge() {
        let r = Rejection::new(
            AuthError::Token(VerifyError::Backend("db down".into())),
            ScopeSet::new(),
            rm(),
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(r.www_authenticate().is_none());
        let resp = r.into_response();
        assert!(resp.headers().get(header::WWW_AUTHENTICATE).is_none());
    }
}
