//! A bound on the documents handed to a tantivy writer and not yet indexed.
//!
//! A writer's queue takes 10,000 documents whatever their size, and its indexing thread is
//! slower than the code that builds them: a large transaction or a snapshot of rows of a few
//! KB each filled it to ~65 MB per partition (a third of a 200k-row transaction's peak
//! memory, `heaptrack`). Each document carries a ticket for its estimated bytes; the writer
//! returns it when it takes the document up, and a producer over the bound waits.

use std::sync::{Arc, Condvar, Mutex};

use tantivy::schema::document::Document;
use tantivy::TantivyDocument;

pub struct Gate {
    used: Mutex<usize>,
    freed: Condvar,
    max: usize,
}

impl Gate {
    pub fn new(max: usize) -> Arc<Gate> {
        Arc::new(Gate {
            used: Mutex::new(0),
            freed: Condvar::new(),
            max,
        })
    }

    /// Wraps `doc` with a ticket for `bytes`, waiting while the bound is reached (one
    /// document always passes, however large).
    pub fn admit(self: &Arc<Gate>, doc: TantivyDocument, bytes: usize) -> GatedDoc {
        let bytes = bytes.min(self.max);
        let mut used = self.used.lock().unwrap();
        while *used > 0 && *used + bytes > self.max {
            used = self.freed.wait(used).unwrap();
        }
        *used += bytes;
        GatedDoc {
            doc,
            _ticket: Ticket {
                gate: self.clone(),
                bytes,
            },
        }
    }

    /// Bytes admitted and not yet taken up.
    pub fn in_flight(&self) -> usize {
        *self.used.lock().unwrap()
    }
}

struct Ticket {
    gate: Arc<Gate>,
    bytes: usize,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        *self.gate.used.lock().unwrap() -= self.bytes;
        self.gate.freed.notify_all();
    }
}

/// A document on its way to a writer, holding its ticket until the writer takes it up.
pub struct GatedDoc {
    doc: TantivyDocument,
    _ticket: Ticket,
}

impl Document for GatedDoc {
    type Value<'a> = <TantivyDocument as Document>::Value<'a>;
    type FieldsValuesIter<'a> = <TantivyDocument as Document>::FieldsValuesIter<'a>;

    fn iter_fields_and_values(&self) -> Self::FieldsValuesIter<'_> {
        self.doc.iter_fields_and_values()
    }

    /// The writer takes the document up here: the ticket goes back.
    fn into_tantivy_document(self) -> TantivyDocument {
        self.doc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_gate_waits_until_a_ticket_returns() {
        let gate = Gate::new(100);
        let admit = |bytes: usize| {
            let gate = gate.clone();
            std::thread::spawn(move || gate.admit(TantivyDocument::default(), bytes))
        };
        let wait = || std::thread::sleep(std::time::Duration::from_millis(50));
        let a = gate.admit(TantivyDocument::default(), 60);
        let b = admit(500); // over the bound: capped to it, and waits for room
        wait();
        assert!(!b.is_finished(), "60 + 100 is over the bound");
        drop(a);
        let b = b.join().unwrap();
        assert_eq!(gate.in_flight(), 100);
        let c = admit(10);
        wait();
        assert!(!c.is_finished(), "the gate is full");
        drop(b.into_tantivy_document()); // taken up by the writer: the ticket returns
        let c = c.join().unwrap();
        assert_eq!(gate.in_flight(), 10);
        drop(c);
        assert_eq!(gate.in_flight(), 0);
    }
}
