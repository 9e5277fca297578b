//! What a verified token says, and the claim checks JWT and introspection share.

use mcp_auth_types::ScopeSet;
use serde_json::{Map, Value};

use crate::VerifyError;

/// The verified claims of an access token, handed to the handler.
///
/// From a JWT these are RFC 9068 §2.2's claims; from introspection, RFC 7662 §2.2's members.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`: the resource owner, or the client itself for client-credentials tokens
    /// (RFC 9068 §2.2). From introspection without `sub`, the `client_id`.
    pub subject: String,
    /// `client_id`: the client the token was issued to. Always present for JWT access
    /// tokens (RFC 9068 §2.2 requires it); introspection responses may omit it (RFC 7662).
    pub client_id: Option<String>,
    /// `scope`: the scopes granted (empty when the claim is absent).
    pub scopes: ScopeSet,
    /// `iss`: the authorization server that issued the token. From introspection without
    /// `iss`, the configured issuer of the introspection endpoint.
    pub issuer: String,
    /// `aud`: the audiences (empty only from introspection responses without `aud`).
    pub audience: Vec<String>,
    /// `exp`, Unix seconds (absent only from introspection responses without `exp`).
    pub expires_at: Option<u64>,
    /// `jti`, when present.
    pub jti: Option<String>,
    /// Every other claim (`iat`, `auth_time`, `acr`, `username`, custom claims …).
    pub extra: Map<String, Value>,
}

impl Claims {
    /// The thumbprint of the key a DPoP-bound token is bound to (`cnf.jkt`, RFC 9449 §6).
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.extra.get("cnf")?.get("jkt")?.as_str()
    }

    /// Whether the token grants every scope of `required`.
    pub fn has_scopes(&self, required: &ScopeSet) -> bool {
        self.scopes.is_superset(required)
    }
}

/// The claims of a JSON object, read one by one and then split into [`Claims`] and `extra`.
pub(crate) struct ClaimReader(pub(crate) Map<String, Value>);

impl ClaimReader {
    /// A string claim; present with another type is an error.
    pub(crate) fn string(&self, name: &'static str) -> Result<Option<String>, VerifyError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(name, "not a string")),
        }
    }

    /// A NumericDate (RFC 7519 §2): seconds since the epoch, possibly with a fraction (which
    /// is dropped).
    pub(crate) fn numeric_date(&self, name: &'static str) -> Result<Option<u64>, VerifyError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => {
                if let Some(v) = n.as_u64() {
                    Ok(Some(v))
                } else {
                    match n.as_f64() {
                        Some(f) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => {
                            Ok(Some(f as u64))
                        }
                        _ => Err(invalid(name, "not a non-negative NumericDate")),
                    }
                }
            }
            Some(_) => Err(invalid(name, "not a number")),
        }
    }

    /// `aud`: one string or an array of strings (RFC 7519 §4.1.3).
    pub(crate) fn audience(&self) -> Result<Option<Vec<String>>, VerifyError> {
        match self.0.get("aud") {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid("aud", "an array member is not a string")),
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(invalid("aud", "neither a string nor an array")),
        }
    }

    /// `scope`: a space-delimited list (RFC 9068 §2.2.3, RFC 7662 §2.2, RFC 6749 §3.3).
    pub(crate) fn scope(&self) -> Result<ScopeSet, VerifyError> {
        match self.string("scope")? {
            None => Ok(ScopeSet::new()),
            Some(s) => s.parse().map_err(|e| invalid("scope", format!("{e}"))),
        }
    }

    /// The claims not mapped to a field of [`Claims`].
    pub(crate) fn into_extra(mut self, mapped: &[&str]) -> Map<String, Value> {
        for name in mapped {
            self.0.remove(*name);
        }
        self.0
    }
}

pub(crate) fn invalid(claim: &'static str, reason: impl Into<String>) -> VerifyError {
    VerifyError::InvalidClaim {
        claim,
        reason: reason.into(),
    }
}

