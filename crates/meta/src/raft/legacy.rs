//! Reading a metadata directory written before metadata was replicated:
//! `snapshot.json` (a whole [`MetaState`]) plus `meta.log` (CRC frames of
//! `{index, command}` JSON). The broker migrates such a directory once, into
//! the first snapshot of the Raft store, and moves the old files aside.
//!
//! Recovery follows the old rules: a damaged last frame is a torn write and
//! ignored; damage followed by more data is corruption and stops the start.

use std::fs;
use std::io;
use std::path::Path;

use serde::Deserialize;

use crate::{framing, Error, MetaCommand, MetaState, Result};

pub const LOG_FILE: &str = "meta.log";
pub const SNAPSHOT_FILE: &str = "snapshot.json";

#[derive(Deserialize)]
struct Entry {
    index: u64,
    command: MetaCommand,
}

/// The state stored in `dir` by the single-node store, or `None` when
/// `dir` holds neither of its files. Topics of that time had no replica
/// records: every partition is placed on `node_id` (the node migrating),
/// which is registered for that purpose.
pub fn load(dir: &Path, node_id: i32) -> Result<Option<MetaState>> {
    let snapshot_path = dir.join(SNAPSHOT_FILE);
    let log_path = dir.join(LOG_FILE);
    let snapshot = match fs::read(&snapshot_path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let log = match fs::read(&log_path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    if snapshot.is_none() && log.is_none() {
        return Ok(None);
    }
    let mut state = match snapshot {
        Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: snapshot_path.clone(),
            position: 0,
            reason: e.to_string(),
        })?,
        None => MetaState::default(),
    };
    if state.broker(node_id).is_none() {
        let register = MetaCommand::RegisterBroker {
            node_id,
            incarnation: uuid::Uuid::nil(),
            listeners: Vec::new(),
            internal: None,
            rack: None,
        };
        state.apply(state.last_applied(), &register)?;
    }
    state.adopt_unassigned(node_id);
    if let Some(bytes) = log {
        replay(&log_path, &bytes, &mut state, node_id)?;
    }
    Ok(Some(state))
}

/// Places partitions of an old command on `node_id`.
fn with_assignments(cmd: MetaCommand, node_id: i32) -> MetaCommand {
    match cmd {
        MetaCommand::CreateTopic {
            name,
            topic_id,
            partitions,
            replication_factor,
            configs,
            assignments,
        } if assignments.is_empty() => MetaCommand::CreateTopic {
            name,
            topic_id,
            partitions,
            replication_factor,
            configs,
            assignments: vec![vec![node_id]; usize::try_from(partitions).unwrap_or(0)],
        },
        other => other,
    }
}

/// Applies every complete frame after the snapshot.
fn replay(path: &Path, bytes: &[u8], state: &mut MetaState, node_id: i32) -> Result<()> {
    let scan = framing::scan(bytes).map_err(|d| Error::Corrupt {
        path: path.to_owned(),
        position: d.position as u64,
        reason: d.reason,
    })?;
    for (pos, payload) in scan.frames {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_owned(),
            position: pos as u64,
            reason,
        };
        let entry: Entry = serde_json::from_slice(payload).map_err(|e| corrupt(e.to_string()))?;
        if entry.index <= state.last_applied() {
            continue;
        }
        if entry.index != state.last_applied() + 1 {
            return Err(corrupt(format!(
                "expected command {}, found {}",
                state.last_applied() + 1,
                entry.index
            )));
        }
        let command = match with_assignments(entry.command, node_id) {
            MetaCommand::CreatePartitions {
                name,
                count,
                assignments,
            } if assignments.is_empty() => {
                let had = state.topic(&name).map_or(0, |t| t.partitions);
                MetaCommand::CreatePartitions {
                    name,
                    count,
                    assignments: vec![vec![node_id]; usize::try_from(count - had).unwrap_or(0)],
                }
            }
            other => other,
        };
        state
            .apply(entry.index, &command)
            .map_err(|e| corrupt(format!("command does not apply: {e}")))?;
    }
    Ok(())
}

/// Moves the old files into `dir/pre-raft/` once their content is safely in
/// the new store, so they are neither replayed again nor lost.
pub fn retire(dir: &Path) -> io::Result<()> {
    let aside = dir.join("pre-raft");
    fs::create_dir_all(&aside)?;
    for name in [SNAPSHOT_FILE, LOG_FILE] {
        match fs::rename(dir.join(name), aside.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    fs::File::open(dir)?.sync_all()
}
