//! Server-rendered pages: the login + consent page and the error page. No JavaScript; every
//! value is HTML-escaped; headers forbid framing (clickjacking) and caching.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#222}\
h1{font-size:1.3rem}.box{border:1px solid #ccc;border-radius:8px;padding:1rem 1.2rem}\
.muted{color:#666;font-size:.9rem}.err{color:#a00}label{display:block;margin:.6rem 0 .2rem}\
input[type=text],input[type=password]{width:100%;padding:.4rem;box-sizing:border-box}\
button{margin:1rem .5rem 0 0;padding:.55rem 1.1rem;font-size:1rem;border:1px solid #1a4fd6;border-radius:6px;background:#fff;color:#1a4fd6;cursor:pointer}\
button.primary{background:#1a4fd6;color:#fff}button.wide{display:block;width:100%;margin:.6rem 0 0}\
:focus-visible{outline:3px solid #b35c00;outline-offset:2px}a{color:#1a4fd6}ul{padding-left:1.2rem}";

/// Wraps a page body with the protective headers.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
<title>{}</title><style>{STYLE}</style></head><body>{body}</body></html>",
        esc(title)
    );
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

/// An error shown to the user instead of redirecting (the redirect URI is not trusted yet,
/// RFC 6749 §4.1.2.1: "MUST NOT automatically redirect").
pub fn error_page(status: StatusCode, message: &str) -> Response {
    page(
        status,
        "Authorization error",
        &format!(
            "<main><h1>This authorization request cannot continue</h1><div class=box><p class=err role=alert>{}</p>\
<p class=muted>Nothing was granted. Close this page and try again from the application.</p></div></main>",
            esc(message)
        ),
    )
}

/// How the consent page lets the user log in.
#[derive(Debug, Clone, Copy)]
pub enum ConsentLogin<'a> {
    /// Local accounts: username and password fields on the page.
    Password,
    /// An upstream provider: approving sends the browser there (its label).
    Upstream(&'a str),
    /// Already signed in (a login session) as this account.
    SignedIn(&'a str),
}

/// What the consent page shows.
pub struct Consent<'a> {
    /// Form target.
    pub action: &'a str,
    /// Pending request id.
    pub pending_id: &'a str,
    /// CSRF token (also in a cookie).
    pub csrf: &'a str,
    /// Client name (or id).
    pub client_name: &'a str,
    /// The client id.
    pub client_id: &'a str,
    /// Where the browser will be sent.
    pub redirect_host: &'a str,
    /// "registered itself dynamically", "is identified by a metadata document at …", …
    pub registration: &'a str,
    /// Requested scopes.
    pub scopes: &'a [String],
    /// The resource the token is for.
    pub resource: Option<&'a str>,
    /// How the user logs in.
    pub login: ConsentLogin<'a>,
    /// The sign-out page, offered to a signed-in user ("not you?").
    pub logout: &'a str,
    /// A login error to show.
    pub error: Option<&'a str>,
    /// The request comes from the device authorization grant (RFC 8628): nothing is sent to
    /// `redirect_host`, and the page warns about remote phishing (§5.4).
    pub device: bool,
}

/// The login + consent page: who is asking, for what, and approve or deny. Works without
/// JavaScript; every control has a label; the approve button comes first in focus order.
pub fn consent_page(c: &Consent<'_>) -> Response {
    let scopes = if c.scopes.is_empty() {
        "<li>basic access (no specific scopes)</li>".to_owned()
    } else {
        c.scopes
            .iter()
            .map(|s| format!("<li><code>{}</code></li>", esc(s)))
            .collect()
    };
    let resource = c
        .resource
        .map(|r| format!("<p class=muted>For the server <code>{}</code>.</p>", esc(r)))
        .unwrap_or_default();
    let error = c
        .error
        .map(|e| format!("<p class=err role=alert>{}</p>", esc(e)))
        .unwrap_or_default();
    let (fields, approve) = match c.login {
        ConsentLogin::Password => (
            "<label for=u>Username</label><input id=u type=text name=username autocomplete=username required>\
<label for=p>Password</label><input id=p type=password name=password autocomplete=current-password required>"
                .to_owned(),
            "Log in and allow".to_owned(),
        ),
        ConsentLogin::Upstream(label) => (
            format!(
                "<p class=muted>Next you will sign in with {}, and come back here.</p>",
                esc(label)
            ),
            format!("Allow and continue with {}", esc(label)),
        ),
        ConsentLogin::SignedIn(account) => (
            format!(
                "<p>Signed in as <strong>{}</strong>. <a href=\"{}\">Not you? Sign out</a></p>",
                esc(account),
                esc(c.logout)
            ),
            "Allow".to_owned(),
        ),
    };
    // RFC 8628 §5.4: a device request can be started by anyone who then sends the user the
    // code; the page says so, instead of naming a redirect target (there is none).
    let (redirect_note, phishing_warning) = if c.device {
        (
            String::new(),
            "<p class=err role=note><strong>Only allow this if you started signing in on a device \
of your own just now, and entered the code it shows.</strong> If someone sent you this code or \
link, or asked you to enter it, choose Deny: they are trying to get into your account.</p>"
                .to_owned(),
        )
    } else {
        (
            format!(
                " After you decide, your browser goes to <strong>{}</strong>.",
                esc(c.redirect_host)
            ),
            String::new(),
        )
    };
    let body = format!(
        "<main><h1>Authorize <em>{name}</em>?</h1><div class=box>\
<p><strong>{name}</strong> <span class=muted>({id})</span> {registration}.{redirect_note}</p>{phishing_warning}\
<p id=asks>It asks for:</p><ul aria-labelledby=asks>{scopes}</ul>{resource}{error}\
<form method=post action=\"{action}\">\
<input type=hidden name=pending value=\"{pending}\"><input type=hidden name=csrf value=\"{csrf}\">\
{fields}\
<button type=submit class=primary name=decision value=approve>{approve}</button>\
<button type=submit name=decision value=deny formnovalidate>Deny</button></form></div></main>",
        name = esc(c.client_name),
        id = esc(c.client_id),
        registration = esc(c.registration),
        action = esc(c.action),
        pending = esc(c.pending_id),
        csrf = esc(c.csrf),
    );
    page(StatusCode::OK, "Authorize", &body)
}

/// The device verification page (RFC 8628 §3.3): the form where the user types the code
/// their device shows, prefilled from `verification_uri_complete`. Works without
/// JavaScript; the code field has a label.
pub fn device_entry_page(
    status: StatusCode,
    action: &str,
    csrf: &str,
    user_code: &str,
    error: Option<&str>,
) -> Response {
    let error = error
        .map(|e| format!("<p class=err role=alert id=code-error>{}</p>", esc(e)))
        .unwrap_or_default();
    let described = if error.is_empty() {
        "code-help"
    } else {
        "code-error code-help"
    };
    let body = format!(
        "<main><h1>Connect a device</h1><div class=box>\
<p>Enter the code shown on the device or application you are signing in to.</p>{error}\
<form method=post action=\"{action}\"><input type=hidden name=csrf value=\"{csrf}\">\
<label for=code>Code</label><input id=code type=text name=user_code value=\"{code}\" \
autocomplete=off autocapitalize=characters spellcheck=false maxlength=32 required aria-describedby=\"{described}\">\
<p class=muted id=code-help>It looks like <code>BCDF-GHJK</code>. Only enter a code from a device in front of you: \
never one that someone sent you.</p>\
<button type=submit class=primary>Continue</button></form></div></main>",
        action = esc(action),
        csrf = esc(csrf),
        code = esc(user_code),
    );
    page(status, "Connect a device", &body)
}

/// The page after the user's decision on a device authorization.
pub fn device_done_page(approved: bool) -> Response {
    let body = if approved {
        "<main><h1>Device connected</h1><div class=box><p role=status>Access was granted. \
You may return to your device; it continues by itself. You can close this page.</p></div></main>"
    } else {
        "<main><h1>Access denied</h1><div class=box><p role=status>The device was not given access. \
You can close this page.</p></div></main>"
    };
    page(StatusCode::OK, "Connect a device", body)
}

/// The provider-choice page: one button per identity provider.
pub fn provider_choice_page(
    action: &str,
    pending_id: &str,
    csrf: &str,
    client_name: &str,
    providers: &[(&str, &str)],
) -> Response {
    let buttons: String = providers
        .iter()
        .map(|(id, label)| {
            format!(
                "<button type=submit class=wide name=provider value=\"{}\">Continue with {}</button>",
                esc(id),
                esc(label)
            )
        })
        .collect();
    let body = format!(
        "<main><h1>Sign in to continue</h1><div class=box>\
<p><strong>{name}</strong> wants to access your account. Choose how to sign in:</p>\
<form method=post action=\"{action}\">\
<input type=hidden name=pending value=\"{pending}\"><input type=hidden name=csrf value=\"{csrf}\">\
<fieldset style=\"border:0;padding:0;margin:0\"><legend class=muted>Sign-in options</legend>{buttons}</fieldset></form></div></main>",
        name = esc(client_name),
        action = esc(action),
        pending = esc(pending_id),
        csrf = esc(csrf),
    );
    page(StatusCode::OK, "Sign in", &body)
}

/// The sign-out page: a form, so a link alone cannot sign anyone out.
pub fn logout_page(action: &str, csrf: &str, account: Option<&str>) -> Response {
    let who = match account {
        Some(a) => format!("<p>You are signed in as <strong>{}</strong>.</p>", esc(a)),
        None => "<p>You are not signed in.</p>".to_owned(),
    };
    let body = format!(
        "<main><h1>Sign out</h1><div class=box>{who}\
<form method=post action=\"{action}\"><input type=hidden name=csrf value=\"{csrf}\">\
<button type=submit class=primary>Sign out</button></form></div></main>",
        action = esc(action),
        csrf = esc(csrf),
    );
    page(StatusCode::OK, "Sign out", &body)
}

/// The page after signing out.
pub fn logged_out_page() -> Response {
    page(
        StatusCode::OK,
        "Signed out",
        "<main><h1>You are signed out</h1><div class=box><p>Your session here has ended and access granted through your upstream account was revoked. You can close this page.</p></div></main>",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<script>\"x\"&'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;&lt;/script&gt;"
        );
    }

    #[test]
    fn pages_forbid_framing() {
        let r = error_page(StatusCode::BAD_REQUEST, "<b>bad</b>");
        assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("frame-ancestors 'none'")
        );
    }
}
