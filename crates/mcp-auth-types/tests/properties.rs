//! Property tests for the parsers of `mcp-auth-types`.
//!
//! Everything here reads text that a remote server or a browser chose, so two kinds of
//! property are checked for each parser: hostile input never panics, and what a well-behaved
//! peer sends (built from a random structure and written out the way the RFC says) parses back
//! to that structure. Case counts stay at proptest's default so the suite runs in seconds; the
//! cargo-fuzz targets in `/fuzz` are where long runs belong.

use proptest::prelude::*;

/// Characters that make parsers think: ASCII delimiters, controls and non-ASCII, weighted so
/// that printable ASCII still dominates.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        8 => prop::char::range(' ', '~'),
        2 => prop::sample::select(&['"', '\\', ',', '=', ' ', '\t', '&', '%', '+', '#', '/'][..]),
        1 => prop::char::range('\0', '\u{1f}'),
        1 => Just('\u{7f}'),
        2 => any::<char>(),
    ]
}

fn tricky_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), len).prop_map(|v| v.into_iter().collect())
}

/// Strings without control characters (what `code`, `state` and `iss` are allowed to hold).
/// Built without controls rather than filtered: a filter per character runs out of rejects.
fn clean_string(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    let clean_char = prop_oneof![
        8 => prop::char::range(' ', '~'),
        2 => prop::sample::select(&['"', '\\', ',', '=', ' ', '&', '%', '+', '#', '/'][..]),
        // U+0080..U+009F are C1 controls.
        2 => prop::char::range('\u{a0}', char::MAX),
    ];
    prop::collection::vec(clean_char, len).prop_map(|v| v.into_iter().collect())
}

/// `WWW-Authenticate` (RFC 9110 §11.6.1, RFC 6750 §3).
mod www_authenticate {
    use mcp_auth_types::challenge::find_bearer;
    use mcp_auth_types::{Challenge, parse_www_authenticate};
    use proptest::prelude::*;

