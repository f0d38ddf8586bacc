//! Reading committed documents back, without a document store.
//!
//! A hit needs its key's address and its row's answer columns. Each document carries its row
//! (`_row`: the text cells as a JSON array, an indexed vector's cell empty), its key and its
//! vector (`_vec`, little-endian f32) in columnar fields read by ordinal; a key's address comes
//! from the key's term dictionary per segment, not a query. (A document store would
//! decompress a whole block and deserialise every stored field to read one document: most of
//! the cost of a geo hit when rows were read from it, and lz4 over every row at ingest.)

use std::sync::{Arc, OnceLock};

use tantivy::columnar::{BytesColumn, StrColumn};
use tantivy::schema::IndexRecordOption;
use tantivy::{DocAddress, DocSet, Searcher, SegmentReader, Term, TERMINATED};

use crate::document::RawRow;
use crate::error::{Error, Result};
use crate::partition::Fields;
use crate::vector::VectorStore;

/// The name of the columnar row field.
pub const ROW_FIELD: &str = "_row";

/// The name of the columnar key field.
pub const KEY_FIELD: &str = "_key";

/// The name of the columnar vector field (little-endian f32).
pub const VECTOR_FIELD: &str = "_vec";

/// One searcher's per-segment handles on the `_row` and `_key` columns, opened at a segment's
/// first use and kept while that searcher serves: opening a segment's row column once per
/// hit was a tenth of a geo query's shard CPU.
///
/// With them, each segment's document → vector-store slot map, made at the first filtered
/// vector search that needs it, for the store the view had when these were made.
pub struct Columns {
    generation: u64,
    /// The vector store the slot maps point into (its address; 0: none).
    store: usize,
    rows: Vec<OnceLock<Option<BytesColumn>>>,
    keys: Vec<OnceLock<Option<StrColumn>>>,
    vectors: Vec<OnceLock<Option<BytesColumn>>>,
    slots: Vec<OnceLock<Arc<[u32]>>>,
}

/// A document without a vector in the store (`Columns::doc_slots`).
pub const NO_SLOT: u32 = u32::MAX;

fn cells<T>(n: usize) -> Vec<OnceLock<T>> {
    (0..n).map(|_| OnceLock::new()).collect()
}

fn store_address(store: Option<&Arc<VectorStore>>) -> usize {
    store.map_or(0, |s| Arc::as_ptr(s) as usize)
}

impl Columns {
    pub fn new(searcher: &Searcher, store: Option<&Arc<VectorStore>>) -> Columns {
        let segments = searcher.segment_readers().len();
        Columns {
            generation: searcher.generation().generation_id(),
            store: store_address(store),
            rows: cells(segments),
            keys: cells(segments),
            vectors: cells(segments),
            slots: cells(segments),
        }
    }

    /// Whether these handles belong to `searcher`'s segments and their slot maps to `store`.
    pub fn fits(&self, searcher: &Searcher, store: Option<&Arc<VectorStore>>) -> bool {
        self.generation == searcher.generation().generation_id()
            && self.store == store_address(store)
    }

