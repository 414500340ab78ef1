//! `coord hooks install|uninstall|status AGENT [--project DIR | --user]`:
//! coord's entries in a coding agent's own settings file.
//!
//! Install merges one entry per event coord takes (each runs `coord hook
//! AGENT`) into the file's `hooks`, keeping everything already there —
//! other hooks, other keys, their order; installing twice is once. The
//! file as it was and as coord wrote it are kept in coord's state
//! directory, so uninstall gives back the original bytes when nobody
//! changed the file since; otherwise it takes out coord's entries alone.
//!
//! It owns the settings file format per agent; it must not touch any
//! entry that is not coord's.

use super::event::Agent;
use crate::output;
use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `coord hooks …`.
#[derive(Subcommand, Debug)]
pub(crate) enum HooksCmd {
    /// Merge coord's hook entries into the agent's settings file.
    Install(Place),
    /// Take coord's entries out again (the file as it was, when nobody
    /// changed it since).
    Uninstall(Place),
    /// Per agent and place: what is installed and whether it will run.
    Status {
        /// A project directory to look at besides the user's settings.
        #[arg(long)]
        project: Option<PathBuf>,
    },
}

/// Which agent, which settings file, and how.
#[derive(Args, Debug)]
pub(crate) struct Place {
    /// The agent.
    #[arg(value_enum)]
    agent: Agent,
    /// The project whose settings to change (its `.claude/settings.json`,
    /// `.codex/hooks.json` or `.gemini/settings.json`).
    #[arg(long, conflicts_with = "user")]
    project: Option<PathBuf>,
    /// The user's settings instead (`~/.claude/settings.json`, …).
    #[arg(long)]
    user: bool,
    /// What an edit under another session's lock meets: observe, enforce
    /// or claim (docs/AGENTS.md).
    #[arg(long, value_enum, default_value_t = super::run::EditMode::Enforce)]
    mode: super::run::EditMode,
    /// How long a permission request waits for a decision from the
    /// approval queue before the agent's own prompt decides (0 s: no
    /// queue). The entry's own timeout is set 30 s above it.
    #[arg(long, default_value = "300s", value_parser = crate::args::duration)]
    approval_wait: std::time::Duration,
    /// Print the file as it would be, and change nothing.
    #[arg(long)]
    dry_run: bool,
}

/// Seconds the agent gives the permission hook beyond its approval wait
/// (asking, reporting, withdrawing on expiry).
const HOOK_TIMEOUT_MARGIN_S: u64 = 30;

/// A JSON value whose objects keep their key order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(untagged)]
enum Json {
    Object(IndexMap<String, Json>),
    Array(Vec<Json>),
    Other(serde_json::Value),
}

/// The events coord takes, per agent, and whether their entry needs a
/// tool matcher.
fn events(agent: Agent) -> &'static [(&'static str, bool)] {
    match agent {
        Agent::Claude => &[
            ("SessionStart", false),
            ("UserPromptSubmit", false),
            ("PreToolUse", true),
            ("PostToolUse", true),
            ("PermissionRequest", true),
            ("Notification", false),
            ("Stop", false),
            ("SessionEnd", false),
        ],
        Agent::Codex => &[
            ("SessionStart", false),
            ("UserPromptSubmit", false),
            ("PreToolUse", true),
            ("PostToolUse", true),
            ("PermissionRequest", true),
            ("Stop", false),
            ("SessionEnd", false),
        ],
        Agent::Gemini => &[
            ("SessionStart", false),
            ("BeforeAgent", false),
            ("BeforeTool", true),
            ("AfterTool", true),
            ("Notification", false),
            ("AfterAgent", false),
            ("SessionEnd", false),
        ],
    }
}

/// The settings file of `agent` in `project`, or the user's.
fn settings_path(agent: Agent, project: Option<&Path>) -> Result<PathBuf> {
    let (dir, file) = match agent {
        Agent::Claude => (".claude", "settings.json"),
        Agent::Codex => (".codex", "hooks.json"),
        Agent::Gemini => (".gemini", "settings.json"),
    };
    if let Some(p) = project {
        let p = std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))?;
        return Ok(p.join(dir).join(file));
    }
    if agent == Agent::Codex {
        if let Some(home) = std::env::var_os("CODEX_HOME").filter(|v| !v.is_empty()) {
            return Ok(PathBuf::from(home).join(file));
        }
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| anyhow!("HOME is not set; name a --project"))?;
    Ok(PathBuf::from(home).join(dir).join(file))
}

