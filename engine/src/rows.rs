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
/// vector search that needs it, for the store the view had when these were made; and each
/// segment's key table (`KeyTable`), carried over to the next searcher's columns for the
/// segments it still has (a segment never changes; only its deletes do).
pub struct Columns {
    generation: u64,
    segment_ids: Vec<tantivy::index::SegmentId>,
    /// The vector store the slot maps point into (its address; 0: none).
    store: usize,
    rows: Vec<OnceLock<Option<BytesColumn>>>,
    keys: Vec<OnceLock<Option<StrColumn>>>,
    vectors: Vec<OnceLock<Option<BytesColumn>>>,
    slots: Vec<OnceLock<Arc<[u32]>>>,
    key_tables: Vec<OnceLock<Arc<KeyTable>>>,
}

/// A segment's keys by their ordinal in its key dictionary, decoded once in one pass: a hit's
/// key is then an array read. Reading keys from the dictionary decodes a block (hundreds of
/// keys, copied one by one) per key wanted: 13–16% of the indexer's CPU in a text query's
/// profile (`__memmove` under `sorted_ords_to_term_cb`). Costs the keys' bytes and a word
/// per key.
pub struct KeyTable {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyTable {
    fn of(column: &StrColumn) -> std::io::Result<KeyTable> {
        let dictionary = column.dictionary();
        let terms = dictionary.num_terms();
        let mut table = KeyTable {
            bytes: Vec::new(),
            ends: Vec::with_capacity(terms),
        };
        let mut stream = dictionary.stream()?;
        while stream.advance() {
            table.bytes.extend_from_slice(stream.key());
            table.ends.push(table.bytes.len());
        }
        Ok(table)
    }

    /// The key of ordinal `ord`.
    pub fn get(&self, ord: u64) -> Option<&[u8]> {
        let ord = usize::try_from(ord).ok()?;
        let end = *self.ends.get(ord)?;
        let start = if ord == 0 { 0 } else { self.ends[ord - 1] };
        Some(&self.bytes[start..end])
    }
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
    /// Handles for `searcher`'s segments, with the key tables `previous` (the last view's
    /// columns) made for segments `searcher` still has.
    pub fn new(
        searcher: &Searcher,
        store: Option<&Arc<VectorStore>>,
        previous: Option<&Columns>,
    ) -> Columns {
        let segment_ids: Vec<_> = searcher
            .segment_readers()
            .iter()
            .map(SegmentReader::segment_id)
            .collect();
        let segments = segment_ids.len();
        let key_tables = cells(segments);
        if let Some(previous) = previous {
            for (cell, id) in key_tables.iter().zip(&segment_ids) {
                let kept = previous.segment_ids.iter().position(|p| p == id);
                if let Some(table) = kept.and_then(|at| previous.key_tables[at].get()) {
                    let _ = cell.set(table.clone());
                }
            }
        }
        Columns {
            generation: searcher.generation().generation_id(),
            segment_ids,
            store: store_address(store),
            rows: cells(segments),
            keys: cells(segments),
            vectors: cells(segments),
            slots: cells(segments),
            key_tables,
        }
    }

