//! One partition: everything an (index, region) pair holds, on disk in its own tantivy index.
//! The tantivy commit payload carries the LSN the partition is durable up to, so the data and
//! its checkpoint can never disagree. Synchronous engine code: no async, no HTTP, no Postgres.
//!
//! Every write is "make key K present with this document, or absent": a delete of K's term
//! followed by an optional add, ordered by tantivy's opstamps, so replays are harmless.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tantivy::collector::{Count, DocSetCollector};
use tantivy::query::{AllQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, Value, FAST, INDEXED, STORED, STRING, TEXT,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::catalog::ResolvedIndex;
use crate::document::{content_hash, Document, RawRow};
use crate::error::{Error, Result};
use crate::lsn::Lsn;

/// The tantivy fields of one index's partitions.
#[derive(Debug, Clone)]
pub struct Fields {
    pub key: Field,
    /// The configured column values as a JSON array (the document store).
    pub source: Field,
    /// One per `ResolvedIndex::text` entry, with the row position of its column.
    pub text: Vec<(Field, usize)>,
    pub lat: Option<Field>,
    pub lon: Option<Field>,
}

impl Fields {
    pub fn schema(ix: &ResolvedIndex) -> (Schema, Fields) {
        let mut b = Schema::builder();
        let key = b.add_text_field("_key", STRING | STORED);
        let source = b.add_bytes_field("_source", STORED);
        let text = ix
            .text
            .iter()
            .map(|t| {
                (
                    b.add_text_field(&format!("text_{}", ix.column_name(t.column)), TEXT),
                    t.column,
                )
            })
            .collect();
        let (lat, lon) = match ix.geo {
            Some(_) => (
                Some(b.add_f64_field("_lat", FAST | INDEXED)),
                Some(b.add_f64_field("_lon", FAST | INDEXED)),
            ),
            None => (None, None),
        };
        (
            b.build(),
            Fields {
                key,
                source,
                text,
                lat,
                lon,
            },
        )
    }
}

pub struct Partition {
    pub index: usize,
    pub region: String,
    dir: PathBuf,
    writer: IndexWriter,
    reader: IndexReader,
    fields: Fields,
    /// LSN of the last commit (from its payload).
    checkpoint: Lsn,
    /// Uncommitted state of keys written since the last commit: `None` = absent.
    pending: HashMap<String, Option<RawRow>>,
    /// A TRUNCATE is pending: committed documents no longer count.
    truncated: bool,
    dirty: bool,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    lsn: String,
}

impl Partition {
    pub fn open(
        dir: &Path,
        ix: &ResolvedIndex,
        region: &str,
        writer_memory: usize,
    ) -> Result<Partition> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = Fields::schema(ix);
        let index = if dir.join("meta.json").exists() {
            let index = Index::open_in_dir(dir)?;
            if index.schema() != schema {
                return Err(Error::Checkpoint(format!(
                    "partition {} was built for another configuration of index {:?}; remove the data directory to rebuild it",
                    dir.display(),
                    ix.name
                )));
            }
            index
        } else {
            Index::create_in_dir(dir, schema)?
        };
        let checkpoint = match index.load_metas()?.payload {
            Some(p) => {
                let p: Payload = serde_json::from_str(&p).map_err(|e| {
                    Error::Checkpoint(format!("{}: bad commit payload: {e}", dir.display()))
                })?;
                p.lsn
                    .parse()
                    .map_err(|e| Error::Checkpoint(format!("{}: {e}", dir.display())))?
            }
            None => Lsn::ZERO,
        };
        let writer = index.writer_with_num_threads(1, writer_memory)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Partition {
            index: ix.ordinal,
            region: region.to_owned(),
            dir: dir.to_owned(),
            writer,
            reader,
            fields,
            checkpoint,
            pending: HashMap::new(),
            truncated: false,
            dirty: false,
        })
    }

    pub fn checkpoint(&self) -> Lsn {
        self.checkpoint
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The committed searcher (the state as of `checkpoint`).
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The current (pending, else committed) row stored under `key`.
    pub fn get(&self, key: &str) -> Result<Option<RawRow>> {
        if let Some(p) = self.pending.get(key) {
            return Ok(p.clone());
        }
        if self.truncated {
            return Ok(None);
        }
        lookup(&self.searcher(), &self.fields, key)
    }

    /// Whether `key` currently has a document here (pending, else committed).
    pub fn contains(&self, key: &str) -> Result<bool> {
        if let Some(p) = self.pending.get(key) {
            return Ok(p.is_some());
        }
        if self.truncated {
            return Ok(false);
        }
        let query = TermQuery::new(
            Term::from_field_text(self.fields.key, key),
            IndexRecordOption::Basic,
        );
        Ok(self.searcher().search(&query, &Count)? > 0)
    }

    /// Makes `key` hold `doc`, or be absent.
    pub fn set(&mut self, key: &str, doc: Option<&Document>) -> Result<()> {
        debug_assert!(doc.is_none_or(|d| d.key == key && d.region == self.region));
        self.writer
            .delete_term(Term::from_field_text(self.fields.key, key));
        if let Some(d) = doc {
            self.writer.add_document(self.to_tantivy(d))?;
        }
        self.pending
            .insert(key.to_owned(), doc.map(|d| d.raw.clone()));
        self.dirty = true;
        Ok(())
    }

    /// Adds a document known to be absent (snapshot into an empty partition).
    pub fn add_new(&mut self, doc: &Document) -> Result<()> {
        self.writer.add_document(self.to_tantivy(doc))?;
        self.dirty = true;
        Ok(())
    }

    pub fn truncate(&mut self) -> Result<()> {
        self.writer.delete_query(Box::new(AllQuery))?;
        self.pending.clear();
        self.truncated = true;
        self.dirty = true;
        Ok(())
    }

    /// Makes everything written so far durable with `lsn` as the checkpoint, then visible.
    pub fn commit(&mut self, lsn: Lsn) -> Result<()> {
        debug_assert!(lsn >= self.checkpoint, "checkpoint must not go back");
        let payload = serde_json::to_string(&Payload {
            lsn: lsn.to_string(),
        })
        .expect("payload serializes");
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.reader.reload()?;
        self.checkpoint = lsn;
        self.pending.clear();
        self.truncated = false;
        self.dirty = false;
        Ok(())
    }

    fn to_tantivy(&self, d: &Document) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.fields.key, &d.key);
        doc.add_bytes(
            self.fields.source,
            &serde_json::to_vec(&d.raw).expect("row serializes"),
        );
        for (&(field, column), &ok) in self.fields.text.iter().zip(&d.text_ok) {
            if let (true, Some(text)) = (ok, &d.raw[column]) {
                doc.add_text(field, text);
            }
        }
        if let (Some((lat, lon)), Some(flat), Some(flon)) =
            (d.geo, self.fields.lat, self.fields.lon)
        {
            doc.add_f64(flat, lat);
            doc.add_f64(flon, lon);
        }
        doc
    }
}

