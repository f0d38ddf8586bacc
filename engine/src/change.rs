//! What the engine applies and what it reports: source transactions as row changes (cells
//! aligned to an index's configured columns), and the change events a reader of the feed sees
//! once they are searchable.

use std::sync::Arc;

use wire::Lsn;

use crate::filter::FilterValue;

/// One column value in a change: pgoutput may say a TOASTed value is unchanged.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Value(Option<String>),
    UnchangedToast,
}

/// A row change, with cells aligned to the index's configured columns.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// INSERT or UPDATE. `old_key` is set when an UPDATE changed the primary key.
    Upsert {
        index: usize,
        old_key: Option<Vec<Cell>>,
        new: Vec<Cell>,
    },
    /// DELETE; only the key cells need be present.
    Delete {
        index: usize,
        old: Vec<Cell>,
    },
    Truncate {
        index: usize,
    },
}

/// A committed source transaction, restricted to configured tables.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    /// The commit's end LSN: the position to confirm once this is durable.
    pub end_lsn: Lsn,
    pub commit_time_micros: i64,
    pub changes: Vec<Change>,
}

impl Transaction {
    /// A transaction ending at `lsn` (its commit time unknown: 0).
    pub fn at(lsn: u64, changes: Vec<Change>) -> Transaction {
        Transaction {
            end_lsn: Lsn(lsn),
            commit_time_micros: 0,
            changes,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Upsert,
    Delete,
    Truncate,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Upsert => "upsert",
            Op::Delete => "delete",
            Op::Truncate => "truncate",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ChangeEvent {
    pub lsn: Lsn,
    pub n: u32,
    pub index: usize,
    /// None for TRUNCATE.
    pub key: Option<String>,
    pub op: Op,
    /// Where the document now lives (upsert), or lived (delete); None for TRUNCATE, and for
    /// a delete whose document was not found (or came in a large transaction).
    pub region: Option<String>,
    /// The document's filter values (`ResolvedIndex::filters` order) as the change left it
    /// (upsert) or found it (delete), so a scoped reader sees only changes within its
    /// filter; None when unknown (as `region`) or the index has no filter fields.
    pub filters: Option<Arc<[Option<FilterValue>]>>,
}

impl ChangeEvent {
    pub fn position(&self) -> Position {
        Position(self.lsn, self.n)
    }
}

/// `(commit LSN, change number within the transaction)`, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position(pub Lsn, pub u32);

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0, self.1)
    }
}

impl std::str::FromStr for Position {
    type Err = String;

    /// `X/Y:n`, or `X/Y` (after the whole transaction at X/Y).
    fn from_str(s: &str) -> Result<Position, String> {
        let (lsn, n) = match s.rsplit_once(':') {
            Some((l, n)) => (
                l,
                n.parse::<u32>()
                    .map_err(|_| format!("{s:?}: the part after ':' must be a number"))?,
            ),
            None => (s, u32::MAX),
        };
        let lsn: Lsn = lsn.parse().map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Position(lsn, n))
    }
}
