//! A large transaction's writes to one partition (`shard/large.rs` drives them): straight to
//! the tantivy writer, one delete per part, visible at its one commit.

use std::sync::Arc;

use tantivy::query::AllQuery;
use tantivy::Term;

use super::{queued_bytes, CommitItem, FreshDocs, Maintenance, Partition};
use crate::document::Document;
use crate::error::Result;
use crate::geo::GeoIndex;
use crate::graph::{GraphBatch, GraphItem};
use crate::vector::VectorStore;
use wire::Lsn;

/// What a large transaction has written to a partition so far: it goes straight to the
/// tantivy writer (which spills segments to disk within its memory budget) and is visible at
/// its one commit; the next committed structures are built beside the readers' as it goes.
pub(super) struct Bulk {
    geo: Option<Arc<GeoIndex>>,
    vectors: Option<Arc<VectorStore>>,
    /// Store ids of the vector versions it wrote (some replaced later in the transaction).
    new_vectors: Vec<u64>,
    /// A TRUNCATE came: rebuild the structures from the committed fast fields instead.
    rebuild: bool,
}

impl Partition {
    /// The large transaction's state here, started on first use from the committed
    /// structures (the fresh layer is empty: everything before it was committed first).
    fn bulk(&mut self) -> &mut Bulk {
        debug_assert!(self.pending.is_empty() && self.ops.is_empty());
        let (geo, vectors) = (self.geo.clone(), self.vectors.clone());
        self.bulk.get_or_insert_with(|| Bulk {
            geo,
            vectors,
            new_vectors: Vec::new(),
            rebuild: false,
        })
    }

    /// Part of a large transaction: removes `removed` (keys that may be here) and then adds
    /// `added`, straight to the writer; not visible until `bulk_commit`. One delete for the
    /// whole part: tantivy keeps every delete (with a ~1 KB weight) until the commit.
    pub fn bulk_write(&mut self, removed: &[String], added: &[Arc<Document>]) -> Result<()> {
        let terms: Vec<Term> = removed
            .iter()
            .map(|k| Term::from_field_text(self.fields.key, k))
            .collect();
        {
            let writer = self.writer.lock().unwrap();
            if !terms.is_empty() {
                writer.delete_query(Box::new(tantivy::query::TermSetQuery::new(terms)))?;
            }
            for d in added {
                let doc = self.gate.admit(self.to_tantivy(d), queued_bytes(d));
                writer.add_document(doc)?;
            }
        }
        let bulk = self.bulk();
        if bulk.rebuild {
            return Ok(());
        }
        // Keys written again keep their vector's version when it did not change.
        let readded: std::collections::HashSet<&str> =
            added.iter().map(|d| d.key.as_str()).collect();
        let gone = removed
            .iter()
            .filter(|k| !readded.contains(String::as_str(k)));
        if let Some(geo) = &mut bulk.geo {
            let geo = Arc::make_mut(geo);
            for key in gone.clone() {
                geo.set(key, None);
            }
            for d in added {
                geo.set(&d.key, d.geo);
            }
        }
        if let Some(vectors) = &mut bulk.vectors {
            let vectors = Arc::make_mut(vectors);
            for key in gone {
                vectors.set(key, None);
            }
            for d in added {
                let v = d.vector.as_deref();
                if let Some(id) = vectors.set(&d.key, v) {
                    bulk.new_vectors.push(id);
                }
            }
        }
        Ok(())
    }

    /// A TRUNCATE inside a large transaction.
    pub fn bulk_truncate(&mut self) -> Result<()> {
        self.writer
            .lock()
            .unwrap()
            .delete_query(Box::new(AllQuery))?;
        let bulk = self.bulk();
        bulk.rebuild = true;
        bulk.new_vectors.clear();
        Ok(())
    }

    /// Whether a large transaction wrote here.
    pub fn bulk_dirty(&self) -> bool {
        self.bulk.is_some()
    }

    /// Makes the large transaction's writes so far durable without showing them: the
    /// writer commits with the partition's LSN unchanged in the payload (the transaction is
    /// not whole), the reader is not reloaded.
    pub fn bulk_persist(&mut self) -> Result<()> {
        if self.bulk.is_none() {
            return Ok(());
        }
        super::commit_at(&mut self.writer.lock().unwrap(), self.checkpoint)
    }

    /// Commits the large transaction's writes with `lsn` as payload, reloads the reader and
    /// swaps in the structures built beside it.
    pub fn bulk_commit(&mut self, lsn: Lsn) -> Result<()> {
        let Some(bulk) = self.bulk.take() else {
            return Ok(());
        };
        let item = CommitItem {
            writer: self.writer.clone(),
            gate: self.gate.clone(),
            reader: self.reader.clone(),
            ops: Vec::new(),
            fields: self.fields.clone(),
            vector_spec: self.vector_spec,
            maintenance: if bulk.rebuild {
                Maintenance::Rebuild
            } else {
                Maintenance::Update(FreshDocs::new())
            },
            geo: bulk.geo,
            vectors: bulk.vectors,
            dir: self.dir.clone(),
        };
        let mut derived = item.commit(lsn)?;
        if let (false, Some(store)) = (bulk.rebuild, &derived.vectors) {
            // Versions the transaction replaced itself were never visible: not for the graph.
            let mut ids = bulk.new_vectors;
            ids.retain(|id| store.by_id(*id).is_some());
            // Many: the builder reads them from the store; few: copies, so that the store
            // is not held while later writes copy its chunks.
            derived.new_vectors = Some(if 4 * ids.len() >= store.len() {
                GraphBatch::Stored {
                    store: store.clone(),
                    ids,
                }
            } else {
                GraphBatch::Copied(
                    ids.into_iter()
                        .filter_map(|id| {
                            let (key, v, _) = store.by_id(id)?;
                            Some(GraphItem {
                                id,
                                key: key.clone(),
                                vector: v.to_vec(),
                            })
                        })
                        .collect(),
                )
            });
        }
        self.committed(lsn, derived);
        Ok(())
    }

    /// Drops the large transaction's writes: the writer goes back to its last commit.
    pub fn bulk_abort(&mut self) -> Result<()> {
        if self.bulk.take().is_some() {
            self.writer.lock().unwrap().rollback()?;
        }
        Ok(())
    }
}
