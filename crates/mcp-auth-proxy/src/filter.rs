//! `--ignore-tool GLOB`: tools hidden from the local client. `*` matches any run of
//! characters (mcp-remote's pattern language); everything else matches itself.

use serde_json::Value;

/// The set of ignore patterns.
#[derive(Debug, Clone, Default)]
pub struct ToolFilter {
    patterns: Vec<String>,
}

impl ToolFilter {
    /// A filter hiding every tool that matches one of `patterns`.
    pub fn new(patterns: impl IntoIterator<Item = String>) -> Self {
        Self {
            patterns: patterns.into_iter().filter(|p| !p.is_empty()).collect(),
        }
    }

    /// Whether nothing is hidden.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Whether `name` is hidden.
    pub fn ignores(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| glob_match(p, name))
    }

    /// Removes hidden tools from a `tools/list` response in place; returns how many.
    pub fn filter_list_response(&self, msg: &mut Value) -> usize {
        let Some(tools) = msg
            .get_mut("result")
            .and_then(|r| r.get_mut("tools"))
            .and_then(Value::as_array_mut)
        else {
            return 0;
        };
        let before = tools.len();
        tools.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_none_or(|n| !self.ignores(n))
        });
        before - tools.len()
    }
}

/// `*`-only glob matching, linear in practice (greedy with one backtrack point).
fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs_match_like_mcp_remote() {
        assert!(glob_match("delete*", "deleteTask"));
        assert!(!glob_match("*account", "getAccount"));
        assert!(glob_match("*Account", "getAccount"));
        assert!(glob_match("exactTool", "exactTool"));
        assert!(!glob_match("exactTool", "exactTools"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("**", "anything"));
    }

    #[test]
    fn filters_tools_list() {
        let f = ToolFilter::new(["delete*".to_owned(), "secret".to_owned()]);
        let mut msg = json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"deleteUser"},{"name":"list"},{"name":"secret"},{"name":"secrets"}]}});
        assert_eq!(f.filter_list_response(&mut msg), 2);
        let names: Vec<&str> = msg["result"]["tools"]
            .as_array()
            .map(|a| a.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["list", "secrets"]);
        let mut err = json!({"jsonrpc":"2.0","id":1,"error":{"code":1,"message":"x"}});
        assert_eq!(f.filter_list_response(&mut err), 0);
    }

    proptest::proptest! {
        #[test]
        fn literal_patterns_match_only_themselves(a in "[a-z]{0,8}", b in "[a-z]{0,8}") {
            proptest::prop_assert_eq!(glob_match(&a, &b), a == b);
        }

        #[test]
        fn star_suffix_is_prefix_match(a in "[a-z]{0,6}", b in "[a-z]{0,10}") {
            proptest::prop_assert_eq!(glob_match(&format!("{a}*"), &b), b.starts_with(&a));
        }
    }
}
