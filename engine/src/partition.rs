//! One partition: everything an (index, region) pair holds, on disk in its own tantivy index.
//! The tantivy commit payload carries the LSN the partition is durable up to, so the data and
//! its checkpoint can never disagree. Synchronous engine code: no async, no HTTP, no Postgres.
//!
//! Every write is "make key K present with this document, or absent": a delete of K's term
//! followed by an optional add, ordered by tantivy's opstamps, so replays are harmless.
//!
//! Writes are searchable before they are durable: each partition keeps the documents written
//! since its last tantivy commit in a fresh layer (a persistent map, so a snapshot of it for
//! readers costs O(1)). A tantivy commit costs ~10 ms whatever its size (every new segment
//! allocates and scans a large term table), so commits are batched on a timer, while readers
//! see committed segments overlaid with the fresh layer at once.
//!
//! Long (~910 lines) on purpose (a large transaction's writes live in `partition/bulk.rs`, quiet-time merges in `partition/merge.rs`): the tantivy writer and reader, the fresh layer and the derived
//! structures (R-tree, vector store, graph queue) change together at each commit, and one
//! invariant (a commit covers exactly the fresh entries it drops) holds across all of them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tantivy::collector::Count;
use tantivy::query::{AllQuery, TermQuery};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, INDEXED, STRING,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::analyzer;
use crate::document::{content_hash, Document, RawRow, Row};
use crate::error::{Error, Result};
use crate::filter::{FilterField, FilterKind, FilterValue};
use crate::gate::{Gate, GatedDoc};
use crate::geo::GeoIndex;
use crate::graph::{Graph, GraphBatch, GraphItem, GraphJob};
use crate::schema::ResolvedIndex;
pub use crate::text::TextField;
use crate::vector::VectorStore;
use wire::Lsn;

/// The tantivy fields of one index's partitions.
#[derive(Debug, Clone)]
pub struct Fields {
    pub key: Field,
    /// The row's text cells (`Document::raw`: an indexed vector's cell empty) as a JSON
    /// array, columnar (`rows.rs`). There is no document store: rows, keys and vectors are
    /// all read from columns.
    pub row: Field,
    /// The vector column's position and type when answers show it (a stored field): rows
    /// read back then get its text, printed from `_vec`.
    pub vector_answer: Option<(usize, crate::schema::VectorType)>,
    /// One per `ResolvedIndex::text` entry.
    pub text: Vec<TextField>,
    pub lat: Option<Field>,
    pub lon: Option<Field>,
    /// The vector as little-endian f32 bytes (fast field: loaded at start without parsing).
    pub vector: Option<Field>,
    /// One per `ResolvedIndex::filters` entry: `f_<column>`, typed, indexed and fast.
    pub filters: Vec<FilterField>,
    /// Ranking rules for text hits (`ResolvedIndex::ranking`).
    pub ranking: crate::schema::RankingSpec,
}

impl Fields {
    pub fn schema(ix: &ResolvedIndex) -> (Schema, Fields) {
        let mut b = Schema::builder();
        let key = b.add_text_field(crate::rows::KEY_FIELD, STRING | FAST);
        let row = b.add_bytes_field(crate::rows::ROW_FIELD, FAST);
        let text = ix
            .text
            .iter()
            .map(|t| {
                let name = ix.column_name(t.column).to_owned();
                let indexing = TextFieldIndexing::default()
                    .set_tokenizer(&analyzer::tokenizer_name(t.language.as_deref()))
                    .set_index_option(IndexRecordOption::WithFreqsAndPositions);
                TextField {
                    field: b.add_text_field(
                        &format!("text_{name}"),
                        TextOptions::default().set_indexing_options(indexing),
                    ),
                    name,
                    column: t.column,
                    boost: t.boost,
                    language: t.language.as_deref().and_then(analyzer::language),
                }
            })
            .collect();
        let (lat, lon) = match ix.geo {
            Some(_) => (
                Some(b.add_f64_field("_lat", FAST | INDEXED)),
                Some(b.add_f64_field("_lon", FAST | INDEXED)),
            ),
            None => (None, None),
        };
        let vector = ix
            .vector
            .map(|_| b.add_bytes_field(crate::rows::VECTOR_FIELD, FAST));
        let filters = ix
            .filters
            .iter()
            .map(|f| {
                let name = ix.column_name(f.column).to_owned();
                let fname = format!("f_{name}");
                let field = match f.kind {
                    FilterKind::Int | FilterKind::Time => b.add_i64_field(&fname, INDEXED | FAST),
                    FilterKind::Float => b.add_f64_field(&fname, INDEXED | FAST),
                    FilterKind::Bool => b.add_bool_field(&fname, INDEXED | FAST),
                    FilterKind::Text => b.add_text_field(&fname, STRING | FAST),
                };
                FilterField {
                    field,
                    name,
                    kind: f.kind,
                    column: f.column,
                }
            })
            .collect();
        (
            b.build(),
            Fields {
                key,
                row,
                vector_answer: ix
                    .vector
                    .filter(|v| ix.stored.contains(&v.column))
                    .map(|v| (v.column, v.sql_type)),
                text,
                lat,
                lon,
                vector,
                filters,
                ranking: ix.ranking,
            },
        )
    }
}

