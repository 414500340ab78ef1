//! The approvals policy (`approvals.toml`, PROTOCOL §14): rules that
//! decide a permission request at once, by agent, tool, path pattern (the
//! lock pattern rule), command prefix and session role.
//!
//! Pure: [`Policy::parse`] reads text the caller loaded, [`Policy::decide`]
//! looks at a request; nothing here reads a file or a clock. The first
//! rule, in file order, whose conditions all hold decides.

use coord_proto::approval::{ApprovalRequest, Decision};
use coord_proto::pattern::matches;
use serde::{Deserialize, Serialize};

/// The verdict a policy rule gives a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RuleVerdict {
    /// Allow or deny.
    pub decision: coord_proto::approval::Decision,
    /// The rule's name.
    pub rule: String,
    /// What the model reads (a deny's reason).
    pub reason: String,
}

/// One name or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Any of these.
    Many(Vec<String>),
}

impl OneOrMany {
    fn has(&self, v: &str) -> bool {
        match self {
            OneOrMany::One(x) => x == v,
            OneOrMany::Many(xs) => xs.iter().any(|x| x == v),
        }
    }
}

/// What a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleDecision {
    /// Run the tool.
    Allow,
    /// Refuse it; the model reads the rule's reason.
    Deny,
}

/// One `[[rule]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Its name, named by the decision it makes; unique in the file.
    pub name: String,
    /// Allow or deny.
    pub decision: RuleDecision,
    /// The agent (`claude`, `codex`, `gemini`).
    #[serde(default)]
    pub agent: Option<String>,
    /// The tool or tools (`Write`, `["Edit", "Write"]`).
    #[serde(default)]
    pub tool: Option<OneOrMany>,
    /// A lock pattern every written path must match (`tmp/**`).
    #[serde(default)]
    pub path: Option<String>,
    /// The command must start with these whole words (`cargo test`).
    #[serde(default)]
    pub command: Option<String>,
    /// The session's role.
    #[serde(default)]
    pub role: Option<OneOrMany>,
    /// What the model reads when this rule denies.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The rules, in file order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `[[rule]]` tables.
    #[serde(default)]
    pub rule: Vec<Rule>,
}

/// Why a rules file was not taken.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PolicyError {
    /// Not TOML, or not the documented shape (line and column included).
    #[error("{0}")]
    Syntax(String),
    /// Two rules share a name.
    #[error("two rules are named {0:?}; names must be unique")]
    DuplicateName(String),
    /// A rule whose name is empty.
    #[error("rule {0} has an empty name")]
    EmptyName(usize),
}

impl Policy {
    /// Parses an `approvals.toml`.
    ///
    /// # Errors
    /// [`PolicyError`]: bad TOML, an unknown field, a duplicate or empty
    /// name.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let p: Policy = toml::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in p.rule.iter().enumerate() {
            if r.name.trim().is_empty() {
                return Err(PolicyError::EmptyName(i + 1));
            }
            if !seen.insert(r.name.as_str()) {
                return Err(PolicyError::DuplicateName(r.name.clone()));
            }
        }
        Ok(p)
    }

    /// The first rule that decides `request` of a session with `role`.
    pub fn decide(&self, request: &ApprovalRequest, role: &str) -> Option<RuleVerdict> {
        let rule = self.rule.iter().find(|r| r.holds(request, role))?;
        let decision = match rule.decision {
            RuleDecision::Allow => Decision::Allow,
            RuleDecision::Deny => Decision::Deny,
        };
        Some(RuleVerdict {
            decision,
            rule: rule.name.clone(),
            reason: match (&rule.reason, decision) {
                (Some(r), _) => r.clone(),
                (None, Decision::Deny) => {
                    format!("denied by coord's approvals rule {:?}", rule.name)
                }
                (None, _) => String::new(),
            },
        })
    }
}

impl Rule {
    fn holds(&self, r: &ApprovalRequest, role: &str) -> bool {
        self.agent.as_ref().is_none_or(|a| *a == r.agent)
            && self.tool.as_ref().is_none_or(|t| t.has(&r.tool))
            && self.role.as_ref().is_none_or(|x| x.has(role))
            && self
                .path
                .as_ref()
                .is_none_or(|p| !r.paths.is_empty() && r.paths.iter().all(|path| matches(p, path)))
            && self.command.as_ref().is_none_or(|prefix| {
                r.command
                    .as_deref()
                    .is_some_and(|c| starts_with_words(c.trim(), prefix.trim()))
            })
    }
}

/// `command` is `prefix` or begins with it followed by whitespace.
fn starts_with_words(command: &str, prefix: &str) -> bool {
    match command.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(char::is_whitespace),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(tool: &str, paths: &[&str], command: Option<&str>) -> ApprovalRequest {
        ApprovalRequest {
            approval_id: "ap-1".into(),
            agent: "claude".into(),
            tool: tool.into(),
            summary: String::new(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            command: command.map(str::to_string),
            cwd: None,
            tool_use_id: None,
            input_bytes: 0,
        }
    }

    const RULES: &str = r#"
[[rule]]
name = "no secrets"
decision = "deny"
path = "**/.env"
reason = "never touch .env files"

[[rule]]
name = "scratch"
decision = "allow"
tool = ["Write", "Edit"]
path = "tmp/**"

[[rule]]
name = "tests"
decision = "allow"
tool = "Bash"
command = "cargo test"
role = ["claude", "worker"]
"#;

    #[test]
    fn the_first_matching_rule_decides() {
        let p = Policy::parse(RULES).expect("parses");
        let v = p
            .decide(&ask("Write", &["tmp/a/b.rs"], None), "claude")
            .expect("decides");
        assert_eq!((v.decision, v.rule.as_str()), (Decision::Allow, "scratch"));
        // Every path must match.
        assert!(p
            .decide(&ask("Write", &["tmp/a.rs", "src/b.rs"], None), "claude")
            .is_none());
        // No paths: a path rule does not hold.
        assert!(p.decide(&ask("Write", &[], None), "claude").is_none());
        let v = p
            .decide(&ask("Write", &["tmp/.env"], None), "claude")
            .expect("deny");
        assert_eq!(v.rule, "no secrets", "file order decides");
        assert_eq!(v.reason, "never touch .env files");
        // Command prefixes are whole words; the role counts.
        assert!(p
            .decide(&ask("Bash", &[], Some("cargo test -p x")), "claude")
            .is_some());
        assert!(p
            .decide(&ask("Bash", &[], Some("cargo testify")), "claude")
            .is_none());
        assert!(p
            .decide(&ask("Bash", &[], Some("cargo test")), "reviewer")
            .is_none());
        assert!(p.decide(&ask("Read", &["tmp/x"], None), "claude").is_none());
    }

    #[test]
    fn bad_files_are_named() {
        assert!(matches!(
            Policy::parse("[[rule]]\nname='a'\n"),
            Err(PolicyError::Syntax(_))
        ));
        let e = Policy::parse("[[rule]]\nname='a'\ndecision='allow'\ncolour='red'\n")
            .expect_err("unknown field");
        assert!(e.to_string().contains("colour"), "{e}");
        assert_eq!(
            Policy::parse(
                "[[rule]]\nname='a'\ndecision='allow'\n[[rule]]\nname='a'\ndecision='deny'\n"
            ),
            Err(PolicyError::DuplicateName("a".into()))
        );
        assert!(Policy::parse("[[rule]]\nname='a'\ndecision='maybe'\n").is_err());
        assert_eq!(Policy::parse("").expect("empty"), Policy::default());
    }
}
