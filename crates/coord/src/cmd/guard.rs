//! `coord guard ...`: git hooks that respect coord's locks (PROTOCOL §7.3).
//!
//! `install` puts a small block into the repository's `pre-commit` (and,
//! with `--pre-push`, `pre-push`) hook, after the shebang of a hook that is
//! already there, so the existing hook still runs after it; `uninstall`
//! removes exactly that block. The block runs `coord guard check`, which
//! asks git for the paths a commit (or push) touches, asks the daemon for
//! its locks once, and refuses when a path falls under an exclusive lock
//! held by another session.
//!
//! The decision ([`blocked`]) is pure and uses the daemon's own pattern
//! rule (`coord_proto::pattern`); this module runs git and reads the lock
//! list, and never writes to the log.

use crate::output::{self, code, Exit};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Subcommand, ValueEnum};
use coord_client::{Client, ClientError};
use coord_proto::pattern::covers;
use coord_proto::view::Lock;
use coord_proto::{LockMode, Timestamp};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

/// What the hook does when a path is under another session's lock.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum GuardMode {
    /// Print why and fail the hook (git aborts the commit or push).
    Refuse,
    /// Print why and let it through.
    Warn,
    /// Do nothing at all (no git call, no daemon call).
    Off,
}

/// What the hook does when the daemon does not answer.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Unreachable {
    /// Warn and let the commit through.
    Allow,
    /// Fail the hook.
    Refuse,
}

/// Which hook is asking.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hook {
    /// The staged paths (index against HEAD).
    PreCommit,
    /// The paths changed by the commits being pushed (read from stdin as
    /// git gives them to a pre-push hook).
    PrePush,
}

impl Hook {
    fn file_name(self) -> &'static str {
        match self {
            Hook::PreCommit => "pre-commit",
            Hook::PrePush => "pre-push",
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum GuardCmd {
    /// Add coord's check to this repository's pre-commit hook (and
    /// pre-push with --pre-push), keeping any hook already there.
    Install {
        /// Also guard `git push`.
        #[arg(long)]
        pre_push: bool,
        /// The repository (default: the one around the current directory).
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
    },
    /// Remove coord's lines from this repository's hooks (and a hook file
    /// that held nothing else).
    Uninstall {
        /// The repository (default: the one around the current directory).
        #[arg(long, value_name = "DIR")]
        repo: Option<PathBuf>,
    },
    /// Check the paths a commit or push touches against the locks (what
    /// the hook runs; exit 4 when refused).
    Check {
        /// Which hook's paths to check.
        #[arg(long, value_enum, default_value = "pre-commit")]
        hook: Hook,
        /// refuse, warn, or off.
        #[arg(long, value_enum, env = "COORD_GUARD", default_value = "refuse")]
        mode: GuardMode,
        /// When the daemon does not answer: allow (with a warning) or refuse.
        #[arg(
            long,
            value_enum,
            env = "COORD_GUARD_UNREACHABLE",
            default_value = "allow"
        )]
        unreachable: Unreachable,
        /// The session committing; its own locks never block it.
        #[arg(long, env = "COORD_SESSION")]
        session: Option<String>,
        /// Check these paths (relative to the work tree root) instead of
        /// asking git.
        #[arg(long = "path", value_name = "PATH")]
        paths: Vec<String>,
    },
}