impl Fields {
    /// A fresh document's row as answers need it (see [`crate::rows::row_at`]).
    pub fn answer_row(&self, d: &Document) -> RawRow {
        let mut raw = d.raw.clone();
        if let (Some((at, ty)), Some(v)) = (self.vector_answer, &d.vector) {
            raw[at] = Some(crate::document::render_vector(v, ty));
        }
        raw
    }
}

/// The latest write of a key since the last durable commit that includes it.
#[derive(Clone, Debug)]
pub struct FreshEntry {
    /// End LSN of the transaction that wrote it.
    pub lsn: Lsn,
    /// The document, or `None` when the key was deleted.
    pub doc: Option<Arc<Document>>,
    /// Tokens of each text field, computed by the first text query that scans the entry
    /// (not on the apply path) and shared by the copies of the layer.
    pub analyzed: Arc<std::sync::OnceLock<Vec<Vec<String>>>>,
}

impl FreshEntry {
    /// The document's tokens per text field (empty for a field not indexed).
    pub fn tokens(&self, fields: &Fields) -> Option<&[Vec<String>]> {
        let doc = self.doc.as_ref()?;
        Some(self.analyzed.get_or_init(|| {
            fields
                .text
                .iter()
                .zip(&doc.text_ok)
                .map(|(t, &ok)| match (&doc.raw[t.column], ok) {
                    (Some(text), true) => analyzer::tokens(&mut t.analyzer(), text),
                    _ => Vec::new(),
                })
                .collect()
        }))
    }
}

/// Documents written and not yet in a durable commit, by key.
pub type FreshDocs = imbl::HashMap<String, FreshEntry>;

/// What readers overlay on the committed segments of a partition.
#[derive(Clone, Default)]
pub struct FreshLayer {
    /// A TRUNCATE not yet in the committed segments: committed documents do not count.
    pub truncated: bool,
    pub docs: FreshDocs,
}

impl FreshLayer {
    /// Whether the committed document under `key` is hidden by this layer.
    pub fn shadows(&self, key: &str) -> bool {
        self.truncated || self.docs.contains_key(key)
    }
}

/// A write queued for the tantivy writer, applied by the committer.
pub enum WriteOp {
    Delete(Term),
    /// A document and its estimated size (see `gate.rs`).
    Add(TantivyDocument, usize),
    DeleteAll,
}

/// The writer, over documents that hold a ticket of the partition's gate.
type Writer = IndexWriter<GatedDoc>;

mod bulk;
mod merge;
pub use merge::RunningMerge;

/// What a document takes in a writer's queue, roughly: the row and its text once more, and
/// the vector.
fn queued_bytes(d: &Document) -> usize {
    256 + 2 * d.raw.iter().flatten().map(String::len).sum::<usize>()
        + 4 * d.vector.as_ref().map_or(0, Vec::len)
        + d.vector.as_ref().map_or(0, |v| 4 * v.len())
}

/// How the committed structures (R-tree, vector store) follow a commit.
enum Maintenance {
    /// Apply exactly these writes (every fresh entry the commit covers).
    Update(FreshDocs),
    /// Rebuild from the committed fast fields (after a bulk load or a TRUNCATE).
    Rebuild,
}

