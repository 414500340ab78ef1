//! Where a SQLite store really lives: the one spelling of a store path that
//! its lock file, its permission check and a socket's record agree on.
//!
//! Two spellings of one file (`real/coord.db` and a symlink
//! `alias/coord.db` to it, `./a/../a/coord.db`, a linked directory) must
//! not give two daemons two lock files on one database: every consumer of a
//! store path resolves it here first. This module only looks at the file
//! system; it creates nothing and decides nothing about the log.

use crate::StoreError;
use std::path::{Path, PathBuf};

/// Symlinks followed at most when the file itself does not exist yet
/// (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

/// The canonical path of the store file `path`: every symlink resolved,
/// `.` and `..` removed, relative to the current directory made absolute.
///
/// The file need not exist; its directory must, since the answer is the
/// directory's canonical path joined with the (link-resolved) file name.
/// A final component that is a symlink is followed, also to a file that
/// does not exist yet, so the lock is taken where SQLite will create the
/// database.
///
/// # Errors
/// [`StoreError::Io`] when the directory does not exist or cannot be read,
/// when the path has no file name (`/`, `..`), or when links loop.
pub fn resolve_store_path(path: &Path) -> Result<PathBuf, StoreError> {
    let io = |context: String| move |source| StoreError::Io { context, source };
    let mut path = path.to_path_buf();
    for _ in 0..MAX_LINKS {
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&path)
                    .map_err(io(format!("reading the link {}", path.display())))?;
                path = match parent_of(&path) {
                    Some(dir) if target.is_relative() => dir.join(target),
                    _ => target,
                };
            }
            Ok(_) => {
                return std::fs::canonicalize(&path)
                    .map_err(io(format!("resolving {}", path.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let name = path.file_name().ok_or_else(|| StoreError::Io {
                    context: format!("{} names no file", path.display()),
                    source: std::io::ErrorKind::InvalidInput.into(),
                })?;
                let dir = parent_of(&path).unwrap_or_else(|| Path::new(".").to_path_buf());
                let dir = std::fs::canonicalize(&dir)
                    .map_err(io(format!("resolving the directory {}", dir.display())))?;
                return Ok(dir.join(name));
            }
            Err(e) => return Err(io(format!("reading {}", path.display()))(e)),
        }
    }
    Err(StoreError::Io {
        context: format!("resolving {}: too many levels of links", path.display()),
        source: std::io::Error::from_raw_os_error(libc::ELOOP),
    })
}

/// The directory part of `path`, or `None` for a bare file name.
fn parent_of(path: &Path) -> Option<PathBuf> {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_linked_file_and_a_linked_directory_resolve_to_the_real_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let real = t.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join("coord.db"), b"").expect("write");
        let alias = t.path().join("alias");
        std::fs::create_dir(&alias).expect("mkdir");
        symlink(real.join("coord.db"), alias.join("coord.db")).expect("link");
        symlink(&real, t.path().join("linkdir")).expect("link");
        let want = std::fs::canonicalize(real.join("coord.db")).expect("canon");
        for p in [
            real.join("coord.db"),
            alias.join("coord.db"),
            t.path().join("linkdir/coord.db"),
            t.path().join("alias/../real/coord.db"),
        ] {
            assert_eq!(resolve_store_path(&p).expect("resolve"), want, "{p:?}");
        }
    }

    #[test]
    fn a_missing_file_resolves_through_its_directory_and_a_dangling_link() {
        let t = tempfile::tempdir().expect("tempdir");
        let real = t.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        symlink(&real, t.path().join("linkdir")).expect("link");
        symlink("../real/new.db", t.path().join("linkdir/dangling.db")).expect("link");
        let canon = std::fs::canonicalize(&real).expect("canon");
        assert_eq!(
            resolve_store_path(&t.path().join("linkdir/x.db")).expect("resolve"),
            canon.join("x.db")
        );
        assert_eq!(
            resolve_store_path(&real.join("dangling.db")).expect("resolve"),
            canon.join("new.db")
        );
        assert!(resolve_store_path(&t.path().join("nope/x.db")).is_err());
    }

    #[test]
    fn a_link_loop_is_an_error_not_a_hang() {
        let t = tempfile::tempdir().expect("tempdir");
        symlink(t.path().join("b"), t.path().join("a")).expect("link");
        symlink(t.path().join("a"), t.path().join("b")).expect("link");
        let e = resolve_store_path(&t.path().join("a")).expect_err("loop");
        assert!(e.to_string().contains("too many levels"), "{e}");
    }
}
