//! Small HTTP helpers: a parsed request, parameter lists, and the response shapes the
//! handlers share.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use mcp_auth_types::{ErrorCode, ErrorResponse};

/// A request, read whole (bodies are small and capped).
pub(crate) struct Req {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Req {
    /// A header as text; absent or not visible ASCII counts as absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Form or query parameters, in order, duplicates kept.
pub(crate) struct Params(pub Vec<(String, String)>);

/// A parameter that appeared more than once (RFC 6749 §3.1, §3.2: "Request and response
/// parameters MUST NOT be included more than once").
#[derive(Debug)]
pub(crate) struct Repeated(pub String);

impl Params {
    pub fn parse(s: &[u8]) -> Self {
        Self(
            url::form_urlencoded::parse(s)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The value of a parameter that may appear at most once; an empty value counts as
    /// absent (RFC 6749 §3.1: "Parameters sent without a value MUST be treated as if they
    /// were omitted").
    pub fn get(&self, name: &str) -> Result<Option<&str>, Repeated> {
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name && !v.is_empty() {
                if found.is_some() {
                    return Err(Repeated(name.to_owned()));
                }
                found = Some(v.as_str());
            }
        }
        Ok(found)
    }
}

/// Adds `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1, §5.2).
pub(crate) fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    r
}

/// A JSON response.
pub(crate) fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response(),
        Err(e) => {
            tracing::error!("serializing a response failed: {e}");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// An RFC 6749 §5.2 error: JSON body, `no-store`.
pub(crate) fn oauth_error(status: StatusCode, error: ErrorCode, description: &str) -> Response {
    let body = ErrorResponse {
        error,
        error_description: Some(description.to_owned()),
        error_uri: None,
        extra: Default::default(),
    };
    no_store(json(status, &body))
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

/// The page a user would see when the authorization request cannot be answered with a
/// redirect (RFC 6749 §4.1.2.1: unknown client or redirect URI must not redirect).
pub(crate) fn error_page(message: &str) -> Response {
    let body = format!(
        "<!doctype html><html><head><title>Authorization error</title></head>\
         <body><h1>Authorization error</h1><p>{}</p></body></html>",
        html_escape(message)
    );
    no_store(
        (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
    )
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `302 Found` to `location`.
pub(crate) fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(v) => no_store((StatusCode::FOUND, [(header::LOCATION, v)]).into_response()),
        Err(_) => error_page("the redirect URI cannot be used in a Location header"),
    }
}

/// Quotes a value for an auth-param (RFC 9110 §5.6.4 quoted-string).
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        let p = Params::parse(b"a=1&b=&b=2&a=3");
        assert!(p.get("a").is_err());
        assert_eq!(p.get("b").unwrap(), Some("2"));
        assert_eq!(p.get("c").unwrap(), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            html_escape("<a href='x'>&</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }
}
