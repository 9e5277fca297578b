//! Token endpoint requests, responses and errors (RFC 6749 §4–§6, RFC 7523, RFC 8707).

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::{AccessToken, AuthorizationCode, ClientId, PkceVerifier, RefreshToken, ScopeSet};

macro_rules! registered_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
            /// A value this library does not know, kept as sent.
            Extension(String),
        }

        impl $name {
            /// The wire value.
            pub fn as_str(&self) -> &str {
                match self {
                    $(Self::$variant => $wire,)*
                    Self::Extension(s) => s,
                }
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                match s {
                    $($wire => Self::$variant,)*
                    other => Self::Extension(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok(Self::from(String::deserialize(d)?.as_str()))
            }
        }
    };
}

registered_enum!(
    /// OAuth grant types (RFC 6749, RFC 8628, RFC 7523, RFC 8693).
    GrantType {
        /// `authorization_code`
        AuthorizationCode = "authorization_code",
        /// `refresh_token`
        RefreshToken = "refresh_token",
        /// `client_credentials`
        ClientCredentials = "client_credentials",
        /// RFC 8628 device code.
        DeviceCode = "urn:ietf:params:oauth:grant-type:device_code",
        /// RFC 7523 JWT bearer.
        JwtBearer = "urn:ietf:params:oauth:grant-type:jwt-bearer",
        /// RFC 8693 token exchange.
        TokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange",
    }
);

registered_enum!(
    /// Token endpoint client authentication methods (RFC 7591 §2, RFC 7523).
    AuthMethod {
        /// A public client: `client_id` in the body, no secret.
        None = "none",
        /// HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1).
        ClientSecretBasic = "client_secret_basic",
        /// `client_id` and `client_secret` in the body.
        ClientSecretPost = "client_secret_post",
        /// A JWT signed with the client's private key (RFC 7523 §2.2).
        PrivateKeyJwt = "private_key_jwt",
        /// A JWT signed with the client secret (HMAC).
        ClientSecretJwt = "client_secret_jwt",
    }
);

registered_enum!(
    /// RFC 6749 §5.2 (and extensions') error codes.
    ErrorCode {
        /// `invalid_request`
        InvalidRequest = "invalid_request",
        /// `invalid_client`
        InvalidClient = "invalid_client",
        /// `invalid_grant`
        InvalidGrant = "invalid_grant",
        /// `unauthorized_client`
        UnauthorizedClient = "unauthorized_client",
        /// `unsupported_grant_type`
        UnsupportedGrantType = "unsupported_grant_type",
        /// `invalid_scope`
        InvalidScope = "invalid_scope",
        /// `access_denied`
        AccessDenied = "access_denied",
        /// `unsupported_response_type`
        UnsupportedResponseType = "unsupported_response_type",
        /// `server_error`
        ServerError = "server_error",
        /// `temporarily_unavailable`
        TemporarilyUnavailable = "temporarily_unavailable",
        /// `invalid_target` (RFC 8707)
        InvalidTarget = "invalid_target",
        /// `authorization_pending` (RFC 8628)
        AuthorizationPending = "authorization_pending",
        /// `slow_down` (RFC 8628)
        SlowDown = "slow_down",
        /// `expired_token` (RFC 8628)
        ExpiredToken = "expired_token",
        /// `invalid_client_metadata` (RFC 7591)
        InvalidClientMetadata = "invalid_client_metadata",
        /// `invalid_redirect_uri` (RFC 7591)
        InvalidRedirectUri = "invalid_redirect_uri",
        /// `use_dpop_nonce` (RFC 9449)
        UseDpopNonce = "use_dpop_nonce",
    }
);

/// RFC 6749 §5.2 error response (also used for §4.1.2.1 authorization errors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// `error`
    pub error: ErrorCode,
    /// `error_description`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_description: Option<String>,
    /// `error_uri`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_uri: Option<String>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Display for ErrorResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if let Some(d) = &self.error_description {
            // Server-provided text: strip control characters before it reaches a terminal.
            let clean: String = d.chars().filter(|c| !c.is_control()).take(300).collect();
            write!(f, ": {clean}")?;
        }
        Ok(())
    }
}

