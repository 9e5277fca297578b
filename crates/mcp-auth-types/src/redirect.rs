//! The authorization response that comes back on the redirect URI (RFC 6749 §4.1.2), and the
//! RFC 9207 issuer check.

use crate::{AuthorizationCode, ErrorCode};

/// What the authorization server sent back to the redirect URI.
#[derive(Debug, Clone)]
pub enum AuthorizationResponse {
    /// Success (§4.1.2).
    Code {
        /// `code`
        code: AuthorizationCode,
        /// `state`
        state: Option<String>,
        /// `iss` (RFC 9207)
        iss: Option<String>,
    },
    /// Failure (§4.1.2.1).
    Error {
        /// `error`
        error: ErrorCode,
        /// `error_description`
        description: Option<String>,
        /// `state`
        state: Option<String>,
        /// `iss`
        iss: Option<String>,
    },
}

/// A redirect query that is not an authorization response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RedirectError {
    /// Neither `code` nor `error`.
    #[error("the redirect carries neither a code nor an error")]
    Empty,
    /// A parameter appears twice (RFC 6749 §3.1: "MUST NOT be included more than once").
    #[error("the redirect repeats the parameter {0:?}")]
    Repeated(String),
    /// Control characters in a value.
    #[error("the redirect's {0:?} contains control characters")]
    ControlCharacters(String),
}

impl AuthorizationResponse {
    /// Parses the query string of the redirect (without the leading `?`).
    pub fn from_query(query: &str) -> Result<Self, RedirectError> {
        let mut code = None;
        let mut state = None;
        let mut iss = None;
        let mut error = None;
        let mut description = None;
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut code,
                "state" => &mut state,
                "iss" => &mut iss,
                "error" => &mut error,
                "error_description" => &mut description,
                _ => continue,
            };
            if slot.is_some() {
                return Err(RedirectError::Repeated(k.into_owned()));
            }
            if k != "error_description" && v.chars().any(char::is_control) {
                return Err(RedirectError::ControlCharacters(k.into_owned()));
            }
            *slot = Some(v.into_owned());
        }
        match (error, code) {
            (Some(e), _) => Ok(Self::Error {
                error: ErrorCode::from(e.as_str()),
                description: description
                    .map(|d| d.chars().filter(|c| !c.is_control()).take(300).collect()),
                state,
                iss,
            }),
            (None, Some(c)) if !c.is_empty() => Ok(Self::Code {
                code: AuthorizationCode::new(c),
                state,
                iss,
            }),
            _ => Err(RedirectError::Empty),
        }
    }

    /// The `state` that came back.
    pub fn state(&self) -> Option<&str> {
        match self {
            Self::Code { state, .. } | Self::Error { state, .. } => state.as_deref(),
        }
    }

    /// The `iss` that came back.
    pub fn iss(&self) -> Option<&str> {
        match self {
            Self::Code { iss, .. } | Self::Error { iss, .. } => iss.as_deref(),
        }
    }
}

/// The outcome of the RFC 9207 check, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IssCheck {
    /// The AS advertises `authorization_response_iss_parameter_supported` but sent no `iss`
    /// (RFC 9207 §2.4: the client MUST reject the response).
    #[error(
        "the authorization server promises an `iss` parameter (RFC 9207) but the redirect has none"
    )]
    Missing,
    /// `iss` differs from the issuer the request was sent to (a mix-up attack, RFC 9207 §2.4).
    #[error(
        "the redirect's `iss` is {found:?}, but the request went to issuer {expected:?} (RFC 9207 mix-up protection)"
    )]
    Mismatch {
        /// The issuer the client talked to.
        expected: String,
        /// What came back.
        found: String,
    },
}

/// RFC 9207 §2.4: when `iss` is present it must equal the issuer exactly (simple string
/// comparison, after the form-decoding already done by the query parser); when the AS
/// advertises support it must be present. `iss_supported` is the metadata flag; with no
/// metadata at all (2025-03-26 fallback) pass `false`.
pub fn check_iss(
    response_iss: Option<&str>,
    expected_issuer: &str,
    iss_supported: bool,
) -> Result<(), IssCheck> {
    match response_iss {
        Some(found) if found != expected_issuer => Err(IssCheck::Mismatch {
            expected: expected_issuer.to_owned(),
            found: found
                .chars()
                .filter(|c| !c.is_control())
                .take(300)
                .collect(),
        }),
        Some(_) => Ok(()),
        None if iss_supported => Err(IssCheck::Missing),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_code_state_iss() {
        let r = AuthorizationResponse::from_query(
            "code=abc&state=xyz&iss=https%3A%2F%2Fas.example.com",
        )
        .unwrap();
        assert_eq!(r.state(), Some("xyz"));
        assert_eq!(r.iss(), Some("https://as.example.com"));
        assert!(matches!(r, AuthorizationResponse::Code { .. }));
    }

    #[test]
    fn parses_errors() {
        let r = AuthorizationResponse::from_query("error=access_denied&state=s").unwrap();
        assert!(matches!(
            r,
            AuthorizationResponse::Error {
                error: ErrorCode::AccessDenied,
                ..
            }
        ));
    }

    #[test]
    fn refuses_duplicates_and_empties() {
        assert_eq!(
            AuthorizationResponse::from_query("code=a&code=b").unwrap_err(),
            RedirectError::Repeated("code".into())
        );
        assert!(AuthorizationResponse::from_query("state=s").is_err());
        assert!(AuthorizationResponse::from_query("code=&state=s").is_err());
        assert!(AuthorizationResponse::from_query("code=a%0d%0a").is_err());
    }

    #[test]
    fn rfc9207_rules() {
        let iss = "https://as.example.com";
        assert!(check_iss(Some(iss), iss, true).is_ok());
        assert!(check_iss(Some(iss), iss, false).is_ok());
        assert_eq!(check_iss(None, iss, true), Err(IssCheck::Missing));
        assert!(check_iss(None, iss, false).is_ok());
        assert!(matches!(
            check_iss(Some("https://evil.example.com"), iss, false),
            Err(IssCheck::Mismatch { .. })
        ));
        assert!(check_iss(Some("https://as.example.com/"), iss, true).is_err());
    }
}
