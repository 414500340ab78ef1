//! `coord guard`: hooks installed into real git repositories refuse (or
//! warn about) commits and pushes that touch another session's locked
//! paths, keep the hook that was there, and stay out of the way when the
//! daemon is down.

use crate::support::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch repository whose git runs see this daemon's socket.
struct Repo {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: PathBuf,
}

impl Repo {
    fn new(d: &Daemon) -> Repo {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("work");
        std::fs::create_dir(&path).expect("mkdir");
        let r = Repo {
            _dir: dir,
            path,
            socket: d.socket.clone(),
        };
        r.git_ok(&["init", "-q", "-b", "main"], &[]);
        r.write("README", "hello\n");
        r.git_ok(&["add", "README"], &[]);
        r.git_ok(&["commit", "-q", "-m", "initial"], &[]);
        r
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.path.join(rel);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        std::fs::write(p, text).expect("write");
    }

    fn git(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new("git");
        c.arg("-C")
            .arg(&self.path)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("COORD_SOCKET", &self.socket)
            .env_remove("COORD_SESSION")
            .env_remove("COORD_SESSION_TOKEN")
            .env_remove("COORD_GUARD")
            .env_remove("COORD_GUARD_UNREACHABLE");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run git")
    }

    fn git_ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.git(args, env);
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn commits(&self) -> usize {
        self.git_ok(&["rev-list", "--count", "HEAD"], &[])
            .trim()
            .parse()
            .expect("count")
    }

    fn install(&self, d: &Daemon, extra: &[&str]) -> String {
        let repo = self.path.to_str().expect("utf-8");
        let mut args = vec!["guard", "install", "--repo", repo];
        args.extend(extra);
        d.ok(&args)
    }

