//! Findings, the report that collects them, and its two renderings: JSON for CI (serde) and
//! a numbered step list for people ([`Report::render`]). Pure: no I/O.

use std::fmt::Write as _;

use serde::Serialize;

/// The stage of the discovery and authorization chain a finding belongs to. The order of the
/// variants is the order of the chain, and of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The unauthenticated MCP request and its `401` challenge.
    Challenge,
    /// Protected resource metadata (RFC 9728).
    ResourceMetadata,
    /// Authorization server metadata (RFC 8414 / OpenID Connect discovery) and what it offers.
    AuthorizationServer,
    /// Client registration: client ID metadata documents, RFC 7591, pre-registration.
    Registration,
    /// CORS, for MCP clients that run in a browser.
    Cors,
    /// `--login`: a real authorization and an MCP tool call.
    Login,
}

impl Step {
    /// The heading of the step in the human report.
    pub fn title(self) -> &'static str {
        match self {
            Step::Challenge => "Unauthenticated request and its 401 challenge",
            Step::ResourceMetadata => "Protected resource metadata (RFC 9728)",
            Step::AuthorizationServer => "Authorization server metadata (RFC 8414)",
            Step::Registration => "Client registration",
            Step::Cors => "CORS for browser-based clients",
            Step::Login => "Login and tool call",
        }
    }
}

/// How binding the rule a finding checks is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A MUST of a spec: failing it makes the verdict (and the exit status) a failure.
    Must,
    /// A SHOULD, or what interoperable clients rely on.
    Should,
    /// Information: what the server offers.
    Info,
}

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The server does what the rule asks.
    Pass,
    /// It does not.
    Fail,
    /// Worth a look: a SHOULD not met, a fallback in use, a feature absent.
    Warn,
    /// Not checked (an earlier step failed, or the check does not apply).
    Skip,
}

impl Status {
    /// The mark in the human report.
    pub fn mark(self) -> &'static str {
        match self {
            Status::Pass => "✓",
            Status::Fail => "✗",
            Status::Warn => "!",
            Status::Skip => "–",
        }
    }
}

/// One HTTP request doctor made and what came back, as shown in the report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// `GET`, `POST`, `OPTIONS`.
    pub method: String,
    /// The URL requested.
    pub url: String,
    /// What was sent, in a few words (`initialize, no Authorization header`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
    /// The HTTP status, `None` when no response came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The response headers doctor looks at (lower-case names).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
    /// The start of the body (at most [`Exchange::BODY_EXCERPT`] bytes; secrets redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Why no response came (connection refused, timeout…).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Exchange {
    /// The longest body excerpt kept, in bytes.
    pub const BODY_EXCERPT: usize = 2048;

    /// A response header, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One check and its outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier, `step.check` (`prm.resource-match`), for CI to match on.
    pub id: &'static str,
    /// The step it belongs to.
    pub step: Step,
    /// How binding the rule is.
    pub severity: Severity,
    /// The outcome.
    pub status: Status,
    /// The spec section checked (`RFC 9728 §3.3`).
    pub spec: &'static str,
    /// What was found, in one sentence.
    pub summary: String,
    /// What to change on the server, for failures and warnings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The request behind the finding, when one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Exchange>,
}

impl Finding {
    fn new(
        id: &'static str,
        step: Step,
        severity: Severity,
        status: Status,
        spec: &'static str,
        summary: impl Into<String>,
    ) -> Self {
        Self {
            id,
            step,
            severity,
            status,
            spec,
            summary: summary.into(),
            fix: None,
            exchange: None,
        }
    }

    /// A passed check.
    pub fn pass(
        id: &'static str,
        step: Step,
        severity: Severity,
        spec: &'static str,
        summary: impl Into<String>,
    ) -> Self {
        Self::new(id, step, severity, Status::Pass, spec, summary)
    }

    /// A failed check and what to fix.
    pub fn fail(
        id: &'static str,
        step: Step,
        severity: Severity,
        spec: &'static str,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, step, severity, Status::Fail, spec, summary).with_fix(fix)
    }

