//! The shard checkpoint file: which slot and configuration the local index belongs to,
//! whether its snapshot finished (and while it runs, how far its copy is durable), and an
//! LSN every partition is durable up to. Written atomically (temp file, fsync, rename, fsync
//! of the directory).

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use wire::Lsn;

const FILE: &str = "checkpoint.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Checkpoint {
    pub slot: String,
    /// Fingerprint of the resolved index configuration the partitions were built with.
    pub config_fingerprint: String,
    pub snapshot_lsn: Lsn,
    pub snapshot_done: bool,
    /// Every partition is durable at least up to here.
    pub lsn: Lsn,
    /// While the snapshot runs: how far its copy is durable in every partition (a restart
    /// copies the rest instead of starting over).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copied: Option<CopyMark>,
    /// While a later position is being made durable: partitions may hold rows up to it (a
    /// crash between their commits), so a resumed copy replaces those by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copying: Option<CopyMark>,
    /// A large transaction made durable in part: its first `changes` changes are in every
    /// partition, so when it is sent again they are skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub large: Option<LargeMark>,
}

/// How much of a large transaction is durable: the first `changes` changes of the
/// transaction whose commit record is at `final_lsn`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct LargeMark {
    pub final_lsn: Lsn,
    pub changes: u64,
}

/// A position in the snapshot's copy: the configured tables are copied in order, each in
/// primary-key order. Every table before `table` is copied whole, and `table`'s rows up to
/// the key `after` (each key column in its text form; empty: none of them yet).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CopyMark {
    pub table: usize,
    pub after: Vec<String>,
    /// Rows copied up to here (for progress).
    pub rows: u64,
}

impl Checkpoint {
    pub fn load(dir: &Path) -> Result<Option<Checkpoint>> {
        let path = dir.join(FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Checkpoint(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn store(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!("{FILE}.tmp"));
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).expect("checkpoint serializes"))?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, dir.join(FILE))?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    pub fn remove(dir: &Path) -> Result<()> {
        match std::fs::remove_file(dir.join(FILE)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
        let c = Checkpoint {
            slot: "s".into(),
            config_fingerprint: "f".into(),
            snapshot_lsn: Lsn(0x10),
            snapshot_done: true,
            lsn: Lsn(0x20),
            copied: None,
            copying: None,
            large: None,
        };
        c.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(c.clone()));
        // The file keeps Postgres's text form.
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        assert!(text.contains(r#""lsn": "0/20""#), "{text}");
        // A snapshot under way keeps its copy's position; older files have none.
        let under_way = Checkpoint {
            snapshot_done: false,
            copied: Some(CopyMark {
                table: 1,
                after: vec!["42".into(), "x".into()],
                rows: 7,
            }),
            copying: Some(CopyMark {
                table: 2,
                after: vec![],
                rows: 9,
            }),
            ..c
        };
        under_way.store(dir.path()).unwrap();
        assert_eq!(
            Checkpoint::load(dir.path()).unwrap(),
            Some(under_way.clone())
        );
        // A large transaction durable in part.
        let in_large = Checkpoint {
            large: Some(LargeMark {
                final_lsn: Lsn(0x30),
                changes: 12_345,
            }),
            ..under_way
        };
        in_large.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(in_large));
    }
}