/// Token types a client can use (RFC 6749 §7.1, RFC 9449). Compared case-insensitively
/// (RFC 6749 §5.1: "The value is case insensitive").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenType {
    /// `Bearer` (RFC 6750).
    Bearer,
    /// `DPoP` (RFC 9449).
    DPoP,
    /// `N_A` (RFC 8693 for non-access tokens).
    NotApplicable,
    /// Anything else, which this library does not use.
    Other(String),
}

impl TokenType {
    /// Parses a `token_type` value.
    pub fn parse(s: &str) -> Self {
        if s.eq_ignore_ascii_case("bearer") {
            Self::Bearer
        } else if s.eq_ignore_ascii_case("dpop") {
            Self::DPoP
        } else if s.eq_ignore_ascii_case("n_a") {
            Self::NotApplicable
        } else {
            Self::Other(s.to_owned())
        }
    }
    /// The value for an `Authorization` header scheme.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Bearer => "Bearer",
            Self::DPoP => "DPoP",
            Self::NotApplicable => "N_A",
            Self::Other(s) => s,
        }
    }
}

impl Serialize for TokenType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TokenType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// RFC 6749 §5.1 successful token response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenResponse {
    /// `access_token`
    pub access_token: AccessToken,
    /// `token_type`
    pub token_type: TokenType,
    /// `expires_in` seconds. Some servers send it as a string; both are accepted.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_u64"
    )]
    pub expires_in: Option<u64>,
    /// `refresh_token`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<RefreshToken>,
    /// `scope`: the granted scopes when they differ from the requested ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeSet>,
    /// `id_token` (OpenID Connect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_token: Option<crate::SecretString>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A token request body (RFC 6749 §4.1.3, §6, §4.4; RFC 8707 §2.2 `resource`).
///
/// Client authentication is added separately (it depends on the method, and may go in a
/// header); [`TokenRequest::form`] gives the grant's own parameters.
#[derive(Debug)]
#[non_exhaustive]
pub enum TokenRequest<'a> {
    /// Redeeming an authorization code.
    AuthorizationCode {
        /// The code from the redirect.
        code: &'a AuthorizationCode,
        /// The exact redirect URI of the authorization request.
        redirect_uri: &'a str,
        /// The PKCE verifier.
        verifier: &'a PkceVerifier,
        /// RFC 8707 resource.
        resource: Option<&'a str>,
    },
    /// Refreshing (RFC 6749 §6).
    RefreshToken {
        /// The refresh token.
        refresh_token: &'a RefreshToken,
        /// Scopes to narrow to (usually none: the original grant's).
        scope: Option<&'a ScopeSet>,
        /// RFC 8707 resource.
        resource: Option<&'a str>,
    },
    /// Client credentials (RFC 6749 §4.4).
    ClientCredentials {
        /// Requested scopes.
        scope: Option<&'a ScopeSet>,
        /// RFC 8707 resource.
        resource: Option<&'a str>,
    },
    /// A JWT as the authorization grant (RFC 7523 §2.1): workload identity federation,
    /// where a platform-issued JWT stands for the workload.
    JwtBearer {
        /// The JWT (a secret: send it, never log it).
        assertion: &'a str,
        /// Requested scopes.
        scope: Option<&'a ScopeSet>,
        /// RFC 8707 resource.
        resource: Option<&'a str>,
    },
    /// Polling for the device authorization grant (RFC 8628 §3.4).
    DeviceCode {
        /// The `device_code` from the device authorization response (a secret).
        device_code: &'a str,
    },
}

