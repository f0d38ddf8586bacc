//! In-process engine benchmark (not a test): builds a shard from the dev rows (no Postgres, no
//! HTTP) and measures build and graph-build time, query latency p50/p99 for geo radius,
//! geo nearest and vector kNN (graph and exact), recall@10 against `ef`, memory and the time
//! to reopen the shard from disk.
//!
//!   cargo build --release -p e2e --bins && target/release/bench_engines [ROWS]
//!   BENCH_DIR=/some/dir target/release/bench_engines [ROWS]   # keeps the shard's directory
//!   target/release/bench_engines --reopen DIR                  # times a restart on it again
//!
//! ROWS (default: the 30k dev rows) scales the set up: copy c of dev row r gets id
//! `r.id + c * 10^9`, its latitude and longitude shifted by up to ±0.5° (clamped), and its
//! embedding made by `dev_data::Scaling` (`BENCH_SCALING=mix`, the default, or `perturb`);
//! text and region are kept. Seeded, so every run builds the same set.
//!
//! Figures come from this run only.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use e2e::dev_data::{Scaled, Scaling};
use engine::document::{MapLimits, RawRow};
use engine::schema::Metric;
use engine::schema::{GeoSpec, ResolvedIndex, TextSpec, VectorSpec};
use engine::search::{self, GeoQuery, Scope, VectorQuery};
use engine::shard::{Shard, ViewCell};
use engine::Lsn;

fn index() -> ResolvedIndex {
    ResolvedIndex {
        ordinal: 0,
        name: "places".into(),
        schema: "public".into(),
        table: "places".into(),
        columns: [
            "id",
            "region",
            "name",
            "body",
            "population",
            "country_code",
            "lat",
            "lon",
            "embedding",
        ]
        .map(String::from)
        .to_vec(),
        pk: vec![0],
        region: 1,
        text: vec![
            TextSpec {
                column: 2,
                boost: 2.0,
                language: None,
            },
            TextSpec {
                column: 3,
                boost: 1.0,
                language: None,
            },
        ],
        geo: Some(GeoSpec::LatLon { lat: 6, lon: 7 }),
        vector: Some(VectorSpec {
            column: 8,
            dimension: 384,
            metric: Metric::Cosine,
            sql_type: engine::schema::VectorType::Real,
        }),
        filters: vec![engine::schema::FilterSpec {
            column: 4,
            kind: engine::filter::FilterKind::Int,
        }],
        stored: vec![],
        value_kinds: vec![None; 9],
        ranking: Default::default(),
    }
}

/// COPY text lines → rows aligned with `index().columns`.
fn base_rows() -> Result<Vec<RawRow>> {
    Ok(e2e::dev_data::copy_lines(true)?
        .iter()
        .map(|l| e2e::dev_data::cells(l))
        .collect())
}

/// The dev rows, then scaled copies until `target` rows (`dev_data::Scaled`, by
/// `BENCH_SCALING`), made a chunk at a time (a 1M-row run never holds all rows in memory).
struct Rows {
    /// The real rows (queries are made from their points).
    base: Vec<RawRow>,
    scaled: Scaled,
    target: usize,
}

impl Rows {
    fn new(target: usize) -> Result<Rows> {
        let base = base_rows()?;
        let target = target.max(base.len());
        Ok(Rows {
            base,
            scaled: Scaled::with(target, Scaling::from_env())?,
            target,
        })
    }

    fn len(&self) -> usize {
        self.target
    }

    fn chunk(&mut self, n: usize) -> Result<Vec<RawRow>> {
        Ok(self
            .scaled
            .chunk(n)?
            .iter()
            .map(|l| e2e::dev_data::cells(l))
            .collect())
    }
}

/// Prints a figure as soon as it is measured (a long run that dies still leaves its figures).
fn report(out: &mut Vec<String>, line: String) {
    eprintln!("- {line}");
    out.push(line);
}

fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// A `/proc/self/status` memory line in MB (`VmRSS:`, `RssAnon:`, `RssFile:`).
fn status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(f64::total_cmp);
    let p = |q: f64| ms[((ms.len() as f64 - 1.0) * q).round() as usize];
    format!(
        "p50 {:.3} ms, p99 {:.3} ms ({} queries)",
        p(0.5),
        p(0.99),
        ms.len()
    )
}

fn open(dir: &std::path::Path, view: Arc<ViewCell>, lsn: Lsn) -> Result<Shard> {
    let limits = MapLimits {
        max_text_bytes: 1 << 20,
        owned_regions: vec![],
    };
    Ok(Shard::open(
        dir,
        vec![index()],
        limits,
        64 << 20,
        Arc::new(engine::shard::Unobserved),
        view,
        lsn,
    )?)
}

/// Runs the graph jobs as the builder thread does; returns (vectors inserted, seconds
/// inserting, seconds dumping the graphs).
fn build_graphs(shard: &mut Shard) -> Result<(usize, f64, f64)> {
    let (mut insert, mut dump) = (0.0, 0.0);
    let mut n = 0;
    for job in shard.take_graph_jobs() {
        n += job.items.len();
        let (graph, dir) = (job.graph.clone(), job.dir.clone());
        let t = Instant::now();
        job.run(&std::sync::atomic::AtomicBool::new(false));
        insert += t.elapsed().as_secs_f64();
        let t = Instant::now();
        graph.dump(&dir)?;
        dump += t.elapsed().as_secs_f64();
    }
    Ok((n, insert, dump))
}

