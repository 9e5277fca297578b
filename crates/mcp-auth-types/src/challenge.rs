//! `WWW-Authenticate` parsing (RFC 9110 §11.6.1, RFC 6750 §3, RFC 9728 §5.1).
//!
//! ```text
//! WWW-Authenticate = #challenge
//! challenge        = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
//! auth-param       = token BWS "=" BWS ( token / quoted-string )
//! ```
//!
//! One header may carry several challenges, and the commas that separate challenges are the
//! same commas that separate parameters: a name followed by `=` continues the current
//! challenge, anything else starts the next one. Real servers also send unquoted URLs as
//! parameter values (`resource_metadata=https://…`), which are not tokens; the parser accepts
//! any run of characters up to a comma or whitespace there, so such servers still work.

use crate::ScopeSet;

/// One challenge: a scheme and either a token68 or parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// The auth-scheme as sent; compare with [`Challenge::is_scheme`] (case-insensitive).
    pub scheme: String,
    /// The token68 form, when the challenge used it.
    pub token68: Option<String>,
    /// Parameters in order; names lower-cased (they are case-insensitive, RFC 9110 §11.2).
    pub params: Vec<(String, String)>,
}

impl Challenge {
    /// Case-insensitive scheme comparison (RFC 9110 §11.1).
    pub fn is_scheme(&self, scheme: &str) -> bool {
        self.scheme.eq_ignore_ascii_case(scheme)
    }

    /// The first value of a parameter (name compared case-insensitively).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// `resource_metadata` (RFC 9728 §5.1).
    pub fn resource_metadata(&self) -> Option<&str> {
        self.param("resource_metadata")
    }

    /// `scope` (RFC 6750 §3), parsed; invalid scope strings count as absent.
    pub fn scope(&self) -> Option<ScopeSet> {
        self.param("scope").and_then(|s| s.parse().ok())
    }

    /// `error` (RFC 6750 §3.1): `invalid_request`, `invalid_token`, `insufficient_scope`.
    pub fn error(&self) -> Option<&str> {
        self.param("error")
    }
}

/// A header that could not be parsed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed WWW-Authenticate header at byte {at}: {reason}")]
pub struct ChallengeError {
    /// Byte offset of the problem.
    pub at: usize,
    /// What was expected.
    pub reason: &'static str,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token68_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~+/".contains(&b)
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn peek_at(&self, j: usize) -> Option<u8> {
        self.s.get(j).copied()
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }
    fn ws_from(&self, mut j: usize) -> usize {
        while matches!(self.peek_at(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        j
    }
    fn token_end(&self, mut j: usize) -> usize {
        while self.peek_at(j).is_some_and(is_tchar) {
            j += 1;
        }
        j
    }
    fn text(&self, a: usize, b: usize) -> String {
        String::from_utf8_lossy(&self.s[a..b]).into_owned()
    }
    /// Whether a `name = ` parameter starts at the cursor (after optional whitespace).
    fn at_param(&self) -> bool {
        let start = self.ws_from(self.i);
        let end = self.token_end(start);
        if end == start {
            return false;
        }
        let eq = self.ws_from(end);
        if self.peek_at(eq) != Some(b'=') {
            return false;
        }
        // `abc==` (or `abc=`) then the end or a comma is a token68, not a parameter.
        let mut j = eq;
        while self.peek_at(j) == Some(b'=') {
            j += 1;
        }
        j == eq + 1 && !matches!(self.peek_at(self.ws_from(j)), None | Some(b','))
    }
    fn quoted_string(&mut self) -> Result<String, ChallengeError> {
        // At the opening quote.
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => {
                    return Err(ChallengeError {
                        at: self.i,
                        reason: "unterminated quoted-string",
                    });
                }
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&out).into_owned());
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c) => {
                            out.push(c);
                            self.i += 1;
                        }
                        None => {
                            return Err(ChallengeError {
                                at: self.i,
                                reason: "backslash at end of quoted-string",
                            });
                        }
                    }
                }
                Some(c) => {
                    out.push(c);
                    self.i += 1;
                }
            }
        }
    }
}

/// Parses one `WWW-Authenticate` field value into its challenges.
pub fn parse_www_authenticate(header: &str) -> Result<Vec<Challenge>, ChallengeError> {
    let mut c = Cursor {
        s: header.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        c.skip_ws_and_commas();
        if c.peek().is_none() {
            return Ok(out);
        }
        let start = c.i;
        let end = c.token_end(start);
        if end == start {
            return Err(ChallengeError {
                at: start,
                reason: "expected an auth-scheme",
            });
        }
        let mut ch = Challenge {
            scheme: c.text(start, end),
            token68: None,
            params: Vec::new(),
        };
        c.i = end;
        let had_space = matches!(c.peek(), Some(b' ' | b'\t'));
        c.skip_ws();
        if had_space && !c.at_param() {
            // token68, or nothing (the next challenge follows a comma).
            let t = c.i;
            let mut j = t;
            while c.peek_at(j).is_some_and(is_token68_char) {
                j += 1;
            }
            while c.peek_at(j) == Some(b'=') {
                j += 1;
            }
            if j > t && matches!(c.peek_at(c.ws_from(j)), None | Some(b',')) {
                ch.token68 = Some(c.text(t, j));
                c.i = j;
            }
        } else if had_space {
            parse_params(&mut c, &mut ch)?;
        }
        out.push(ch);
        c.skip_ws();
        match c.peek() {
            None | Some(b',') => {}
            Some(_) => {
                return Err(ChallengeError {
                    at: c.i,
                    reason: "expected ',' between challenges",
                });
            }
        }
    }
}