impl TokenRequest<'_> {
    /// The grant type.
    pub fn grant_type(&self) -> GrantType {
        match self {
            Self::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            Self::RefreshToken { .. } => GrantType::RefreshToken,
            Self::ClientCredentials { .. } => GrantType::ClientCredentials,
            Self::JwtBearer { .. } => GrantType::JwtBearer,
            Self::DeviceCode { .. } => GrantType::DeviceCode,
        }
    }

    /// The form parameters of the grant (secrets included: send them, never log them).
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("grant_type", self.grant_type().as_str().to_owned())];
        match self {
            Self::AuthorizationCode {
                code,
                redirect_uri,
                verifier,
                resource,
            } => {
                f.push(("code", code.secret().to_owned()));
                f.push(("redirect_uri", (*redirect_uri).to_owned()));
                f.push(("code_verifier", verifier.secret().to_owned()));
                f.extend(resource.map(|r| ("resource", r.to_owned())));
            }
            Self::RefreshToken {
                refresh_token,
                scope,
                resource,
            } => {
                f.push(("refresh_token", refresh_token.secret().to_owned()));
                f.extend(scope.map(|s| ("scope", s.to_string())));
                f.extend(resource.map(|r| ("resource", r.to_owned())));
            }
            Self::ClientCredentials { scope, resource } => {
                f.extend(scope.map(|s| ("scope", s.to_string())));
                f.extend(resource.map(|r| ("resource", r.to_owned())));
            }
            Self::JwtBearer {
                assertion,
                scope,
                resource,
            } => {
                f.push(("assertion", (*assertion).to_owned()));
                f.extend(scope.map(|s| ("scope", s.to_string())));
                f.extend(resource.map(|r| ("resource", r.to_owned())));
            }
            Self::DeviceCode { device_code } => {
                f.push(("device_code", (*device_code).to_owned()));
            }
        }
        f
    }
}

/// Builds the `Authorization: Basic` value for `client_secret_basic` (RFC 6749 §2.3.1: the id
/// and secret are form-urlencoded before base64).
pub fn basic_auth_header(client_id: &ClientId, secret: &crate::ClientSecret) -> String {
    use base64::Engine as _;
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id.as_str()), enc(secret.secret()));
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_bearer_form_carries_the_assertion() {
        let scope: ScopeSet = "a b".parse().unwrap();
        let req = TokenRequest::JwtBearer {
            assertion: "h.p.s",
            scope: Some(&scope),
            resource: Some("https://mcp.example/mcp"),
        };
        assert_eq!(req.grant_type(), GrantType::JwtBearer);
        assert_eq!(
            req.form(),
            vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:jwt-bearer".to_owned()
                ),
                ("assertion", "h.p.s".to_owned()),
                ("scope", "a b".to_owned()),
                ("resource", "https://mcp.example/mcp".to_owned()),
            ]
        );
    }

    #[test]
    fn token_response_parsing() {
        let r: TokenResponse = serde_json::from_str(
            r#"{"access_token":"at","token_type":"bearer","expires_in":"3600","refresh_token":"rt","scope":"a b","x":1}"#,
        )
        .unwrap();
        assert_eq!(r.token_type, TokenType::Bearer);
        assert_eq!(r.expires_in, Some(3600));
        assert_eq!(r.refresh_token.unwrap().secret(), "rt");
        assert_eq!(r.scope.unwrap().to_string(), "a b");
        assert_eq!(r.extra["x"], 1);
        assert!(!format!("{:?}", r.access_token).contains("at\""));
    }

    #[test]
    fn error_codes_roundtrip() {
        let e: ErrorResponse =
            serde_json::from_str(r#"{"error":"invalid_grant","error_description":"x\u001b[31m"}"#)
                .unwrap();
        assert_eq!(e.error, ErrorCode::InvalidGrant);
        assert_eq!(e.to_string(), "invalid_grant: x[31m");
        let e: ErrorResponse = serde_json::from_str(r#"{"error":"custom_thing"}"#).unwrap();
        assert_eq!(e.error, ErrorCode::Extension("custom_thing".into()));
    }

    #[test]
    fn basic_header_encodes_first() {
        let h = basic_auth_header(
            &ClientId::new("id:1").unwrap(),
            &crate::ClientSecret::new("s e+cret"),
        );
        use base64::Engine as _;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(String::from_utf8(raw).unwrap(), "id%3A1:s+e%2Bcret");
    }

    #[test]
    fn code_request_form() {
        let code = AuthorizationCode::new("c");
        let v = PkceVerifier::generate();
        let req = TokenRequest::AuthorizationCode {
            code: &code,
            redirect_uri: "http://127.0.0.1:1/cb",
            verifier: &v,
            resource: Some("https://r"),
        };
        let f = req.form();
        assert_eq!(f[0], ("grant_type", "authorization_code".to_owned()));
        assert!(f.contains(&("resource", "https://r".to_owned())));
        assert!(f.contains(&("code_verifier", v.secret().to_owned())));
    }
}