/// The command an entry runs.
fn command(
    agent: Agent,
    mode: super::run::EditMode,
    socket: Option<&Path>,
    approval_wait: std::time::Duration,
) -> Result<String> {
    let exe = std::env::current_exe().context("locating the coord binary")?;
    let word = |s: &str| format!("'{}'", s.replace('\'', r"'\''"));
    let mut c = word(&exe.to_string_lossy());
    if let Some(s) = socket {
        c.push_str(&format!(" --socket {}", word(&s.to_string_lossy())));
    }
    c.push_str(&format!(
        " hook {} --mode {} --approval-wait {}s",
        agent.name(),
        mode.name(),
        approval_wait.as_secs()
    ));
    Ok(c)
}

/// Whether a hook command is coord's for `agent`.
fn is_ours(agent: Agent, cmd: &str) -> bool {
    cmd.contains(&format!(" hook {}", agent.name())) && cmd.contains("coord")
}

/// The commands of one event's entries.
fn commands(entry: &Json) -> Vec<String> {
    let Json::Object(o) = entry else {
        return Vec::new();
    };
    let Some(Json::Array(hooks)) = o.get("hooks") else {
        return Vec::new();
    };
    hooks
        .iter()
        .filter_map(|h| match h {
            Json::Object(h) => match h.get("command") {
                Some(Json::Other(serde_json::Value::String(c))) => Some(c.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// `settings` with coord's entries for `agent` (running `cmd`) merged in.
fn with_ours(
    mut settings: IndexMap<String, Json>,
    agent: Agent,
    cmd: &str,
    permission_timeout_s: u64,
) -> Result<IndexMap<String, Json>> {
    let hooks = settings
        .entry("hooks".into())
        .or_insert_with(|| Json::Object(IndexMap::new()));
    let Json::Object(hooks) = hooks else {
        bail!("its \"hooks\" is not an object; fix it by hand first")
    };
    for (event, tool) in events(agent) {
        let list = hooks
            .entry((*event).to_string())
            .or_insert_with(|| Json::Array(Vec::new()));
        let Json::Array(list) = list else {
            bail!("its hooks.{event} is not a list; fix it by hand first")
        };
        if list
            .iter()
            .any(|e| commands(e).iter().any(|c| is_ours(agent, c)))
        {
            continue;
        }
        let mut entry = IndexMap::new();
        if *tool {
            entry.insert("matcher".into(), Json::Other("*".into()));
        }
        let mut hook = IndexMap::new();
        hook.insert("type".into(), Json::Other("command".into()));
        hook.insert("command".into(), Json::Other(cmd.into()));
        // The permission hook waits for a decision: the agent must give
        // it longer than its default (60 s for Claude Code).
        if *event == "PermissionRequest" {
            hook.insert("timeout".into(), Json::Other(permission_timeout_s.into()));
        }
        entry.insert("hooks".into(), Json::Array(vec![Json::Object(hook)]));
        list.push(Json::Object(entry));
    }
    Ok(settings)
}

/// `settings` without coord's entries for `agent` (and without the lists
/// and the `hooks` object that only they filled).
fn without_ours(mut settings: IndexMap<String, Json>, agent: Agent) -> IndexMap<String, Json> {
    let mut empty = false;
    if let Some(Json::Object(hooks)) = settings.get_mut("hooks") {
        for (event, _) in events(agent) {
            let mut drop_list = false;
            if let Some(Json::Array(list)) = hooks.get_mut(*event) {
                list.retain(|e| !commands(e).iter().any(|c| is_ours(agent, c)));
                drop_list = list.is_empty();
            }
            if drop_list {
                hooks.shift_remove(*event);
            }
        }
        empty = hooks.is_empty();
    }
    if empty {
        settings.shift_remove("hooks");
    }
    settings
}

/// What is saved of a file coord changed: its bytes before (`None`: there
/// was none) and as coord wrote them.
#[derive(Serialize, Deserialize)]
struct Saved {
    path: PathBuf,
    original: Option<String>,
    written: String,
}

fn saved_path(settings: &Path) -> Result<PathBuf> {
    let state = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .ok_or_else(|| anyhow!("neither XDG_STATE_HOME nor HOME is set"))?,
        )
        .join(".local/state"),
    };
    let digest = sha2::Sha256::digest(settings.to_string_lossy().as_bytes());
    let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    Ok(state
        .join("coord")
        .join("hooks")
        .join(format!("{name}.json")))
}

fn parse(text: &str, path: &Path) -> Result<IndexMap<String, Json>> {
    if text.trim().is_empty() {
        return Ok(IndexMap::new());
    }
    serde_json::from_str(text).with_context(|| format!("{} is not a JSON object", path.display()))
}

fn render(settings: &IndexMap<String, Json>) -> Result<String> {
    Ok(serde_json::to_string_pretty(settings)? + "\n")
}

/// Runs `coord hooks …`.
pub(crate) fn hooks(cmd: HooksCmd, socket: Option<&Path>, json: bool) -> Result<ExitCode> {
    match cmd {
        HooksCmd::Install(p) => install(&p, socket),
        HooksCmd::Uninstall(p) => uninstall(&p),
        HooksCmd::Status { project } => status(project.as_deref(), json),
    }
}

fn install(p: &Place, socket: Option<&Path>) -> Result<ExitCode> {
    let path = settings_path(p.agent, p.project.as_deref().filter(|_| !p.user))?;
    let before = match std::fs::read_to_string(&path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let settings = parse(before.as_deref().unwrap_or(""), &path)?;
    let cmd = command(p.agent, p.mode, socket, p.approval_wait)?;
    let merged = with_ours(
        settings.clone(),
        p.agent,
        &cmd,
        p.approval_wait.as_secs() + HOOK_TIMEOUT_MARGIN_S,
    )?;
    if merged == settings {
        output::line(&format!(
            "{}: coord's hooks are already there",
            path.display()
        ))?;
        if p.agent == Agent::Codex && !p.dry_run {
            return codex_trust(p);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let text = render(&merged)?;
    if p.dry_run {
        print!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let saved = saved_path(&path)?;
    if let Some(dir) = saved.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // What the user had before coord's first install stays the original.
    let original = std::fs::read_to_string(&saved)
        .ok()
        .and_then(|t| serde_json::from_str::<Saved>(&t).ok())
        .map_or(before, |s| s.original);
    let record = Saved {
        path: path.clone(),
        original,
        written: text.clone(),
    };
    std::fs::write(&saved, serde_json::to_string(&record)?)
        .with_context(|| format!("writing {}", saved.display()))?;
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    output::line(&format!(
        "{}: coord's hooks installed ({} events, mode {}); each runs `coord hook {}`",
        path.display(),
        events(p.agent).len(),
        p.mode.name(),
        p.agent.name()
    ))?;
    if p.agent == Agent::Codex {
        return codex_trust(p);
    }
    Ok(ExitCode::SUCCESS)
}

/// Where Codex is asked about a place's hooks: the project, or (for the
/// user's hooks, which every place sees) the current directory.
fn codex_cwd(p: &Place) -> Result<PathBuf> {
    match p.project.as_deref().filter(|_| !p.user) {
        Some(dir) => {
            std::path::absolute(dir).with_context(|| format!("resolving {}", dir.display()))
        }
        None => std::env::current_dir().context("reading the current directory"),
    }
}

/// Establishes Codex's trust in coord's hooks through Codex's own
/// app-server, verifies it, and says exactly what is left to the user
/// where it cannot (exit 1).
fn codex_trust(p: &Place) -> Result<ExitCode> {
    let cwd = codex_cwd(p)?;
    let manual = format!(
        "trust them by hand: run `codex` in {}, type /hooks and trust coord's {} hooks (or run codex with --dangerously-bypass-hook-trust)",
        cwd.display(),
        events(Agent::Codex).len()
    );
    let hooks = match super::codex_trust::trust_ours(&cwd, |c| is_ours(Agent::Codex, c)) {
        Ok(h) => h,
        Err(e) => {
            output::line(&format!(
                "Codex runs a hook only once it is trusted, and coord could not ask Codex ({e:#}); {manual}"
            ))?;
            return Ok(ExitCode::from(1));
        }
    };
    let runs = hooks.iter().filter(|h| h.runs()).count();
    if hooks.is_empty() {
        output::line(&format!(
            "Codex does not load these hooks from {}: a project's .codex/ is read only once Codex trusts the project (run `codex` there once and trust it), then run this install again",
            cwd.display()
        ))?;
        return Ok(ExitCode::from(1));
    }
    if runs < hooks.len() {
        output::line(&format!(
            "Codex trusts {runs} of coord's {} hooks after coord asked it to; {manual}",
            hooks.len()
        ))?;
        return Ok(ExitCode::from(1));
    }
    output::line(&format!(
        "Codex trusts coord's {runs} hooks (verified through codex app-server)"
    ))?;
    Ok(ExitCode::SUCCESS)
}

fn uninstall(p: &Place) -> Result<ExitCode> {
    let path = settings_path(p.agent, p.project.as_deref().filter(|_| !p.user))?;
    let now = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            output::line(&format!(
                "{}: no such file; nothing to take out",
                path.display()
            ))?;
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let saved_at = saved_path(&path)?;
    let saved = std::fs::read_to_string(&saved_at)
        .ok()
        .and_then(|t| serde_json::from_str::<Saved>(&t).ok());
    let restored = match saved {
        // Nobody changed it since coord wrote it: the original bytes.
        Some(s) if s.written == now => s.original,
        _ => {
            let settings = parse(&now, &path)?;
            let out = without_ours(settings.clone(), p.agent);
            if out == settings {
                output::line(&format!("{}: no coord hooks in it", path.display()))?;
                return Ok(ExitCode::SUCCESS);
            }
            Some(render(&out)?)
        }
    };
    if p.dry_run {
        print!("{}", restored.as_deref().unwrap_or(""));
        return Ok(ExitCode::SUCCESS);
    }
    match restored {
        Some(text) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?
        }
    }
    let _ = std::fs::remove_file(&saved_at);
    output::line(&format!("{}: coord's hooks taken out", path.display()))?;
    Ok(ExitCode::SUCCESS)
}

/// One line of `status`.
#[derive(Serialize)]
struct Row {
    agent: &'static str,
    path: PathBuf,
    installed: usize,
    of: usize,
    runs: String,
}

fn status(project: Option<&Path>, json: bool) -> Result<ExitCode> {
    let mut rows = Vec::new();
    for agent in [Agent::Claude, Agent::Codex, Agent::Gemini] {
        let places = [Some(None), project.map(Some)];
        for place in places.into_iter().flatten() {
            let path = settings_path(agent, place)?;
            let (installed, runs) = match std::fs::read_to_string(&path) {
                Err(_) => (0, "no settings file".to_string()),
                Ok(text) => match parse(&text, &path) {
                    Err(e) => (0, format!("unreadable: {e:#}")),
                    Ok(s) => {
                        let n = count_ours(&s, agent);
                        let runs = match (n, agent) {
                            (0, _) => "not installed".to_string(),
                            (_, Agent::Codex) => codex_runs(place)?,
                            (n, _) if n < events(agent).len() => {
                                "partly installed: run install again".to_string()
                            }
                            _ => "installed; runs".to_string(),
                        };
                        (n, runs)
                    }
                },
            };
            rows.push(Row {
                agent: agent.name(),
                path,
                installed,
                of: events(agent).len(),
                runs,
            });
        }
    }
    if json {
        println!("{}", serde_json::to_string(&rows)?);
    } else {
        for r in &rows {
            output::line(&format!(
                "{:<7} {}/{} events  {}  ({})",
                r.agent,
                r.installed,
                r.of,
                r.runs,
                r.path.display()
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Whether Codex will run coord's hooks seen from `place`, as Codex's
/// app-server says.
fn codex_runs(place: Option<&Path>) -> Result<String> {
    let cwd = match place {
        Some(p) => std::path::absolute(p)?,
        None => std::env::current_dir()?,
    };
    Ok(
        match super::codex_trust::ours(&cwd, |c| is_ours(Agent::Codex, c)) {
            Err(e) => format!("installed; whether Codex trusts them is unknown ({e:#})"),
            Ok(h) if h.is_empty() => {
                "installed; Codex does not load them here (is the project trusted?)".to_string()
            }
            Ok(h) => {
                let runs = h.iter().filter(|h| h.runs()).count();
                if runs == h.len() {
                    format!("installed; runs (Codex trusts all {runs})")
                } else {
                    format!(
                        "installed; Codex trusts {runs} of {}: run install again",
                        h.len()
                    )
                }
            }
        },
    )
}

fn count_ours(settings: &IndexMap<String, Json>, agent: Agent) -> usize {
    let Some(Json::Object(hooks)) = settings.get("hooks") else {
        return 0;
    };
    events(agent)
        .iter()
        .filter(|(event, _)| match hooks.get(*event) {
            Some(Json::Array(list)) => list
                .iter()
                .any(|e| commands(e).iter().any(|c| is_ours(agent, c))),
            _ => false,
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = r#"{
  "permissions": {"allow": ["Bash(ls)"], "deny": []},
  "zeta": 1,
  "hooks": {
    "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./mine.sh"}]}]
  },
  "alpha": {"b": 2, "a": 1}
}"#;

    #[test]
    fn merging_keeps_the_users_entries_and_order_and_is_idempotent() {
        let s = parse(USER, Path::new("x")).expect("parses");
        let cmd = "'/bin/coord' hook claude --mode enforce";
        let once = with_ours(s.clone(), Agent::Claude, cmd, 330).expect("merges");
        let twice = with_ours(once.clone(), Agent::Claude, cmd, 330).expect("merges");
        assert!(
            render(&once).expect("renders").contains("\"timeout\": 330"),
            "the permission hook outlives its approval wait"
        );
        assert_eq!(once, twice, "installing twice is once");
        let keys: Vec<_> = once.keys().cloned().collect();
        assert_eq!(keys, ["permissions", "zeta", "hooks", "alpha"]);
        let text = render(&once).expect("renders");
        assert!(
            text.find("\"b\"") < text.find("\"a\": 1"),
            "nested order kept: {text}"
        );
        assert!(text.contains("./mine.sh"), "{text}");
        assert_eq!(
            count_ours(&once, Agent::Claude),
            events(Agent::Claude).len()
        );
        // Taking ours out leaves exactly the user's settings.
        assert_eq!(without_ours(once, Agent::Claude), s);
    }
}
