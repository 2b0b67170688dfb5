//! Small-file durability: write a temp file, fsync it, rename over the target, fsync the directory.
//! A crash leaves either the old or the new contents, never a mix (a stale `*.tmp` is removed on open).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Atomically replace `dir/name` with `contents`.
pub(crate) fn write_atomically(dir: &Path, name: &str, contents: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut file = File::create(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

/// fsync a directory so that creations, renames and deletions in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Remove a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