    fn hook(&self, name: &str) -> PathBuf {
        self.path.join(".git/hooks").join(name)
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Registers `session` and has it take `resource` (exclusive unless
/// `--shared` is in `extra`).
fn hold_with(d: &Daemon, session: &str, resource: &str, extra: &[&str]) {
    let token = d.register(session);
    let mut args = vec!["lock", "acquire", resource];
    args.extend(extra);
    let out = d.coord_env(
        &args,
        &[("COORD_SESSION", session), ("COORD_SESSION_TOKEN", &token)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

fn hold(d: &Daemon, session: &str, resource: &str) {
    hold_with(d, session, resource, &[]);
}

#[test]
fn a_commit_touching_another_sessions_lock_is_refused_with_the_holder_named() {
    let d = Daemon::start(&[]);
    let repo = Repo::new(&d);
    repo.install(&d, &[]);
    hold(&d, "agent-b", "src/**");

    repo.write("src/lib.rs", "x\n");
    repo.write("notes.txt", "free\n");
    repo.git_ok(&["add", "."], &[]);
    let out = repo.git(&["commit", "-q", "-m", "touch"], &[]);
    assert!(!out.status.success(), "the commit went through");
    let err = stderr(&out);
    assert!(
        err.contains("src/lib.rs: lock src/** held by agent-b since"),
        "{err}"
    );
    assert!(!err.contains("notes.txt"), "{err}");
    assert_eq!(repo.commits(), 1);

    // A path outside every lock commits.
    repo.git_ok(&["reset", "-q", "src/lib.rs"], &[]);
    repo.git_ok(&["commit", "-q", "-m", "free"], &[]);
    assert_eq!(repo.commits(), 2);

    // A shared lock blocks nobody; a released lock no longer blocks.
    hold_with(&d, "reader", "docs/**", &["--shared"]);
    repo.write("docs/guide.md", "read\n");
    d.ok(&["session", "dereg", "--session", "agent-b", "--force"]);
    repo.git_ok(&["add", "."], &[]);
    repo.git_ok(&["commit", "-q", "-m", "after release"], &[]);
    assert_eq!(repo.commits(), 3);
}

#[test]
fn the_sessions_own_locks_never_block_it_and_renames_count_on_both_sides() {
    let d = Daemon::start(&[]);
    let repo = Repo::new(&d);
    repo.write("old/a.rs", "a\n");
    repo.git_ok(&["add", "."], &[]);
    repo.git_ok(&["commit", "-q", "-m", "a"], &[]);
    repo.install(&d, &[]);
    hold(&d, "owner", "old/**");

    // Moving a file out of a locked directory touches the locked side.
    repo.git_ok(&["mv", "old/a.rs", "new.rs"], &[]);
    let out = repo.git(&["commit", "-q", "-m", "move"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("old/a.rs: lock old/** held by owner"));

    // The holder itself commits it.
    repo.git_ok(
        &["commit", "-q", "-m", "move"],
        &[("COORD_SESSION", "owner")],
    );
    assert_eq!(repo.commits(), 3);

    // And a rename into a locked path is caught on the new side.
    repo.git_ok(&["mv", "new.rs", "old/back.rs"], &[]);
    let out = repo.git(&["commit", "-q", "-m", "back"], &[]);
    assert!(
        stderr(&out).contains("old/back.rs: lock old/**"),
        "{}",
        stderr(&out)
    );
    assert!(!out.status.success());
}

#[test]
fn warn_and_off_let_the_commit_through() {
    let d = Daemon::start(&[]);
    let repo = Repo::new(&d);
    repo.install(&d, &[]);
    hold(&d, "agent-b", "a.txt");

    repo.write("a.txt", "1\n");
    repo.git_ok(&["add", "."], &[]);
    let out = repo.git(
        &["commit", "-q", "-m", "warned"],
        &[("COORD_GUARD", "warn")],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning, not refusing"),
        "{}",
        stderr(&out)
    );

    repo.write("a.txt", "2\n");
    repo.git_ok(&["add", "."], &[]);
    let out = repo.git(&["commit", "-q", "-m", "off"], &[("COORD_GUARD", "off")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    assert_eq!(repo.commits(), 3);

    // A mode that is not one of the three is refused, not ignored.
    repo.write("a.txt", "3\n");
    repo.git_ok(&["add", "."], &[]);
    let out = repo.git(&["commit", "-q", "-m", "typo"], &[("COORD_GUARD", "wran")]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wran"), "{}", stderr(&out));
}

#[test]
fn an_existing_hook_keeps_running_after_the_guard_and_uninstall_restores_it() {
    let d = Daemon::start(&[]);
    let repo = Repo::new(&d);
    let hook = repo.hook("pre-commit");
    let marker = repo._dir.path().join("ran");
    let original = format!("#!/bin/sh\necho ran >> '{}'\nexit 0\n", marker.display());
    std::fs::write(&hook, &original).expect("write hook");
    set_exec(&hook);

    let said = repo.install(&d, &[]);
    assert!(said.contains("added coord guard to"), "{said}");
    repo.install(&d, &[]); // twice is once
    hold(&d, "agent-b", "x.txt");

    repo.write("x.txt", "x\n");
    repo.git_ok(&["add", "."], &[]);
    assert!(!repo.git(&["commit", "-q", "-m", "x"], &[]).status.success());
    assert!(
        !marker.exists(),
        "the chained hook ran for a refused commit"
    );
    repo.write("y.txt", "y\n");
    repo.git_ok(&["reset", "-q", "x.txt"], &[]);
    repo.git_ok(&["add", "y.txt"], &[]);
    repo.git_ok(&["commit", "-q", "-m", "y"], &[]);
    assert_eq!(std::fs::read_to_string(&marker).expect("marker"), "ran\n");

    // The chained hook can still refuse on its own.
    let guarded = std::fs::read_to_string(&hook).expect("hook");
    std::fs::write(&hook, guarded.replace("exit 0", "exit 3")).expect("write");
    repo.write("y.txt", "y2\n");
    repo.git_ok(&["add", "y.txt"], &[]);
    assert!(!repo
        .git(&["commit", "-q", "-m", "y2"], &[])
        .status
        .success());
    std::fs::write(&hook, guarded).expect("write");

    let said = d.ok(&[
        "guard",
        "uninstall",
        "--repo",
        repo.path.to_str().expect("utf-8"),
    ]);
    assert!(said.contains("removed coord guard from"), "{said}");
    assert_eq!(std::fs::read_to_string(&hook).expect("hook"), original);
    // With the guard gone the locked path commits.
    repo.git_ok(&["add", "."], &[]);
    repo.git_ok(&["commit", "-q", "-m", "x"], &[]);
}

#[test]
fn a_daemon_that_does_not_answer_warns_unless_told_to_refuse() {
    let mut d = Daemon::start(&[]);
    let repo = Repo::new(&d);
    repo.install(&d, &[]);
    d.terminate();

    repo.write("a.txt", "1\n");
    repo.git_ok(&["add", "."], &[]);
    let out = repo.git(
        &["commit", "-q", "-m", "refused"],
        &[("COORD_GUARD_UNREACHABLE", "refuse")],
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("cannot reach the coord daemon"));

    let out = repo.git(&["commit", "-q", "-m", "allowed"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("locks not checked"),
        "{}",
        stderr(&out)
    );
    assert_eq!(repo.commits(), 2);
}

#[test]
fn a_push_carrying_a_locked_path_is_refused() {
    let d = Daemon::start(&[]);
    let repo = Repo::new(&d);
    let remote = repo._dir.path().join("remote.git");
    let out = Command::new("git")
        .args(["init", "-q", "--bare"])
        .arg(&remote)
        .output()
        .expect("git");
    assert!(out.status.success());
    repo.git_ok(
        &["remote", "add", "origin", remote.to_str().expect("utf-8")],
        &[],
    );
    repo.git_ok(&["push", "-q", "origin", "main"], &[]);
    // The commit is made before the lock is taken; the push is after.
    repo.install(&d, &["--pre-push"]);
    repo.write("lib/a.rs", "a\n");
    repo.git_ok(&["add", "."], &[]);
    repo.git_ok(&["commit", "-q", "-m", "a"], &[]);
    hold(&d, "agent-b", "lib/*.rs");

    let out = repo.git(&["push", "-q", "origin", "main"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing this push") && stderr(&out).contains("lib/a.rs"),
        "{}",
        stderr(&out)
    );
    repo.git_ok(
        &["push", "-q", "origin", "main"],
        &[("COORD_SESSION", "agent-b")],
    );
}

fn set_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

/// `GET /v1/locks?covering=…` (the hook's question before an edit)
/// answers with the locks whose resource covers one of the paths, and
/// nothing else; its bounds have their own error.
#[test]
fn locks_covering_answers_only_the_locks_over_the_paths() {
    let d = Daemon::start(&[]);
    hold(&d, "a", "src/**");
    hold(&d, "b", "docs/a.md");
    hold(&d, "c", "/abs/x/*");
    hold(&d, "e", "lib/x.rs");
    let names = |q: &str| -> Vec<String> {
        let r = d.http("GET", &format!("/v1/locks?{q}"), &[], None);
        assert_eq!(r.status, 200, "{q}: {}", r.json());
        let mut v: Vec<String> = r.json()["locks"]
            .as_array()
            .expect("locks")
            .iter()
            .map(|l| l["resource"].as_str().unwrap_or("").to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names("covering=src/a.rs&covering=%2Fabs%2Fx%2Fy"),
        ["/abs/x/*", "src/**"]
    );
    assert_eq!(names("covering=lib/x.rs&covering=src"), ["lib/x.rs"]);
    assert!(names("covering=elsewhere.txt").is_empty());
    assert_eq!(names("").len(), 4, "no covering: every lock");
    let many: Vec<String> = (0..65).map(|i| format!("covering=f{i}")).collect();
    let r = d.http("GET", &format!("/v1/locks?{}", many.join("&")), &[], None);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["code"], "invalid_field");
    assert_eq!(r.json()["error"]["field"], "covering");
    let r = d.http("GET", "/v1/locks?covering=a%0Ab", &[], None);
    assert_eq!(r.status, 400, "{}", r.json());
}
