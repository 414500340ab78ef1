//! Writing a view out in the legacy layout, so old readers keep working.
//!
//! Every file is written to a temp name in its directory and renamed into
//! place, so a reader never sees half a file. The exporter only ever
//! deletes files it wrote itself (an [`Exporter`] remembers them): a file a
//! legacy writer just created and nobody has imported yet is never touched.
//! Files whose bytes would not change are not rewritten, so a watcher on the
//! same root sees nothing when nothing changed.

use crate::layout::encode_resource;
use coord_proto::view::{Message, View};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

/// What an export did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportReport {
    /// Files created or rewritten.
    pub written: usize,
    /// Files removed (their object left the view).
    pub removed: usize,
    /// Files left alone because their bytes were already right.
    pub unchanged: usize,
}

/// Exports views into one root, remembering what it wrote.
#[derive(Debug, Default)]
pub struct Exporter {
    root: PathBuf,
    owned: BTreeSet<PathBuf>,
}

/// What an export should leave out: objects that came from the root itself
/// (bridged), which their own writers keep.
pub trait Skip {
    /// True if the session's files are someone else's.
    fn session(&self, session_id: &str) -> bool;
}

impl<F: Fn(&str) -> bool> Skip for F {
    fn session(&self, session_id: &str) -> bool {
        self(session_id)
    }
}