    /// RFC 9110 §5.6.2 `token`.
    const TOKEN: &str = "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,10}";
    /// RFC 9110 §11.2 `token68`.
    const TOKEN68: &str = "[0-9A-Za-z._~+/-]{1,16}={0,2}";

    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }

    #[derive(Debug, Clone)]
    enum Value {
        Token(String),
        Quoted(String),
    }

    #[derive(Debug, Clone)]
    enum Body {
        Empty,
        Token68(String),
        Params(Vec<(String, Value)>),
    }

    #[derive(Debug, Clone)]
    struct Generated {
        scheme: String,
        body: Body,
    }

    impl Generated {
        /// What the parser must return: parameter names lower-cased (RFC 9110 §11.2), values
        /// unescaped.
        fn expected(&self) -> Challenge {
            let (token68, params) = match &self.body {
                Body::Empty => (None, Vec::new()),
                Body::Token68(t) => (Some(t.clone()), Vec::new()),
                Body::Params(ps) => (
                    None,
                    ps.iter()
                        .map(|(k, v)| {
                            let v = match v {
                                Value::Token(s) | Value::Quoted(s) => s.clone(),
                            };
                            (k.to_ascii_lowercase(), v)
                        })
                        .collect(),
                ),
            };
            Challenge {
                scheme: self.scheme.clone(),
                token68,
                params,
            }
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            TOKEN.prop_map(Value::Token),
            super::tricky_string(0..20)
                // Quoted-string content is qdtext / quoted-pair (RFC 9110 §5.6.4): no CTLs
                // except HTAB.
                .prop_map(|s| s.replace(|c: char| c.is_ascii_control() && c != '\t', "x"))
                .prop_map(Value::Quoted),
        ]
    }

    fn challenge() -> impl Strategy<Value = Generated> {
        let body = prop_oneof![
            1 => Just(Body::Empty),
            1 => TOKEN68.prop_map(Body::Token68),
            4 => prop::collection::vec((TOKEN, value()), 1..5).prop_map(Body::Params),
        ];
        (TOKEN, body).prop_map(|(scheme, body)| Generated { scheme, body })
    }

    /// How a header is laid out: canonical (`", "` between list elements, nothing around `=`)
    /// or with the optional whitespace and empty list elements RFC 9110 §5.6.1 tells recipients
    /// to accept.
    #[derive(Debug, Clone)]
    struct Layout {
        /// OWS before a comma and BWS around `=`, used in turn.
        ws: Vec<String>,
        /// OWS after a comma, used in turn.
        after_comma: Vec<String>,
        /// 1*SP after the scheme, used in turn.
        sp: Vec<String>,
        /// Extra empty list elements after a separator, used in turn.
        empties: Vec<usize>,
        /// Escape every character of quoted strings, not just `"` and `\`.
        escape_all: bool,
        /// Empty list elements before the first challenge.
        leading: usize,
    }

    impl Layout {
        fn canonical() -> Self {
            Self {
                ws: vec![String::new()],
                after_comma: vec![" ".into()],
                sp: vec![" ".into()],
                empties: vec![0],
                escape_all: false,
                leading: 0,
            }
        }
    }

    fn layout() -> impl Strategy<Value = Layout> {
        (
            prop::collection::vec("[ \t]{0,2}", 1..6),
            prop::collection::vec("[ \t]{0,2}", 1..6),
            prop::collection::vec(" {1,3}", 1..4),
            prop::collection::vec(0usize..3, 1..4),
            any::<bool>(),
            0usize..3,
        )
            .prop_map(
                |(ws, after_comma, sp, empties, escape_all, leading)| Layout {
                    ws,
                    after_comma,
                    sp,
                    empties,
                    escape_all,
                    leading,
                },
            )
    }

    struct Writer<'a> {
        layout: &'a Layout,
        turn: usize,
        out: String,
    }

    impl Writer<'_> {
        fn pick<'s>(&mut self, from: &'s [String]) -> &'s str {
            self.turn += 1;
            &from[self.turn % from.len()]
        }
        fn ws(&mut self) {
            let layout = self.layout;
            let w = self.pick(&layout.ws);
            self.out.push_str(w);
        }
        fn after_comma(&mut self) {
            let layout = self.layout;
            let w = self.pick(&layout.after_comma);
            self.out.push_str(w);
        }
        fn sp(&mut self) {
            let layout = self.layout;
            let w = self.pick(&layout.sp);
            self.out.push_str(w);
        }
        /// `OWS "," OWS`, plus empty list elements.
        fn comma(&mut self) {
            self.ws();
            self.out.push(',');
            self.after_comma();
            let empties = self.layout.empties[self.turn % self.layout.empties.len()];
            for _ in 0..empties {
                self.out.push(',');
                self.after_comma();
            }
        }
        fn quoted(&mut self, s: &str) {
            self.out.push('"');
            for c in s.chars() {
                if c == '"' || c == '\\' || self.layout.escape_all {
                    self.out.push('\\');
                }
                self.out.push(c);
            }
            self.out.push('"');
        }
    }

    /// Serializes per RFC 9110 §11.6.1: `challenge = auth-scheme [ 1*SP ( token68 /
    /// #auth-param ) ]`, challenges separated by commas.
    fn serialize(challenges: &[Generated], layout: &Layout) -> String {
        let mut w = Writer {
            layout,
            turn: 0,
            out: String::new(),
        };
        for _ in 0..layout.leading {
            w.comma();
        }
        for (i, ch) in challenges.iter().enumerate() {
            if i > 0 {
                w.comma();
            }
            w.out.push_str(&ch.scheme);
            match &ch.body {
                Body::Empty => {}
                Body::Token68(t) => {
                    w.sp();
                    w.out.push_str(t);
                }
                Body::Params(ps) => {
                    w.sp();
                    for (j, (k, v)) in ps.iter().enumerate() {
                        if j > 0 {
                            w.comma();
                        }
                        w.out.push_str(k);
                        w.ws();
                        w.out.push('=');
                        w.ws();
                        match v {
                            Value::Token(t) => w.out.push_str(t),
                            Value::Quoted(q) => w.quoted(q),
                        }
                    }
                }
            }
        }
        w.out
    }

    /// Writes parser output back as a header: every value quoted.
    fn serialize_parsed(challenges: &[Challenge]) -> String {
        let mut out = Vec::new();
        for ch in challenges {
            let mut s = ch.scheme.clone();
            if let Some(t) = &ch.token68 {
                s.push(' ');
                s.push_str(t);
            } else if !ch.params.is_empty() {
                let params: Vec<String> = ch
                    .params
                    .iter()
                    .map(|(k, v)| {
                        format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
                    })
                    .collect();
                s.push(' ');
                s.push_str(&params.join(", "));
            }
            out.push(s);
        }
        out.join(", ")
    }

    /// Fragments that look like a header, so random input gets deep into the parser.
    fn header_soup() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            TOKEN.boxed(),
            TOKEN68.boxed(),
            prop::sample::select(
                &[
                    "Bearer",
                    "realm",
                    "scope",
                    "=",
                    "==",
                    ",",
                    ", ",
                    " ",
                    "\t",
                    "\"",
                    "\\",
                    "\\\"",
                    "\"a, b\"",
                    "resource_metadata=",
                    "é",
                    "\u{0}",
                    "\u{feff}",
                    "ü=",
                ][..]
            )
            .prop_map(str::to_owned)
            .boxed(),
            super::tricky_string(0..3).boxed(),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
    }

    /// Checks what any successful parse must look like, and that writing the result back out
    /// (all values quoted) parses to the same challenges.
    fn check_parsed(header: &str) -> Result<(), TestCaseError> {
        if let Ok(chs) = parse_www_authenticate(header) {
            for ch in &chs {
                prop_assert!(!ch.scheme.is_empty() && ch.scheme.bytes().all(is_tchar));
                prop_assert!(ch.token68.is_none() || ch.params.is_empty());
                for (k, _) in &ch.params {
                    prop_assert!(!k.is_empty() && k.bytes().all(is_tchar));
                    prop_assert!(!k.bytes().any(|b| b.is_ascii_uppercase()));
                }
            }
            let again = serialize_parsed(&chs);
            prop_assert_eq!(
                parse_www_authenticate(&again),
                Ok(chs),
                "rewritten as {:?}",
                again
            );
        }
        let _ = find_bearer([header]);
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(s in any::<String>()) {
            check_parsed(&s)?;
        }

        #[test]
        fn never_panics_on_header_like_strings(s in header_soup()) {
            check_parsed(&s)?;
        }

        #[test]
        fn canonical_serialization_round_trips(chs in prop::collection::vec(challenge(), 1..5)) {
            let header = serialize(&chs, &Layout::canonical());
            let expected: Vec<Challenge> = chs.iter().map(Generated::expected).collect();
            prop_assert_eq!(parse_www_authenticate(&header), Ok(expected), "header {:?}", header);
        }

        #[test]
        fn optional_whitespace_and_empty_elements_round_trip(
            chs in prop::collection::vec(challenge(), 1..5),
            layout in layout(),
        ) {
            let header = serialize(&chs, &layout);
            let expected: Vec<Challenge> = chs.iter().map(Generated::expected).collect();
            prop_assert_eq!(parse_www_authenticate(&header), Ok(expected), "header {:?}", header);
        }

        #[test]
        fn token68_round_trips(scheme in TOKEN, t in TOKEN68, trailing in "[ \t]{0,2}") {
            let header = format!("{scheme} {t}{trailing}");
            let chs = parse_www_authenticate(&header).unwrap();
            prop_assert_eq!(chs.len(), 1);
            prop_assert_eq!(&chs[0].scheme, &scheme);
            prop_assert_eq!(chs[0].token68.as_deref(), Some(t.as_str()));
            prop_assert!(chs[0].params.is_empty());
        }

        #[test]
        fn find_bearer_finds_bearer_among_others(
            before in prop::collection::vec(challenge(), 0..3),
            bearer in challenge(),
            after in prop::collection::vec(challenge(), 0..3),
            casing in "(?i:bearer)",
        ) {
            let not_bearer = |c: &Generated| !c.scheme.eq_ignore_ascii_case("bearer");
            let before: Vec<Generated> = before.into_iter().filter(not_bearer).collect();
            let bearer = Generated { scheme: casing, ..bearer };
            let mut all = before;
            all.push(bearer.clone());
            all.extend(after);
            let header = serialize(&all, &Layout::canonical());
            prop_assert_eq!(find_bearer([header.as_str()]), Some(bearer.expected()));
        }
    }
}

