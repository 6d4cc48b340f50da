//! Where uploaded files live (`MOAT_FILES_DIR`) and how large they may be
//! (`MOAT_MAX_UPLOAD_BYTES`). The directory is created (0700) if missing and
//! must be a writable directory: checked at startup, not at the first upload.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::PathBuf;

use super::vars::Vars;
use crate::problem::Problem;

pub const DEFAULT_DIR: &str = "moat-files";
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 25 * 1024 * 1024;
const MAX_MAX_UPLOAD_BYTES: u64 = 10 * 1024 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct FilesSettings {
    /// Canonical path of the storage root.
    pub dir: PathBuf,
    pub max_upload_bytes: u64,
}

pub(super) fn files(vars: &Vars, problems: &mut Vec<Problem>) -> Option<FilesSettings> {
    let max_upload_bytes = match vars.get("MOAT_MAX_UPLOAD_BYTES").map(str::parse::<u64>) {
        None => DEFAULT_MAX_UPLOAD_BYTES,
        Some(Ok(n)) if (1..=MAX_MAX_UPLOAD_BYTES).contains(&n) => n,
        Some(_) => {
            problems.push(
                Problem::new(
                    "MOAT_MAX_UPLOAD_BYTES",
                    "must be a whole number of bytes from 1 to 10 GiB",
                    "It bounds what one upload may write to disk.",
                )
                .fix(format!("export MOAT_MAX_UPLOAD_BYTES={DEFAULT_MAX_UPLOAD_BYTES}")),
            );
            return None;
        }
    };
    let raw = vars.get("MOAT_FILES_DIR").unwrap_or(DEFAULT_DIR);
    let problem = |what: String| {
        Problem::new("MOAT_FILES_DIR", what, "Uploaded files are stored there; Moat must own it.")
            .fix(format!("mkdir -p '{raw}' && chmod 700 '{raw}'   # as the user Moat runs as"))
    };
    if let Err(e) = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(raw) {
        problems.push(problem(format!("cannot be created: {e}")));
        return None;
    }
    let dir = match std::fs::canonicalize(raw) {
        Ok(dir) if dir.is_dir() => dir,
        Ok(_) => {
            problems.push(problem("is not a directory".into()));
            return None;
        }
        Err(e) => {
            problems.push(problem(format!("cannot be resolved: {e}")));
            return None;
        }
    };
    let probe = dir.join(format!(".moat-write-check-{}", std::process::id()));
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
        }
        Err(e) => {
            problems.push(problem(format!("is not writable: {e}")));
            return None;
        }
    }
    if let Ok(meta) = std::fs::metadata(&dir)
        && meta.permissions().mode() & 0o007 != 0
    {
        problems.push(problem("is accessible to every user on the machine (mode o+rwx bits set)".into()));
        return None;
    }
    Some(FilesSettings { dir, max_upload_bytes })
}
