//! The record a daemon leaves beside its socket of the log it serves
//! (`<socket>.store`, mode 0600, in the socket's 0700 directory), so that
//! whatever starts a daemon on that socket later — auto-start, a service
//! manager, a user — serves the same log or says why not (PROTOCOL §11.1).
//!
//! This module reads and encodes the record; the daemon writes it and the
//! CLI's auto-start obeys it. It never starts or stops anything.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What a socket last served: one JSON object,
/// `{"store":"/abs/coord.db","log_id":"01J…"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Served {
    /// The store as the daemon resolved it: an absolute SQLite path with
    /// every symlink resolved, or the `nats://…` URL of a shared log.
    pub store: String,
    /// The log's identity (PROTOCOL §9.1).
    pub log_id: String,
}

/// Where the record of `socket` lives: `<socket>.store`.
pub fn served_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".store");
    PathBuf::from(p)
}

/// Reads the record of `socket`: `Ok(None)` when there is none (no daemon
/// ever served the socket, or one older than the record).
///
/// # Errors
/// The file exists but cannot be read, or is not a record (the message
/// names the file); a caller must not guess a store then.
pub fn read_served(socket: &Path) -> Result<Option<Served>, String> {
    let path = served_path(socket);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{} is not a coord socket record: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_garbage_is_an_error_not_a_default() {
        let t = tempfile::tempdir().expect("tempdir");
        let socket = t.path().join("coord.sock");
        assert_eq!(read_served(&socket), Ok(None));
        let rec = Served {
            store: "/data/coord.db".into(),
            log_id: "01JB2Y6M6S7V9Q0W3E4R5T6Y7U".into(),
        };
        std::fs::write(
            served_path(&socket),
            serde_json::to_vec(&rec).expect("json"),
        )
        .expect("write");
        assert_eq!(read_served(&socket), Ok(Some(rec)));
        std::fs::write(served_path(&socket), b"{\"store\":").expect("write");
        let e = read_served(&socket).expect_err("half a record");
        assert!(e.contains("coord.sock.store"), "{e}");
    }
}
