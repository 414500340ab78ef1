//! `coord completions` and `coord man`: the scripts load in a real shell
//! and complete coord's subcommands; the man pages render.

use crate::support::*;
use std::process::Command;

#[test]
fn bash_completion_loads_and_completes_subcommands() {
    let script = coord_cmd()
        .args(["completions", "bash"])
        .output()
        .expect("coord");
    assert!(script.status.success());
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("coord.bash");
    std::fs::write(&file, &script.stdout).expect("write");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source '{}' && COMP_WORDS=(coord gu) COMP_CWORD=1 COMP_LINE='coord gu' COMP_POINT=8 && _coord coord gu coord && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            file.display()
        ))
        .output()
        .expect("bash");
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        got.lines().any(|l| l == "guard"),
        "{got}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for shell in ["zsh", "fish"] {
        let out = coord_cmd()
            .args(["completions", shell])
            .output()
            .expect("coord");
        assert!(out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("guard"),
            "{shell}"
        );
    }
    let bad = coord_cmd()
        .args(["completions", "tcsh"])
        .output()
        .expect("coord");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_pages_render_for_coord_and_every_subcommand() {
    let page = coord_cmd().arg("man").output().expect("coord");
    assert!(page.status.success());
    let text = String::from_utf8_lossy(&page.stdout);
    assert!(text.contains(".TH coord 1"), "{text}");
    assert!(text.contains("guard"), "{text}");

    let dir = tempfile::tempdir().expect("tempdir");
    let out = coord_cmd()
        .args(["man", "--out"])
        .arg(dir.path())
        .output()
        .expect("coord");
    assert!(out.status.success());
    for name in ["coord.1", "coord-guard-install.1", "coord-lock-acquire.1"] {
        let p = dir.path().join(name);
        let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(text.contains(".SH NAME"), "{name}");
    }
}