/// Everything the committer needs to make one partition durable and to build its next
/// committed structures, detached from the applier.
pub struct CommitItem {
    writer: Arc<Mutex<Writer>>,
    gate: Arc<Gate>,
    reader: IndexReader,
    ops: Vec<WriteOp>,
    fields: Fields,
    vector_spec: Option<crate::schema::VectorSpec>,
    maintenance: Maintenance,
    geo: Option<Arc<GeoIndex>>,
    vectors: Option<Arc<VectorStore>>,
    /// The partition's directory, where a rebuilt vector store maps its file.
    dir: PathBuf,
}

/// The committed structures a commit produced, for the applier to swap in.
pub struct Derived {
    geo: Option<Arc<GeoIndex>>,
    vectors: Option<Arc<VectorStore>>,
    rebuilt: bool,
    /// Vector versions new in the store, for the graph builder.
    new_vectors: Option<GraphBatch>,
    /// The commit the reloaded reader shows.
    opstamp: tantivy::Opstamp,
}

impl CommitItem {
    /// Applies the queued writes, commits them with `lsn` as payload, reloads the reader,
    /// then builds the next committed structures (copy-on-write: readers keep the old ones).
    /// Runs on the committer thread; the applier goes on meanwhile and swaps the results in.
    pub fn commit(self, lsn: Lsn) -> Result<Derived> {
        let mut writer = self.writer.lock().unwrap();
        for op in self.ops {
            match op {
                WriteOp::Delete(term) => {
                    writer.delete_term(term);
                }
                WriteOp::Add(doc, bytes) => {
                    writer.add_document(self.gate.admit(doc, bytes))?;
                }
                WriteOp::DeleteAll => {
                    writer.delete_query(Box::new(AllQuery))?;
                }
            }
        }
        commit_at(&mut writer, lsn)?;
        let opstamp = writer.commit_opstamp();
        drop(writer);
        self.reader.reload()?;
        let (mut geo, mut vectors) = (self.geo, self.vectors);
        match self.maintenance {
            Maintenance::Rebuild => {
                let searcher = self.reader.searcher();
                let geo = build_geo(&searcher, &self.fields)?;
                let vectors = build_vectors(&searcher, self.vector_spec, &self.dir)?.map(Arc::new);
                Ok(Derived {
                    geo: geo.map(Arc::new),
                    new_vectors: vectors.as_ref().map(GraphBatch::all),
                    vectors,
                    rebuilt: true,
                    opstamp,
                })
            }
            Maintenance::Update(covered) => {
                // The committed set changed by exactly the fresh entries this commit covers.
                if let Some(geo) = &mut geo {
                    let geo = Arc::make_mut(geo);
                    for (key, e) in &covered {
                        geo.set(key, e.doc.as_ref().and_then(|d| d.geo));
                    }
                }
                let mut new_vectors = Vec::new();
                if let Some(vectors) = &mut vectors {
                    let vectors = Arc::make_mut(vectors);
                    for (key, e) in &covered {
                        let v = e.doc.as_ref().and_then(|d| d.vector.as_deref());
                        if let (Some(id), Some(v)) = (vectors.set(key, v), v) {
                            new_vectors.push(GraphItem {
                                id,
                                key: Arc::from(key.as_str()),
                                vector: v.to_vec(),
                            });
                        }
                    }
                }
                Ok(Derived {
                    geo,
                    vectors,
                    rebuilt: false,
                    new_vectors: Some(GraphBatch::Copied(new_vectors)),
                    opstamp,
                })
            }
        }
    }
}

/// The points of a searcher's live documents, if the index has geo.
fn build_geo(searcher: &Searcher, fields: &Fields) -> Result<Option<GeoIndex>> {
    if fields.lat.is_none() {
        return Ok(None);
    }
    let mut points = Vec::with_capacity(searcher.num_docs() as usize);
    for segment in searcher.segment_readers() {
        let ff = segment.fast_fields();
        let (lat, lon) = (ff.f64("_lat")?, ff.f64("_lon")?);
        let Some(keys) = ff.str(crate::rows::KEY_FIELD)? else {
            continue;
        };
        let wanted = segment.doc_ids_alive().filter_map(|doc| {
            let point = (lat.first(doc)?, lon.first(doc)?);
            Some((keys.term_ords(doc).next()?, point))
        });
        crate::rows::in_ordinal_order(&keys, wanted.collect(), |(la, lo), key| {
            points.push((String::from_utf8_lossy(key).into_owned(), la, lo));
        })?;
    }
    Ok(Some(GeoIndex::bulk(points)))
}