/// The redirect query (RFC 6749 §4.1.2, RFC 9207).
mod redirect_query {
    use mcp_auth_types::ErrorCode;
    use mcp_auth_types::redirect::{AuthorizationResponse, RedirectError};
    use proptest::prelude::*;

    const KNOWN: [&str; 5] = ["code", "state", "iss", "error", "error_description"];

    /// Encodes one key or value the way a form encoder does (`byte_serialize`, space as `+`)
    /// or by percent-encoding every byte; a decoder must treat both the same.
    fn encode(s: &str, every_byte: bool) -> String {
        if every_byte {
            s.bytes().map(|b| format!("%{b:02X}")).collect()
        } else {
            url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
        }
    }

    fn query(pairs: &[(String, String)], every_byte: &[bool], empty_segments: &[bool]) -> String {
        let mut out = String::new();
        for (i, (k, v)) in pairs.iter().enumerate() {
            let flag = |j: usize, f: &[bool]| f.get(j % f.len().max(1)).copied().unwrap_or(false);
            if i > 0 {
                out.push('&');
            }
            if flag(i, empty_segments) {
                // `a=1&&b=2`: empty segments are skipped by the form decoder.
                out.push('&');
            }
            out.push_str(&encode(k, flag(2 * i, every_byte)));
            out.push('=');
            out.push_str(&encode(v, flag(2 * i + 1, every_byte)));
        }
        out
    }

    fn unknown_key() -> impl Strategy<Value = String> {
        prop_oneof!["[a-z_]{1,12}", super::tricky_string(1..6)]
            .prop_filter("not a parameter the parser reads", |k| {
                !KNOWN.contains(&k.as_str())
            })
    }

