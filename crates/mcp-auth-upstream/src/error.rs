//! [`UpstreamError`]: why talking to an upstream identity provider failed.
//!
//! Messages and `Debug` output never contain a token, an authorization code, a client secret
//! or a PKCE verifier: they name endpoints, HTTP statuses, OAuth error codes and claim names.
//! Text that comes from the provider (error descriptions, issuers found in documents) is
//! stripped of control characters and shortened before it is kept.

use crate::id_token::IdTokenError;

/// Why an operation against an upstream identity provider failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UpstreamError {
    /// The provider's OpenID Connect discovery document was answered with an error status
    /// or is not acceptable: a wrong `issuer`, a non-https endpoint, a missing required
    /// field. (A transport failure while fetching it is [`UpstreamError::Http`].)
    #[error("OpenID Connect discovery for {issuer} failed: {reason}")]
    Discovery {
        /// The configured issuer.
        issuer: String,
        /// What went wrong.
        reason: String,
    },
    /// The request did not complete: connection refused, DNS, TLS, timeout, a body that
    /// could not be read.
    #[error("request to the {endpoint} failed: {source}")]
    Http {
        /// Which endpoint ("token endpoint", "userinfo endpoint", ...).
        endpoint: &'static str,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The provider answered with an OAuth error (RFC 6749 §5.2, RFC 7009 §2.2.1; GitHub's
    /// `error` field, which it sends with HTTP 200).
    #[error("the provider refused: {error}{}", description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Provider {
        /// The `error` code (`invalid_grant`, `bad_verification_code`, ...).
        error: String,
        /// The `error_description`, if any.
        description: Option<String>,
    },
    /// The provider answered with an unexpected HTTP status and no OAuth error body. A `401`
    /// from the userinfo or user API means the access token is no longer valid.
    #[error("the {endpoint} answered HTTP {status}")]
    Status {
        /// Which endpoint.
        endpoint: &'static str,
        /// The HTTP status code.
        status: u16,
    },
    /// The `id_token` was refused (OpenID Connect Core §3.1.3.7).
    #[error("the id_token was refused: {0}")]
    InvalidIdToken(#[from] IdTokenError),
    /// The userinfo response is about someone else: its `sub` differs from the `id_token`'s
    /// (OpenID Connect Core §5.3.2: "the UserInfo Response values MUST NOT be used").
    #[error("the userinfo sub differs from the id_token sub")]
    SubjectMismatch,
    /// A response that is not what the protocol says: not JSON, a missing field, a token
    /// type other than Bearer, a user without an id.
    #[error("invalid response: {0}")]
    InvalidResponse(String),
    /// The provider does not offer this operation (no userinfo endpoint, ...).
    #[error("the provider does not support {0}")]
    Unsupported(&'static str),
    /// The configuration is unusable (a non-https issuer, an empty client id, an extra
    /// authorization parameter that would override a protocol one, ...).
    #[error("invalid upstream configuration: {0}")]
    Config(String),
}

impl UpstreamError {
    /// True when the provider refused a grant as invalid, expired or revoked: an
    /// authorization code already used or too old, a refresh token no longer valid.
    ///
    /// That is `invalid_grant` (RFC 6749 §5.2) and GitHub's equivalents,
    /// `bad_verification_code` (code flow) and `bad_refresh_token` (refresh). The caller
    /// should drop the stored upstream tokens and send the user through login again, rather
    /// than retry.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, Self::Provider { error, .. }
            if matches!(error.as_str(), "invalid_grant" | "bad_verification_code" | "bad_refresh_token"))
    }

    /// True when the access token was refused by a resource endpoint (userinfo, GitHub's
    /// user API): HTTP 401. Refreshing the tokens may help.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, Self::Status { status: 401, .. })
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidResponse(reason.into())
    }

    pub(crate) fn config(reason: impl Into<String>) -> Self {
        Self::Config(reason.into())
    }
}

/// Text from a peer, made safe to log and display: no control characters, at most `max`
/// characters.
pub(crate) fn sanitize(s: &str, max: usize) -> String {
    let mut out: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().filter(|c| !c.is_control()).nth(max).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_grant_and_github_equivalents() {
        let p = |e: &str| UpstreamError::Provider {
            error: e.into(),
            description: None,
        };
        assert!(p("invalid_grant").is_invalid_grant());
        assert!(p("bad_verification_code").is_invalid_grant());
        assert!(p("bad_refresh_token").is_invalid_grant());
        assert!(!p("invalid_client").is_invalid_grant());
        assert!(!UpstreamError::invalid("invalid_grant").is_invalid_grant());
    }

    #[test]
    fn provider_error_display() {
        let e = UpstreamError::Provider {
            error: "invalid_grant".into(),
            description: Some("code expired".into()),
        };
        assert_eq!(
            e.to_string(),
            "the provider refused: invalid_grant (code expired)"
        );
    }

    #[test]
    fn sanitize_strips_controls_and_truncates() {
        assert_eq!(sanitize("a\nb\u{1b}[31mc", 10), "ab[31mc");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(sanitize("abc", 3), "abc");
    }
}