    /// The slot of each document of segment `ord` in `store` (the store these columns were
    /// made with), `NO_SLOT` for documents without a vector or deleted: one sorted pass over
    /// the segment's key dictionary at first use, then an array read per document.
    pub fn doc_slots(
        &self,
        ord: u32,
        reader: &SegmentReader,
        store: &VectorStore,
    ) -> tantivy::Result<Arc<[u32]>> {
        let cell = &self.slots[ord as usize];
        if let Some(s) = cell.get() {
            return Ok(s.clone());
        }
        let mut slots = vec![NO_SLOT; reader.max_doc() as usize];
        if let Some(keys) = self.keys(ord, reader)? {
            let wanted = reader
                .doc_ids_alive()
                .filter_map(|doc| Some((keys.term_ords(doc).next()?, doc)));
            in_ordinal_order(keys, wanted.collect(), |doc, key| {
                let slot = std::str::from_utf8(key).ok().and_then(|k| store.slot_of(k));
                slots[doc as usize] = slot.unwrap_or(NO_SLOT);
            })?;
        }
        Ok(cell.get_or_init(|| slots.into()).clone())
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

    /// The vector column of segment `ord` (read by `reader`); None: a segment without vectors.
    pub fn vectors(&self, ord: u32, reader: &SegmentReader) -> Result<Option<&BytesColumn>> {
        let cell = &self.vectors[ord as usize];
        if let Some(c) = cell.get() {
            return Ok(c.as_ref());
        }
        let opened = reader.fast_fields().bytes(VECTOR_FIELD)?;
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

/// The row at a committed address, as answers need it: every column, the vector column's
/// text printed from its floats when answers show it (`Fields::vector_answer`).
pub fn row_at(
    searcher: &Searcher,
    columns: &Columns,
    fields: &Fields,
    addr: DocAddress,
) -> Result<RawRow> {
    let segment = searcher.segment_reader(addr.segment_ord);
    let mut raw = match columns.rows(addr.segment_ord, segment)? {
        Some(column) => row_in(column, addr.doc_id)?,
        None => return Err(Error::corrupt(ROW_FIELD, "a segment without rows")),
    };
    if let Some((at, ty)) = fields.vector_answer {
        if let Some(column) = columns.vectors(addr.segment_ord, segment)? {
            if let Some(v) = vector_in(column, addr.doc_id)? {
                raw[at] = Some(crate::document::render_vector(&v, ty));
            }
        }
    }
    Ok(raw)
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

/// The row of a document in a segment's row column.
fn row_in(column: &BytesColumn, doc: u32) -> Result<RawRow> {
    let ord = column
        .term_ords(doc)
        .next()
        .ok_or_else(|| Error::corrupt(ROW_FIELD, "a document without a row"))?;
    let mut bytes = Vec::new();
    column.ord_to_bytes(ord, &mut bytes)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::corrupt(ROW_FIELD, e))
}

/// The vector of a document in a segment's vector column, if it has one.
pub fn vector_in(column: &BytesColumn, doc: u32) -> Result<Option<Vec<f32>>> {
    let Some(ord) = column.term_ords(doc).next() else {
        return Ok(None);
    };
    let mut bytes = Vec::new();
    column.ord_to_bytes(ord, &mut bytes)?;
    Ok(Some(floats(&bytes)))
}

/// Little-endian f32s.
pub fn floats(bytes: &[u8]) -> Vec<f32> {
    let mut out = Vec::with_capacity(bytes.len() / 4);
    floats_into(bytes, &mut out);
    out
}

/// Little-endian f32s, into `out` (cleared first).
pub fn floats_into(bytes: &[u8], out: &mut Vec<f32>) {
    out.clear();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
}

/// One segment's key, row and vector columns, for reading many of its documents (dumps,
/// stored-row lookups).
pub struct SegmentColumns {
    keys: Option<StrColumn>,
    rows: Option<BytesColumn>,
    vectors: Option<BytesColumn>,
}

impl SegmentColumns {
    pub fn open(segment: &SegmentReader) -> Result<SegmentColumns> {
        let ff = segment.fast_fields();
        Ok(SegmentColumns {
            keys: ff.str(KEY_FIELD)?,
            rows: ff.bytes(ROW_FIELD)?,
            vectors: ff.bytes(VECTOR_FIELD)?,
        })
    }

    pub fn key(&self, doc: u32) -> Result<String> {
        let ord = self
            .keys
            .as_ref()
            .and_then(|k| k.term_ords(doc).next())
            .ok_or_else(|| Error::corrupt(KEY_FIELD, "a document without a key"))?;
        let mut key = String::new();
        self.keys
            .as_ref()
            .expect("checked above")
            .ord_to_str(ord, &mut key)?;
        Ok(key)
    }

    pub fn raw(&self, doc: u32) -> Result<RawRow> {
        match &self.rows {
            Some(column) => row_in(column, doc),
            None => Err(Error::corrupt(ROW_FIELD, "a segment without rows")),
        }
    }

    pub fn vector(&self, doc: u32) -> Result<Option<Vec<f32>>> {
        match &self.vectors {
            Some(column) => vector_in(column, doc),
            None => Ok(None),
        }
    }
}

/// Calls `f(item, value)` for every `(ordinal, item)` with the value of that ordinal in a
/// dictionary-encoded column, in one sorted pass over its dictionary: `ord_to_bytes` decodes
/// a dictionary block from its start for every value asked (a key block holds hundreds).
pub fn in_ordinal_order<T>(
    column: &BytesColumn,
    mut wanted: Vec<(u64, T)>,
    mut f: impl FnMut(T, &[u8]),
) -> std::io::Result<()> {
    wanted.sort_unstable_by_key(|w| w.0);
    let mut ords: Vec<u64> = wanted.iter().map(|w| w.0).collect();
    ords.dedup();
    let mut items = wanted.into_iter().peekable();
    column.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
        // Called once per distinct ordinal, in order: every item wanting it.
        let Some(ord) = items.peek().map(|w| w.0) else {
            return;
        };
        while let Some((_, item)) = items.next_if(|w| w.0 == ord) {
            f(item, bytes);
        }
    })?;
    Ok(())
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
        let wanted = at
            .into_iter()
            .filter_map(|i| Some((column.term_ords(addrs[i].doc_id).next()?, i)));
        in_ordinal_order(column, wanted.collect(), |i, bytes| {
            keys[i] = String::from_utf8_lossy(bytes).into_owned();
        })?;
    }
    Ok(keys)
}