    fn unknown_pairs() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::vec((unknown_key(), super::tricky_string(0..12)), 0..4)
    }

    #[derive(Debug, Clone)]
    struct Code {
        code: String,
        state: Option<String>,
        iss: Option<String>,
    }

    impl Code {
        fn pairs(&self) -> Vec<(String, String)> {
            let mut p = vec![("code".to_owned(), self.code.clone())];
            p.extend(self.state.clone().map(|s| ("state".to_owned(), s)));
            p.extend(self.iss.clone().map(|s| ("iss".to_owned(), s)));
            p
        }
    }

    fn code_response() -> impl Strategy<Value = Code> {
        (
            super::clean_string(1..30),
            prop::option::of(super::clean_string(0..30)),
            prop::option::of(super::clean_string(0..30)),
        )
            .prop_map(|(code, state, iss)| Code { code, state, iss })
    }

    /// A code response's pairs, mixed with unknown parameters, in random order.
    fn shuffled(c: Code) -> impl Strategy<Value = (Code, Vec<(String, String)>)> {
        unknown_pairs().prop_flat_map(move |extra| {
            let mut pairs = c.pairs();
            pairs.extend(extra);
            (Just(c.clone()), Just(pairs).prop_shuffle())
        })
    }

    fn flags() -> impl Strategy<Value = Vec<bool>> {
        prop::collection::vec(any::<bool>(), 1..12)
    }

    /// Fragments that look like a query string.
    fn query_soup() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(
                &[
                    "code",
                    "state",
                    "iss",
                    "error",
                    "error_description",
                    "=",
                    "&",
                    "+",
                    "%",
                    "%0",
                    "%0d",
                    "%0A",
                    "%FF",
                    "%C3%A9",
                    "%E2%80",
                    "%63ode",
                    "access_denied",
                ][..]
            )
            .prop_map(str::to_owned),
            super::tricky_string(0..4),
        ];
        prop::collection::vec(piece, 0..20).prop_map(|v| v.concat())
    }

    fn check_parsed(q: &str) -> Result<(), TestCaseError> {
        match AuthorizationResponse::from_query(q) {
            Ok(AuthorizationResponse::Code { code, state, iss }) => {
                prop_assert!(!code.secret().is_empty());
                for v in [Some(code.secret()), state.as_deref(), iss.as_deref()]
                    .into_iter()
                    .flatten()
                {
                    prop_assert!(!v.chars().any(char::is_control));
                }
            }
            Ok(AuthorizationResponse::Error {
                description,
                state,
                iss,
                ..
            }) => {
                if let Some(d) = &description {
                    prop_assert!(d.chars().count() <= 300);
                    prop_assert!(!d.chars().any(char::is_control));
                }
                for v in [state.as_deref(), iss.as_deref()].into_iter().flatten() {
                    prop_assert!(!v.chars().any(char::is_control));
                }
            }
            Err(_) => {}
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn never_panics_on_any_string(q in any::<String>()) {
            check_parsed(&q)?;
        }

        #[test]
        fn never_panics_on_query_like_strings(q in query_soup()) {
            check_parsed(&q)?;
        }

        #[test]
        fn code_state_iss_round_trip(
            (c, pairs) in code_response().prop_flat_map(shuffled),
            every_byte in flags(),
            empty_segments in flags(),
        ) {
            let q = query(&pairs, &every_byte, &empty_segments);
            let r = AuthorizationResponse::from_query(&q);
            let Ok(AuthorizationResponse::Code { code, state, iss }) = r else {
                return Err(TestCaseError::fail(format!("{q:?} gave {r:?}")));
            };
            prop_assert_eq!(code.secret(), c.code.as_str());
            prop_assert_eq!(state, c.state);
            prop_assert_eq!(iss, c.iss);
        }

        #[test]
        fn errors_round_trip_and_win_over_code(
            error in prop_oneof![
                prop::sample::select(&["access_denied", "invalid_request", "server_error"][..])
                    .prop_map(str::to_owned),
                super::clean_string(0..20),
            ],
            description in prop::option::of(super::tricky_string(0..400)),
            code in prop::option::of(super::clean_string(0..10)),
            state in prop::option::of(super::clean_string(0..20)),
            every_byte in flags(),
        ) {
            let mut pairs = vec![("error".to_owned(), error.clone())];
            pairs.extend(description.clone().map(|d| ("error_description".to_owned(), d)));
            pairs.extend(code.map(|c| ("code".to_owned(), c)));
            pairs.extend(state.clone().map(|s| ("state".to_owned(), s)));
            let q = query(&pairs, &every_byte, &[false]);
            let r = AuthorizationResponse::from_query(&q);
            let Ok(AuthorizationResponse::Error { error: e, description: d, state: s, iss }) = r
            else {
                return Err(TestCaseError::fail(format!("{q:?} gave {r:?}")));
            };
            prop_assert_eq!(e, ErrorCode::from(error.as_str()));
            // The description is shown to people: control characters go, and it is cut short.
            let shown = description
                .map(|d| d.chars().filter(|c| !c.is_control()).take(300).collect::<String>());
            prop_assert_eq!(d, shown);
            prop_assert_eq!(s, state);
            prop_assert_eq!(iss, None);
        }

        /// RFC 6749 §3.1: parameters "MUST NOT be included more than once".
        #[test]
        fn duplicates_are_refused(
            (_, pairs) in code_response().prop_flat_map(shuffled),
            key in prop::sample::select(&KNOWN[..]),
            dup_values in prop::collection::vec(super::clean_string(0..10), 2),
            at in any::<prop::sample::Index>(),
            every_byte in flags(),
        ) {
            let mut pairs = pairs;
            let copies = if pairs.iter().any(|(k, _)| k == key) { 1 } else { 2 };
            for v in &dup_values[..copies] {
                let i = at.index(pairs.len() + 1);
                pairs.insert(i, (key.to_owned(), v.clone()));
            }
            let q = query(&pairs, &every_byte, &[false]);
            let r = AuthorizationResponse::from_query(&q).map(|_| ());
            prop_assert_eq!(r, Err(RedirectError::Repeated(key.to_owned())), "query {:?}", q);
        }
    }
}

