//! The on-disk protocol that makes replacing segments with a cleaned one crash safe.
//!
//! 1. The cleaned segment is written to `<base>.log.cleaned` and fsynced. A crash here leaves a
//!    `.cleaned` file that recovery deletes: the pass is discarded, the old segments are intact.
//! 2. Commit point: rename it to `<base>.<end>.swap` and fsync the directory. `end` is the base
//!    offset of the first segment after the replaced ones, so recovery knows exactly which
//!    segments the swap stands for: every `.log` with a base offset in `[base, end)`.
//! 3. Delete the replaced segments' index files and every replaced `.log` except `<base>.log`,
//!    then rename the swap file over `<base>.log` (atomic) and fsync the directory.
//!
//! Recovery finishes step 3 for any `.swap` file it finds (every step is idempotent), so after a
//! crash at any point the directory holds either all the old segments or the cleaned one.

use std::fs;
use std::path::{Path, PathBuf};

use crate::durable::{remove_if_exists, sync_dir};
use crate::error::Result;
use crate::segment::{file_name, parse_file_name, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT};

const CLEANED_SUFFIX: &str = ".log.cleaned";
const SWAP_EXT: &str = "swap";

pub(crate) fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}{CLEANED_SUFFIX}"))
}

pub(crate) fn swap_path(dir: &Path, base: i64, end: i64) -> PathBuf {
    dir.join(format!("{base:020}.{end:020}.{SWAP_EXT}"))
}

/// `(base, end)` of a swap file name.
fn parse_swap(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(SWAP_EXT)?.strip_suffix('.')?;
    let (base, end) = stem.split_once('.')?;
    let ok = |s: &str| s.len() == 20 && s.bytes().all(|b| b.is_ascii_digit());
    if !ok(base) || !ok(end) {
        return None;
    }
    Some((base.parse().ok()?, end.parse().ok()?))
}

/// Step 3 for one committed swap: the replaced segments go, the swap becomes `<base>.log`.
pub(crate) fn complete(dir: &Path, base: i64, end: i64, bases: &[i64]) -> Result<()> {
    remove_if_exists(&dir.join(file_name(base, INDEX_EXT)))?;
    remove_if_exists(&dir.join(file_name(base, TIME_INDEX_EXT)))?;
    for &b in bases.iter().filter(|&&b| b > base && b < end) {
        remove_if_exists(&dir.join(file_name(b, LOG_EXT)))?;
        remove_if_exists(&dir.join(file_name(b, INDEX_EXT)))?;
        remove_if_exists(&dir.join(file_name(b, TIME_INDEX_EXT)))?;
    }
    fs::rename(
        swap_path(dir, base, end),
        dir.join(file_name(base, LOG_EXT)),
    )?;
    sync_dir(dir)?;
    Ok(())
}

/// Before recovery lists segments: discard unfinished cleaned files, finish committed swaps.
pub(crate) fn recover(dir: &Path) -> Result<()> {
    let mut swaps = Vec::new();
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(CLEANED_SUFFIX) {
            tracing::info!(file = %entry.path().display(), "discarding an unfinished cleaner output");
            remove_if_exists(&entry.path())?;
        } else if let Some(swap) = parse_swap(&name) {
            swaps.push(swap);
        } else if let Some(base) = parse_file_name(&name, LOG_EXT) {
            bases.push(base);
        }
    }
    swaps.sort_unstable();
    for (base, end) in swaps {
        tracing::info!(dir = %dir.display(), base, end, "completing an interrupted cleaner swap");
        complete(dir, base, end, &bases)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_names_round_trip() {
        let dir = Path::new("/d");
        let p = swap_path(dir, 5, 1234);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000005.00000000000000001234.swap");
        assert_eq!(parse_swap(name), Some((5, 1234)));
        assert_eq!(parse_swap("00000000000000000005.swap"), None);
        assert_eq!(
            parse_swap("0000000000000000005.00000000000000001234.swap"),
            None
        );
    }
}