/// The time checks of RFC 7519 §4.1.4-6 with a leeway for clock skew: `exp` must be in the
/// future, `nbf` and `iat` must not be.
pub(crate) fn check_times(
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    now: u64,
    leeway: u64,
) -> Result<(), VerifyError> {
    if let Some(exp) = exp
        && now >= exp.saturating_add(leeway)
    {
        return Err(VerifyError::Expired {
            expired_at: exp,
            now,
        });
    }
    if let Some(nbf) = nbf
        && nbf > now.saturating_add(leeway)
    {
        return Err(VerifyError::NotYetValid {
            not_before: nbf,
            now,
        });
    }
    if let Some(iat) = iat
        && iat > now.saturating_add(leeway)
    {
        return Err(VerifyError::IssuedInFuture {
            issued_at: iat,
            now,
        });
    }
    Ok(())
}

/// RFC 8707 / RFC 9068 §4: the audience must contain this resource's identifier, compared as
/// an exact string.
pub(crate) fn check_audience(audience: &[String], resource: &str) -> Result<(), VerifyError> {
    if audience.iter().any(|a| a == resource) {
        Ok(())
    } else {
        Err(VerifyError::WrongAudience {
            expected: resource.to_owned(),
            found: audience.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reader(v: Value) -> ClaimReader {
        match v {
            Value::Object(m) => ClaimReader(m),
            _ => unreachable!(),
        }
    }

    #[test]
    fn audience_string_or_array() {
        assert_eq!(
            reader(json!({"aud": "a"})).audience().unwrap(),
            Some(vec!["a".to_owned()])
        );
        assert_eq!(
            reader(json!({"aud": ["a", "b"]})).audience().unwrap(),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(reader(json!({})).audience().unwrap(), None);
        assert!(reader(json!({"aud": 5})).audience().is_err());
        assert!(reader(json!({"aud": ["a", 5]})).audience().is_err());
    }

    #[test]
    fn numeric_dates() {
        let r = reader(json!({"a": 10, "b": 10.9, "c": -1, "d": "10", "e": 1e300}));
        assert_eq!(r.numeric_date("a").unwrap(), Some(10));
        assert_eq!(r.numeric_date("b").unwrap(), Some(10));
        assert!(r.numeric_date("c").is_err());
        assert!(r.numeric_date("d").is_err());
        assert!(r.numeric_date("e").is_err());
        assert_eq!(r.numeric_date("zz").unwrap(), None);
    }

    #[test]
    fn scope_claim() {
        assert_eq!(
            reader(json!({"scope": "a  b"}))
                .scope()
                .unwrap()
                .to_string(),
            "a b"
        );
        assert!(reader(json!({})).scope().unwrap().is_empty());
        assert!(reader(json!({"scope": "a \"b"})).scope().is_err());
        assert!(reader(json!({"scope": ["a"]})).scope().is_err());
    }

    #[test]
    fn times_with_leeway() {
        // exp: refused from exp + leeway on.
        assert!(check_times(Some(100), None, None, 129, 30).is_ok());
        assert!(matches!(
            check_times(Some(100), None, None, 130, 30),
            Err(VerifyError::Expired { .. })
        ));
        // nbf / iat: refused when more than leeway in the future.
        assert!(check_times(None, Some(130), Some(130), 100, 30).is_ok());
        assert!(matches!(
            check_times(None, Some(131), None, 100, 30),
            Err(VerifyError::NotYetValid { .. })
        ));
        assert!(matches!(
            check_times(None, None, Some(131), 100, 30),
            Err(VerifyError::IssuedInFuture { .. })
        ));
        assert!(check_times(Some(u64::MAX), None, None, u64::MAX - 1, u64::MAX).is_ok());
    }

    #[test]
    fn audience_is_exact() {
        let aud = vec!["https://a.example/mcp".to_owned()];
        assert!(check_audience(&aud, "https://a.example/mcp").is_ok());
        assert!(check_audience(&aud, "https://a.example/mcp/").is_err());
        assert!(check_audience(&[], "https://a.example/mcp").is_err());
    }
}