/// Scopes (RFC 6749 §3.3).
mod scopes {
    use std::collections::BTreeSet;

    use mcp_auth_types::{Scope, ScopeSet};
    use proptest::prelude::*;

    /// `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.
    const SCOPE_TOKEN: &str = "[!#-\\[\\]-~]{1,12}";

    fn as_set(s: &ScopeSet) -> BTreeSet<String> {
        s.iter().map(|x| x.as_str().to_owned()).collect()
    }

    /// Sets over a small vocabulary, so unions overlap.
    fn small_set() -> impl Strategy<Value = ScopeSet> {
        prop::collection::vec(
            prop::sample::select(
                &[
                    "a",
                    "b",
                    "c",
                    "files:read",
                    "files:write",
                    "offline_access",
                    "x!#~",
                ][..],
            ),
            0..6,
        )
        .prop_map(|v| ScopeSet::from_strs(v).unwrap())
    }

    /// A character a scope token may not hold (space is the separator, so not here).
    fn bad_char() -> impl Strategy<Value = char> {
        prop_oneof![
            Just('"'),
            Just('\\'),
            Just('\u{7f}'),
            prop::char::range('\0', '\u{1f}'),
            prop::char::range('\u{80}', char::MAX),
        ]
    }

    proptest! {
        #[test]
        fn display_and_parse_round_trip(tokens in prop::collection::vec(SCOPE_TOKEN, 0..8)) {
            let set: ScopeSet = tokens.join(" ").parse().unwrap();
            let mut seen = BTreeSet::new();
            let deduped: Vec<&str> = tokens
                .iter()
                .map(String::as_str)
                .filter(|t| seen.insert(*t))
                .collect();
            prop_assert_eq!(set.to_string(), deduped.join(" "));
            prop_assert_eq!(set.to_string().parse::<ScopeSet>().unwrap(), set.clone());
            prop_assert_eq!(ScopeSet::from_strs(&tokens).unwrap(), set);
        }

        #[test]
        fn extra_spaces_are_tolerated(
            tokens in prop::collection::vec(SCOPE_TOKEN, 0..8),
            gaps in prop::collection::vec(" {1,3}", 9),
        ) {
            let mut spaced = gaps[0].clone();
            for (t, gap) in tokens.iter().zip(&gaps[1..]) {
                spaced.push_str(t);
                spaced.push_str(gap);
            }
            prop_assert_eq!(
                spaced.parse::<ScopeSet>().unwrap(),
                tokens.join(" ").parse::<ScopeSet>().unwrap()
            );
        }

        #[test]
        fn invalid_characters_are_refused(
            before in "[!#-\\[\\]-~]{0,6}",
            bad in bad_char(),
            after in "[!#-\\[\\]-~]{0,6}",
            others in prop::collection::vec(SCOPE_TOKEN, 0..3),
        ) {
            let token = format!("{before}{bad}{after}");
            prop_assert!(Scope::new(token.clone()).is_err());
            let mut all = others;
            all.push(token);
            prop_assert!(all.join(" ").parse::<ScopeSet>().is_err());
            prop_assert!(ScopeSet::from_strs(&all).is_err());
        }

        #[test]
        fn parse_never_panics(s in any::<String>()) {
            if let Ok(set) = s.parse::<ScopeSet>() {
                for t in set.iter() {
                    prop_assert!(Scope::new(t.as_str()).is_ok());
                }
                prop_assert_eq!(set.to_string().parse::<ScopeSet>().unwrap(), set);
            }
        }

        #[test]
        fn union_is_a_set_union(a in small_set(), b in small_set(), c in small_set()) {
            let ab = a.union(&b);
            // Idempotent.
            prop_assert_eq!(a.union(&a), a.clone());
            prop_assert_eq!(ab.union(&b), ab.clone());
            prop_assert_eq!(ab.union(&a), ab.clone());
            // Commutative and associative as sets (the order is the first operand's).
            prop_assert_eq!(as_set(&ab), as_set(&b.union(&a)));
            prop_assert_eq!(as_set(&ab.union(&c)), as_set(&a.union(&b.union(&c))));
            // Exactly the elements of both, once each, `a`'s first and in `a`'s order.
            let expected: BTreeSet<String> = as_set(&a).union(&as_set(&b)).cloned().collect();
            prop_assert_eq!(as_set(&ab), expected);
            prop_assert_eq!(ab.len(), as_set(&ab).len());
            prop_assert!(ab.is_superset(&a) && ab.is_superset(&b));
            prop_assert!(ab.iter().take(a.len()).eq(a.iter()));
        }
    }
}

