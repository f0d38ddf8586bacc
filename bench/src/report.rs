//! The report: figures are recorded as they are measured (printed at once, kept by key) and
//! written as BENCHMARKS.json; BENCHMARKS.md is written from those same figures only. This
//! file writes the header, ingest, freshness and footprint; `queries`, `vector` and
//! `targets` the rest.

mod queries;
pub mod scale;
mod targets;
mod vector;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Result;
use serde_json::Value;

/// Figures by key, as they are measured.
#[derive(Default)]
pub struct Report {
    json: BTreeMap<String, Value>,
}

impl Report {
    pub fn put(&mut self, key: &str, v: Value) {
        eprintln!("bench: {key} = {v}");
        self.json.insert(key.to_owned(), v);
    }
}

/// The figures being written, with accessors that read a missing one as NaN.
struct Figures<'a>(&'a BTreeMap<String, Value>);

impl Figures<'_> {
    fn get(&self, key: &str) -> &Value {
        self.0.get(key).unwrap_or(&Value::Null)
    }

    /// A number at `pointer` ("/a/b") inside the figure `key`.
    fn num(&self, key: &str, pointer: &str) -> f64 {
        self.get(key)
            .pointer(pointer)
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN)
    }

    fn text(&self, key: &str, pointer: &str) -> String {
        self.get(key)
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned()
    }
}

/// `median` with its range in brackets when the rounds differ: `{"median", "min", "max"}`.
fn spread(v: &Value, digits: usize) -> String {
    let n = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    let (median, min, max) = (n("median"), n("min"), n("max"));
    if min == max {
        format!("{median:.digits$}")
    } else {
        format!("{median:.digits$} ({min:.digits$}–{max:.digits$})")
    }
}

fn mb(bytes: f64) -> f64 {
    bytes / 1048576.0
}

/// Writes `out` (Markdown) and its `.json` beside it.
pub fn write(r: &Report, out: &Path) -> Result<()> {
    let j = Figures(&r.json);
    let mut md = Vec::new();
    header(&mut md, &j);
    ingest(&mut md, &j);
    freshness(&mut md, &j);
    queries::section(&mut md, &j);
    vector::section(&mut md, &j);
    footprint(&mut md, &j);
    targets::section(&mut md, &j);
    std::fs::write(out, md.join("\n") + "\n")?;
    let out_json = out.with_extension("json");
    std::fs::write(&out_json, serde_json::to_string_pretty(&r.json)?)?;
    eprintln!("bench: wrote {} and {}", out.display(), out_json.display());
    Ok(())
}

fn header(md: &mut Vec<String>, j: &Figures) {
    let m = |p: &str| j.text("machine", p);
    let rows = j.num("machine", "/rows");
    md.push("# Benchmarks".into());
    md.push(String::new());
    md.push(format!(
        "One run of `scripts/bench --rows {rows} --seconds {} --rounds {}` on {} ({} cores, {} RAM, Linux {}), {}, commit {}. \
         Postgres {}; PostGIS {}; pgvector {}. Every figure below comes from that run (raw: `BENCHMARKS.json`). \
         The client, Postgres, the indexer and query-api share the machine; Postgres runs with the test harness's settings (`fsync = off`, `shared_buffers = 128MB`).",
        j.num("machine", "/seconds_per_load"), j.num("machine", "/rounds"),
        m("/cpu"), j.num("machine", "/cores"), m("/memory"), m("/kernel"), m("/date"), m("/git"), m("/postgres"),
        j.get("machine")["postgis"].as_str().unwrap_or("not installed: no geo comparison"),
        j.get("machine")["pgvector"].as_str().unwrap_or("not installed (`../shared/peers/install-pgvector` installs it): no vector comparison"),
    ));
    md.push(String::new());
    md.push(format!(
        "Data: {rows} rows — the dev set (30k real GeoNames cities, 384-d MiniLM embeddings){}.",
        if rows > 30_000.0 { ", scaled by seeded copies as `e2e::dev_data::Scaled` documents (jittered coordinates, embeddings mixed from two real rows plus noise, renormalised)" } else { "" }
    ));
    md.push(String::new());
}