/// The vectors of a searcher's live documents, if the index has a vector: each segment's keys
/// and then its vectors read in one pass over each column's dictionary.
fn build_vectors(
    searcher: &Searcher,
    spec: Option<crate::schema::VectorSpec>,
    dir: &Path,
) -> Result<Option<VectorStore>> {
    let Some(spec) = spec else {
        return Ok(None);
    };
    let mut store = VectorStore::mapped(spec.dimension, spec.metric, dir);
    for segment in searcher.segment_readers() {
        let ff = segment.fast_fields();
        let (keys, vecs) = (
            ff.str(crate::rows::KEY_FIELD)?,
            ff.bytes(crate::rows::VECTOR_FIELD)?,
        );
        let (Some(keys), Some(vecs)) = (keys, vecs) else {
            continue;
        };
        // The key of each live document with a vector, by document.
        let mut key_of: Vec<Option<Box<str>>> = vec![None; segment.max_doc() as usize];
        let with_vector: Vec<(u64, u32)> = segment
            .doc_ids_alive()
            .filter_map(|doc| Some((vecs.term_ords(doc).next()?, doc)))
            .collect();
        let wanted = with_vector
            .iter()
            .filter_map(|&(_, doc)| Some((keys.term_ords(doc).next()?, doc)));
        crate::rows::in_ordinal_order(&keys, wanted.collect(), |doc, key| {
            key_of[doc as usize] = Some(String::from_utf8_lossy(key).into());
        })?;
        let mut values = Vec::with_capacity(spec.dimension);
        crate::rows::in_ordinal_order(&vecs, with_vector, |doc, bytes| {
            let Some(key) = &key_of[doc as usize] else {
                return;
            };
            crate::rows::floats_into(bytes, &mut values);
            if values.len() == spec.dimension {
                store.set(key, Some(&values));
            }
        })?;
    }
    Ok(Some(store))
}

pub struct Partition {
    pub index: usize,
    pub region: String,
    dir: PathBuf,
    writer: Arc<Mutex<Writer>>,
    /// Bounds what waits in the writer's queue.
    gate: Arc<Gate>,
    reader: IndexReader,
    fields: Fields,
    /// LSN of the last durable commit (from its payload).
    checkpoint: Lsn,
    /// Writes since the last durable commit that includes them.
    pending: FreshDocs,
    /// LSN of a TRUNCATE not yet in a durable commit.
    truncated_at: Option<Lsn>,
    /// Writes not yet handed to the committer.
    ops: Vec<WriteOp>,
    /// Snapshot documents written straight to the writer, not yet committed.
    bulk_dirty: bool,
    /// Segment merges paused while a snapshot's copy is made durable part by part.
    merges_paused: bool,
    /// Segments in the quiet merges this partition started and that have not ended.
    merging: std::collections::HashSet<tantivy::index::SegmentId>,
    /// The commit the reader shows (it may be behind the writer's: a snapshot's or a large
    /// transaction's parts are committed before they are shown).
    reader_opstamp: tantivy::Opstamp,
    /// Points of the committed documents (when the index has geo); readers overlay the
    /// fresh layer. Copied on write when readers still hold the previous version.
    geo: Option<Arc<GeoIndex>>,
    /// Vectors of the committed documents (when the index has one), likewise.
    vectors: Option<Arc<VectorStore>>,
    vector_spec: Option<crate::schema::VectorSpec>,
    /// Approximate index over the committed vectors, filled by the graph builder.
    graph: Option<Arc<Graph>>,
    /// Committed vector versions by write sequence number, until the graph has them.
    recent: imbl::OrdMap<u64, u64>,
    next_seq: u64,
    /// Committed vectors not yet handed to the graph builder.
    graph_queue: Vec<GraphBatch>,
    /// A large transaction being written straight to the writer (`bulk.rs`), if any.
    bulk: Option<bulk::Bulk>,
}