/// URL newtypes.
mod urls {
    use mcp_auth_types::{HttpUrl, ResourceUrl};
    use proptest::prelude::*;

    fn pick(items: &'static [&'static str]) -> BoxedStrategy<String> {
        prop::sample::select(items).prop_map(str::to_owned).boxed()
    }

    /// Strings shaped like URLs, with the odd corners of the WHATWG parser: IDNA, IPv4
    /// shorthand, dot segments (also percent-encoded), empty ports, userinfo.
    fn url_soup() -> impl Strategy<Value = String> {
        let scheme = pick(&[
            "https://",
            "http://",
            "HTTPS://",
            "HtTp://",
            "ftp://",
            "javascript:",
            "https:",
            "https:/",
            "https:///",
            "",
            "file://",
        ]);
        let userinfo = prop_oneof![
            4 => Just(String::new()),
            1 => pick(&["user@", "u:p@", ":@", "@", "a%40b@"]),
        ];
        let host = prop_oneof![
            "[a-zA-Z0-9-]{1,8}(\\.[a-zA-Z0-9-]{1,8}){0,2}".boxed(),
            pick(&[
                "127.0.0.1",
                "[::1]",
                "[::ffff:127.0.0.1]",
                "0x7f.1",
                "127.1",
                "LOCALHOST",
                "a.localhost.",
                "xn--nxasmq6b",
                "bücher.de",
                "ＥＸＡＭＰＬＥ.com",
                "%41.com",
                "1.2.3.4.",
                "",
                "[",
                "a..b",
                "999999999999",
                "MCP.Example.COM",
                "ß.de",
                "xn--",
                "[fe80::1%25eth0]",
                "a_b.com",
            ]),
        ];
        let port = prop_oneof![
            3 => Just(String::new()),
            2 => (0u32..70000).prop_map(|p| format!(":{p}")),
            1 => pick(&[":", ":443", ":80", ":0443", ":x"]),
        ];
        let segment = prop_oneof![
            "[a-zA-Z0-9._~-]{0,6}".boxed(),
            pick(&[
                "", ".", "..", "%2e", "%2E%2e", ".%2E", "mcp", "é", "%zz", "%41", "\\", ";x",
                "a:b", "%2F", "@",
            ]),
        ];
        let path = prop::collection::vec(segment, 0..5).prop_map(|v| {
            if v.is_empty() {
                String::new()
            } else {
                format!("/{}", v.join("/"))
            }
        });
        let query = prop::option::of("[a-zA-Z0-9=&%/?é]{0,8}")
            .prop_map(|q| q.map(|q| format!("?{q}")).unwrap_or_default());
        let fragment = prop::option::of("[a-z/#?]{0,5}")
            .prop_map(|f| f.map(|f| format!("#{f}")).unwrap_or_default());
        (scheme, userinfo, host, port, path, query, fragment)
            .prop_map(|(s, u, h, p, pa, q, f)| format!("{s}{u}{h}{p}{pa}{q}{f}"))
    }

    fn any_url_input() -> impl Strategy<Value = String> {
        prop_oneof![3 => url_soup(), 1 => any::<String>()]
    }

    proptest! {
        #[test]
        fn http_url_parse_never_panics_and_keeps_the_string(s in any_url_input()) {
            if let Ok(u) = HttpUrl::parse(&s) {
                prop_assert_eq!(u.as_str(), s.as_str());
                prop_assert!(matches!(u.url().scheme(), "http" | "https"));
                let _ = (u.origin(), u.is_loopback(), u.require_secure(false), u.join("../x"));
            }
        }

        #[test]
        fn canonicalize_is_idempotent(s in any_url_input()) {
            if let Ok(c) = ResourceUrl::canonicalize(&s) {
                prop_assert_eq!(ResourceUrl::canonicalize(c.as_str()), Ok(c.clone()));
                // RFC 8707 §2: no fragment; and a canonical identifier is usable verbatim.
                prop_assert!(c.as_url().url().fragment().is_none());
                prop_assert_eq!(ResourceUrl::parse_exact(c.as_str()), Ok(c));
            }
        }

        #[test]
        fn covers_is_reflexive_and_the_origin_covers_everything(s in any_url_input()) {
            if let Ok(c) = ResourceUrl::canonicalize(&s) {
                prop_assert!(c.covers(&c), "{:?} does not cover itself", c);
                let origin = ResourceUrl::canonicalize(&c.as_url().origin()).unwrap();
                prop_assert!(origin.covers(&c), "{:?} does not cover {:?}", origin, c);
            }
        }
    }
}

/// Metadata and response JSON (RFC 8414, 9728, 7591, 6749 §5).
mod metadata_json {
    use mcp_auth_types::{
        AuthorizationServerMetadata, ClientInformation, ErrorResponse, ProtectedResourceMetadata,
        TokenResponse,
    };
    use proptest::prelude::*;
    use serde::Serialize;
    use serde::de::DeserializeOwned;
    use serde_json::{Map, Value, json};

