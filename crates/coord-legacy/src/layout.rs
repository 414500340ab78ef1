//! The legacy coord root (`LEGACY_LAYOUT.md`): file formats and a scanner.
//!
//! Files are read leniently: unknown fields are kept in `extra`; a file that
//! does not parse is "not yet" (a writer may be half-way through writing it
//! in place), never an error; temp files (`.name`, `name.tmp`) and names
//! that match no pattern are ignored.

use coord_proto::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// `sessions/<session_id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionFile {
    /// Must equal the file stem.
    pub session_id: String,
    /// Role.
    #[serde(default)]
    pub role: String,
    /// Task.
    #[serde(default)]
    pub task: String,
    /// Free JSON.
    #[serde(default)]
    pub blob: Value,
    /// Phase.
    #[serde(default)]
    pub phase: String,
    /// Process id.
    #[serde(default)]
    pub pid: Option<u32>,
    /// Start time.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// Last heartbeat.
    #[serde(default)]
    pub last_heartbeat: Option<Timestamp>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `locks/<resource_dir>/record.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockFile {
    /// Must equal the decoded directory name.
    pub resource: String,
    /// Holder.
    pub owner_session: String,
    /// Grant time.
    #[serde(default)]
    pub acquired_at: Option<Timestamp>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `messages/inbox-<session_id>/<msg_id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageFile {
    /// Must equal the file stem.
    pub msg_id: String,
    /// Sender.
    #[serde(default)]
    pub from_session: Option<String>,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Body.
    #[serde(default)]
    pub body: String,
    /// Send time.
    #[serde(default)]
    pub sent_at: Option<Timestamp>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `dispatch-orders/<order_id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderFile {
    /// Must equal the file stem.
    pub order_id: String,
    /// Assignee.
    pub assignee: String,
    /// Ticket.
    #[serde(default)]
    pub ticket: String,
    /// Issue time.
    #[serde(default)]
    pub issued_at: Option<Timestamp>,
    /// Free JSON.
    #[serde(default)]
    pub payload: Option<Value>,
    /// Everything else.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Everything a scan found, keyed by file name so iteration is in the
/// fixed order of LEGACY_LAYOUT ("by name within each"). Serializable so
/// a sentinel can keep its last scan across restarts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Root {
    /// By file stem.
    pub sessions: BTreeMap<String, SessionFile>,
    /// By (encoded) directory name.
    pub locks: BTreeMap<String, LockFile>,
    /// By (recipient, file stem).
    #[serde(with = "message_pairs")]
    pub messages: BTreeMap<(String, String), MessageFile>,
    /// By file stem.
    pub orders: BTreeMap<String, OrderFile>,
}

/// JSON maps need string keys: messages are kept as
/// `[[recipient, stem, file], …]`.
mod message_pairs {
    use super::MessageFile;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(
        m: &BTreeMap<(String, String), MessageFile>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let v: Vec<(&String, &String, &MessageFile)> =
            m.iter().map(|((to, stem), f)| (to, stem, f)).collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(String, String), MessageFile>, D::Error> {
        let v: Vec<(String, String, MessageFile)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(to, stem, f)| ((to, stem), f)).collect())
    }
}

/// A temp or hidden name a writer renames into place later.
pub fn is_temp(name: &str) -> bool {
    name.starts_with('.') || name.ends_with(".tmp")
}

/// `name.json` → `name`, for names that are neither temp nor other files.
fn json_stem(name: &str) -> Option<&str> {
    if is_temp(name) {
        return None;
    }
    name.strip_suffix(".json").filter(|s| !s.is_empty())
}

fn entries(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = rd
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    out.sort();
    out
}

/// Reads and parses one file; `None` if it vanished or is not (yet) valid.
fn read<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Scans `root`. A file that exists but does not parse keeps its entry from
/// `prev` (it is being rewritten: "not yet"), so a half-written file never
/// looks like a removal or a change.
pub fn scan(root: &Path, prev: &Root) -> Root {
    scan_counted(root, prev).0
}

/// [`scan`], and how many files it skipped as malformed (not parseable, or
/// naming another id than their file name).
pub fn scan_counted(root: &Path, prev: &Root) -> (Root, u64) {
    let mut skipped = 0u64;
    let mut out = Root::default();
    for (name, path) in entries(&root.join("sessions")) {
        let Some(stem) = json_stem(&name) else {
            continue;
        };
        match read::<SessionFile>(&path) {
            Some(s) if s.session_id == stem => {
                out.sessions.insert(stem.to_string(), s);
            }
            Some(s) => {
                tracing::warn!(file = %path.display(), session_id = %s.session_id, "session_id does not match the file name; skipped");
                skipped += 1;
                keep(&mut out.sessions, &prev.sessions, stem);
            }
            None => {
                skipped += 1;
                keep(&mut out.sessions, &prev.sessions, stem)
            }
        }
    }
    for (dir, path) in entries(&root.join("locks")) {
        if is_temp(&dir) || !path.is_dir() {
            continue;
        }
        let Ok(resource) = percent_encoding::percent_decode_str(&dir).decode_utf8() else {
            tracing::warn!(dir = %dir, "lock directory is not percent-encoded UTF-8; skipped");
            skipped += 1;
            continue;
        };
        let record = path.join("record.json");
        if !record.exists() {
            continue;
        }
        match read::<LockFile>(&record) {
            Some(l) if l.resource == resource => {
                out.locks.insert(dir.clone(), l);
            }
            Some(l) => {
                tracing::warn!(dir = %dir, resource = %l.resource, "lock record names another resource; skipped");
                skipped += 1;
                keep(&mut out.locks, &prev.locks, &dir);
            }
            None => {
                skipped += 1;
                keep(&mut out.locks, &prev.locks, &dir)
            }
        }
    }
    for (dir, path) in entries(&root.join("messages")) {
        let Some(to) = dir.strip_prefix("inbox-").filter(|s| !s.is_empty()) else {
            continue;
        };
        for (name, file) in entries(&path) {
            let Some(stem) = json_stem(&name) else {
                continue;
            };
            let key = (to.to_string(), stem.to_string());
            match read::<MessageFile>(&file) {
                Some(m) if m.msg_id == stem => {
                    out.messages.insert(key, m);
                }
                Some(m) => {
                    tracing::warn!(file = %file.display(), msg_id = %m.msg_id, "msg_id does not match the file name; skipped");
                    skipped += 1;
                    keep(&mut out.messages, &prev.messages, &key);
                }
                None => {
                    skipped += 1;
                    keep(&mut out.messages, &prev.messages, &key)
                }
            }
        }
    }
    for (name, path) in entries(&root.join("dispatch-orders")) {
        let Some(stem) = json_stem(&name) else {
            continue;
        };
        match read::<OrderFile>(&path) {
            Some(o) if o.order_id == stem => {
                out.orders.insert(stem.to_string(), o);
            }
            Some(o) => {
                tracing::warn!(file = %path.display(), order_id = %o.order_id, "order_id does not match the file name; skipped");
                skipped += 1;
                keep(&mut out.orders, &prev.orders, stem);
            }
            None => {
                skipped += 1;
                keep(&mut out.orders, &prev.orders, stem)
            }
        }
    }
    (out, skipped)
}

fn keep<K, Q, V>(out: &mut BTreeMap<K, V>, prev: &BTreeMap<K, V>, key: &Q)
where
    K: Ord + Clone + std::borrow::Borrow<Q>,
    Q: Ord + ?Sized,
    V: Clone,
{
    if let Some((k, v)) = prev.get_key_value(key) {
        out.insert(k.clone(), v.clone());
    }
}

/// Characters a lock directory name keeps as they are; everything else is
/// percent-encoded, as the legacy writers do (`quote(resource, safe="")`).
const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The directory name of a lock on `resource` (`src/main.rs` →
/// `src%2Fmain.rs`).
pub fn encode_resource(resource: &str) -> String {
    percent_encoding::utf8_percent_encode(resource, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the legacy_files fuzz target: a large float among a
    /// file's unknown fields came back one ulp off after a round trip
    /// (serde_json's default float parsing is not correctly rounded).
    #[test]
    fn unknown_float_fields_round_trip_exactly() {
        let text = r#"{"session_id":"claudeng","p`id":952888888888885288888888888888}"#;
        let f: SessionFile = serde_json::from_str(text).expect("parses");
        let again = serde_json::to_string(&f).expect("encodes");
        let back: SessionFile = serde_json::from_str(&again).expect("parses back");
        assert_eq!(back, f);
    }

    #[test]
    fn resources_encode_like_the_legacy_writers() {
        assert_eq!(encode_resource("src/main.rs"), "src%2Fmain.rs");
        assert_eq!(encode_resource("ci/run%weird"), "ci%2Frun%25weird");
        assert_eq!(encode_resource("docs/api v2.md"), "docs%2Fapi%20v2.md");
        let dir = encode_resource("a/b c%d");
        assert_eq!(
            percent_encoding::percent_decode_str(&dir)
                .decode_utf8()
                .ok()
                .as_deref(),
            Some("a/b c%d")
        );
    }
}