fn ingest(md: &mut Vec<String>, j: &Figures) {
    let f = |k: &str| j.num(k, "");
    let rows = j.num("machine", "/rows");
    let lines = [
        (
            "Postgres COPY of the rows (reference)".to_owned(),
            format!("{:.0} rows/s", f("load.copy_rows_per_sec")),
        ),
        (
            "snapshot, text only, searchable".into(),
            format!("{:.0} rows/s", f("snapshot.text.rows_per_sec")),
        ),
        (
            "snapshot, text + geo".into(),
            format!("{:.0} rows/s", f("snapshot.text_geo.rows_per_sec")),
        ),
        (
            "snapshot, text + geo + vector (vectors searchable at once, exactly)".into(),
            format!("{:.0} rows/s", f("snapshot.full.rows_per_sec")),
        ),
        (
            "HNSW graph complete (384-d), from indexer start".into(),
            format!(
                "{:.0} vectors/s ({:.1} s)",
                f("graph.vectors_per_sec"),
                f("graph.seconds_from_start")
            ),
        ),
        (
            format!("streaming apply, one {rows}-row update transaction, commit to applied"),
            format!(
                "{:.0} rows/s",
                j.num("stream.one_txn.rows_per_sec", "/rows_per_sec")
            ),
        ),
        (
            "streaming apply, 1,000-row transactions back to back".into(),
            format!("{:.0} rows/s", f("stream.txn_1000.rows_per_sec")),
        ),
        (
            "bulk writes above durable (fresh layer empty) after they were applied".into(),
            format!("{:.1} s", f("stream.durable_after_s")),
        ),
        (
            "HNSW graph holding the updated vectors again, after they were applied".into(),
            format!("{:.1} s", f("graph.caught_up_after_stream_s")),
        ),
    ];
    md.push("## Ingest".into());
    md.push(String::new());
    md.push("| what | figure |".into());
    md.push("|---|---|".into());
    for (what, figure) in lines {
        md.push(format!("| {what} | {figure} |"));
    }
    md.push(String::new());
    let mut columns = vec!["tsvector"];
    if !j.get("peers.gist").is_null() {
        columns.push("geography");
    }
    if !j.get("peers.hnsw").is_null() {
        columns.push("vector");
    }
    md.push(format!(
        "The peers' copy of the table (`pg_places`, its {} columns computed in the copy) took {:.1} s; their index builds:",
        match columns.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        },
        j.num("peers.table", "/seconds")
    ));
    md.push(String::new());
    md.push("| index | build s | rows/s | size MB |".into());
    md.push("|---|---|---|---|".into());
    for (key, what) in [
        ("peers.gin", "tsvector GIN"),
        ("peers.gist", "PostGIS geography GiST"),
        (
            "peers.hnsw",
            "pgvector HNSW (m = 16, ef_construction = 100, cosine)",
        ),
    ] {
        if !j.get(key).is_null() {
            md.push(format!(
                "| {what} | {:.2} | {:.0} | {:.1} |",
                j.num(key, "/seconds"),
                j.num(key, "/rows_per_sec"),
                mb(j.num(key, "/bytes"))
            ));
        }
    }
    md.push(String::new());
}

fn freshness(md: &mut Vec<String>, j: &Figures) {
    md.push("## Freshness: commit to searchable through the public API".into());
    md.push(String::new());
    md.push("The clock starts when the client's commit returns and stops when a search for the new row's unique word, waiting on the commit's LSN (`consistency.min_lsn`), returns it.".into());
    md.push(String::new());
    md.push("| target rows/s | rows per transaction | achieved rows/s | p50 ms | p99 ms | max ms | samples |".into());
    md.push("|---|---|---|---|---|---|---|".into());
    for run in j.get("freshness").as_array().into_iter().flatten() {
        let n = |p: &str| run.pointer(p).and_then(Value::as_f64).unwrap_or(f64::NAN);
        md.push(format!(
            "| {:.0} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            n("/target_rows_per_sec"),
            n("/txn_rows"),
            n("/achieved_rows_per_sec"),
            n("/latency/p50_ms"),
            n("/latency/p99_ms"),
            n("/latency/max_ms"),
            n("/latency/n")
        ));
    }
    md.push(String::new());
}

fn footprint(md: &mut Vec<String>, j: &Figures) {
    let rows = j.num("machine", "/rows");
    let fp = |p: &str| j.num("footprint", p);
    md.push("## Footprint".into());
    md.push(String::new());
    md.push(format!(
        "Indexer with text, geo, vector (graph built), after the query phase: RSS {:.0} MB, on disk {:.0} MB for {rows} rows — {:.2} GB RSS and {:.2} GB disk per 1M documents by linear extrapolation, which also scales fixed costs (a tantivy writer arena per partition, allocator caches); `--rows 1000000` measures it directly. \
         After a clean stop the data directory holds {:.1} MB, of which {:.1} MB are the vector graph dumps. Restart to serving (graph reloaded from its dump): {:.1} s.",
        fp("/rss_mb"), fp("/disk_mb"), fp("/rss_gb_per_1m"), fp("/disk_gb_per_1m"),
        mb(j.num("footprint.stopped", "/data_dir_bytes")), mb(j.num("footprint.stopped", "/graph_dump_bytes")),
        j.num("restart_to_serving_s", "")
    ));
    md.push(format!(
        "Resident set as the run went: {:.0} MB after ingest (snapshot, graph, streaming), {:.0} MB after the freshness runs, {:.0} MB after the query phase.",
        j.num("rss_mb.after_ingest", ""), j.num("rss_mb.after_freshness", ""), fp("/rss_mb")
    ));
    md.push(String::new());
}