/// The stored row under `key` in a searcher, if any.
pub fn lookup(searcher: &Searcher, fields: &Fields, key: &str) -> Result<Option<RawRow>> {
    let query = TermQuery::new(
        Term::from_field_text(fields.key, key),
        IndexRecordOption::Basic,
    );
    let hits = searcher.search(&query, &DocSetCollector)?;
    let Some(addr) = hits.into_iter().next() else {
        return Ok(None);
    };
    let doc: TantivyDocument = searcher.doc(addr)?;
    Ok(Some(decode_source(&doc, fields)?))
}

fn decode_source(doc: &TantivyDocument, fields: &Fields) -> Result<RawRow> {
    let bytes = doc
        .get_first(fields.source)
        .and_then(|v| v.as_bytes())
        .ok_or_else(|| Error::Checkpoint("document without _source".into()))?;
    serde_json::from_slice(bytes).map_err(|e| Error::Checkpoint(format!("bad _source: {e}")))
}

/// Every live document of a searcher as (key, content hash), for `verify`.
pub fn dump(searcher: &Searcher, fields: &Fields, region: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::with_capacity(searcher.num_docs() as usize);
    for segment in searcher.segment_readers() {
        let store = segment.get_store_reader(64)?;
        for doc_id in segment.doc_ids_alive() {
            let doc: TantivyDocument = store.get(doc_id)?;
            let key = doc
                .get_first(fields.key)
                .and_then(|v| v.as_str())
                .ok_or_else(|| Error::Checkpoint("document without _key".into()))?
                .to_owned();
            let raw = decode_source(&doc, fields)?;
            out.push((key, content_hash(region, &raw)));
        }
    }
    Ok(out)
}
