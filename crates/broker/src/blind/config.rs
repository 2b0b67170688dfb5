//! The `[blind]` section of the broker config.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlindConfig {
    /// The 32-byte key that seals server shares in the metadata log. Kept
    /// outside `data_dir` by default (`<data_dir>.share.key`, created 0600
    /// on the first share registration) so a copy of the data directory
    /// alone does not yield the shares.
    pub share_key_file: Option<PathBuf>,
    /// Sustained modexps (resolve, create, key put/get) per principal.
    pub transforms_per_second: f64,
    /// Modexps a principal may run back to back before throttling.
    pub burst: u32,
    /// Entries of the (principal, kid, c) → physical name cache.
    pub cache_entries: usize,
}

impl Default for BlindConfig {
    fn default() -> Self {
        BlindConfig {
            share_key_file: None,
            transforms_per_second: 50.0,
            burst: 100,
            cache_entries: 100_000,
        }
    }
}

impl BlindConfig {
    pub fn validate(&self) -> Result<(), String> {
        if !(self.transforms_per_second.is_finite() && self.transforms_per_second > 0.0) {
            return Err("blind.transforms_per_second must be a positive number".into());
        }
        if self.burst == 0 {
            return Err("blind.burst must be at least 1".into());
        }
        Ok(())
    }

    /// Where the share-sealing key lives for a broker with `data_dir`.
    pub fn share_key_path(&self, data_dir: &Path) -> PathBuf {
        if let Some(p) = &self.share_key_file {
            return p.clone();
        }
        let name = data_dir
            .file_name()
            .map_or_else(|| "veil-data".into(), |n| n.to_string_lossy().into_owned());
        let parent = data_dir.parent().unwrap_or_else(|| Path::new("."));
        parent.join(format!("{name}.share.key"))
    }
}