/// `bench_engines --reopen DIR`: what a restarted indexer does, alone in a fresh process, so
/// its memory is the shard's and nothing else's.
fn reopen(dir: &std::path::Path) -> Result<()> {
    let rss0 = rss_mb();
    let t = Instant::now();
    let view = Arc::new(ViewCell::default());
    let mut shard = open(dir, view.clone(), Lsn(1))?;
    let serving = t.elapsed().as_secs_f64();
    let (n, graph, _) = build_graphs(&mut shard)?;
    let docs: u64 = view
        .load()
        .unwrap()
        .partitions
        .values()
        .map(|p| p.searcher.num_docs())
        .sum();
    println!(
        "{}",
        serde_json::json!({"serving_s": serving, "graph_s": graph, "graphed": n, "docs": docs, "rss_mb": rss_mb() - rss0,
                           "anon_mb": status_mb("RssAnon:"), "file_mb": status_mb("RssFile:")})
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--reopen" {
        return reopen(std::path::Path::new(&args[2]));
    }
    let target = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(0);
    let mut rows = Rows::new(target)?;
    let n = rows.len();
    // `BENCH_DIR` keeps the shard's directory there (to time `--reopen` on it again).
    // (`_temp` removes the directory when dropped, at the end of the run.)
    let (_temp, dir) = match std::env::var("BENCH_DIR") {
        Ok(d) => (
            None,
            tempfile::Builder::new()
                .prefix("bench_engines-")
                .tempdir_in(d)?
                .keep(),
        ),
        Err(_) => {
            let t = tempfile::tempdir()?;
            let path = t.path().to_owned();
            (Some(t), path)
        }
    };
    let view = Arc::new(ViewCell::default());
    let mut shard = open(&dir, view.clone(), Lsn::ZERO)?;
    let points: Vec<(f64, f64)> = rows
        .base
        .iter()
        .map(|r| {
            (
                r[6].as_deref().unwrap().parse().unwrap(),
                r[7].as_deref().unwrap().parse().unwrap(),
            )
        })
        .collect();
    let t = Instant::now();
    loop {
        let chunk = rows.chunk(2000)?;
        if chunk.is_empty() {
            break;
        }
        let chunk = chunk
            .into_iter()
            .map(|raw| engine::document::Row { raw, vector: None })
            .collect();
        shard.add_snapshot_rows(0, chunk, false)?;
    }
    shard.commit_snapshot(Lsn(1))?;
    let build = t.elapsed().as_secs_f64();
    let (graphed, graph_secs, dump_secs) = build_graphs(&mut shard)?;
    let mut out = vec![
        format!("documents: {n} (dev set: 30k GeoNames cities, 384-d MiniLM embeddings, text name+body, geo; above 30k scaled by {}, as described in the source)", if rows.scaled.scaling() == Scaling::Mix { "mixing embeddings (BENCH_SCALING=mix)" } else { "perturbing copies (BENCH_SCALING=perturb)" }),
        format!("index build (map, tantivy, commit, R-tree, vector store): {build:.2} s = {:.0} docs/s", n as f64 / build),
        format!("HNSW build (M=16, ef_construction=100, one thread, as the indexer builds it): {graphed} vectors in {graph_secs:.2} s = {:.0} vectors/s; dumping the graphs {dump_secs:.2} s", graphed as f64 / graph_secs),
    ];
    for line in &out {
        eprintln!("- {line}");
    }
    let v = view.load().unwrap();
    let scope = Scope::all(0);

    // Geo: radius 10 km and 100 km around 500 rows; nearest 10.
    for radius_m in [10_000.0, 100_000.0] {
        let mut ms = Vec::new();
        let mut hits = 0;
        for (lat, lon) in points.iter().step_by(60) {
            let t = Instant::now();
            hits += search::geo(
                &v,
                &scope,
                &GeoQuery::Within {
                    lat: *lat,
                    lon: *lon,
                    radius_m,
                },
                10_000,
            )
            .len();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        report(
            &mut out,
            format!(
                "geo radius {} km: {} (mean {:.1} hits)",
                radius_m / 1000.0,
                percentiles(ms.clone()),
                hits as f64 / ms.len() as f64
            ),
        );
    }
    let mut ms = Vec::new();
    for (lat, lon) in points.iter().step_by(60) {
        let t = Instant::now();
        search::geo(
            &v,
            &scope,
            &GeoQuery::Nearest {
                lat: *lat,
                lon: *lon,
                k: 10,
            },
            10,
        );
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report(&mut out, format!("geo nearest k=10: {}", percentiles(ms)));

    // Text: the dev query file by kind (top 10, with snippets), and one filtered query.
    let (_, fields) = engine::partition::Fields::schema(&index());
    let text_queries = e2e::dev_data::queries("queries_text.jsonl")?;
    let mut by_kind: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for q in &text_queries {
        let query = engine::text::TextQuery::parse(
            q["query"].as_str().unwrap_or_default(),
            engine::text::Operator::And,
            &fields.text,
        )?;
        let t = Instant::now();
        search::text(&v, &scope, &search::TextSearch::top(query, 10))?;
        by_kind
            .entry(q["kind"].as_str().unwrap_or("?").to_owned())
            .or_default()
            .push(t.elapsed().as_secs_f64() * 1e3);
    }
    for (kind, ms) in by_kind {
        report(
            &mut out,
            format!("text {kind} (top 10 + snippets): {}", percentiles(ms)),
        );
    }
    let big = engine::filter::Filter::parse(
        &serde_json::json!({"range": {"population": {"gte": 100000}}}),
        &fields.filters,
        "filter",
    )
    .map_err(|e| anyhow::anyhow!(e.message))?;
    let mut ms = Vec::new();
    for word in ["city", "river", "capital", "island", "north"] {
        let query =
            engine::text::TextQuery::parse(word, engine::text::Operator::And, &fields.text)?;
        for _ in 0..20 {
            let t = Instant::now();
            search::text(
                &v,
                &scope,
                &search::TextSearch {
                    fields_filter: Some(big.clone()),
                    ..search::TextSearch::top(query.clone(), 10)
                },
            )?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    report(
        &mut out,
        format!(
            "text common word + filter population >= 100k (top 10): {}",
            percentiles(ms)
        ),
    );

    // Vector: the 200 held-out query sentences; recall@10 against exact mode, by ef.
    let queries: Vec<Vec<f32>> = e2e::dev_data::queries("queries_vector.jsonl")?
        .iter()
        .map(|q| {
            q["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let exact: Vec<Vec<String>> = queries
        .iter()
        .map(|q| {
            search::vector(
                &v,
                &scope,
                &VectorQuery {
                    values: q.clone(),
                    k: 10,
                    ef: None,
                    exact: true,
                    filter: None,
                    fields_filter: None,
                    cancel: None,
                },
            )
            .map(|hits| hits.into_iter().map(|h| h.key).collect())
        })
        .collect::<Result<_, _>>()?;
    let mut ms = Vec::new();
    for q in &queries {
        let t = Instant::now();
        search::vector(
            &v,
            &scope,
            &VectorQuery {
                values: q.clone(),
                k: 10,
                ef: None,
                exact: true,
                filter: None,
                fields_filter: None,
                cancel: None,
            },
        )?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    report(
        &mut out,
        format!("vector k=10 exact (all 6 partitions): {}", percentiles(ms)),
    );
    for ef in [32, 64, 128, 256, 512] {
        let mut ms = Vec::new();
        let mut recall = 0.0;
        for (q, want) in queries.iter().zip(&exact) {
            let t = Instant::now();
            let got = search::vector(
                &v,
                &scope,
                &VectorQuery {
                    values: q.clone(),
                    k: 10,
                    ef: Some(ef),
                    exact: false,
                    filter: None,
                    fields_filter: None,
                    cancel: None,
                },
            )?;
            ms.push(t.elapsed().as_secs_f64() * 1e3);
            recall += got.iter().filter(|h| want.contains(&h.key)).count() as f64 / 10.0;
        }
        report(
            &mut out,
            format!(
                "vector k=10 graph ef={ef}: recall@10 {:.4}, {}",
                recall / queries.len() as f64,
                percentiles(ms)
            ),
        );
    }

    // Restart, in a fresh process: reopen from disk (tantivy, R-tree and vector store
    // rebuilt), then the graph; its resident memory is the shard's alone.
    drop(v);
    drop(shard);
    let child = std::process::Command::new(std::env::current_exe()?)
        .arg("--reopen")
        .arg(&dir)
        .output()?;
    anyhow::ensure!(
        child.status.success(),
        "reopen: {}",
        String::from_utf8_lossy(&child.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&child.stdout)?;
    report(&mut out, format!(
        "restart: serving after {:.2} s, graphs reloaded from their dumps ({} vectors left to insert, {:.2} s)",
        r["serving_s"].as_f64().unwrap_or(0.0),
        r["graphed"].as_u64().unwrap_or(0),
        r["graph_s"].as_f64().unwrap_or(0.0)
    ));
    let rss = r["rss_mb"].as_f64().unwrap_or(0.0);
    report(&mut out, format!(
        "resident memory of the reopened shard with its graph: {rss:.0} MB for {} docs ({:.0} MB per 1M docs, linear estimate); of the process: {:.0} MB anonymous, {:.0} MB mapped index files",
        r["docs"],
        rss * 1e6 / r["docs"].as_f64().unwrap_or(1.0),
        r["anon_mb"].as_f64().unwrap_or(0.0),
        r["file_mb"].as_f64().unwrap_or(0.0),
    ));

    println!(
        "\n## engine benchmark, in-process ({} cores)\n",
        std::thread::available_parallelism()?.get()
    );
    for line in out {
        println!("- {line}");
    }
    Ok(())
}