    /// A warning and what to change.
    pub fn warn(
        id: &'static str,
        step: Step,
        severity: Severity,
        spec: &'static str,
        summary: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(id, step, severity, Status::Warn, spec, summary).with_fix(fix)
    }

    /// A check that was not made, and why.
    pub fn skip(
        id: &'static str,
        step: Step,
        severity: Severity,
        spec: &'static str,
        summary: impl Into<String>,
    ) -> Self {
        Self::new(id, step, severity, Status::Skip, spec, summary)
    }

    /// Sets the fix line.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Attaches the request behind the finding.
    pub fn with_exchange(mut self, exchange: Exchange) -> Self {
        self.exchange = Some(exchange);
        self
    }

    /// Whether this finding is a MUST violation.
    pub fn is_must_violation(&self) -> bool {
        self.status == Status::Fail && self.severity == Severity::Must
    }

    /// Whether this finding counts as a warning: a warning, or a failed SHOULD.
    pub fn is_warning(&self) -> bool {
        self.status == Status::Warn || (self.status == Status::Fail && !self.is_must_violation())
    }
}

/// The counts behind the last line of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Failed MUST checks.
    pub must_violations: usize,
    /// Warnings and failed SHOULD checks.
    pub warnings: usize,
    /// Passed checks.
    pub passed: usize,
    /// No MUST violation.
    pub ok: bool,
}

impl Verdict {
    /// Counts `findings`.
    pub fn of(findings: &[Finding]) -> Self {
        let must_violations = findings.iter().filter(|f| f.is_must_violation()).count();
        Self {
            must_violations,
            warnings: findings.iter().filter(|f| f.is_warning()).count(),
            passed: findings.iter().filter(|f| f.status == Status::Pass).count(),
            ok: must_violations == 0,
        }
    }
}

/// Everything doctor found about one server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The MCP server URL examined.
    pub target: String,
    /// The findings, in the order they were made.
    pub findings: Vec<Finding>,
    /// The counts.
    pub verdict: Verdict,
}

impl Report {
    /// A report over `findings`, with its verdict.
    pub fn new(target: impl Into<String>, findings: Vec<Finding>) -> Self {
        let verdict = Verdict::of(&findings);
        Self {
            target: target.into(),
            findings,
            verdict,
        }
    }

    /// Adds findings and recounts.
    pub fn extend(&mut self, findings: impl IntoIterator<Item = Finding>) {
        self.findings.extend(findings);
        self.verdict = Verdict::of(&self.findings);
    }

    /// The finding with this id (the first, when a check ran more than once).
    pub fn finding(&self, id: &str) -> Option<&Finding> {
        self.findings.iter().find(|f| f.id == id)
    }

