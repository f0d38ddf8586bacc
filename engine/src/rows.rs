//! Reading committed documents back on the query path, without the document store.
//!
//! A hit needs its key's address and its row's answer columns. The document store
//! (`_source`) keeps the whole row for dumps, TOAST and region moves, but reading one document
//! from it decompresses a whole block and deserialises every field, the vector as text
//! included (~4 KB a row for a 384-d embedding): most of the cost of a geo hit. So each
//! document also carries `_row`, its row without the vector column, in a columnar bytes field
//! read by ordinal; and a key's address comes from the key's term dictionary per segment, not
//! a query.

use std::sync::OnceLock;

use tantivy::columnar::{BytesColumn, StrColumn};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocSet, Searcher, SegmentReader, Term, TERMINATED};

use crate::document::RawRow;
use crate::error::{Error, Result};
use crate::partition::Fields;

/// The name of the columnar row field.
pub const ROW_FIELD: &str = "_row";

/// The name of the columnar key field.
pub const KEY_FIELD: &str = "_key";

/// One searcher's per-segment handles on the `_row` and `_key` columns, opened at a segment's
/// first use and kept while that searcher serves: opening a segment's row column once per
/// hit was a tenth of a geo query's shard CPU.
pub struct Columns {
    generation: u64,
    rows: Vec<OnceLock<Option<BytesColumn>>>,
    keys: Vec<OnceLock<Option<StrColumn>>>,
}

impl Columns {
    pub fn new(searcher: &Searcher) -> Columns {
        let segments = searcher.segment_readers().len();
        Columns {
            generation: searcher.generation().generation_id(),
            rows: (0..segments).map(|_| OnceLock::new()).collect(),
            keys: (0..segments).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Whether these handles belong to `searcher`'s segments.
    pub fn fits(&self, searcher: &Searcher) -> bool {
        self.generation == searcher.generation().generation_id()
    }

    /// The row column of segment `ord` (read by `reader`); None: a segment without rows.
    pub fn rows(&self, ord: u32, reader: &SegmentReader) -> Result<Option<&BytesColumn>> {
        let cell = &self.rows[ord as usize];
        if let Some(c) = cell.get() {
            return Ok(c.as_ref());
        }
        let opened = reader.fast_fields().bytes(ROW_FIELD)?;
        Ok(cell.get_or_init(|| opened).as_ref())
    }

    /// The key column of segment `ord` (read by `reader`); None: a segment without keys.
    pub fn keys(&self, ord: u32, reader: &SegmentReader) -> tantivy::Result<Option<&StrColumn>> {
        let cell = &self.keys[ord as usize];
        if let Some(c) = cell.get() {
            return Ok(c.as_ref());
        }
        let opened = reader.fast_fields().str(KEY_FIELD)?;
        Ok(cell.get_or_init(|| opened).as_ref())
    }
}

/// The address of the live committed document under `key`, if any.
pub fn address(searcher: &Searcher, fields: &Fields, key: &str) -> Result<Option<DocAddress>> {
    let term = Term::from_field_text(fields.key, key);
    for (ord, segment) in searcher.segment_readers().iter().enumerate() {
        let inverted = segment.inverted_index(fields.key)?;
        let Some(info) = inverted.get_term_info(&term)? else {
            continue;
        };
        let mut postings = inverted.read_postings_from_terminfo(&info, IndexRecordOption::Basic)?;
        let alive = segment.alive_bitset();
        let mut doc = postings.doc();
        while doc != TERMINATED {
            if alive.is_none_or(|a| a.is_alive(doc)) {
                return Ok(Some(DocAddress::new(ord as u32, doc)));
            }
            doc = postings.advance();
        }
    }
    Ok(None)
}

/// The row at a committed address, as answers need it: every column, with the vector column
/// empty unless `fields.rows_carry_stored` says an answer wants it (then from `_source`).
pub fn row_at(
    searcher: &Searcher,
    columns: &Columns,
    fields: &Fields,
    addr: DocAddress,
) -> Result<RawRow> {
    if fields.rows_carry_stored {
        let segment = searcher.segment_reader(addr.segment_ord);
        if let Some(column) = columns.rows(addr.segment_ord, segment)? {
            if let Some(ord) = column.term_ords(addr.doc_id).next() {
                let mut bytes = Vec::new();
                column.ord_to_bytes(ord, &mut bytes)?;
                return serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(ROW_FIELD, e));
            }
        }
    }
    let doc: tantivy::TantivyDocument = searcher.doc(addr)?;
    crate::partition::decode_source(&doc, fields)
}

/// The committed row under `key`, as [`row_at`] reads it.
pub fn row_of_key(
    searcher: &Searcher,
    columns: &Columns,
    fields: &Fields,
    key: &str,
) -> Result<Option<RawRow>> {
    address(searcher, fields, key)?
        .map(|addr| row_at(searcher, columns, fields, addr))
        .transpose()
}

/// The `_row` value of a document: its row with the vector column (if any) empty.
pub fn row_bytes(fields: &Fields, raw: &RawRow) -> Vec<u8> {
    match fields.vector_column {
        Some(c) if raw.get(c).is_some_and(Option::is_some) => {
            let mut row = raw.clone();
            row[c] = None;
            serde_json::to_vec(&row).expect("row serializes")
        }
        _ => serde_json::to_vec(raw).expect("row serializes"),
    }
}

/// The keys of committed addresses, in their order: one sorted pass over each segment's key
/// dictionary (a lookup per document would decode a dictionary block each).
pub fn keys_at(
    searcher: &Searcher,
    columns: &Columns,
    addrs: &[DocAddress],
) -> Result<Vec<String>> {
    let mut keys = vec![String::new(); addrs.len()];
    let mut by_segment: std::collections::BTreeMap<u32, Vec<usize>> = Default::default();
    for (i, addr) in addrs.iter().enumerate() {
        by_segment.entry(addr.segment_ord).or_default().push(i);
    }
    for (segment, at) in by_segment {
        let Some(column) = columns.keys(segment, searcher.segment_reader(segment))? else {
            continue;
        };
        // (key ordinal, position in `addrs`), in ordinal order.
        let mut wanted: Vec<(u64, usize)> = at
            .into_iter()
            .filter_map(|i| Some((column.term_ords(addrs[i].doc_id).next()?, i)))
            .collect();
        wanted.sort_unstable();
        let mut ords: Vec<u64> = wanted.iter().map(|w| w.0).collect();
        ords.dedup();
        let mut next = 0;
        column.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
            // Called once per distinct ordinal, in order: every position wanting it.
            let key = String::from_utf8_lossy(bytes).into_owned();
            let Some(&(ord, _)) = wanted.get(next) else {
                return;
            };
            while let Some(&(o, i)) = wanted.get(next) {
                if o != ord {
                    break;
                }
                keys[i] = key.clone();
                next += 1;
            }
        })?;
    }
    Ok(keys)
}
