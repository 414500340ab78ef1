//! A full disk: writes get a precise `store_unavailable`, nothing
//! acknowledged is lost, the daemon keeps serving reads, and writes resume
//! (with no gap in seq) once there is room again. Needs root to mount a
//! small tmpfs; where mounting is refused the test fails, unless
//! `COORD_SKIP_ROOT_TESTS=1` says to skip it, and then it is reported as
//! skipped (`support::skip`).

use crate::support::{post, Daemon};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Option<Mount> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            // mode=0700: the daemon refuses a store directory others can
            // write to, and a fresh tmpfs is 1777.
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Mount(at.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("remount");
        assert!(st.success(), "remount failed");
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_precisely_and_loses_nothing() {
    let _alone = crate::support::exclusive();
    let base = tempfile::Builder::new()
        .prefix("cf")
        .tempdir_in("/tmp")
        .expect("tmp");
    let mnt = base.path().join("m");
    let Some(mount) = Mount::tmpfs(&mnt, "1m") else {
        crate::support::skip(
            "a_full_disk_refuses_writes_precisely_and_loses_nothing",
            "cannot mount a tmpfs here (needs root)",
        );
        return;
    };
    let store = mnt.join("coord.db");
    let d = Daemon::start_with_store(Some(store), &[]);
    let pad = "x".repeat(30_000);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let r = post(
            &d,
            "/v1/events",
            None,
            &json!({"tx_kind":"x.fill","payload":{"i":i,"pad":pad}}),
        );
        if r.status == 201 {
            acked.push(r.json()["seq"].as_u64().expect("seq"));
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("a 1 MiB disk never filled up");
    eprintln!(
        "full_disk: {} writes acknowledged before the disk filled",
        acked.len()
    );
    assert_eq!((r.status, r.code().as_str()), (503, "store_unavailable"));
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(msg.contains("nothing was appended"), "{msg}");
    // Still serving, and every acknowledged event is there.
    assert_eq!(d.http("GET", "/v1/status", &[], None).status, 200);
    let events = d.all_events();
    let seqs: Vec<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert_eq!(seqs, acked, "acknowledged events missing or extra");
    // A second refused write is refused the same way.
    let again = post(
        &d,
        "/v1/events",
        None,
        &json!({"tx_kind":"x.fill","payload":{"pad":pad}}),
    );
    assert_eq!(again.code(), "store_unavailable");
    // Room again: writes resume right after the last acknowledged seq.
    mount.resize("16m");
    let r = post(&d, "/v1/events", None, &json!({"tx_kind":"x.after"}));
    assert_eq!(r.status, 201, "{:?}", r.json());
    assert_eq!(r.json()["seq"].as_u64(), acked.last().map(|s| s + 1));
    drop(d);
    drop(mount);
}
