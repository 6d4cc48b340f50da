//! File bytes on disk: `MOAT_FILES_DIR/<org id>/<file id>`.
//!
//! Every path is built from ids, never from a user's name, and verified
//! before every open: one plain component inside the organization's folder,
//! that folder a real directory (not a symlink) directly under the root, and
//! the file opened with `O_NOFOLLOW` so a symlink planted in its place is
//! refused. Writes go to a temporary file in the same folder, are fsynced,
//! then renamed into place (atomic); the folder is fsynced too.

use crate::ids::{FileId, OrgId};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt as _;
use uuid::Uuid;

/// Prefix of temporary upload files (swept when a crash leaves them).
const TEMP_PREFIX: &str = ".upload-";

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// A path that would leave the organization's folder, or a symlink where a file or folder should be.
    #[error("refused: {0} is not a plain file inside the organization's folder")]
    Escape(PathBuf),
    #[error("the upload exceeds {0} bytes")]
    TooLarge(u64),
    #[error("file storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The storage root (canonical, checked at startup).
#[derive(Debug, Clone)]
pub struct Disk {
    root: PathBuf,
}

impl Disk {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// The organization's folder, created on first use; refused unless it is
    /// a real directory directly under the root.
    fn org_dir(&self, org: OrgId) -> Result<PathBuf, DiskError> {
        let dir = self.root.join(org.to_string());
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => return Err(DiskError::Escape(dir)),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e.into()),
                }
                return self.org_dir(org);
            }
            Err(e) => return Err(e.into()),
        }
        if std::fs::canonicalize(&dir)? != dir {
            return Err(DiskError::Escape(dir));
        }
        Ok(dir)
    }

    /// `name` inside the organization's folder, verified (see [`contained`]).
    fn path(&self, org: OrgId, name: &str) -> Result<PathBuf, DiskError> {
        contained(&self.org_dir(org)?, name)
    }

    /// Starts an upload into `org`'s folder, bounded to `max` bytes.
    pub async fn begin(&self, org: OrgId, max: u64) -> Result<Upload, DiskError> {
        let temp = self.path(org, &format!("{TEMP_PREFIX}{}", Uuid::new_v4()))?;
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(&temp)
            .await?;
        Ok(Upload { file: Some(file), temp, hasher: Sha256::new(), size: 0, max, done: false })
    }

    /// Moves a finished upload into place as `id`.
    pub async fn commit(&self, org: OrgId, id: FileId, mut upload: Upload) -> Result<(u64, String), DiskError> {
        let target = self.path(org, &id.to_string())?;
        let mut file = upload.file.take().ok_or_else(|| DiskError::Escape(upload.temp.clone()))?;
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&upload.temp, &target).await?;
        upload.done = true;
        // The rename itself must survive a crash before the row is written.
        if let Some(dir) = target.parent() {
            tokio::fs::File::open(dir).await?.sync_all().await?;
        }
        let sha256 = std::mem::take(&mut upload.hasher).finalize().iter().map(|b| format!("{b:02x}")).collect();
        Ok((upload.size, sha256))
    }

    /// Opens a stored file for reading, refusing anything but a plain file.
    pub async fn open(&self, org: OrgId, id: FileId) -> Result<tokio::fs::File, DiskError> {
        let path = self.path(org, &id.to_string())?;
        // O_NONBLOCK: a FIFO planted in the folder must not hang the open (it is
        // then refused as not a regular file).
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags((nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_NONBLOCK).bits())
            .open(&path)
            .await
            .map_err(|e| {
                if e.raw_os_error() == Some(nix::libc::ELOOP) { DiskError::Escape(path.clone()) } else { e.into() }
            })?;
        if !file.metadata().await?.is_file() {
            return Err(DiskError::Escape(path));
        }
        Ok(file)
    }

    /// Removes a stored file (after its row is gone); a missing file is fine.
    pub async fn remove(&self, org: OrgId, id: FileId) -> Result<(), DiskError> {
        match tokio::fs::remove_file(self.path(org, &id.to_string())?).await {
            Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Everything in the organization folders that is not a known file:
    /// `(org, path, id if the name is a file id)`, for entries older than `min_age`.
    pub fn candidates(&self, min_age: Duration) -> Result<Vec<(OrgId, PathBuf, Option<FileId>)>, DiskError> {
        let now = SystemTime::now();
        let mut found = Vec::new();
        for org_entry in std::fs::read_dir(&self.root)?.flatten() {
            let Some(org) = org_entry.file_name().to_str().and_then(|n| n.parse::<OrgId>().ok()) else { continue };
            let Ok(dir) = self.org_dir(org) else { continue };
            for entry in std::fs::read_dir(&dir)?.flatten() {
                let Ok(meta) = entry.path().symlink_metadata() else { continue };
                let modified = SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(meta.mtime()).unwrap_or(0));
                if now.duration_since(modified).unwrap_or_default() < min_age {
                    continue;
                }
                let id = entry.file_name().to_str().and_then(|n| n.parse::<FileId>().ok());
                let id = id.filter(|_| meta.file_type().is_file());
                found.push((org, entry.path(), id));
            }
        }
        Ok(found)
    }
}