    /// Every field name the five types know, so random documents hit them with wrong types.
    const KNOWN: &[&str] = &[
        // RFC 8414
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "registration_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "device_authorization_endpoint",
        "jwks_uri",
        "scopes_supported",
        "response_types_supported",
        "grant_types_supported",
        "token_endpoint_auth_methods_supported",
        "token_endpoint_auth_signing_alg_values_supported",
        "code_challenge_methods_supported",
        "authorization_response_iss_parameter_supported",
        "client_id_metadata_document_supported",
        "dpop_signing_alg_values_supported",
        // RFC 9728
        "resource",
        "authorization_servers",
        "bearer_methods_supported",
        "resource_name",
        // RFC 7591
        "client_id",
        "client_secret",
        "client_id_issued_at",
        "client_secret_expires_at",
        "registration_access_token",
        "registration_client_uri",
        "redirect_uris",
        "token_endpoint_auth_method",
        "grant_types",
        "response_types",
        "application_type",
        "client_name",
        "client_uri",
        "logo_uri",
        "scope",
        "software_id",
        "software_version",
        "jwks",
        // RFC 6749 §5
        "access_token",
        "token_type",
        "expires_in",
        "refresh_token",
        "id_token",
        "error",
        "error_description",
        "error_uri",
    ];

    fn json_string() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(
                &[
                    "",
                    "https://as.example.com",
                    "http://127.0.0.1:3/cb",
                    "javascript:x",
                    "S256",
                    "bearer",
                    "DPoP",
                    "3600",
                    " 12 ",
                    "-1",
                    "1e3",
                    "a b",
                    "a \"b",
                    "client_secret_post",
                    "invalid_grant",
                    "c1",
                ][..]
            )
            .prop_map(str::to_owned),
            super::tricky_string(0..12),
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(KNOWN).prop_map(str::to_owned),
            1 => "[a-z_]{1,10}",
            1 => super::tricky_string(0..6),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            prop_oneof![any::<f64>(), -1e3f64..1e20]
                .prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                    .map(Value::Number)),
            json_string().prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// A JSON object whose keys are mostly ones the types know, with any values.
    fn document() -> impl Strategy<Value = Value> {
        prop::collection::vec((key(), json_value()), 0..12)
            .prop_map(|kv| Value::Object(kv.into_iter().collect()))
    }

    /// Whatever a type accepts, it writes back out in a form it reads back unchanged.
    fn accepted_round_trips<T: Serialize + DeserializeOwned>(
        v: &Value,
    ) -> Result<(), TestCaseError> {
        let text = v.to_string();
        let from_text = serde_json::from_slice::<T>(text.as_bytes());
        let Ok(t) = serde_json::from_value::<T>(v.clone()) else {
            return Ok(());
        };
        prop_assert!(
            from_text.is_ok(),
            "accepted as a value but not as text: {}",
            text
        );
        let once = serde_json::to_value(&t).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let back: T = serde_json::from_value(once.clone())
            .map_err(|e| TestCaseError::fail(format!("{e}: re-reading {once}")))?;
        prop_assert_eq!(serde_json::to_value(&back).unwrap(), once);
        Ok(())
    }

    fn all_types(v: &Value) -> Result<(), TestCaseError> {
        accepted_round_trips::<AuthorizationServerMetadata>(v)?;
        accepted_round_trips::<ProtectedResourceMetadata>(v)?;
        accepted_round_trips::<ClientInformation>(v)?;
        accepted_round_trips::<TokenResponse>(v)?;
        accepted_round_trips::<ErrorResponse>(v)?;
        Ok(())
    }

    /// Extension fields: names no type knows, any values.
    fn extras() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec(
            (
                prop_oneof!["x_[a-z_]{0,10}", super::tricky_string(0..8)]
                    .prop_filter("unknown name", |k| !KNOWN.contains(&k.as_str())),
                json_value(),
            ),
            0..6,
        )
        .prop_map(|kv| kv.into_iter().collect())
    }

    /// Parses `base` + `extras` as `T`, checks that `extra` holds exactly the extras, and that
    /// they survive serializing and parsing again.
    fn extras_survive<T: Serialize + DeserializeOwned>(
        base: Value,
        extras: &Map<String, Value>,
        extra_of: impl Fn(&T) -> &Map<String, Value>,
    ) -> Result<(), TestCaseError> {
        let Value::Object(mut doc) = base else {
            unreachable!("bases are objects")
        };
        doc.extend(extras.clone());
        let t: T = serde_json::from_value(Value::Object(doc))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(extra_of(&t), extras);
        let written = serde_json::to_value(&t).unwrap();
        for (k, v) in extras {
            prop_assert_eq!(written.get(k), Some(v));
        }
        let text = serde_json::to_string(&t).unwrap();
        let back: T =
            serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Through text, compare with what serde_json itself reads back: without its
        // `float_roundtrip` feature it may move a float by one ULP, which is not ours to fix.
        let reread: Map<String, Value> =
            serde_json::from_str(&serde_json::to_string(extras).unwrap()).unwrap();
        prop_assert_eq!(extra_of(&back), &reread);
        Ok(())
    }

    proptest! {
        #[test]
        fn any_json_value_never_panics(v in json_value()) {
            all_types(&v)?;
        }

        #[test]
        fn documents_with_known_fields_never_panic(v in document()) {
            all_types(&v)?;
        }

        #[test]
        fn arbitrary_text_never_panics(s in any::<String>()) {
            let b = s.as_bytes();
            let _ = serde_json::from_slice::<AuthorizationServerMetadata>(b);
            let _ = serde_json::from_slice::<ProtectedResourceMetadata>(b);
            let _ = serde_json::from_slice::<ClientInformation>(b);
            let _ = serde_json::from_slice::<TokenResponse>(b);
            let _ = serde_json::from_slice::<ErrorResponse>(b);
        }

        #[test]
        fn unknown_fields_survive(extras in extras()) {
            extras_survive::<AuthorizationServerMetadata>(
                json!({"issuer": "https://as.example.com", "token_endpoint": "https://as.example.com/t"}),
                &extras,
                |m| &m.extra,
            )?;
            extras_survive::<ProtectedResourceMetadata>(
                json!({"resource": "https://mcp.example.com/mcp",
                       "authorization_servers": ["https://as.example.com"]}),
                &extras,
                |m| &m.extra,
            )?;
            extras_survive::<ClientInformation>(
                json!({"client_id": "c1", "client_secret": "s",
                       "redirect_uris": ["http://127.0.0.1:3/cb"]}),
                &extras,
                |c| &c.metadata.extra,
            )?;
            extras_survive::<TokenResponse>(
                json!({"access_token": "at", "token_type": "Bearer", "expires_in": 3600,
                       "scope": "a b"}),
                &extras,
                |t| &t.extra,
            )?;
            extras_survive::<ErrorResponse>(
                json!({"error": "invalid_grant", "error_description": "expired"}),
                &extras,
                |e| &e.extra,
            )?;
        }
    }
}

