//! What a coding agent's hook says, in coord's terms: one JSON object on
//! the hook's stdin becomes one [`Happened`] (docs/AGENTS.md has the table
//! per agent and event).
//!
//! Pure: no I/O, no clock. Unknown events and fields are not errors (an
//! agent newer than this table adds some); a payload that is not a JSON
//! object, or lacks the agent's session id, is.

use serde_json::Value;

/// The coding agents coord takes hooks from.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Agent {
    /// Claude Code (`.claude/settings.json`).
    Claude,
    /// Codex CLI (`hooks.json`).
    Codex,
    /// Gemini CLI (`.gemini/settings.json`).
    Gemini,
}

impl Agent {
    /// The agent's name as in session ids and evidence (`claude`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Agent::Claude => "claude",
            Agent::Codex => "codex",
            Agent::Gemini => "gemini",
        }
    }
}

/// What happened, as coord sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Happened {
    /// The agent's session started (`startup`) or came back (`resume`,
    /// `clear`, `compact`).
    Start {
        /// Why, as the agent says.
        source: String,
    },
    /// A prompt was submitted: the agent works.
    Prompt,
    /// A tool is about to run.
    ToolBefore {
        /// The tool's name.
        tool: String,
        /// The files it will write, as the agent gives them (absolute or
        /// relative to `cwd`); empty for a tool that writes none.
        edits: Vec<String>,
        /// One line about it: its path or command.
        about: String,
    },
    /// A tool ran.
    ToolAfter {
        /// The tool's name.
        tool: String,
    },
    /// The agent asks for permission to run a tool: an approval
    /// (PROTOCOL §14) that someone may decide for it.
    Permission {
        /// The tool's name.
        tool: String,
        /// One line about it: its path or command.
        about: String,
        /// The files it would write, as the agent gives them.
        edits: Vec<String>,
        /// The command it would run (`Bash`).
        command: Option<String>,
        /// The tool's whole input.
        input: Value,
    },
    /// The agent waits for a human: a permission dialog or a question.
    NeedsInput {
        /// What it waits for.
        about: String,
    },
    /// The turn ended; the agent waits for its next prompt.
    TurnEnded,
    /// The agent's session ended.
    End {
        /// Why, as the agent says (`exit`, `logout`, …).
        reason: String,
    },
    /// An event coord takes no action on.
    Other,
}

/// One hook event: the agent's own session id, where it runs, and what
/// happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HookEvent {
    /// The hook's event name as the agent sent it (`PreToolUse`).
    pub(crate) name: String,
    /// The agent's session id.
    pub(crate) session_id: String,
    /// The agent's working directory.
    pub(crate) cwd: Option<String>,
    /// Its transcript (JSONL), if it names one.
    pub(crate) transcript: Option<String>,
    /// The agent's id of the tool call, when the payload has one.
    pub(crate) tool_use_id: Option<String>,
    /// What happened.
    pub(crate) happened: Happened,
}