/// Refuses to write through a symlink planted at a directory between the
/// export root and `dir` (`root/sessions -> /elsewhere` would put files
/// outside the root): each such directory must be a real one, or absent.
fn no_link_below(root: &Path, dir: &Path) -> io::Result<()> {
    let Ok(rel) = dir.strip_prefix(root) else {
        return Ok(());
    };
    let mut at = root.to_path_buf();
    for part in rel.components() {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is a symlink inside the export root; coord does not write through it",
                        at.display()
                    ),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn write_atomic(root: &Path, path: &Path, bytes: &[u8]) -> io::Result<bool> {
    let dir = path.parent().unwrap_or(Path::new("."));
    no_link_below(root, dir)?;
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A fresh name created exclusively (O_EXCL, mode 0600): a symlink or
    // file planted at a predictable temp name is never followed or
    // overwritten. The rename replaces a link at `path` itself, never
    // what it points to.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    io::Write::write_all(&mut tmp, bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(true)
}

fn encode(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

impl Exporter {
    /// An exporter for `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Exporter {
            root: root.into(),
            owned: BTreeSet::new(),
        }
    }

    /// Writes `view` (message bodies from `bodies`, keyed by
    /// `(to_session, msg_id)`), removes the files of objects that left it,
    /// and leaves out what `skip` says belongs to someone else.
    ///
    /// # Errors
    /// The first file that could not be written or removed.
    pub fn export(
        &mut self,
        view: &View,
        bodies: &BTreeMap<(String, String), String>,
        skip: &dyn Skip,
    ) -> io::Result<ExportReport> {
        let mut want: BTreeMap<PathBuf, Vec<u8>> = BTreeMap::new();
        for s in view.sessions.values() {
            if skip.session(&s.session_id) {
                continue;
            }
            let v = json!({
                "session_id": s.session_id, "role": s.role, "task": s.task, "blob": s.blob,
                "phase": s.phase, "pid": s.pid, "started_at": s.registered_at,
                "last_heartbeat": s.last_heartbeat,
            });
            want.insert(
                self.root
                    .join("sessions")
                    .join(format!("{}.json", s.session_id)),
                encode(&v),
            );
        }
        for lock in view.locks.values() {
            // The legacy layout has one owner per lock: the first holder.
            let Some(h) = lock.holders.first() else {
                continue;
            };
            if skip.session(&h.session_id) {
                continue;
            }
            let v = json!({
                "resource": lock.resource, "owner_session": h.session_id,
                "acquired_at": h.acquired_at,
            });
            let dir = self
                .root
                .join("locks")
                .join(encode_resource(&lock.resource));
            want.insert(dir.join("record.json"), encode(&v));
        }
        for (to, inbox) in &view.inboxes {
            for m in inbox {
                let path = self
                    .root
                    .join("messages")
                    .join(format!("inbox-{to}"))
                    .join(format!("{}.json", m.msg_id));
                // A message file that exists was delivered there by a
                // legacy writer (or by an earlier export): leave it.
                if path.exists() && !self.owned.contains(&path) {
                    continue;
                }
                want.insert(path, encode(&message(m, bodies)));
            }
        }
        for o in view.orders.values() {
            let path = self
                .root
                .join("dispatch-orders")
                .join(format!("{}.json", o.order_id));
            if path.exists() && !self.owned.contains(&path) {
                continue;
            }
            let v = json!({
                "order_id": o.order_id, "assignee": o.assignee, "ticket": o.ticket,
                "issued_at": o.issued_at, "payload": o.payload,
            });
            want.insert(path, encode(&v));
        }

        let mut report = ExportReport::default();
        for (path, bytes) in &want {
            if write_atomic(&self.root, path, bytes)? {
                report.written += 1;
            } else {
                report.unchanged += 1;
            }
        }
        let gone: Vec<PathBuf> = self
            .owned
            .iter()
            .filter(|p| !want.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            match std::fs::remove_file(&path) {
                Ok(()) => report.removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            // An emptied lock directory goes too, as the legacy writers do.
            if path.file_name().is_some_and(|n| n == "record.json") {
                if let Some(dir) = path.parent() {
                    let _ = std::fs::remove_dir(dir);
                }
            }
            self.owned.remove(&path);
        }
        self.owned.extend(want.into_keys());
        Ok(report)
    }
}

fn message(m: &Message, bodies: &BTreeMap<(String, String), String>) -> Value {
    let body = bodies
        .get(&(m.to_session.clone(), m.msg_id.clone()))
        .cloned()
        .or_else(|| m.body.clone())
        .unwrap_or_default();
    json!({
        "msg_id": m.msg_id, "from_session": m.from_session, "kind": m.kind,
        "body": body, "sent_at": m.sent_at,
    })
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_directory_link_planted_in_the_root_is_not_written_through() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("root");
        std::fs::create_dir(&root).expect("root");
        std::os::unix::fs::symlink(outside.path(), root.join("dispatch-orders")).expect("link");
        let e = write_atomic(&root, &root.join("dispatch-orders/o1.json"), b"{}")
            .expect_err("written through a link");
        assert!(
            e.to_string().contains("symlink inside the export root"),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(outside.path()).expect("dir").count(), 0);
        // A real directory is fine.
        write_atomic(&root, &root.join("sessions/s1.json"), b"{}").expect("written");
    }

    use super::*;
    use crate::layout::{scan, Root};
    use coord_proto::view::{Holder, Lock, Order, OrderState, Session};
    use coord_proto::{LockMode, Timestamp};

    fn view() -> View {
        let mut v = View::default();
        for id in ["api-1", "legacy-1"] {
            v.sessions.insert(
                id.into(),
                Session {
                    session_id: id.into(),
                    role: "worker".into(),
                    task: "T".into(),
                    blob: json!({"cwd": "/x"}),
                    phase: "editing".into(),
                    pid: Some(42),
                    parent_session: None,
                    ttl_ms: 30_000,
                    registered_seq: 1,
                    registered_at: Timestamp(1_000),
                    last_heartbeat: Timestamp(2_000),
                    source: if id == "api-1" {
                        "api".into()
                    } else {
                        "fs-watch".into()
                    },
                    ..Default::default()
                },
            );
        }
        v.locks.insert(
            "src/main.rs".into(),
            Lock {
                resource: "src/main.rs".into(),
                mode: LockMode::Exclusive,
                holders: vec![Holder {
                    session_id: "api-1".into(),
                    acquired_seq: 2,
                    acquired_at: Timestamp(3_000),
                    ttl_ms: None,
                    delegated_from: None,
                }],
                waiters: vec![],
            },
        );
        v.inboxes.insert(
            "legacy-1".into(),
            vec![Message {
                msg_id: "M1".into(),
                to_session: "legacy-1".into(),
                from_session: Some("api-1".into()),
                kind: "note".into(),
                size: 2,
                seq: 3,
                sent_at: Timestamp(4_000),
                body: None,
            }],
        );
        v.orders.insert(
            "o1".into(),
            Order {
                order_id: "o1".into(),
                assignee: "legacy-1".into(),
                ticket: "TOD-1".into(),
                from_session: None,
                payload: Some(json!({"p": 1})),
                state: OrderState::Issued,
                issued_seq: 4,
                issued_at: Timestamp(5_000),
            },
        );
        v
    }

    #[test]
    fn a_link_planted_at_a_temp_name_is_never_followed() {
        let dir = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        let victim = outside.path().join("victim");
        std::fs::write(&victim, "precious").expect("victim");
        // Where the first exporter put its temp files, for every file it
        // writes: a predictable name someone else could plant first.
        for (sub, name) in [
            ("sessions", "api-1.json"),
            ("locks", "src%2Fmain.rs"),
            ("orders", "o1.json"),
        ] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("dir");
            std::os::unix::fs::symlink(&victim, dir.path().join(sub).join(format!(".{name}.tmp")))
                .expect("plant");
        }
        let mut ex = Exporter::new(dir.path());
        let r = ex
            .export(&view(), &BTreeMap::new(), &|_: &str| false)
            .expect("export");
        assert!(r.written > 0);
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious"
        );
        let root = scan(dir.path(), &Root::default());
        assert_eq!(root.sessions["api-1"].phase, "editing");
    }

    #[test]
    fn exports_read_back_as_the_same_objects_and_leave_bridged_ones_alone() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut ex = Exporter::new(dir.path());
        let bodies =
            BTreeMap::from([(("legacy-1".to_string(), "M1".to_string()), "hi".to_string())]);
        let skip = |s: &str| s == "legacy-1";
        let r = ex.export(&view(), &bodies, &skip).expect("export");
        assert_eq!(r.written, 4);
        let root = scan(dir.path(), &Root::default());
        assert_eq!(root.sessions.keys().collect::<Vec<_>>(), ["api-1"]);
        assert_eq!(root.sessions["api-1"].phase, "editing");
        assert_eq!(root.locks["src%2Fmain.rs"].owner_session, "api-1");
        assert_eq!(root.messages[&("legacy-1".into(), "M1".into())].body, "hi");
        assert_eq!(root.orders["o1"].ticket, "TOD-1");
        // Nothing changed: nothing is rewritten.
        let again = ex.export(&view(), &bodies, &skip).expect("export");
        assert_eq!((again.written, again.unchanged), (0, 4));
        // The lock is released and the session ends: their files go; a file
        // the exporter did not write stays.
        std::fs::write(dir.path().join("sessions/legacy-9.json"), "{}").expect("foreign file");
        let mut v = view();
        v.locks.clear();
        v.sessions.remove("api-1");
        let r = ex.export(&v, &bodies, &skip).expect("export");
        assert_eq!(r.removed, 2);
        assert!(!dir.path().join("locks/src%2Fmain.rs").exists());
        assert!(dir.path().join("sessions/legacy-9.json").exists());
        // No temp files are left behind.
        let leftovers: Vec<_> = walk(dir.path())
            .into_iter()
            .filter(|p| p.rsplit('/').next().is_some_and(|n| n.ends_with(".tmp")))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    fn walk(p: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(p).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path().display().to_string());
            }
        }
        out
    }
}