/// Commits the writer with `lsn` as the commit payload (what `Partition::open` reads back).
fn commit_at(writer: &mut Writer, lsn: Lsn) -> Result<()> {
    let payload = serde_json::to_string(&Payload {
        lsn: lsn.to_string(),
    })
    .expect("payload serializes");
    let mut prepared = writer.prepare_commit()?;
    prepared.set_payload(&payload);
    prepared.commit()?;
    Ok(())
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
                return Err(Error::SchemaChanged {
                    dir: dir.to_owned(),
                    index: ix.name.clone(),
                });
            }
            index
        } else {
            Index::create_in_dir(dir, schema)?
        };
        let checkpoint = match index.load_metas()?.payload {
            Some(p) => {
                let what = || format!("commit payload of {}", dir.display());
                let p: Payload = serde_json::from_str(&p).map_err(|e| Error::corrupt(what(), e))?;
                p.lsn.parse().map_err(|e| Error::corrupt(what(), e))?
            }
            None => Lsn::ZERO,
        };
        analyzer::register(&index);
        let writer: Writer = index.writer_with_num_threads(1, writer_memory)?;
        let reader_opstamp = writer.commit_opstamp();
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Partition {
            index: ix.ordinal,
            region: region.to_owned(),
            dir: dir.to_owned(),
            writer: Arc::new(Mutex::new(writer)),
            gate: Gate::new((writer_memory / 4).max(4 << 20)),
            reader,
            fields,
            checkpoint,
            pending: FreshDocs::new(),
            truncated_at: None,
            ops: Vec::new(),
            bulk_dirty: false,
            merges_paused: false,
            merging: std::collections::HashSet::new(),
            reader_opstamp,
            geo: None,
            vectors: None,
            vector_spec: ix.vector,
            graph: None,
            recent: imbl::OrdMap::new(),
            next_seq: 0,
            graph_queue: Vec::new(),
            bulk: None,
        }
        .with_derived_structures()
    }

    /// Builds the in-memory structures of the committed documents (at open), reloading the
    /// persisted graph when there is one: only vectors it lacks are queued to the builder.
    fn with_derived_structures(mut self) -> Result<Partition> {
        let searcher = self.searcher();
        let geo = build_geo(&searcher, &self.fields)?;
        let vectors = build_vectors(&searcher, self.vector_spec, &self.dir)?.map(Arc::new);
        self.swap_in(Derived {
            geo: geo.map(Arc::new),
            new_vectors: vectors.as_ref().map(GraphBatch::all),
            vectors,
            rebuilt: true,
            opstamp: self.reader_opstamp,
        });
        if let (Some(spec), Some(store)) = (self.vector_spec, &self.vectors) {
            let started = std::time::Instant::now();
            if let Some((graph, have)) = Graph::load(&self.graph_dir(), spec.metric, store) {
                let have: std::collections::HashSet<u64> = have.into_iter().collect();
                self.graph = Some(Arc::new(graph));
                self.recent = imbl::OrdMap::new();
                let queue = std::mem::take(&mut self.graph_queue);
                for mut batch in queue {
                    batch.retain(|id| !have.contains(&id));
                    self.queue_for_graph(batch);
                }
                tracing::info!(
                    partition = %self.dir.display(),
                    reloaded = have.len(),
                    to_insert = self.graph_queue.iter().map(GraphBatch::len).sum::<usize>(),
                    ms = started.elapsed().as_millis() as u64,
                    "vector graph reloaded"
                );
            }
        }
        Ok(self)
    }

    /// Where this partition's vector graph is dumped.
    pub fn graph_dir(&self) -> PathBuf {
        self.dir.join("graph")
    }

    /// Takes the committed structures a commit (or the open) built.
    fn swap_in(&mut self, d: Derived) {
        self.reader_opstamp = d.opstamp;
        self.geo = d.geo;
        self.vectors = d.vectors;
        if d.rebuilt {
            // A new graph over every vector; until the builder has them, the exact scanner does.
            let n = self.vectors.as_ref().map_or(0, |v| v.len());
            self.graph = self
                .vector_spec
                .map(|spec| Arc::new(Graph::new(spec.metric, spec.dimension, n * 2)));
            self.recent = imbl::OrdMap::new();
            self.graph_queue.clear();
        }
        if let Some(batch) = d.new_vectors {
            self.queue_for_graph(batch);
        }
        // Mostly tombstones (replaced or deleted versions), or a reloaded graph that cannot
        // take new points: start a new graph over the live vectors; until the builder has
        // them, the exact scanner answers.
        if let (Some(g), Some(store), Some(spec)) = (&self.graph, &self.vectors, self.vector_spec) {
            if g.points() > 2 * store.len() + 10_000 || g.broken() {
                tracing::info!(
                    partition = %self.dir.display(),
                    points = g.points(),
                    live = store.len(),
                    broken = g.broken(),
                    "vector graph mostly tombstones or broken: rebuilding"
                );
                self.graph = Some(Arc::new(Graph::new(
                    spec.metric,
                    spec.dimension,
                    store.len() * 2,
                )));
                self.recent = imbl::OrdMap::new();
                self.graph_queue.clear();
                let all = GraphBatch::all(store);
                self.queue_for_graph(all);
            }
        }
    }

    /// Queues versions for the graph builder; until the graph has them, readers scan them.
    fn queue_for_graph(&mut self, batch: GraphBatch) {
        if batch.is_empty() {
            return;
        }
        for id in batch.ids() {
            self.recent.insert(self.next_seq, id);
            self.next_seq += 1;
        }
        self.graph_queue.push(batch);
    }

    /// Vectors committed since the last call, for the graph builder.
    pub fn take_graph_job(&mut self) -> Option<GraphJob> {
        if self.graph_queue.is_empty() {
            return None;
        }
        Some(GraphJob {
            graph: self.graph.clone()?,
            items: std::mem::take(&mut self.graph_queue),
            seq_end: self.next_seq,
            dir: self.graph_dir(),
        })
    }

    /// Forgets versions the graph now has.
    pub fn trim_graphed(&mut self) {
        if let Some(g) = &self.graph {
            let w = g.graphed();
            if self.recent.get_min().is_some_and(|(seq, _)| *seq < w) {
                self.recent = self.recent.split(&w).1;
            }
        }
    }

    pub fn graph(&self) -> Option<Arc<Graph>> {
        self.graph.clone()
    }

    /// Committed vector versions (write seq → id) the graph may not have yet.
    pub fn recent_vectors(&self) -> imbl::OrdMap<u64, u64> {
        self.recent.clone()
    }

    /// The committed documents' vectors, if the index has one.
    pub fn vectors(&self) -> Option<Arc<VectorStore>> {
        self.vectors.clone()
    }

    /// The committed documents' points, if the index has geo.
    pub fn geo(&self) -> Option<Arc<GeoIndex>> {
        self.geo.clone()
    }

    pub fn checkpoint(&self) -> Lsn {
        self.checkpoint
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether writes wait to be handed to the committer.
    pub fn has_queued_writes(&self) -> bool {
        !self.ops.is_empty() || self.bulk_dirty
    }

    /// The committed searcher.
    pub fn searcher(&self) -> Searcher {
        self.reader.searcher()
    }

    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The current (fresh, else committed) row stored under `key`.
    pub fn get(&self, key: &str) -> Result<Option<Row>> {
        if let Some(e) = self.pending.get(key) {
            return Ok(e.doc.as_ref().map(|d| Row {
                raw: d.raw.clone(),
                vector: d.vector.clone(),
            }));
        }
        if self.truncated_at.is_some() {
            return Ok(None);
        }
        lookup(&self.searcher(), &self.fields, key)
    }

    /// Whether `key` currently has a document here (fresh, else committed).
    pub fn contains(&self, key: &str) -> Result<bool> {
        if let Some(e) = self.pending.get(key) {
            return Ok(e.doc.is_some());
        }
        if self.truncated_at.is_some() {
            return Ok(false);
        }
        committed_contains(&self.searcher(), &self.fields, key)
    }

    /// Makes `key` hold `doc`, or be absent, as of the transaction ending at `lsn`:
    /// searchable at the next publish, durable at the next commit.
    pub fn set(&mut self, key: &str, doc: Option<&Document>, lsn: Lsn) {
        debug_assert!(doc.is_none_or(|d| d.key == key && d.region == self.region));
        self.ops
            .push(WriteOp::Delete(Term::from_field_text(self.fields.key, key)));
        if let Some(d) = doc {
            self.ops
                .push(WriteOp::Add(self.to_tantivy(d), queued_bytes(d)));
        }
        let doc = doc.map(|d| Arc::new(d.clone()));
        self.pending.insert(
            key.to_owned(),
            FreshEntry {
                lsn,
                doc,
                analyzed: Default::default(),
            },
        );
    }

    /// Removes every document, as of the transaction ending at `lsn`.
    pub fn truncate(&mut self, lsn: Lsn) {
        self.ops.push(WriteOp::DeleteAll);
        self.pending = FreshDocs::new();
        self.truncated_at = Some(lsn);
    }

    /// Adds a document known to be absent, straight to the writer (snapshot into an empty
    /// partition: too many rows to keep in the fresh layer; visible at the snapshot's commit).
    pub fn add_new(&mut self, doc: &Document) -> Result<()> {
        let doc = self.gate.admit(self.to_tantivy(doc), queued_bytes(doc));
        self.writer.lock().unwrap().add_document(doc)?;
        self.bulk_dirty = true;
        Ok(())
    }

    /// Pauses (or resumes) merging segments: a snapshot's copy is committed every second, and
    /// merges of its small segments, started again after every restart, would take the cores
    /// the copy needs; they run once the copy is done.
    pub fn pause_merges(&mut self, paused: bool) {
        if self.merges_paused == paused {
            return;
        }
        self.merges_paused = paused;
        let policy: Box<dyn tantivy::indexer::MergePolicy> = if paused {
            Box::new(tantivy::indexer::NoMergePolicy)
        } else {
            Box::new(tantivy::indexer::LogMergePolicy::default())
        };
        self.writer.lock().unwrap().set_merge_policy(policy);
    }

    /// As `add_new`, replacing a document of the same key the partition may hold (a
    /// resumed snapshot copy).
    pub fn replace_new(&mut self, doc: &Document) -> Result<()> {
        let key = Term::from_field_text(self.fields.key, &doc.key);
        let doc = self.gate.admit(self.to_tantivy(doc), queued_bytes(doc));
        let writer = self.writer.lock().unwrap();
        writer.delete_term(key);
        writer.add_document(doc)?;
        self.bulk_dirty = true;
        Ok(())
    }

    /// Commits the rows `add_new` wrote so far, with no LSN in the payload, leaving them for
    /// the next real commit to show (its maintenance still rebuilds from every document).
    pub fn persist_bulk(&mut self) -> Result<()> {
        if !self.bulk_dirty {
            return Ok(());
        }
        commit_at(&mut self.writer.lock().unwrap(), self.checkpoint)
    }

    /// The fresh layer readers overlay on the committed segments (an O(1) snapshot).
    pub fn fresh(&self) -> FreshLayer {
        FreshLayer {
            truncated: self.truncated_at.is_some(),
            docs: self.pending.clone(),
        }
    }

    /// Hands the queued writes to the committer, with what it needs to build the next
    /// committed structures: every pending write is in this commit.
    pub fn take_commit(&mut self) -> CommitItem {
        let maintenance = if std::mem::take(&mut self.bulk_dirty) || self.truncated_at.is_some() {
            Maintenance::Rebuild
        } else {
            Maintenance::Update(self.pending.clone())
        };
        CommitItem {
            writer: self.writer.clone(),
            gate: self.gate.clone(),
            reader: self.reader.clone(),
            ops: std::mem::take(&mut self.ops),
            fields: self.fields.clone(),
            vector_spec: self.vector_spec,
            maintenance,
            geo: self.geo.clone(),
            vectors: self.vectors.clone(),
            dir: self.dir.clone(),
        }
    }

    /// A commit at `lsn` of what `take_commit` handed over is durable (and the reader
    /// reloaded): its structures are swapped in and the fresh entries it covers dropped.
    pub fn committed(&mut self, lsn: Lsn, derived: Derived) {
        debug_assert!(lsn >= self.checkpoint, "checkpoint must not go back");
        self.checkpoint = lsn;
        self.swap_in(derived);
        self.pending.retain(|_, e| e.lsn > lsn);
        if self.truncated_at.is_some_and(|t| t <= lsn) {
            self.truncated_at = None;
        }
    }

    fn to_tantivy(&self, d: &Document) -> TantivyDocument {
        let mut doc = TantivyDocument::default();
        doc.add_text(self.fields.key, &d.key);
        doc.add_bytes(
            self.fields.row,
            &serde_json::to_vec(&d.raw).expect("row serializes"),
        );
        for (t, &ok) in self.fields.text.iter().zip(&d.text_ok) {
            if let (true, Some(text)) = (ok, &d.raw[t.column]) {
                doc.add_text(t.field, text);
            }
        }
        if let (Some((lat, lon)), Some(flat), Some(flon)) =
            (d.geo, self.fields.lat, self.fields.lon)
        {
            doc.add_f64(flat, lat);
            doc.add_f64(flon, lon);
        }
        for (f, v) in self.fields.filters.iter().zip(&d.filters) {
            match v {
                None => {}
                Some(FilterValue::Int(i) | FilterValue::Time(i)) => doc.add_i64(f.field, *i),
                Some(FilterValue::Float(x)) => doc.add_f64(f.field, *x),
                Some(FilterValue::Bool(b)) => doc.add_bool(f.field, *b),
                Some(FilterValue::Text(s)) => doc.add_text(f.field, s),
            }
        }
        if let (Some(v), Some(field)) = (&d.vector, self.fields.vector) {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            doc.add_bytes(field, &bytes);
        }
        doc
    }
}

