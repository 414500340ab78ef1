//! `--path FILE`: a lock resource named after a file the way every
//! checkout of one repository names it (PROTOCOL §2).
//!
//! The file's path is made absolute (symlinks resolved where the file or
//! its directory exists) and then relative to the root of the git work
//! tree it lies in, so two agents in two checkouts of one repository take
//! the same lock for the same file. Outside a work tree the absolute path
//! is the resource. This module reads the file system only to resolve the
//! path; it never runs git.

use crate::output::{code, Exit};
use anyhow::{anyhow, Result};
use std::path::{Path, PathBuf};

/// The resource for `file`.
///
/// # Errors
/// The path cannot be made absolute (no current directory), or is not
/// UTF-8.
pub fn resource_for(file: &Path) -> Result<String> {
    let abs = resolve(file)?;
    let rel = match work_tree_root(&abs) {
        Some(root) => abs
            .strip_prefix(&root)
            .map(Path::to_path_buf)
            .unwrap_or(abs.clone()),
        None => abs.clone(),
    };
    let s = rel.to_str().ok_or_else(|| {
        anyhow!(Exit(
            code::INVALID,
            format!("--path {}: not UTF-8", file.display())
        ))
    })?;
    if s.is_empty() {
        return Err(anyhow!(Exit(
            code::INVALID,
            format!(
                "--path {}: names the work tree itself, not a file in it",
                file.display()
            )
        )));
    }
    Ok(coord_proto::ids::normalize_resource(s))
}

/// Absolute, with symlinks resolved as far as the path exists.
fn resolve(file: &Path) -> Result<PathBuf> {
    if let Ok(p) = std::fs::canonicalize(file) {
        return Ok(p);
    }
    let abs = std::path::absolute(file).map_err(|e| {
        anyhow!(Exit(
            code::INVALID,
            format!("--path {}: {e}", file.display())
        ))
    })?;
    // The file may not exist yet: resolve its directory and keep the name.
    match (abs.parent(), abs.file_name()) {
        (Some(dir), Some(name)) => match std::fs::canonicalize(dir) {
            Ok(d) => Ok(d.join(name)),
            Err(_) => Ok(abs),
        },
        _ => Ok(abs),
    }
}

/// The nearest directory at or above `path` that holds `.git` (a
/// directory in a main work tree, a file in a linked one).
fn work_tree_root(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .skip(1)
        .find(|d| d.join(".git").exists())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_checkouts_name_one_file_the_same_way() {
        let dir = tempfile::tempdir().expect("tempdir");
        for co in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join(co).join(".git")).expect("git dir");
            std::fs::create_dir_all(dir.path().join(co).join("src")).expect("src");
            std::fs::write(dir.path().join(co).join("src/lib.rs"), "").expect("file");
        }
        let a = resource_for(&dir.path().join("a/src/lib.rs")).expect("a");
        let b = resource_for(&dir.path().join("b/./src//lib.rs")).expect("b");
        assert_eq!(a, "src/lib.rs");
        assert_eq!(a, b);
        // A file that does not exist yet still gets its name.
        let new = resource_for(&dir.path().join("a/src/new.rs")).expect("new");
        assert_eq!(new, "src/new.rs");
    }

    #[test]
    fn outside_a_work_tree_the_absolute_path_is_the_resource() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("notes.txt");
        std::fs::write(&f, "").expect("file");
        let r = resource_for(&f).expect("resource");
        assert!(r.starts_with('/'), "{r}");
        assert!(r.ends_with("/notes.txt"), "{r}");
        assert!(coord_proto::ids::check_resource(&r).is_ok());
    }
}
