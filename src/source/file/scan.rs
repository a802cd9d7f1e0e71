//! Which files the manifest directory holds, and a cheap fingerprint of them to notice a change.
//!
//! Every `*.yaml`/`*.yml` below the directory counts; hidden entries (such as the `..data` folders of a mounted
//! ConfigMap) are skipped and symlinks followed.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The directory itself cannot be read (a file that cannot be read is a diagnostic instead).
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest directory {path}: {source}")]
    Dir { path: String, source: std::io::Error },
}

/// The metadata that changes when a file's content does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Stamp {
    pub(super) len: u64,
    pub(super) modified: Option<SystemTime>,
    /// Inode and change time: a file replaced by a rename, or rewritten with the same size and a restored
    /// modification time, still differs.
    pub(super) inode: u64,
    pub(super) changed: (i64, i64),
}

impl Stamp {
    pub(super) fn of(m: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            len: m.len(),
            modified: m.modified().ok(),
            inode: m.ino(),
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A cheap fingerprint of `files` (names, sizes, modification times, inodes) to notice changes.
pub(super) fn fingerprint(files: &[PathBuf]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in files {
        f.hash(&mut h);
        std::fs::metadata(f).ok().map(|m| Stamp::of(&m)).hash(&mut h);
    }
    h.finish()
}

/// The YAML files under `root` (which must be readable), then under each of `extra_roots` (which may be missing),
/// each root's files in name order.
pub(super) fn yaml_files(root: &Path, extra_roots: &[PathBuf]) -> Result<Vec<PathBuf>, ManifestError> {
    let mut out = files_under(root, true)?;
    for extra in extra_roots {
        out.extend(files_under(extra, false)?);
    }
    Ok(out)
}

fn files_under(root: &Path, required: bool) -> Result<Vec<PathBuf>, ManifestError> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    let mut first = true;
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(source) if first && required => {
                return Err(ManifestError::Dir {
                    path: dir.display().to_string(),
                    source,
                })
            }
            Err(_) => continue,
        };
        first = false;
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with('.') {
                continue;
            }
            let path = entry.path();
            // Follow symlinks (mounted ConfigMaps link their files).
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => stack.push(path),
                Ok(m) if m.is_file() => {
                    if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                        out.push(path);
                    }
                }
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}