fn parse_params(c: &mut Cursor<'_>, ch: &mut Challenge) -> Result<(), ChallengeError> {
    loop {
        c.skip_ws();
        let start = c.i;
        let end = c.token_end(start);
        let name = c.text(start, end).to_ascii_lowercase();
        c.i = c.ws_from(end);
        // at_param() guaranteed the '='.
        c.i += 1;
        c.skip_ws();
        let value = match c.peek() {
            Some(b'"') => c.quoted_string()?,
            _ => {
                let v = c.i;
                while c.peek().is_some_and(|b| !matches!(b, b',' | b' ' | b'\t')) {
                    c.i += 1;
                }
                c.text(v, c.i)
            }
        };
        ch.params.push((name, value));
        c.skip_ws();
        // A comma followed by another `name=` continues this challenge; anything else ends it.
        let save = c.i;
        if c.peek() == Some(b',') {
            c.i += 1;
            while matches!(c.peek(), Some(b' ' | b'\t' | b',')) {
                c.i += 1;
            }
            if c.peek().is_some() && c.at_param() {
                continue;
            }
        }
        c.i = save;
        return Ok(());
    }
}

/// Finds the `Bearer` (or `DPoP`) challenge among all `WWW-Authenticate` values of a response.
/// Values that fail to parse are skipped: one malformed challenge must not hide a good one.
pub fn find_bearer<'a, I>(values: I) -> Option<Challenge>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut fallback = None;
    for v in values {
        if let Ok(chs) = parse_www_authenticate(v) {
            for ch in chs {
                if ch.is_scheme("Bearer") {
                    return Some(ch);
                }
                if ch.is_scheme("DPoP") && fallback.is_none() {
                    fallback = Some(ch);
                }
            }
        }
    }
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Vec<Challenge> {
        parse_www_authenticate(s).unwrap()
    }

    #[test]
    fn rfc6750_example() {
        let c = p(
            r#"Bearer realm="example", error="invalid_token", error_description="The access token expired""#,
        );
        assert_eq!(c.len(), 1);
        assert!(c[0].is_scheme("bearer"));
        assert_eq!(c[0].param("realm"), Some("example"));
        assert_eq!(c[0].error(), Some("invalid_token"));
        assert_eq!(
            c[0].param("ERROR_description"),
            Some("The access token expired")
        );
    }

    #[test]
    fn rfc9728_resource_metadata_and_scope() {
        let c = p(
            r#"Bearer resource_metadata="https://mcp.example.com/.well-known/oauth-protected-resource/mcp", scope="files:read files:write""#,
        );
        assert_eq!(
            c[0].resource_metadata(),
            Some("https://mcp.example.com/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c[0].scope().unwrap().to_string(), "files:read files:write");
    }

    #[test]
    fn several_challenges_one_header() {
        let c = p(
            r#"Basic realm="simple", Newauth realm="apps", type=1, title="Login to \"apps\"", Bearer scope="a""#,
        );
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].scheme, "Basic");
        assert_eq!(c[1].param("type"), Some("1"));
        assert_eq!(c[1].param("title"), Some(r#"Login to "apps""#));
        assert_eq!(c[2].param("scope"), Some("a"));
    }

    #[test]
    fn token68_and_bare_schemes() {
        let c = p("Negotiate abc+/d==, Bearer, Basic");
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].token68.as_deref(), Some("abc+/d=="));
        assert!(c[1].params.is_empty());
        assert!(c[2].is_scheme("basic"));
    }

    #[test]
    fn unquoted_url_value_is_tolerated() {
        let c = p(
            "Bearer resource_metadata=http://localhost:3000/.well-known/oauth-protected-resource, error=invalid_token",
        );
        assert_eq!(
            c[0].resource_metadata(),
            Some("http://localhost:3000/.well-known/oauth-protected-resource")
        );
        assert_eq!(c[0].error(), Some("invalid_token"));
    }

    #[test]
    fn malformed() {
        assert!(parse_www_authenticate(r#"Bearer realm="open"#).is_err());
        assert!(parse_www_authenticate("=").is_err());
        assert!(p("").is_empty());
        assert!(p(" , ,").is_empty());
    }

    #[test]
    fn find_bearer_skips_broken_values() {
        let ch = find_bearer([r#"Bearer realm="x"#, r#"Basic, Bearer scope="s""#]).unwrap();
        assert_eq!(ch.param("scope"), Some("s"));
    }
}