/// Whether a committed searcher has a live document under `key`.
pub fn committed_contains(searcher: &Searcher, fields: &Fields, key: &str) -> Result<bool> {
    let query = TermQuery::new(
        Term::from_field_text(fields.key, key),
        IndexRecordOption::Basic,
    );
    Ok(searcher.search(&query, &Count)? > 0)
}

/// Documents a reader sees in a partition: committed, overlaid with the fresh layer.
pub fn visible_docs(searcher: &Searcher, fields: &Fields, fresh: &FreshLayer) -> Result<u64> {
    let mut n: i64 = if fresh.truncated {
        0
    } else {
        searcher.num_docs() as i64
    };
    for (key, e) in &fresh.docs {
        let committed = !fresh.truncated && committed_contains(searcher, fields, key)?;
        n += i64::from(e.doc.is_some()) - i64::from(committed);
    }
    Ok(n.max(0) as u64)
}

/// The stored row under `key` in a searcher, if any, its vector as floats.
pub fn lookup(searcher: &Searcher, fields: &Fields, key: &str) -> Result<Option<Row>> {
    let Some(addr) = crate::rows::address(searcher, fields, key)? else {
        return Ok(None);
    };
    let segment = searcher.segment_reader(addr.segment_ord);
    let columns = crate::rows::SegmentColumns::open(segment)?;
    Ok(Some(Row {
        raw: columns.raw(addr.doc_id)?,
        vector: columns.vector(addr.doc_id)?,
    }))
}

/// Every visible document (committed, overlaid with the fresh layer) as (key, content hash),
/// for `verify`.
pub fn dump(searcher: &Searcher, fresh: &FreshLayer, region: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::with_capacity(searcher.num_docs() as usize);
    for (key, e) in &fresh.docs {
        if let Some(d) = &e.doc {
            out.push((key.clone(), d.content_hash()));
        }
    }
    if fresh.truncated {
        return Ok(out);
    }
    for segment in searcher.segment_readers() {
        let columns = crate::rows::SegmentColumns::open(segment)?;
        for doc_id in segment.doc_ids_alive() {
            let key = columns.key(doc_id)?;
            if fresh.docs.contains_key(&key) {
                continue;
            }
            let raw = columns.raw(doc_id)?;
            let vector = columns.vector(doc_id)?;
            out.push((key, content_hash(region, &raw, vector.as_deref())));
        }
    }
    Ok(out)
}
