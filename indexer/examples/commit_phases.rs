//! Times the phases of a one-document partition commit (scratch profiling aid).
use std::time::Instant;
use tantivy::schema::{Schema, STORED, STRING, TEXT};
use tantivy::{Index, IndexWriter, ReloadPolicy, TantivyDocument, Term};

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = Schema::builder();
    let key = b.add_text_field("_key", STRING | STORED);
    let body = b.add_text_field("body", TEXT);
    let index = Index::create_in_dir(dir.path(), b.build()).unwrap();
    let mb: usize = std::env::var("MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let mut w: IndexWriter = index.writer_with_num_threads(1, mb << 20).unwrap();
    let r = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()
        .unwrap();
    let (mut t_prep, mut t_commit, mut t_reload) = (0.0, 0.0, 0.0);
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    for i in 0..n {
        w.delete_term(Term::from_field_text(key, &i.to_string()));
        let mut d = TantivyDocument::default();
        d.add_text(key, i.to_string());
        d.add_text(body, "some body text for a document");
        w.add_document(d).unwrap();
        let t = Instant::now();
        let mut p = w.prepare_commit().unwrap();
        t_prep += t.elapsed().as_secs_f64();
        p.set_payload("x");
        let t = Instant::now();
        p.commit().unwrap();
        t_commit += t.elapsed().as_secs_f64();
        let t = Instant::now();
        r.reload().unwrap();
        t_reload += t.elapsed().as_secs_f64();
    }
    println!(
        "per commit: prepare {:.2} ms, commit {:.2} ms, reload {:.2} ms; segments {}",
        t_prep * 1e3 / n as f64,
        t_commit * 1e3 / n as f64,
        t_reload * 1e3 / n as f64,
        index.searchable_segment_ids().unwrap().len()
    );
}
