//! The fleet view never lies: fencing and tied lifetimes (a lock holder
//! that lost its lease cannot keep acting unnoticed), cursors that cannot
//! silently lose events, a view that shows leases, waits and ends, and a
//! CLI that keeps its documented promises. Each test is a regression test
//! at the level the problem was found: a real daemon, the real CLI, real
//! processes.

use crate::support::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::Duration;

pub(crate) fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn wait_file(path: &std::path::Path, within: Duration) -> String {
    wait_until(&format!("{}", path.display()), within, || {
        std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n'))
    });
    std::fs::read_to_string(path).expect("file")
}

/// The reproduction of the issue: `coord session run` wraps an agent that
/// takes an exclusive lock and works; the wrapper is SIGKILLed. The agent
/// must not go on working while the next waiter gets the lock: it dies
/// with its wrapper, its session ends because its process exited (not
/// because the lease ran out much later), the lock passes, and the old
/// grant's fencing token is refused.
#[test]
fn a_killed_wrapper_takes_its_agent_with_it_and_the_lock_is_fenced() {
    let d = Daemon::start(&[]);
    let dir = d.dir.path();
    let script = |name: &str, id: &str| {
        let p = dir.join(format!("{name}.sh"));
        std::fs::write(
            &p,
            format!(
                "set -e\n\
                 coord --json lock acquire repo/wrap --wait 60s > {tok}.tmp\n\
                 mv {tok}.tmp {tok}\n\
                 exec sleep 120\n",
                tok = dir.join(format!("{id}.token")).display()
            ),
        )
        .expect("script");
        p
    };
    let path = format!(
        "{}:{}",
        std::path::Path::new(bin())
            .parent()
            .expect("bin dir")
            .display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = |id: &str, script: &std::path::Path| {
        coord_cmd()
            .args(["session", "run", "--id", id, "--ttl", "6s", "--", "bash"])
            .arg(script)
            .env("COORD_SOCKET", &d.socket)
            .env("PATH", &path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("session run")
    };
    let mut wrap_a = run("wrapA", &script("a", "wrapA"));
    let tok_a: serde_json::Value = serde_json::from_str(&wait_file(
        &dir.join("wrapA.token"),
        Duration::from_secs(20),
    ))
    .expect("token json");
    let token_a = tok_a["fencing_token"].as_u64().expect("fencing token");
    let agent_a = json_of(&d.coord(&["--json", "session", "show", "wrapA"]))["pid"]
        .as_u64()
        .expect("pid") as u32;
    assert!(running(agent_a));
    let mut wrap_b = run("wrapB", &script("b", "wrapB"));
    wait_until("wrapB queued", Duration::from_secs(20), || {
        json_of(&d.coord(&["--json", "lock", "list"]))["locks"][0]["waiters"]
            .as_array()
            .is_some_and(|w| w.len() == 1)
    });

    // kill -9 the wrapper of A.
    wrap_a.kill().expect("kill -9 wrapper");
    wrap_a.wait().expect("reap wrapper");

    let tok_b: serde_json::Value = serde_json::from_str(&wait_file(
        &dir.join("wrapB.token"),
        Duration::from_secs(20),
    ))
    .expect("token json");
    let token_b = tok_b["fencing_token"].as_u64().expect("fencing token");
    // Over the processes: when B holds the lock, A's agent is gone.
    assert!(
        !running(agent_a),
        "the orphaned agent {agent_a} still runs while wrapB holds the lock"
    );
    // Over the log: A ended because its process exited, and every grant of
    // repo/wrap came after the previous holder's release.
    let events = d.all_events();
    let dereg_a = events
        .iter()
        .find(|e| e["tx_kind"] == "session.dereg" && e["session_id"] == "wrapA")
        .expect("wrapA ended");
    assert_eq!(dereg_a["payload"]["reason"], "process_exited", "{dereg_a}");
    let mut holder: Option<String> = None;
    for e in events.iter().filter(|e| e["resource"] == "repo/wrap") {
        let who = e["payload"]["owner_session"].as_str().map(str::to_string);
        match e["tx_kind"].as_str() {
            Some("lock.acquire") => {
                assert!(holder.is_none(), "two holders of repo/wrap at {e}");
                holder = who;
            }
            Some("lock.release") => {
                assert_eq!(holder, who, "release by a non-holder at {e}");
                holder = None;
            }
            _ => {}
        }
    }
    assert_eq!(holder.as_deref(), Some("wrapB"));
    // Fencing: the tokens increase, A's is refused, B's is current.
    assert!(token_b > token_a, "{token_b} > {token_a}");
    let stale = d.coord(&[
        "lock",
        "check",
        "repo/wrap",
        "--token",
        &token_a.to_string(),
    ]);
    assert_eq!(stale.status.code(), Some(4), "{}", stderr(&stale));
    let text = String::from_utf8_lossy(&stale.stdout);
    assert!(
        text.contains("stale") && text.contains(&format!("wrapB (token {token_b})")),
        "{text}"
    );
    d.ok(&[
        "lock",
        "check",
        "repo/wrap",
        "--token",
        &token_b.to_string(),
    ]);

    let _ = wrap_b.kill();
    let _ = wrap_b.wait();
}

/// A session whose lease runs out while its process still runs: the
/// session ends as expired, the dereg says the process was alive and which
/// signal it gets, and the daemon sends it (SIGTERM, then SIGKILL after the
/// grace for a process that ignores SIGTERM; nothing with `never`).
#[test]
fn an_expired_lease_signals_the_process_that_outlived_it() {
    use std::os::unix::process::ExitStatusExt;
    let d = Daemon::start(&[]);
    let spawn = |cmd: &str| {
        Command::new("bash")
            .args(["-c", cmd])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let register = |id: &str, pid: u32, extra: &[&str]| {
        let mut args = vec![
            "session",
            "register",
            "--id",
            id,
            "--ttl",
            "1s",
            "--kill-grace",
            "300ms",
        ];
        let pid = pid.to_string();
        args.extend(["--pid", pid.as_str()]);
        args.extend(extra);
        d.ok(&args);
    };

    // A plain process: SIGTERM.
    let mut plain = spawn("exec sleep 600");
    register("plain", plain.id(), &[]);
    let st = plain.wait().expect("wait");
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st}");
    let e = dereg_of(&d, "plain");
    assert_eq!(e["payload"]["reason"], "expired");
    assert_eq!(e["payload"]["process_alive"], true, "{e}");
    assert_eq!(e["payload"]["signal"], "SIGTERM", "{e}");
    assert_eq!(e["payload"]["kill_after_ms"], 300, "{e}");

    // One that ignores SIGTERM: SIGKILL after the grace.
    let mut stubborn = spawn("trap '' TERM; exec sleep 600");
    register("stubborn", stubborn.id(), &[]);
    let st = stubborn.wait().expect("wait");
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");

    // `never`: the session ends, the process is left alone, the event says
    // it was alive and that nothing was sent.
    let mut spared = spawn("exec sleep 600");
    register("spared", spared.id(), &["--on-expiry", "never"]);
    let e = dereg_of(&d, "spared");
    assert_eq!(e["payload"]["process_alive"], true, "{e}");
    assert!(e["payload"].get("signal").is_none(), "{e}");
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        spared.try_wait().expect("try_wait").is_none(),
        "a never session's process was signalled"
    );
    let _ = spared.kill();
    let _ = spared.wait();

    // The ended list says how each ended.
    let list = json_of(&d.coord(&["--json", "session", "list", "--ended"]));
    let ended = list["ended"].as_array().expect("ended");
    let plain = ended
        .iter()
        .find(|e| e["session_id"] == "plain")
        .expect("plain listed");
    assert_eq!(plain["reason"], "expired");
    assert_eq!(plain["signal"], "SIGTERM");
    let text = d.ok(&["session", "list", "--all"]);
    assert!(
        text.contains("lease expired (SIGTERM sent to its live process)"),
        "{text}"
    );
}

/// A wrapped command whose session is ended by someone else (here an
/// admin) is told: the wrapper sends it SIGTERM and exits with its status.
#[test]
fn session_run_tells_its_command_when_the_session_is_ended_for_it() {
    let d = Daemon::start(&[]);
    let run = coord_cmd()
        .args([
            "session", "run", "--id", "told", "--ttl", "1500ms", "--", "sleep", "600",
        ])
        .env("COORD_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run");
    wait_until("told registered", Duration::from_secs(10), || {
        d.coord(&["session", "show", "told"]).status.success()
    });
    d.ok(&["session", "dereg", "--session", "told", "--force"]);
    let out = run.wait_with_output().expect("wrapper");
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("SIGTERM to") || stderr(&out).contains("signalled the process group"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn fencing_tokens_are_returned_listed_and_checked() {
    let d = Daemon::start(&[]);
    let ta = d.register("fa");
    let tb = d.register("fb");
    let a = d.coord_env(
        &["--json", "lock", "acquire", "src/a.rs"],
        &[("COORD_SESSION", "fa"), ("COORD_SESSION_TOKEN", &ta)],
    );
    let a = json_of(&a);
    let token_a = a["fencing_token"].as_u64().expect("token");
    assert_eq!(a["seq"].as_u64(), Some(token_a));
    let listed = d.ok(&["lock", "list"]);
    assert!(listed.contains(&format!("fa ({token_a})")), "{listed}");
    let ok = d.ok(&["lock", "check", "src/a.rs", "--token", &token_a.to_string()]);
    assert!(ok.contains("is current"), "{ok}");
    // Holding it again answers the same token.
    let again = d.coord_env(
        &["lock", "acquire", "src/a.rs"],
        &[("COORD_SESSION", "fa"), ("COORD_SESSION_TOKEN", &ta)],
    );
    assert!(
        String::from_utf8_lossy(&again.stdout).contains(&format!("fencing token {token_a}")),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    d.ok(&[
        "lock",
        "release",
        "src/a.rs",
        "--session",
        "fa",
        "--token",
        &ta,
    ]);
    let gone = d.coord(&["lock", "check", "src/a.rs", "--token", &token_a.to_string()]);
    assert_eq!(gone.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&gone.stdout).contains("nobody holds"));
    let b = json_of(&d.coord_env(
        &["--json", "lock", "acquire", "src/a.rs"],
        &[("COORD_SESSION", "fb"), ("COORD_SESSION_TOKEN", &tb)],
    ));
    let token_b = b["fencing_token"].as_u64().expect("token");
    assert!(token_b > token_a);
    let r = d.http(
        "GET",
        &format!("/v1/locks/check?resource=src/a.rs&token={token_a}"),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["current"], false);
    assert_eq!(
        v["holders"],
        json!([{"session_id":"fb","fencing_token":token_b}])
    );
    let r = d.http("GET", "/v1/locks/check?resource=src/a.rs", &[], None);
    assert_eq!((r.status, r.code().as_str()), (400, "invalid_field"));
}

#[test]
fn session_list_shows_the_lease_the_waits_and_the_ends() {
    let d = Daemon::start(&[]);
    let t1 = d.register("holder");
    let t2 = d.register("waiter");
    let before = json_of(&d.coord(&["--json", "session", "show", "holder"]));
    let renewed0 = before["lease"]["renewed_at"]
        .as_str()
        .expect("lease")
        .to_string();
    std::thread::sleep(Duration::from_millis(1100));
    d.ok(&[
        "session",
        "heartbeat",
        "--session",
        "holder",
        "--token",
        &t1,
    ]);
    let after = json_of(&d.coord(&["--json", "session", "show", "holder"]));
    let renewed1 = after["lease"]["renewed_at"].as_str().expect("lease");
    assert!(
        renewed1 > renewed0.as_str(),
        "a bare renewal moves the lease: {renewed0} -> {renewed1}"
    );
    assert_eq!(
        after["last_heartbeat"], before["last_heartbeat"],
        "a bare renewal is not a logged heartbeat"
    );
    let exp = coord_proto::Timestamp::parse(after["lease"]["expires_at"].as_str().expect("exp"))
        .expect("ts");
    let ren = coord_proto::Timestamp::parse(renewed1).expect("ts");
    assert_eq!(exp.as_millis() - ren.as_millis(), 30_000);

    d.ok(&[
        "lock",
        "acquire",
        "repo/main",
        "--session",
        "holder",
        "--token",
        &t1,
    ]);
    let mut waiting = coord_cmd()
        .args([
            "lock",
            "acquire",
            "repo/main",
            "--wait",
            "60s",
            "--session",
            "waiter",
            "--token",
            &t2,
        ])
        .env("COORD_SOCKET", &d.socket)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("waiter");
    wait_until("waiter queued", Duration::from_secs(10), || {
        json_of(&d.coord(&["--json", "session", "show", "waiter"]))["waiting_on"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    });
    let w = json_of(&d.coord(&["--json", "session", "show", "waiter"]));
    assert_eq!(w["waiting_on"][0]["resource"], "repo/main");
    assert_eq!(w["waiting_on"][0]["position"], 1);
    let text = d.ok(&["session", "list"]);
    let row = text
        .lines()
        .find(|l| l.starts_with("waiter"))
        .expect("waiter row");
    assert!(
        row.contains("(waiting)") && row.contains("repo/main, ") && row.contains("#1 in queue"),
        "{text}"
    );
    assert!(
        text.lines().next().is_some_and(|h| h.contains("RENEWED")),
        "{text}"
    );
    let _ = waiting.kill();
    let _ = waiting.wait();

    // Ends: an exit code, and the error a later call of the session gets.
    d.ok(&[
        "session",
        "dereg",
        "--exit-code",
        "3",
        "--session",
        "holder",
        "--token",
        &t1,
    ]);
    let ended = json_of(&d.coord(&["--json", "session", "list", "--ended"]));
    let h = ended["ended"]
        .as_array()
        .and_then(|e| e.iter().find(|x| x["session_id"] == "holder"))
        .expect("holder ended")
        .clone();
    assert_eq!(
        (h["reason"].as_str(), h["exit_code"].as_i64()),
        (Some("explicit"), Some(3))
    );
    let late = d.coord(&[
        "session",
        "heartbeat",
        "--session",
        "holder",
        "--token",
        &t1,
    ]);
    assert_eq!(late.status.code(), Some(6));
    assert!(
        stderr(&late).contains("session holder ended at") && stderr(&late).contains("deregistered"),
        "{}",
        stderr(&late)
    );
}

#[test]
fn an_expired_session_says_it_expired_and_when() {
    let d = Daemon::start(&[]);
    let out = d.ok(&[
        "--json", "session", "register", "--id", "brief", "--ttl", "1s",
    ]);
    let brief: serde_json::Value = serde_json::from_str(&out).expect("json");
    let btok = brief["token"].as_str().expect("token").to_string();
    wait_until("brief expired", Duration::from_secs(20), || {
        !d.coord(&["session", "show", "brief"]).status.success()
    });
    let late = d.coord(&[
        "lock",
        "acquire",
        "x",
        "--session",
        "brief",
        "--token",
        &btok,
    ]);
    assert_eq!(late.status.code(), Some(6));
    assert!(
        stderr(&late).contains("its lease expired") && stderr(&late).contains("ended at"),
        "{}",
        stderr(&late)
    );
}

#[test]
fn the_cli_keeps_its_promises() {
    // A real tmux session for `session run --tmux` (else the lifecycle
    // manager rightly ends the session as runtime_gone).
    let tmux = Tmux(format!("coord-truth-{}", std::process::id()));
    let made = tmux.run(&["new-session", "-d", "-s", "rich-tmux", "sleep", "120"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let d = Daemon::start(&["--tmux-socket", &tmux.0]);
    // --json errors are JSON on stderr, with the daemon's code.
    let out = d.coord(&["--json", "session", "show", "nobody"]);
    assert_eq!(out.status.code(), Some(6));
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(e["error"]["code"], "session_not_found");
    assert!(e["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    // Usage mistakes exit 2, in JSON under --json.
    let out = d.coord(&["events", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = d.coord(&["--json", "events", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2));
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).expect("json error");
    assert_eq!(e["error"]["code"], "usage");
    let out = d.coord(&["lock", "acquire", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--session"), "{}", stderr(&out));
    // --json is honoured by events.
    post(&d, "/v1/events", None, &json!({"tx_kind":"x.j"}));
    let out = d.ok(&["--json", "events", "--since", "start", "--no-follow"]);
    let first: serde_json::Value =
        serde_json::from_str(out.lines().next().expect("a line")).expect("json line");
    assert_eq!(first["tx_kind"], "x.j");

    // register --env prints only eval-safe export lines.
    let env_out = d.ok(&["session", "register", "--id", "ev1", "--env"]);
    assert_eq!(env_out.lines().count(), 1, "{env_out}");
    let line = env_out.trim_end();
    assert!(
        line.starts_with("export COORD_SESSION=ev1 COORD_SESSION_TOKEN="),
        "{line}"
    );
    let token = line.rsplit('=').next().expect("token");
    assert_eq!(token.len(), 52, "tokens are 52 characters: {token}");
    assert!(token
        .chars()
        .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
    let evald = Command::new("bash")
        .args([
            "-c",
            &format!(
                "eval \"$({} session register --id ev2 --env)\"; echo \"$COORD_SESSION\"",
                bin()
            ),
        ])
        .env("COORD_SOCKET", &d.socket)
        .output()
        .expect("bash");
    assert_eq!(String::from_utf8_lossy(&evald.stdout).trim(), "ev2");

    // Completing a completed order: order_not_found (PROTOCOL §8).
    let tok = d.register("w");
    d.ok(&["dispatch", "issue", "w", "T-1", "--id", "o1"]);
    let as_w = [
        ("COORD_SESSION", "w"),
        ("COORD_SESSION_TOKEN", tok.as_str()),
    ];
    assert!(d
        .coord_env(&["dispatch", "complete", "o1"], &as_w)
        .status
        .success());
    let again = d.coord_env(&["--json", "dispatch", "complete", "o1"], &as_w);
    assert_eq!(again.status.code(), Some(6));
    let e: serde_json::Value = serde_json::from_slice(&again.stderr).expect("json");
    assert_eq!(e["error"]["code"], "order_not_found");

    // Paths as resources: one name however written; absolute paths work;
    // lock_held says what to do next.
    let other = d.register("other");
    let as_o = [
        ("COORD_SESSION", "other"),
        ("COORD_SESSION_TOKEN", other.as_str()),
    ];
    let a = json_of(&d.coord_env(&["--json", "lock", "acquire", "./src//a.rs"], &as_w));
    assert_eq!(a["resource"], "src/a.rs");
    let held = d.coord_env(&["lock", "acquire", "src/./a.rs"], &as_o);
    assert_eq!(held.status.code(), Some(4));
    assert!(stderr(&held).contains("--wait"), "{}", stderr(&held));
    let abs = json_of(&d.coord_env(
        &["--json", "lock", "acquire", "/srv/repo//README.md"],
        &as_o,
    ));
    assert_eq!(abs["resource"], "/srv/repo/README.md");
    // --path: relative to the git work tree.
    let repo = d.dir.path().join("repo");
    std::fs::create_dir_all(repo.join(".git")).expect("git");
    std::fs::create_dir_all(repo.join("src")).expect("src");
    let p = repo.join("src").join("lib.rs");
    std::fs::write(&p, "").expect("file");
    let viapath = json_of(&d.coord_env(
        &[
            "--json",
            "lock",
            "acquire",
            "--path",
            p.to_str().expect("utf8"),
        ],
        &as_o,
    ));
    assert_eq!(viapath["resource"], "src/lib.rs");

    // lock release --force without --session releases every hold.
    let forced = d.ok(&["lock", "release", "src/a.rs", "--force"]);
    assert!(forced.contains("released src/a.rs held by w"), "{forced}");

    // An unreachable daemon: the OS error once.
    let nowhere = coord_cmd()
        .args(["status"])
        .env("COORD_SOCKET", d.dir.path().join("nope.sock"))
        .output()
        .expect("coord");
    assert_eq!(nowhere.status.code(), Some(3));
    let msg = stderr(&nowhere);
    assert_eq!(msg.matches("No such file or directory").count(), 1, "{msg}");

    // session run takes what register takes.
    let out = d.dir.path().join("show.json");
    let shown = coord_cmd()
        .args([
            "session",
            "run",
            "--id",
            "rich",
            "--blob",
            r#"{"k":1}"#,
            "--tmux",
            "rich-tmux",
            "--transcript",
            "/tmp/rich.jsonl",
            "--role",
            "r",
            "--task",
            "t",
            "--on-expiry",
            "never",
            "--",
            "bash",
            "-c",
            &format!("{} --json session show rich > {}", bin(), out.display()),
        ])
        .env("COORD_SOCKET", &d.socket)
        .output()
        .expect("run");
    assert!(shown.status.success(), "{}", stderr(&shown));
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("show")).expect("json");
    assert_eq!(s["blob"], json!({"k":1}));
    assert_eq!(s["tmux"], "rich-tmux");
    assert_eq!(s["transcript"], "/tmp/rich.jsonl");
    assert_eq!(s["on_expiry"], "never");
    assert_eq!(
        (s["role"].as_str(), s["task"].as_str()),
        (Some("r"), Some("t"))
    );
}

#[test]
fn the_sentinel_warns_when_its_coord_root_is_missing() {
    let d = Daemon::start(&[]);
    let missing = d.dir.path().join("no-such-root");
    let mut s = coord_cmd()
        .args(["sentinel", "--source", "fs-poll", "--coord-root"])
        .arg(&missing)
        .env("XDG_STATE_HOME", d.dir.path())
        .args(["--interval", "50ms"])
        .env("COORD_SOCKET", &d.socket)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sentinel");
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill with our child's pid.
    unsafe { libc::kill(s.id() as i32, libc::SIGTERM) };
    let _ = s.wait();
    let mut err = String::new();
    if let Some(mut e) = s.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert!(
        err.contains("does not exist") && err.contains("no-such-root"),
        "{err}"
    );
}

#[test]
fn the_daemon_logs_json_under_json() {
    let d = Daemon::start(&["--json"]);
    d.register("logged");
    let mut d = d;
    d.terminate();
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "no log lines");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{l}");
    }
}