/// Tools that write files, per agent, and how their input names the file.
fn edited_paths(agent: Agent, tool: &str, input: &Value) -> Vec<String> {
    let field = |k: &str| input.get(k).and_then(Value::as_str).map(str::to_string);
    match (agent, tool) {
        (Agent::Claude, "Write" | "Edit" | "MultiEdit") => field("file_path").into_iter().collect(),
        (Agent::Claude, "NotebookEdit") => field("notebook_path").into_iter().collect(),
        (Agent::Gemini, "write_file" | "replace") => field("file_path")
            .or_else(|| field("absolute_path"))
            .into_iter()
            .collect(),
        (Agent::Codex, "apply_patch") => {
            let patch = field("input")
                .or_else(|| field("patch"))
                .or_else(|| field("command"))
                .unwrap_or_default();
            patch_paths(&patch)
        }
        // Codex runs `apply_patch <<'EOF' … EOF` through its shell tool and
        // reports it as `Bash` (seen with Codex 0.169).
        (Agent::Codex, "Bash" | "shell" | "exec_command") => {
            let command = field("command")
                .or_else(|| field("cmd"))
                .unwrap_or_default();
            let first = command.split_whitespace().next().unwrap_or("");
            if matches!(first, "apply_patch" | "applypatch") {
                patch_paths(&command)
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// The files an `apply_patch` patch touches: its `*** Add File:`,
/// `*** Update File:`, `*** Delete File:` and `*** Move to:` lines.
pub(crate) fn patch_paths(patch: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in patch.lines() {
        let rest = [
            "*** Add File: ",
            "*** Update File: ",
            "*** Delete File: ",
            "*** Move to: ",
        ]
        .iter()
        .find_map(|p| line.strip_prefix(p));
        if let Some(p) = rest.map(str::trim).filter(|p| !p.is_empty()) {
            if !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        }
    }
    out
}

/// One line about a tool call: its path, command or pattern.
fn about_tool(tool: &str, input: &Value) -> String {
    let first = [
        "file_path",
        "notebook_path",
        "command",
        "path",
        "pattern",
        "url",
        "absolute_path",
    ]
    .iter()
    .find_map(|k| input.get(*k).and_then(Value::as_str));
    let line = match first {
        Some(v) => format!("{tool} {}", v.lines().next().unwrap_or("")),
        None => tool.to_string(),
    };
    short(&line)
}

/// At most 200 bytes of one line, on a character boundary.
fn short(s: &str) -> String {
    let s = s.lines().next().unwrap_or("");
    if s.len() <= 200 {
        return s.to_string();
    }
    let mut end = 200;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Parses one hook payload of `agent`.
///
/// # Errors
/// A payload that is not a JSON object, or names no session.
pub(crate) fn parse(agent: Agent, payload: &Value) -> Result<HookEvent, String> {
    let obj = payload
        .as_object()
        .ok_or_else(|| "the hook's input is not a JSON object".to_string())?;
    let text = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
    let name = text("hook_event_name").unwrap_or_default();
    let session_id = text("session_id")
        .filter(|s| !s.is_empty())
        .ok_or_else(|| format!("the {name:?} hook's input names no session_id"))?;
    let tool = text("tool_name").unwrap_or_default();
    let input = obj.get("tool_input").cloned().unwrap_or(Value::Null);
    let happened = match name.as_str() {
        "SessionStart" => Happened::Start {
            source: text("source").unwrap_or_else(|| "startup".into()),
        },
        "UserPromptSubmit" | "BeforeAgent" => Happened::Prompt,
        "PreToolUse" | "BeforeTool" => Happened::ToolBefore {
            edits: edited_paths(agent, &tool, &input),
            about: about_tool(&tool, &input),
            tool,
        },
        "PostToolUse" | "AfterTool" => Happened::ToolAfter { tool },
        "PermissionRequest" => Happened::Permission {
            about: about_tool(&tool, &input),
            edits: edited_paths(agent, &tool, &input),
            command: input
                .get("command")
                .and_then(Value::as_str)
                .map(str::to_string),
            input,
            tool,
        },
        "Notification" => {
            let kind = text("notification_type").unwrap_or_default();
            let message = text("message").unwrap_or_default();
            match kind.as_str() {
                "permission_prompt" | "elicitation_dialog" | "ToolPermission" => {
                    Happened::NeedsInput {
                        about: short(if message.is_empty() { &kind } else { &message }),
                    }
                }
                "idle_prompt" => Happened::TurnEnded,
                _ => Happened::Other,
            }
        }
        "Stop" | "AfterAgent" => Happened::TurnEnded,
        "SessionEnd" => Happened::End {
            reason: text("reason").unwrap_or_else(|| "exit".into()),
        },
        _ => Happened::Other,
    };
    Ok(HookEvent {
        name,
        session_id,
        cwd: text("cwd"),
        transcript: text("transcript_path"),
        tool_use_id: text("tool_use_id").filter(|t| !t.is_empty()),
        happened,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claude_events_map_to_what_happened() {
        let base = |name: &str| json!({"hook_event_name": name, "session_id": "s-1", "cwd": "/w", "transcript_path": "/t.jsonl"});
        let ev = parse(Agent::Claude, &base("SessionStart")).expect("parses");
        assert_eq!(
            ev.happened,
            Happened::Start {
                source: "startup".into()
            }
        );
        assert_eq!(
            (ev.cwd.as_deref(), ev.transcript.as_deref()),
            (Some("/w"), Some("/t.jsonl"))
        );
        let mut pre = base("PreToolUse");
        pre["tool_name"] = json!("Write");
        pre["tool_input"] = json!({"file_path": "/w/src/a.rs", "content": "x"});
        assert_eq!(
            parse(Agent::Claude, &pre).expect("parses").happened,
            Happened::ToolBefore {
                tool: "Write".into(),
                edits: vec!["/w/src/a.rs".into()],
                about: "Write /w/src/a.rs".into()
            }
        );
        let mut bash = base("PreToolUse");
        bash["tool_name"] = json!("Bash");
        bash["tool_input"] = json!({"command": "cargo test\nmore"});
        assert_eq!(
            parse(Agent::Claude, &bash).expect("parses").happened,
            Happened::ToolBefore {
                tool: "Bash".into(),
                edits: vec![],
                about: "Bash cargo test".into()
            }
        );
        let mut perm = base("PermissionRequest");
        perm["tool_name"] = json!("Write");
        perm["tool_input"] = json!({"file_path": "/w/src.txt"});
        assert_eq!(
            parse(Agent::Claude, &perm).expect("parses").happened,
            Happened::Permission {
                tool: "Write".into(),
                about: "Write /w/src.txt".into(),
                edits: vec!["/w/src.txt".into()],
                command: None,
                input: json!({"file_path": "/w/src.txt"}),
            }
        );
        let mut note = base("Notification");
        note["notification_type"] = json!("permission_prompt");
        note["message"] = json!("Claude needs your permission to use Write");
        assert!(matches!(
            parse(Agent::Claude, &note).expect("parses").happened,
            Happened::NeedsInput { .. }
        ));
        note["notification_type"] = json!("idle_prompt");
        assert_eq!(
            parse(Agent::Claude, &note).expect("parses").happened,
            Happened::TurnEnded
        );
        assert_eq!(
            parse(Agent::Claude, &base("Stop"))
                .expect("parses")
                .happened,
            Happened::TurnEnded
        );
        let mut end = base("SessionEnd");
        end["reason"] = json!("logout");
        assert_eq!(
            parse(Agent::Claude, &end).expect("parses").happened,
            Happened::End {
                reason: "logout".into()
            }
        );
        // A newer agent's event is not an error.
        assert_eq!(
            parse(Agent::Claude, &base("FutureThing"))
                .expect("parses")
                .happened,
            Happened::Other
        );
    }

    #[test]
    fn bad_payloads_are_named() {
        assert!(parse(Agent::Claude, &json!([1])).is_err());
        let e = parse(Agent::Claude, &json!({"hook_event_name": "Stop"})).expect_err("no session");
        assert!(e.contains("session_id"), "{e}");
    }

    #[test]
    fn codex_patches_and_gemini_tools_name_their_files() {
        let patch = "*** Begin Patch\n*** Update File: src/a.rs\n@@\n-x\n+y\n*** Add File: b.md\n+hi\n*** Update File: src/a.rs\n*** End Patch";
        assert_eq!(patch_paths(patch), ["src/a.rs", "b.md"]);
        let codex = json!({"hook_event_name": "PreToolUse", "session_id": "c", "tool_name": "apply_patch", "tool_input": {"input": patch}});
        match parse(Agent::Codex, &codex).expect("parses").happened {
            Happened::ToolBefore { edits, .. } => assert_eq!(edits, ["src/a.rs", "b.md"]),
            other => panic!("{other:?}"),
        }
        let heredoc = format!("apply_patch <<'EOF'\n{patch}\nEOF\n");
        let shell = json!({"hook_event_name": "PreToolUse", "session_id": "c", "tool_name": "Bash", "tool_input": {"command": heredoc}});
        match parse(Agent::Codex, &shell).expect("parses").happened {
            Happened::ToolBefore { edits, .. } => assert_eq!(edits, ["src/a.rs", "b.md"]),
            other => panic!("{other:?}"),
        }
        let echo = json!({"hook_event_name": "PreToolUse", "session_id": "c", "tool_name": "Bash", "tool_input": {"command": format!("echo '{patch}'")}});
        match parse(Agent::Codex, &echo).expect("parses").happened {
            Happened::ToolBefore { edits, .. } => assert!(edits.is_empty(), "{edits:?}"),
            other => panic!("{other:?}"),
        }
        let gemini = json!({"hook_event_name": "BeforeTool", "session_id": "g", "tool_name": "write_file", "tool_input": {"file_path": "/w/x.rs"}});
        match parse(Agent::Gemini, &gemini).expect("parses").happened {
            Happened::ToolBefore { edits, .. } => assert_eq!(edits, ["/w/x.rs"]),
            other => panic!("{other:?}"),
        }
    }
}