    /// The report for people: steps numbered in chain order, each finding with its mark,
    /// the request it came from and what came back, the fix under each failure and warning,
    /// and the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "mcp-auth doctor {}", self.target);
        let mut steps: Vec<Step> = self.findings.iter().map(|f| f.step).collect();
        steps.sort();
        steps.dedup();
        for (n, step) in steps.iter().enumerate() {
            let _ = writeln!(out, "\n{}. {}", n + 1, step.title());
            for f in self.findings.iter().filter(|f| f.step == *step) {
                if let Some(x) = &f.exchange {
                    render_exchange(&mut out, x);
                }
                let _ = writeln!(
                    out,
                    "   {} {:<28} {}  [{}{}]",
                    f.status.mark(),
                    f.id,
                    f.summary,
                    match f.severity {
                        Severity::Must => "MUST · ",
                        Severity::Should => "SHOULD · ",
                        Severity::Info => "",
                    },
                    f.spec
                );
                if let (Some(fix), Status::Fail | Status::Warn) = (&f.fix, f.status) {
                    let _ = writeln!(out, "       fix: {fix}");
                }
            }
        }
        let v = &self.verdict;
        let _ = writeln!(
            out,
            "\nVerdict: {} MUST violation{}, {} warning{}, {} passed — {}",
            v.must_violations,
            plural(v.must_violations),
            v.warnings,
            plural(v.warnings),
            v.passed,
            if v.ok {
                "no MUST violation found."
            } else {
                "this server does not meet the MCP authorization spec."
            }
        );
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn render_exchange(out: &mut String, x: &Exchange) {
    let _ = write!(out, "   → {} {}", x.method, x.url);
    if let Some(s) = &x.sent {
        let _ = write!(out, " ({s})");
    }
    out.push('\n');
    match (x.status, &x.error) {
        (Some(status), _) => {
            let _ = write!(out, "   ← {status}");
            for (k, v) in &x.headers {
                let _ = write!(out, "; {k}: {}", one_line(v, 160));
            }
            out.push('\n');
            if let Some(b) = &x.body
                && !b.trim().is_empty()
            {
                let _ = writeln!(out, "     {}", one_line(b, 200));
            }
        }
        (None, Some(e)) => {
            let _ = writeln!(out, "   ← no response: {}", one_line(e, 200));
        }
        (None, None) => {}
    }
}

/// `s` on one line, whitespace runs collapsed, cut at `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= max {
        collapsed
    } else {
        let mut cut: String = collapsed.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn findings() -> Vec<Finding> {
        vec![
            Finding::pass(
                "challenge.status",
                Step::Challenge,
                Severity::Must,
                "RFC 6750 §3",
                "401",
            ),
            Finding::fail(
                "as.pkce-s256",
                Step::AuthorizationServer,
                Severity::Must,
                "MCP",
                "no S256",
                "add S256",
            ),
            Finding::fail(
                "as.x",
                Step::AuthorizationServer,
                Severity::Should,
                "X",
                "should",
                "f",
            ),
            Finding::warn("cors.y", Step::Cors, Severity::Should, "Y", "warn", "f"),
            Finding::skip("login.z", Step::Login, Severity::Must, "Z", "skipped"),
        ]
    }

    #[test]
    fn verdict_counts_must_violations_and_warnings() {
        let v = Verdict::of(&findings());
        assert_eq!(
            v,
            Verdict {
                must_violations: 1,
                warnings: 2,
                passed: 1,
                ok: false
            }
        );
        assert!(Verdict::of(&findings()[..1]).ok);
    }

    #[test]
    fn human_report_numbers_steps_and_shows_fixes() {
        let mut fs = findings();
        fs[0].exchange = Some(Exchange {
            method: "POST".into(),
            url: "http://127.0.0.1:1/mcp".into(),
            sent: Some("initialize".into()),
            status: Some(401),
            headers: vec![("www-authenticate".into(), "Bearer".into())],
            body: None,
            error: None,
        });
        let text = Report::new("http://127.0.0.1:1/mcp", fs).render();
        assert!(text.contains("1. Unauthenticated request"), "{text}");
        assert!(text.contains("2. Authorization server metadata"), "{text}");
        assert!(
            text.contains("→ POST http://127.0.0.1:1/mcp (initialize)"),
            "{text}"
        );
        assert!(text.contains("← 401; www-authenticate: Bearer"), "{text}");
        assert!(text.contains("✗ as.pkce-s256"), "{text}");
        assert!(text.contains("fix: add S256"), "{text}");
        assert!(
            text.contains("Verdict: 1 MUST violation, 2 warnings, 1 passed"),
            "{text}"
        );
    }

    #[test]
    fn json_names_ids_and_statuses() {
        let v = serde_json::to_value(Report::new("t", findings())).unwrap();
        assert_eq!(v["findings"][1]["id"], "as.pkce-s256");
        assert_eq!(v["findings"][1]["status"], "fail");
        assert_eq!(v["findings"][1]["severity"], "must");
        assert_eq!(v["findings"][1]["step"], "authorization_server");
        assert_eq!(v["verdict"]["must_violations"], 1);
    }

    #[test]
    fn one_line_cuts_long_text() {
        assert_eq!(one_line("a \n  b", 10), "a b");
        assert_eq!(one_line("abcdef", 3), "abc…");
    }
}
