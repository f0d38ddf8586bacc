//! `scripts/bench --scale --rows N`: our own figures at one size (no peers, no freshness run):
//! the snapshots with and without vectors, the graph, memory after each step, bulk writes
//! (query latency right after a whole-table UPDATE that changes no embedding, and how long
//! until vector latency recovers after one that changes every embedding), every query type
//! at c=1 and c=32, recall@10 at the default breadth, footprint, restart, and recall right
//! after the restart. The figures are kept by N in BENCHMARKS-SCALE.json; BENCHMARKS-SCALE.md
//! is written from every size kept there (`report::scale`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use e2e::{Indexer, PgServer};
use serde_json::{json, Value};
use tokio_postgres::Client;

use crate::host::{memory, Workdir};
use crate::ingest::{self, apply_timeout, until_graph_complete, until_graphs_idle};
use crate::load::{http_load, Lat, Loads};
use crate::peers::Extensions;
use crate::profile::Profiler;
use crate::queries::{self, Workload};
use crate::report::Report;
use crate::{footprint, vector, Args};

pub async fn run(
    pg: &PgServer,
    db: &str,
    client: &Client,
    args: &Args,
    out: &Path,
    mut r: Report,
) -> Result<()> {
    let rows = args.rows;
    let started = Instant::now();
    ingest::copy_rows(client, rows, &mut r).await?;
    let dir = Workdir::from_env()?;
    let mut indexed = ingest::snapshots(pg, db, client, dir.path(), rows, &mut r).await?;
    let api = ingest::query_api(dir.path(), &indexed.listen).await?;
    let url = format!("{}/v1/indexes/places/search", api.url);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let work = Workload::load()?;

    let mut before = Vec::new();
    let recall = vector::at_default(&http, &url, &work.vectors, rows, &mut before).await?;
    r.put("recall.before_bulk", recall);
    let curve = vector::ours_curve(&http, &url, &work.vectors, &vector::SCALE_EFS, &before).await?;
    r.put("recall.curve", curve);

    bulk(&indexed.ix, client, &url, &work, rows, &mut r).await?;
    let idle = Instant::now();
    until_graphs_idle(&indexed.ix).await?;
    r.put("graph.idle_after_s", json!(idle.elapsed().as_secs_f64()));
    r.put("memory.graph_idle", memory(indexed.ix.pid()));

    let mut exact = Vec::new();
    let recall = vector::at_default(&http, &url, &work.vectors, rows, &mut exact).await?;
    r.put("recall.default_ef", recall);

    let mut cells = queries::cells(&work, &Extensions::none(), &[]);
    cells.extend(queries::default_vector_cells(&work));
    for c in &mut cells {
        c.peer = None;
    }
    let loads = Loads {
        url: &url,
        pg,
        db,
        budget: Duration::from_secs_f64(args.seconds),
    };
    queries::run(
        &loads,
        &cells,
        args.rounds,
        &Profiler::new(dir.path()),
        &mut r,
    )
    .await?;

    let probe = json!({"vector": {"values": vector::embedding(&work.vectors[0]), "k": 10}});
    footprint::measure(&mut indexed, &http, &url, &probe, rows, &mut r).await?;
    let recall = vector::at_default(&http, &url, &work.vectors, rows, &mut exact).await?;
    r.put("recall.after_restart", recall);
    r.put("memory.after_restart", memory(indexed.ix.pid()));
    indexed.ix.stop()?;
    drop(api);

    r.put("run_seconds", json!(started.elapsed().as_secs_f64()));
    crate::report::scale::write(r, rows, out)
}

/// c=1 for `seconds`.
async fn one_client(url: &str, bodies: &Arc<Vec<Value>>, seconds: f64) -> Result<Lat> {
    http_load(url, bodies, 1, Duration::from_secs_f64(seconds), None).await
}

/// Whole-table UPDATEs: one that changes no embedding (vector and text latency right after
/// it is applied, against quiet), then one that changes every embedding (when vector latency
/// is back within twice quiet, probed for a second every five, and when the graph holds every
/// new version).
async fn bulk(
    ix: &Indexer,
    client: &Client,
    url: &str,
    work: &Workload,
    rows: usize,
    r: &mut Report,
) -> Result<()> {
    let vectors = queries::default_vector_cells(work).swap_remove(0).ours;
    let texts: Arc<Vec<Value>> = Arc::new(
        work.common
            .iter()
            .map(|q| json!({"q": q, "highlight": false}))
            .collect(),
    );
    // Warm both, then quiet.
    one_client(url, &vectors, 0.5).await?;
    one_client(url, &texts, 0.5).await?;
    let quiet_v = one_client(url, &vectors, 3.0).await?;
    let quiet_t = one_client(url, &texts, 3.0).await?;

    let applied = |sql: &'static str| async move {
        let t = Instant::now();
        client.batch_execute(sql).await?;
        let postgres_s = t.elapsed().as_secs_f64();
        ix.wait_applied_within(&e2e::current_lsn(client).await?, apply_timeout(rows))
            .await?;
        let applied_s = t.elapsed().as_secs_f64();
        anyhow::Ok(
            json!({"sql": sql, "postgres_s": postgres_s, "applied_s": applied_s,
                          "rows_per_sec": rows as f64 / applied_s}),
        )
    };

    let mut same = applied("UPDATE places SET population = population + 1").await?;
    let after_v = one_client(url, &vectors, 2.0).await?;
    let after_t = one_client(url, &texts, 2.0).await?;
    same["vector_quiet"] = quiet_v.json();
    same["vector_after"] = after_v.json();
    same["text_quiet"] = quiet_t.json();
    same["text_after"] = after_t.json();
    r.put("bulk.same_embeddings", same);

    let mut new = applied("UPDATE places SET embedding[1] = embedding[1] + 0.0001").await?;
    let since = Instant::now();
    let limit = apply_timeout(rows) * 3;
    let mut series = Vec::new();
    let mut recovered = None;
    while since.elapsed() < limit {
        let at = since.elapsed().as_secs_f64();
        let l = one_client(url, &vectors, 1.0).await?;
        series.push(json!([at, l.p50]));
        if l.p50 <= 2.0 * quiet_v.p50 {
            recovered = Some(at);
            break;
        }
        tokio::time::sleep(Duration::from_secs(4)).await;
    }
    until_graph_complete(ix).await?;
    new["vector_quiet_p50_ms"] = json!(quiet_v.p50);
    new["vector_within_2x_quiet_after_s"] = json!(recovered);
    new["probes"] = json!(series);
    new["graph_complete_after_s"] = json!(since.elapsed().as_secs_f64());
    r.put("bulk.new_embeddings", new);
    r.put("memory.after_bulk", memory(ix.pid()));
    Ok(())
}