    /// The key table of segment `ord` (read by `reader`), made at first use; None: a segment
    /// without keys.
    pub fn key_table(&self, ord: u32, reader: &SegmentReader) -> Result<Option<Arc<KeyTable>>> {
        let cell = &self.key_tables[ord as usize];
        if let Some(t) = cell.get() {
            return Ok(Some(t.clone()));
        }
        let Some(column) = self.keys(ord, reader)? else {
            return Ok(None);
        };
        let table = Arc::new(KeyTable::of(column)?);
        Ok(Some(cell.get_or_init(|| table).clone()))
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
    row_cells_at(searcher, columns, fields, addr, None)
}

/// [`row_at`], reading only the cells `wanted` marks (by column; the others are None): an
/// answer that shows stored fields need not copy a long text cell.
pub fn row_cells_at(
    searcher: &Searcher,
    columns: &Columns,
    fields: &Fields,
    addr: DocAddress,
    wanted: Option<&[bool]>,
) -> Result<RawRow> {
    let segment = searcher.segment_reader(addr.segment_ord);
    let mut raw = match columns.rows(addr.segment_ord, segment)? {
        Some(column) => cells_in(column, addr.doc_id, wanted)?,
        None => return Err(Error::corrupt(ROW_FIELD, "a segment without rows")),
    };
    let vector_wanted = |at: usize| wanted.is_none_or(|w| w.get(at).copied().unwrap_or(false));
    if let Some((at, ty)) = fields.vector_answer.filter(|&(at, _)| vector_wanted(at)) {
        if let Some(column) = columns.vectors(addr.segment_ord, segment)? {
            if let Some(v) = vector_in(column, addr.doc_id)? {
                raw[at] = Some(crate::document::render_vector(&v, ty));
            }
        }
    }
    Ok(raw)
}

/// The committed row under `key`, as [`row_cells_at`] reads it.
pub fn row_of_key(
    searcher: &Searcher,
    columns: &Columns,
    fields: &Fields,
    key: &str,
    wanted: Option<&[bool]>,
) -> Result<Option<RawRow>> {
    address(searcher, fields, key)?
        .map(|addr| row_cells_at(searcher, columns, fields, addr, wanted))
        .transpose()
}

/// The row of a document in a segment's row column.
fn row_in(column: &BytesColumn, doc: u32) -> Result<RawRow> {
    cells_in(column, doc, None)
}

/// The cells `wanted` marks (all: None) of a document's row in a segment's row column.
fn cells_in(column: &BytesColumn, doc: u32, wanted: Option<&[bool]>) -> Result<RawRow> {
    let ord = column
        .term_ords(doc)
        .next()
        .ok_or_else(|| Error::corrupt(ROW_FIELD, "a document without a row"))?;
    let mut bytes = Vec::new();
    column.ord_to_bytes(ord, &mut bytes)?;
    let parsed = match wanted {
        None => serde_json::from_slice(&bytes),
        Some(wanted) => {
            use serde::de::DeserializeSeed;
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            Cells(wanted)
                .deserialize(&mut de)
                .and_then(|row| de.end().map(|()| row))
        }
    };
    parsed.map_err(|e| Error::corrupt(ROW_FIELD, e))
}

/// A row's JSON array of cells, parsing only the wanted ones: the others are skipped over
/// (`IgnoredAny`: no allocation, no copy) and come back as None.
struct Cells<'w>(&'w [bool]);

impl<'de> serde::de::DeserializeSeed<'de> for Cells<'_> {
    type Value = RawRow;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<RawRow, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Cells<'_> {
    type Value = RawRow;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of text cells")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<RawRow, A::Error> {
        let mut row = Vec::with_capacity(self.0.len());
        loop {
            let wanted = self.0.get(row.len()).copied().unwrap_or(false);
            let cell = if wanted {
                match seq.next_element::<Option<String>>()? {
                    Some(cell) => cell,
                    None => break,
                }
            } else {
                match seq.next_element::<serde::de::IgnoredAny>()? {
                    Some(_) => None,
                    None => break,
                }
            };
            row.push(cell);
        }
        Ok(row)
    }
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
        let reader = searcher.segment_reader(segment);
        let (Some(column), Some(table)) = (
            columns.keys(segment, reader)?,
            columns.key_table(segment, reader)?,
        ) else {
            continue;
        };
        for i in at {
            let key = column
                .term_ords(addrs[i].doc_id)
                .next()
                .and_then(|ord| table.get(ord));
            if let Some(bytes) = key {
                keys[i] = String::from_utf8_lossy(bytes).into_owned();
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::shard::tests::{open, tx, upsert};
    use crate::shard::ViewCell;
    use wire::Lsn;

    /// Every live document's key as the dictionary gives it, by address.
    fn dictionary_keys(searcher: &Searcher, columns: &Columns) -> Vec<(DocAddress, String)> {
        let mut out = Vec::new();
        for (ord, reader) in searcher.segment_readers().iter().enumerate() {
            let column = columns.keys(ord as u32, reader).unwrap().unwrap();
            let wanted = reader
                .doc_ids_alive()
                .map(|doc| (column.term_ords(doc).next().unwrap(), doc));
            in_ordinal_order(column, wanted.collect(), |doc, key| {
                let key = String::from_utf8(key.to_vec()).unwrap();
                out.push((DocAddress::new(ord as u32, doc), key));
            })
            .unwrap();
        }
        out
    }

    /// A row's cells through `Cells`, as `cells_in` parses them.
    fn cells(json: &str, wanted: &[bool]) -> serde_json::Result<RawRow> {
        use serde::de::DeserializeSeed;
        let mut de = serde_json::Deserializer::from_str(json);
        let row = Cells(wanted).deserialize(&mut de)?;
        de.end().map(|()| row)
    }

    #[test]
    fn only_the_wanted_cells_of_a_row_are_read() {
        let json = r#"["1","eu","a \"long\" body\u00e9",null,"5"]"#;
        let all: RawRow = serde_json::from_str(json).unwrap();
        assert_eq!(all[2].as_deref(), Some("a \"long\" body\u{e9}"));
        assert_eq!(cells(json, &[true; 5]).unwrap(), all);
        assert_eq!(
            cells(json, &[true, false, false, true, true]).unwrap(),
            vec![Some("1".into()), None, None, None, Some("5".into())]
        );
        assert_eq!(cells(json, &[]).unwrap(), vec![None; 5], "none wanted");
        assert!(cells(r#"["1", 2"#, &[true, true]).is_err(), "broken JSON");
        assert!(cells(r#"["1"] x"#, &[true]).is_err(), "trailing bytes");
    }

    #[test]
    fn key_tables_give_the_dictionarys_keys_and_outlive_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(ViewCell::default());
        let mut shard = open(dir.path(), view.clone(), Lsn::ZERO);
        for (lsn, ids) in [(10, vec![5, 12, 3, 40]), (20, vec![7, 12, 100])] {
            let changes = ids.into_iter().map(|id| upsert(id, "eu", "b")).collect();
            shard.apply(&tx(lsn, changes)).unwrap();
            shard.make_searchable(Lsn(lsn));
            shard.commit().unwrap();
        }
        let first = view.load().unwrap();
        let eu = first.partitions.values().next().unwrap();
        let expected = dictionary_keys(&eu.searcher, &eu.columns);
        assert_eq!(expected.len(), 6, "12 replaced: six live documents");
        let addrs: Vec<DocAddress> = expected.iter().map(|e| e.0).collect();
        let got = keys_at(&eu.searcher, &eu.columns, &addrs).unwrap();
        let want: Vec<String> = expected.into_iter().map(|e| e.1).collect();
        assert_eq!(got, want);
        let table = |v: &crate::shard::PartitionView, ord: u32| {
            v.columns
                .key_table(ord, v.searcher.segment_reader(ord))
                .unwrap()
                .unwrap()
        };
        let made = table(eu, 0);

        // A commit adds a segment: the next view's columns keep the first segment's table.
        shard.apply(&tx(30, vec![upsert(8, "eu", "b")])).unwrap();
        shard.make_searchable(Lsn(30));
        shard.commit().unwrap();
        let next = view.load().unwrap();
        let eu_next = next.partitions.values().next().unwrap();
        assert!(
            !Arc::ptr_eq(&eu.columns, &eu_next.columns),
            "a new generation"
        );
        let same = eu_next
            .searcher
            .segment_readers()
            .iter()
            .position(|r| r.segment_id() == eu.searcher.segment_reader(0).segment_id())
            .unwrap();
        assert!(Arc::ptr_eq(&made, &table(eu_next, same as u32)));
    }
}
