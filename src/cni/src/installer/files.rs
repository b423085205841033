//! File operations of the node installer: every file the plugins read is replaced atomically
//! (written next to its destination, flushed, then renamed over it), so a runtime exec'ing a
//! plugin or a plugin reading its kubeconfig never sees a half-written file.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What [`replace_if_changed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The destination already held these bytes with this mode: left alone.
    Unchanged,
    /// The destination was created or replaced.
    Replaced,
}

/// A file operation that failed, with the path it failed on.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub struct FileError {
    action: &'static str,
    path: String,
    #[source]
    source: io::Error,
}

impl FileError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> FileError {
        FileError {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Writes `contents` to `destination` with `mode` unless it already holds exactly that. The new
/// file is written to a temporary name in the same directory (same file system, so the rename
/// is atomic), synced, and renamed over the destination; the directory is synced after.
pub fn replace_if_changed(
    destination: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<Written, FileError> {
    if holds(destination, contents, mode) {
        return Ok(Written::Unchanged);
    }
    let directory = destination
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(directory)
        .map_err(|error| FileError::new("create directory", directory, error))?;
    let temporary = temporary_path(destination);
    let result = write_synced(&temporary, contents, mode)
        .and_then(|()| {
            fs::rename(&temporary, destination)
                .map_err(|error| FileError::new("rename into place", destination, error))
        })
        .and_then(|()| sync_directory(directory));
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map(|()| Written::Replaced)
}

/// Removes `path` if it exists; true when something was removed.
pub fn remove_if_present(path: &Path) -> Result<bool, FileError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(FileError::new("remove", path, error)),
    }
}

/// Removes the directory `path` when it is empty; true when it was removed.
pub fn remove_dir_if_empty(path: &Path) -> bool {
    fs::remove_dir(path).is_ok()
}

/// Reads a whole file, naming it in the error.
pub fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    fs::read(path).map_err(|error| FileError::new("read", path, error))
}

/// Whether `path` holds exactly `contents` with permission bits `mode`.
fn holds(path: &Path, contents: &[u8], mode: u32) -> bool {
    let Ok(metadata) = fs::metadata(path) else {
        return false;
    };
    metadata.is_file()
        && metadata.len() == contents.len() as u64
        && metadata.permissions().mode() & 0o7777 == mode
        && fs::read(path).is_ok_and(|existing| existing == contents)
}

/// `.NAME.spiderpool-tmp.PID` next to `destination`: hidden, and unique per installer process.
fn temporary_path(destination: &Path) -> PathBuf {
    let name = destination
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    destination.with_file_name(format!(".{name}.spiderpool-tmp.{}", std::process::id()))
}

fn write_synced(path: &Path, contents: &[u8], mode: u32) -> Result<(), FileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|error| FileError::new("create", path, error))?;
    // The mode given at creation is filtered by the umask; set it exactly.
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|error| FileError::new("chmod", path, error))?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|error| FileError::new("write", path, error))
}

fn sync_directory(directory: &Path) -> Result<(), FileError> {
    File::open(directory)
        .and_then(|handle| handle.sync_all())
        .map_err(|error| FileError::new("sync directory", directory, error))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let directory = std::env::temp_dir().join(format!(
            "spiderpool-installer-files-{name}-{}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&directory);
        directory
    }

    #[test]
    fn a_new_file_is_created_with_the_exact_mode_and_its_directory() {
        let directory = scratch("new");
        let path = directory.join("sub/plugin");
        assert_eq!(
            replace_if_changed(&path, b"binary", 0o755).unwrap(),
            Written::Replaced
        );
        assert_eq!(fs::read(&path).unwrap(), b"binary");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn identical_contents_and_mode_leave_the_file_alone() {
        let directory = scratch("same");
        let path = directory.join("kubeconfig");
        replace_if_changed(&path, b"a", 0o600).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_eq!(
            replace_if_changed(&path, b"a", 0o600).unwrap(),
            Written::Unchanged
        );
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            inode
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_change_replaces_the_file_by_rename_and_leaves_no_temporary_behind() {
        let directory = scratch("change");
        let path = directory.join("plugin");
        replace_if_changed(&path, b"old", 0o755).unwrap();
        // A reader holding the old file keeps reading the old contents: the new file is a new
        // inode renamed over the name, never the old one rewritten in place.
        let held = fs::read(&path).unwrap();
        let old_inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        assert_eq!(
            replace_if_changed(&path, b"new contents", 0o755).unwrap(),
            Written::Replaced
        );
        assert_eq!(held, b"old");
        assert_eq!(fs::read(&path).unwrap(), b"new contents");
        assert_ne!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            old_inode
        );
        let names: Vec<String> = fs::read_dir(&directory)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["plugin".to_string()]);
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn a_mode_change_alone_rewrites_the_file() {
        let directory = scratch("mode");
        let path = directory.join("settings");
        replace_if_changed(&path, b"x", 0o644).unwrap();
        assert_eq!(
            replace_if_changed(&path, b"x", 0o600).unwrap(),
            Written::Replaced
        );
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );
        fs::remove_dir_all(directory).unwrap();
    }

    #[test]
    fn removing_a_missing_file_is_not_an_error() {
        let directory = scratch("remove");
        assert!(!remove_if_present(&directory.join("absent")).unwrap());
    }
}