pub(crate) async fn guard(base: &Client, cmd: GuardCmd, json: bool) -> Result<ExitCode> {
    match cmd {
        GuardCmd::Install { pre_push, repo } => {
            let dir = hooks_dir(repo.as_deref())?;
            let exe = std::env::current_exe().context("locating the coord binary")?;
            let mut hooks = vec![Hook::PreCommit];
            if pre_push {
                hooks.push(Hook::PrePush);
            }
            for h in hooks {
                let path = dir.join(h.file_name());
                let how = install_hook(&path, h, &exe)?;
                output::line(&format!("{how} {}", path.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        GuardCmd::Uninstall { repo } => {
            let dir = hooks_dir(repo.as_deref())?;
            for h in [Hook::PreCommit, Hook::PrePush] {
                let path = dir.join(h.file_name());
                if let Some(how) = uninstall_hook(&path)? {
                    output::line(&format!("{how} {}", path.display()))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        GuardCmd::Check {
            hook,
            mode,
            unreachable,
            session,
            paths,
        } => {
            if mode == GuardMode::Off {
                return Ok(ExitCode::SUCCESS);
            }
            let root = git_text(None, &["rev-parse", "--show-toplevel"])?;
            let root = root.trim_end_matches('\n').to_string();
            let paths = if !paths.is_empty() {
                paths
                    .iter()
                    .map(|p| coord_proto::ids::normalize_resource(p))
                    .collect()
            } else {
                match hook {
                    Hook::PreCommit => staged_paths()?,
                    Hook::PrePush => {
                        let mut input = String::new();
                        std::io::stdin()
                            .read_to_string(&mut input)
                            .context("reading the refs git gives a pre-push hook")?;
                        pushed_paths(&input)?
                    }
                }
            };
            if paths.is_empty() {
                return Ok(ExitCode::SUCCESS);
            }
            let locks = match base.locks().await {
                Ok(l) => l.locks,
                Err(e @ ClientError::Connect { .. }) => {
                    let msg = format!("coord guard: {e}");
                    return match unreachable {
                        Unreachable::Allow => {
                            eprintln!("{msg}\ncoord guard: locks not checked; letting the {} through (COORD_GUARD_UNREACHABLE=refuse refuses instead)", what(hook));
                            Ok(ExitCode::SUCCESS)
                        }
                        Unreachable::Refuse => Err(anyhow!(Exit(
                            code::UNREACHABLE,
                            format!("{msg}\ncoord guard: refusing because COORD_GUARD_UNREACHABLE=refuse")
                        ))),
                    };
                }
                Err(e) => return Err(e.into()),
            };
            let found = blocked(&paths, &root, &locks, session.as_deref());
            report(hook, mode, &found, json, Timestamp::now())
        }
    }
}

fn what(hook: Hook) -> &'static str {
    match hook {
        Hook::PreCommit => "commit",
        Hook::PrePush => "push",
    }
}

/// A path under an exclusive lock of another session.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Blocked {
    /// The path, relative to the work tree root.
    pub(crate) path: String,
    /// The lock's resource (a name or a pattern).
    pub(crate) resource: String,
    /// Its holder.
    pub(crate) session_id: String,
    /// When the holder was granted it.
    pub(crate) since: Timestamp,
}

/// The paths (relative to `root`, the work tree's absolute path) that lie
/// under an exclusive lock held by a session other than `me`. A path under
/// one of `me`'s own locks (say, a scope delegated to it) is its own and
/// never blocked. A lock may name the path relative to the work tree (as
/// `--path` does) or absolutely.
pub(crate) fn blocked(
    paths: &[String],
    root: &str,
    locks: &[Lock],
    me: Option<&str>,
) -> Vec<Blocked> {
    let mut out = Vec::new();
    for path in paths {
        let abs = format!("{}/{}", root.trim_end_matches('/'), path);
        let under = |l: &Lock| covers(&l.resource, path) || covers(&l.resource, &abs);
        let mine = me.is_some_and(|me| {
            locks
                .iter()
                .any(|l| under(l) && l.holders.iter().any(|h| h.session_id == me))
        });
        if mine {
            continue;
        }
        for l in locks {
            if l.mode != LockMode::Exclusive || !under(l) {
                continue;
            }
            for h in &l.holders {
                if Some(h.session_id.as_str()) != me {
                    out.push(Blocked {
                        path: path.clone(),
                        resource: l.resource.clone(),
                        session_id: h.session_id.clone(),
                        since: h.acquired_at,
                    });
                }
            }
        }
    }
    out
}

#[derive(Serialize)]
struct CheckReport<'a> {
    mode: GuardMode,
    allowed: bool,
    blocked: &'a [Blocked],
}

fn report(
    hook: Hook,
    mode: GuardMode,
    found: &[Blocked],
    json: bool,
    now: Timestamp,
) -> Result<ExitCode> {
    let refuse = mode == GuardMode::Refuse && !found.is_empty();
    if json {
        output::json(&CheckReport {
            mode,
            allowed: !refuse,
            blocked: found,
        })?;
    }
    if !found.is_empty() {
        let mut msg = format!(
            "coord guard: {} {}: {} under {} held by another session:\n",
            if refuse {
                "refusing"
            } else {
                "warning, not refusing"
            },
            if refuse {
                format!("this {}", what(hook))
            } else {
                format!("this {} (COORD_GUARD=warn)", what(hook))
            },
            plural(found.len(), "path is", "paths are"),
            if found.len() == 1 {
                "an exclusive lock"
            } else {
                "exclusive locks"
            },
        );
        for b in found {
            let age = Duration::from_millis((now.as_millis() - b.since.as_millis()).max(0) as u64);
            let age = humantime::format_duration(Duration::from_secs(age.as_secs()));
            msg.push_str(&format!(
                "  {}: lock {} held by {} since {} ({age} ago)\n",
                b.path, b.resource, b.session_id, b.since
            ));
        }
        if refuse {
            let first = &found[0];
            msg.push_str(&format!(
                "Ask the holder (coord send {} ...), queue for the lock (coord lock acquire '{}' --wait 10m), \
                 or let this one through with COORD_GUARD=warn.",
                first.session_id, first.resource
            ));
        }
        eprintln!("{}", msg.trim_end());
    }
    Ok(if refuse {
        ExitCode::from(code::CONFLICT)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

/// Runs git (in `dir`, or the current directory) and returns its stdout.
fn git(dir: Option<&Path>, args: &[&str]) -> Result<Vec<u8>> {
    let mut c = Command::new("git");
    if let Some(d) = dir {
        c.arg("-C").arg(d);
    }
    let out = c
        .args(args)
        .output()
        .context("running git (is it installed?)")?;
    if !out.status.success() {
        return Err(anyhow!(Exit(
            code::ERROR,
            format!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        )));
    }
    Ok(out.stdout)
}

fn git_text(dir: Option<&Path>, args: &[&str]) -> Result<String> {
    String::from_utf8(git(dir, args)?).context("git printed a path that is not UTF-8")
}

/// NUL-separated paths, empty entries dropped, each normalised as the
/// daemon normalises a resource.
fn split_paths(bytes: &[u8]) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for p in bytes.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let p = std::str::from_utf8(p).context("git printed a path that is not UTF-8")?;
        let p = coord_proto::ids::normalize_resource(p.trim_start_matches('\n'));
        if !out.contains(&p) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Paths the index changes against HEAD: added, modified, deleted, and
/// both sides of a rename (renames are not detected, so a rename is its
/// deletion plus its addition).
fn staged_paths() -> Result<Vec<String>> {
    split_paths(&git(
        None,
        &["diff", "--cached", "--name-only", "-z", "--no-renames"],
    )?)
}

/// Paths changed by the commits a push sends. `input` is what git writes
/// to a pre-push hook: `<local ref> <local sha> <remote ref> <remote sha>`
/// per line.
fn pushed_paths(input: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for line in input.lines().filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [_, local, _, remote] = f[..] else {
            bail!("pre-push input line {line:?}: expected four fields");
        };
        if local.trim_start_matches('0').is_empty() {
            continue; // deleting a remote ref sends no commits
        }
        let known = !remote.trim_start_matches('0').is_empty()
            && git(None, &["cat-file", "-e", &format!("{remote}^{{commit}}")]).is_ok();
        let not = format!("^{remote}");
        let mut args = vec![
            "log",
            "--format=",
            "--name-only",
            "-z",
            "--no-renames",
            local,
        ];
        if known {
            args.push(&not);
        } else {
            args.extend(["--not", "--remotes"]);
        }
        for p in split_paths(&git(None, &args)?)? {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// The repository's hooks directory (honours `core.hooksPath`), created
/// if missing.
fn hooks_dir(repo: Option<&Path>) -> Result<PathBuf> {
    let base = match repo {
        Some(r) => r.to_path_buf(),
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let rel = git_text(Some(&base), &["rev-parse", "--git-path", "hooks"])?;
    let dir = base.join(rel.trim_end_matches('\n'));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

const BEGIN: &str = "# >>> coord guard >>>";
const END: &str = "# <<< coord guard <<<";

/// The lines coord adds to a hook: run the check, stop the hook when it
/// refuses, otherwise fall through to the rest of the hook.
fn block(hook: Hook, exe: &Path) -> String {
    let exe = exe.display().to_string().replace('\'', r"'\''");
    let head = format!(
        "{BEGIN}\n# Added by `coord guard install`; `coord guard uninstall` removes it.\n\
         coord_guard_bin='{exe}'\n[ -x \"$coord_guard_bin\" ] || coord_guard_bin=coord\n"
    );
    let body = match hook {
        Hook::PreCommit => {
            "\"$coord_guard_bin\" guard check --hook pre-commit || exit $?\n".to_string()
        }
        // git gives the refs on stdin; the hook after this block reads
        // them too, so they are fed back to it.
        Hook::PrePush => "coord_guard_refs=$(cat)\n\
             printf '%s\\n' \"$coord_guard_refs\" | \"$coord_guard_bin\" guard check --hook pre-push || exit $?\n\
             if [ -n \"$coord_guard_refs\" ]; then\nexec 0<<COORD_GUARD_REFS\n$coord_guard_refs\nCOORD_GUARD_REFS\nfi\n"
            .to_string(),
    };
    format!("{head}{body}{END}\n")
}

/// Whether a hook's first line lets shell lines be added to it.
fn is_shell(first: &str) -> bool {
    match first.strip_prefix("#!") {
        None => true,
        Some(rest) => {
            let words: Vec<&str> = rest.split_whitespace().collect();
            let prog = match words.as_slice() {
                [env, p, ..] if env.ends_with("/env") => p,
                [p, ..] => p,
                [] => return false,
            };
            let name = prog.rsplit('/').next().unwrap_or(prog);
            matches!(name, "sh" | "bash" | "dash" | "zsh" | "ksh")
        }
    }
}

/// Removes coord's block from `text`, if there.
fn without_block(text: &str) -> Option<String> {
    let start = text.find(BEGIN)?;
    let end = text[start..].find(END)? + start + END.len();
    let end = if text[end..].starts_with('\n') {
        end + 1
    } else {
        end
    };
    Some(format!("{}{}", &text[..start], &text[end..]))
}

fn install_hook(path: &Path, hook: Hook, exe: &Path) -> Result<&'static str> {
    use std::os::unix::fs::PermissionsExt;
    let existing = match std::fs::read_to_string(path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let (text, how) = match existing {
        None => (format!("#!/bin/sh\n{}", block(hook, exe)), "created"),
        Some(t) => {
            let (t, how) = match without_block(&t) {
                Some(t) => (t, "updated"),
                None => (t, "added coord guard to"),
            };
            let first = t.lines().next().unwrap_or("");
            if !is_shell(first) {
                return Err(anyhow!(Exit(
                    code::ERROR,
                    format!(
                        "{} is not a shell script ({first}); add `coord guard check --hook {}` to it yourself",
                        path.display(),
                        hook.file_name()
                    )
                )));
            }
            let text = if first.starts_with("#!") {
                let rest = t.split_once('\n').map(|x| x.1).unwrap_or("");
                format!("{first}\n{}{rest}", block(hook, exe))
            } else {
                format!("#!/bin/sh\n{}{t}", block(hook, exe))
            };
            (text, how)
        }
    };
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    let mut perm = std::fs::metadata(path)?.permissions();
    perm.set_mode(perm.mode() | 0o111);
    std::fs::set_permissions(path, perm)
        .with_context(|| format!("making {} executable", path.display()))?;
    Ok(how)
}

fn uninstall_hook(path: &Path) -> Result<Option<&'static str>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let Some(rest) = without_block(&text) else {
        return Ok(None);
    };
    let empty = rest
        .lines()
        .all(|l| l.trim().is_empty() || l.starts_with("#!"));
    if empty {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        Ok(Some("removed"))
    } else {
        std::fs::write(path, rest).with_context(|| format!("writing {}", path.display()))?;
        Ok(Some("removed coord guard from"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use coord_proto::view::Holder;

    fn lock(resource: &str, mode: LockMode, holder: &str) -> Lock {
        Lock {
            resource: resource.to_string(),
            mode,
            holders: vec![Holder {
                session_id: holder.to_string(),
                acquired_at: Timestamp(1_000),
                ..Default::default()
            }],
            waiters: vec![],
        }
    }

    fn paths(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn an_exclusive_lock_of_another_session_blocks_the_paths_it_covers() {
        let locks = [
            lock("src/**", LockMode::Exclusive, "a"),
            lock("docs/x.md", LockMode::Shared, "b"),
            lock("/repo/abs.txt", LockMode::Exclusive, "c"),
        ];
        let found = blocked(
            &paths(&["src/x/y.rs", "docs/x.md", "abs.txt", "README"]),
            "/repo",
            &locks,
            Some("me"),
        );
        let got: Vec<_> = found
            .iter()
            .map(|b| (b.path.as_str(), b.session_id.as_str()))
            .collect();
        assert_eq!(got, [("src/x/y.rs", "a"), ("abs.txt", "c")]);
    }

    #[test]
    fn a_sessions_own_lock_never_blocks_it() {
        let locks = [
            lock("src/**", LockMode::Exclusive, "parent"),
            lock("src/a/**", LockMode::Exclusive, "child"),
        ];
        let p = paths(&["src/a/one.rs", "src/b.rs"]);
        let found = blocked(&p, "/r", &locks, Some("child"));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "src/b.rs");
        assert!(blocked(&p, "/r", &locks, Some("parent")).is_empty());
        // Without a session every other holder blocks.
        assert_eq!(blocked(&p, "/r", &locks, None).len(), 3);
    }

    #[test]
    fn plain_names_are_exact_and_patterns_keep_slashes() {
        let locks = [
            lock("src", LockMode::Exclusive, "a"),
            lock("db/*.sql", LockMode::Exclusive, "b"),
        ];
        let found = blocked(
            &paths(&["src/main.rs", "db/sub/x.sql", "db/x.sql"]),
            "/r",
            &locks,
            None,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].path, "db/x.sql");
    }

    #[test]
    fn hooks_gain_and_lose_exactly_one_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("pre-commit");
        let exe = Path::new("/opt/it's/coord");
        let original = "#!/bin/bash\necho existing\nexit 0\n";
        std::fs::write(&path, original).expect("write");
        install_hook(&path, Hook::PreCommit, exe).expect("install");
        install_hook(&path, Hook::PreCommit, exe).expect("install twice");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches(BEGIN).count(), 1);
        assert!(text.starts_with("#!/bin/bash\n# >>> coord guard"));
        assert!(text.ends_with("echo existing\nexit 0\n"));
        assert_eq!(
            uninstall_hook(&path).expect("uninstall"),
            Some("removed coord guard from")
        );
        assert_eq!(std::fs::read_to_string(&path).expect("read"), original);

        let fresh = dir.path().join("pre-push");
        install_hook(&fresh, Hook::PrePush, exe).expect("install");
        assert_eq!(uninstall_hook(&fresh).expect("uninstall"), Some("removed"));
        assert!(!fresh.exists());

        let py = dir.path().join("py");
        std::fs::write(&py, "#!/usr/bin/env python3\nprint(1)\n").expect("write");
        assert!(install_hook(&py, Hook::PreCommit, exe).is_err());
        assert!(is_shell("#!/usr/bin/env bash"));
        assert!(!is_shell("#!/usr/bin/python3"));
    }

    #[test]
    fn git_paths_are_split_deduplicated_and_normalised() {
        let got = split_paths(b"a.rs\0./b//c.rs\0a.rs\0\0").expect("utf-8");
        assert_eq!(got, ["a.rs", "b/c.rs"]);
    }
}
