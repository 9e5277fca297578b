//! Scopes (RFC 6749 §3.3) and the MCP spec's rules for choosing them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One scope token: `1*( %x21 / %x23-5B / %x5D-7E )` (RFC 6749 §3.3).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(String);

/// A string that is not a valid scope token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope token {0:?}")]
pub struct ScopeError(String);

impl Scope {
    /// The `offline_access` scope (OpenID Connect Core §11), which asks for a refresh token.
    pub const OFFLINE_ACCESS: &'static str = "offline_access";

    /// Checks and wraps one scope token.
    pub fn new(s: impl Into<String>) -> Result<Self, ScopeError> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if ok { Ok(Self(s)) } else { Err(ScopeError(s)) }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A set of scopes that keeps the order in which scopes were first seen (servers and users
/// read them in that order) and never holds one twice.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ScopeSet(Vec<Scope>);

impl ScopeSet {
    /// The empty set.
    pub fn new() -> Self {
        Self(Vec::new())
    }

    /// Adds a scope unless present; returns whether it was added.
    pub fn insert(&mut self, s: Scope) -> bool {
        if self.0.contains(&s) {
            false
        } else {
            self.0.push(s);
            true
        }
    }

    /// Whether `s` is in the set.
    pub fn contains(&self, s: &str) -> bool {
        self.0.iter().any(|x| x.0 == s)
    }

    /// Whether every scope of `other` is in `self`.
    pub fn is_superset(&self, other: &ScopeSet) -> bool {
        other.iter().all(|s| self.contains(s.as_str()))
    }

    /// Self ∪ other, self's order first.
    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        let mut out = self.clone();
        for s in other.iter() {
            out.insert(s.clone());
        }
        out
    }

    /// The scopes, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    /// Number of scopes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Builds a set from strings, refusing invalid tokens.
    pub fn from_strs<I, S>(items: I) -> Result<Self, ScopeError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Self::new();
        for s in items {
            out.insert(Scope::new(s.as_ref())?);
        }
        Ok(out)
    }
}

impl FromStr for ScopeSet {
    type Err = ScopeError;
    /// Parses a space-delimited scope string; extra spaces are tolerated.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_strs(s.split(' ').filter(|t| !t.is_empty()))
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(&s.0)?;
        }
        Ok(())
    }
}

impl fmt::Debug for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ScopeSet({:?})", self.to_string())
    }
}

impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Where the scopes of an authorization request come from, in the MCP spec's order
/// ("Scope Selection Strategy", 2025-11-25): the `scope` of the `WWW-Authenticate`
/// challenge, else the protected resource's `scopes_supported`, else none (the parameter is
/// omitted). An explicit choice by the user overrides all of them. `offline_access` is added
/// only when the authorization server advertises it (so the client may get a refresh token)
/// and removed when it does not.
pub fn select_scopes(
    explicit: Option<&ScopeSet>,
    challenge: Option<&ScopeSet>,
    prm_supported: Option<&ScopeSet>,
    as_supported: Option<&ScopeSet>,
) -> Option<ScopeSet> {
    let base = explicit
        .filter(|s| !s.is_empty())
        .or(challenge.filter(|s| !s.is_empty()))
        .or(prm_supported.filter(|s| !s.is_empty()))
        .cloned();
    let offline_ok = as_supported.is_some_and(|s| s.contains(Scope::OFFLINE_ACCESS));
    let mut out = base?;
    if offline_ok {
        if let Ok(s) = Scope::new(Scope::OFFLINE_ACCESS) {
            out.insert(s);
        }
    } else if explicit.is_none() {
        out.0.retain(|s| s.0 != Scope::OFFLINE_ACCESS);
    }
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(s: &str) -> ScopeSet {
        s.parse().unwrap()
    }

    #[test]
    fn parse_and_display() {
        assert_eq!(set(" a  b a ").to_string(), "a b");
        assert!("a \"b".parse::<ScopeSet>().is_err());
        assert!("a\\b".parse::<ScopeSet>().is_err());
        assert!(set("").is_empty());
    }

    #[test]
    fn union_keeps_order() {
        assert_eq!(set("a b").union(&set("c a")).to_string(), "a b c");
        assert!(set("a b c").is_superset(&set("c a")));
    }

    #[test]
    fn selection_order() {
        let ch = set("x");
        let prm = set("y z");
        assert_eq!(
            select_scopes(None, Some(&ch), Some(&prm), None),
            Some(set("x"))
        );
        assert_eq!(
            select_scopes(None, None, Some(&prm), None),
            Some(set("y z"))
        );
        assert_eq!(select_scopes(None, None, None, None), None);
        assert_eq!(
            select_scopes(Some(&set("e")), Some(&ch), Some(&prm), None),
            Some(set("e"))
        );
    }

    #[test]
    fn offline_access_only_when_advertised() {
        let prm = set("read offline_access");
        assert_eq!(
            select_scopes(None, None, Some(&prm), Some(&set("read"))),
            Some(set("read"))
        );
        assert_eq!(
            select_scopes(
                None,
                None,
                Some(&set("read")),
                Some(&set("read offline_access"))
            ),
            Some(set("read offline_access"))
        );
    }
}