/// PKCE (RFC 7636).
mod pkce {
    use mcp_auth_types::{PkceChallenge, PkceVerifier};
    use proptest::prelude::*;

    /// RFC 7636 §4.1: `code-verifier = 43*128unreserved`.
    const VERIFIER: &str = "[A-Za-z0-9._~-]{43,128}";
    const UNRESERVED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~";

    fn is_verifier(s: &str) -> bool {
        (43..=128).contains(&s.len()) && s.bytes().all(|b| UNRESERVED.contains(&b))
    }

    proptest! {
        #[test]
        fn generated_verifiers_are_valid_and_verify(other in VERIFIER) {
            let v = PkceVerifier::generate();
            prop_assert_eq!(v.secret().len(), 43);
            prop_assert!(is_verifier(v.secret()));
            prop_assert!(PkceVerifier::from_string(v.secret().to_owned()).is_some());
            let ch = v.challenge();
            // BASE64URL of a SHA-256 digest without padding (RFC 7636 §4.2).
            prop_assert_eq!(ch.as_str().len(), 43);
            prop_assert!(ch.as_str().bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            prop_assert!(ch.verify(v.secret()));
            prop_assert!(PkceChallenge::from_string(ch.as_str().to_owned()).verify(v.secret()));
            // Another verifier, in either direction.
            prop_assume!(other != v.secret());
            prop_assert!(!ch.verify(&other));
            let o = PkceVerifier::from_string(other.clone()).unwrap();
            prop_assert!(o.challenge().verify(&other));
            prop_assert!(!o.challenge().verify(v.secret()));
        }

        #[test]
        fn near_misses_are_rejected(
            at in any::<prop::sample::Index>(),
            replacement in prop::sample::select(UNRESERVED),
            s in any::<String>(),
        ) {
            let v = PkceVerifier::generate();
            let ch = v.challenge();
            let secret = v.secret().as_bytes();
            let i = at.index(secret.len());
            let mut changed = secret.to_vec();
            changed[i] = replacement;
            let changed = String::from_utf8(changed).unwrap();
            prop_assert_eq!(ch.verify(&changed), changed == v.secret());
            prop_assert!(!ch.verify(&v.secret()[..i]));
            let longer = format!("{}{}", v.secret(), replacement as char);
            prop_assert!(!ch.verify(&longer));
            prop_assert!(!ch.verify(ch.as_str()));
            prop_assert_eq!(ch.verify(&s), s == v.secret());
        }

        #[test]
        fn from_string_accepts_exactly_rfc7636_verifiers(
            s in prop_oneof![VERIFIER, "[A-Za-z0-9._~+/=-]{40,130}", any::<String>()],
        ) {
            prop_assert_eq!(PkceVerifier::from_string(s.clone()).is_some(), is_verifier(&s));
        }
    }
}