/// `name` as a path inside `dir`, or `Escape`: it must be exactly one plain
/// path component (no separator, no `.`/`..`, not absolute), and whatever
/// already exists there must not be a symlink.
pub fn contained(dir: &Path, name: &str) -> Result<PathBuf, DiskError> {
    let escape = || DiskError::Escape(dir.join(name));
    let mut components = Path::new(name).components();
    match (components.next(), components.next()) {
        (Some(Component::Normal(only)), None) if only == name => {}
        _ => return Err(escape()),
    }
    let path = dir.join(name);
    if path.parent() != Some(dir) {
        return Err(escape());
    }
    match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() => Err(escape()),
        _ => Ok(path),
    }
}

/// An upload in progress; dropped unfinished, its temporary file is removed.
pub struct Upload {
    file: Option<tokio::fs::File>,
    temp: PathBuf,
    hasher: Sha256,
    size: u64,
    max: u64,
    done: bool,
}

impl Upload {
    /// Appends a chunk; past the bound → `TooLarge` (and the file goes on drop).
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), DiskError> {
        self.size += chunk.len() as u64;
        if self.size > self.max {
            return Err(DiskError::TooLarge(self.max));
        }
        self.hasher.update(chunk);
        let file = self.file.as_mut().ok_or_else(|| DiskError::Escape(self.temp.clone()))?;
        file.write_all(chunk).await?;
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Whatever the name, a path `contained` accepts is a direct child of
        /// the folder — and so is every name the sanitizer lets through.
        #[test]
        fn nothing_resolves_outside_the_folder(raw in any::<String>(), hostile in hostile_name()) {
            let dir = Path::new("/srv/moat/files/org");
            for name in [raw.as_str(), hostile.as_str()] {
                if let Ok(path) = contained(dir, name) {
                    prop_assert_eq!(path.parent(), Some(dir));
                    prop_assert!(path.starts_with(dir));
                    prop_assert!(!path.components().any(|c| matches!(c, Component::ParentDir | Component::CurDir)));
                }
                if let Ok(clean) = super::super::name::clean(name) {
                    let path = contained(dir, &clean);
                    prop_assert!(path.is_ok(), "a cleaned name was refused: {clean:?}");
                    let path = path.unwrap_or_default();
                    prop_assert_eq!(path.parent(), Some(dir));
                }
            }
        }
    }

    /// Names built from the pieces traversal attacks are made of.
    fn hostile_name() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("..".to_owned()),
            Just(".".to_owned()),
            Just("/".to_owned()),
            Just("\\".to_owned()),
            Just("%2e".to_owned()),
            Just("%2f".to_owned()),
            Just("%5c".to_owned()),
            Just("%252e".to_owned()),
            Just("%00".to_owned()),
            Just("\0".to_owned()),
            Just("etc".to_owned()),
            Just("passwd".to_owned()),
            Just("~".to_owned()),
            Just(" ".to_owned()),
            "[a-z]{1,3}".prop_map(|s| s),
        ];
        proptest::collection::vec(piece, 0..12).prop_map(|pieces| pieces.concat())
    }

    #[tokio::test]
    async fn a_symlink_in_the_folder_is_refused_and_uploads_are_atomic() -> Result<(), Box<dyn std::error::Error>> {
        let root = tempfile::tempdir()?;
        let disk = Disk::new(std::fs::canonicalize(root.path())?);
        let org = OrgId(Uuid::new_v4());
        let mut upload = disk.begin(org, 10).await?;
        upload.write(b"hello").await?;
        let id = FileId(Uuid::new_v4());
        let (size, sha) = disk.commit(org, id, upload).await?;
        assert_eq!((size, sha.len()), (5, 64));
        assert!(disk.open(org, id).await.is_ok());
        // Replace the file by a symlink to something outside: refused.
        let path = disk.path(org, &id.to_string())?;
        std::fs::remove_file(&path)?;
        std::os::unix::fs::symlink("/etc/hostname", &path)?;
        assert!(matches!(disk.open(org, id).await, Err(DiskError::Escape(_))));
        // An upload past its bound leaves nothing behind.
        let mut upload = disk.begin(org, 4).await?;
        assert!(matches!(upload.write(b"hello").await, Err(DiskError::TooLarge(4))));
        drop(upload);
        assert_eq!(std::fs::read_dir(disk.org_dir(org)?)?.count(), 1, "only the planted symlink remains");
        // A FIFO planted under a file's id neither hangs the open nor is served.
        let fifo = FileId(Uuid::new_v4());
        nix::unistd::mkfifo(&disk.path(org, &fifo.to_string())?, nix::sys::stat::Mode::S_IRWXU)?;
        let opened = tokio::time::timeout(std::time::Duration::from_secs(5), disk.open(org, fifo)).await?;
        assert!(matches!(opened, Err(DiskError::Escape(_))));
        // An organization folder that is a symlink is refused.
        let other = OrgId(Uuid::new_v4());
        std::os::unix::fs::symlink("/tmp", root.path().join(other.to_string()))?;
        assert!(matches!(disk.open(other, id).await, Err(DiskError::Escape(_))));
        Ok(())
    }
}
