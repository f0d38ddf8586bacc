//! Getting the data in: the rows into Postgres (COPY), the indexer's snapshot (text only; text +
//! geo; text + geo + vector, profiled), the vector graph, streaming apply at saturation, and
//! the query-api in front of the indexer.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use e2e::{Indexer, PgServer, QueryApi};
use futures_util::SinkExt;
use serde_json::json;
use tokio_postgres::Client;

use crate::host::{dir_bytes, memory, rss_mb};
use crate::profile::Profiler;
use crate::report::Report;

/// An index config: text always; geo and vector optional.
fn config(dir: &Path, name: &str, url: &str, geo: bool, vector: bool) -> Result<PathBuf> {
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(
        &path,
        format!(
            "[source]\ndatabase_url = \"{url}\"\npublication = \"bench_pub\"\nslot = \"bench_{name}\"\n\
             [storage]\ndata_dir = \"{}\"\n\
             [[index]]\nname = \"places\"\ntable = \"places\"\nregion = \"region\"\n\
             text_fields = [{{ column = \"name\", boost = 2.0 }}, \"body\"]\n{}{}\
             filter_fields = [\"population\", \"country_code\"]\nstored_fields = [\"name\", \"population\", \"country_code\"]\n",
            dir.join(name).display(),
            if geo { "geo = { lat = \"lat\", lon = \"lon\" }\n" } else { "" },
            if vector { "vector = { column = \"embedding\", dimension = 384 }\n" } else { "" },
        ),
    )?;
    Ok(path)
}

/// Waits until a per-partition counter of the indexer's `/status` sums to zero (a partition
/// without the counter counts as `missing`).
async fn until_zero(
    ix: &Indexer,
    what: &str,
    field: &str,
    missing: u64,
    timeout: Duration,
) -> Result<()> {
    e2e::eventually(what, timeout, || async {
        let s = ix.status().await?;
        let sum: u64 = s["partitions"]
            .as_array()
            .context("partitions")?
            .iter()
            .map(|p| p[field].as_u64().unwrap_or(missing))
            .sum();
        Ok((sum == 0).then_some(()))
    })
    .await
}

/// Loads `rows` rows (the dev set, scaled above 30k) into `places` with COPY.
pub async fn copy_rows(client: &Client, rows: usize, r: &mut Report) -> Result<()> {
    client.batch_execute(e2e::dev_data::PLACES).await?;
    let t = Instant::now();
    let mut scaled = e2e::dev_data::Scaled::new(rows)?;
    {
        let sink = client.copy_in("COPY places FROM STDIN").await?;
        futures_util::pin_mut!(sink);
        loop {
            let chunk = scaled.chunk(5_000)?;
            if chunk.is_empty() {
                break;
            }
            sink.send(Bytes::from(chunk.concat())).await?;
        }
        sink.finish().await?;
    }
    client.batch_execute("ANALYZE places").await?;
    r.put(
        "load.copy_rows_per_sec",
        json!(rows as f64 / t.elapsed().as_secs_f64()),
    );
    Ok(())
}

/// The indexer that stays up: text + geo + vector, with where its files and address are.
pub struct Indexed {
    pub ix: Indexer,
    pub cfg: PathBuf,
    pub data: PathBuf,
    pub listen: String,
}

/// Snapshot ingest until searchable (text only; text + geo; then text + geo + vector, which
/// stays up), then until its graph holds every vector.
pub async fn snapshots(
    pg: &PgServer,
    db: &str,
    client: &Client,
    dir: &Path,
    rows: usize,
    r: &mut Report,
) -> Result<Indexed> {
    let url = pg.url(db);
    for (name, geo, vector) in [("text", false, false), ("text_geo", true, false)] {
        let cfg = config(dir, name, &url, geo, vector)?;
        let mut ix = Indexer::start(&cfg, &dir.join(name)).await?;
        let s = ix.wait_ready().await?;
        r.put(
            &format!("snapshot.{name}.rows_per_sec"),
            s["snapshot"]["rows_per_sec"].clone(),
        );
        r.put(&format!("memory.{name}"), memory(ix.pid()));
        r.put(
            &format!("disk_mb.{name}"),
            json!(dir_bytes(&dir.join(name), None) as f64 / 1048576.0),
        );
        ix.stop()?;
        client
            .batch_execute(&format!("SELECT pg_drop_replication_slot('bench_{name}')"))
            .await?;
    }
    let listen = format!("127.0.0.1:{}", e2e::free_port()?);
    let cfg = config(dir, "full", &url, true, true)?;
    let data = dir.join("full");
    let t = Instant::now();
    let mut ix = Indexer::start_on(&cfg, &data, &listen).await?;
    // Where the snapshot's time goes: a profile of its first seconds.
    let snap_secs = (rows as f64 / 10_000.0).clamp(1.0, 10.0);
    let profiler = Profiler::new(dir);
    let (s, hot) = tokio::join!(ix.wait_ready(), profiler.record(snap_secs, "snapshot"));
    let s = s?;
    r.put("profile.snapshot", hot);
    r.put(
        "snapshot.full.rows_per_sec",
        s["snapshot"]["rows_per_sec"].clone(),
    );
    r.put("memory.after_snapshot", memory(ix.pid()));
    until_graph_complete(&ix).await?;
    let graph_s = t.elapsed().as_secs_f64();
    r.put("graph.vectors_per_sec", json!(rows as f64 / graph_s));
    r.put("graph.seconds_from_start", json!(graph_s));
    r.put("memory.graph_complete", memory(ix.pid()));
    Ok(Indexed {
        ix,
        cfg,
        data,
        listen,
    })
}

/// Streaming apply at saturation: one transaction updating every row, then 1,000-row
/// transactions back to back; then how long until those writes are durable too (the fresh
/// layer, which every query scans, is empty again).
pub async fn streaming(ix: &Indexer, client: &Client, rows: usize, r: &mut Report) -> Result<()> {
    let t = Instant::now();
    client
        .batch_execute("UPDATE places SET population = population + 1")
        .await?;
    let pg_commit = t.elapsed().as_secs_f64();
    ix.wait_applied_within(&e2e::current_lsn(client).await?, apply_timeout(rows))
        .await?;
    r.put(
        "stream.one_txn.rows_per_sec",
        json!({"rows_per_sec": rows as f64 / t.elapsed().as_secs_f64(), "postgres_commit_s": pg_commit,
               "total_s": t.elapsed().as_secs_f64()}),
    );
    let batches = (rows / 1000).clamp(1, 30) as i64;
    let t = Instant::now();
    for k in 0..batches {
        client
            .execute(
                "UPDATE places SET population = population + 1 WHERE id IN (SELECT id FROM places ORDER BY id OFFSET $1 LIMIT 1000)",
                &[&(k * 1000)],
            )
            .await?;
    }
    ix.wait_applied(&e2e::current_lsn(client).await?).await?;
    r.put(
        "stream.txn_1000.rows_per_sec",
        json!(batches as f64 * 1000.0 / t.elapsed().as_secs_f64()),
    );
    let t = Instant::now();
    until_zero(
        ix,
        "the bulk writes to be durable",
        "fresh_documents",
        0,
        Duration::from_secs(600),
    )
    .await?;
    r.put("stream.durable_after_s", json!(t.elapsed().as_secs_f64()));
    // The updates gave every vector a new version: until the graph holds them again, they are
    // scanned exactly and the builder competes with everything measured next.
    until_graph_complete(ix).await?;
    r.put(
        "graph.caught_up_after_stream_s",
        json!(t.elapsed().as_secs_f64()),
    );
    r.put("rss_mb.after_ingest", json!(rss_mb(ix.pid())));
    Ok(())
}

/// How long a whole-table transaction of `rows` may take to arrive and apply: 10 minutes per
/// million rows, at least one.
pub fn apply_timeout(rows: usize) -> Duration {
    Duration::from_secs((rows as u64 * 600 / 1_000_000).max(60))
}

pub async fn until_graph_complete(ix: &Indexer) -> Result<()> {
    until_zero(
        ix,
        "the graph to hold every vector",
        "vectors_pending_graph",
        1,
        Duration::from_secs(7200),
    )
    .await
}

/// Until every graph has dropped hnsw_rs's insert structure (`apply.graph_idle_unload_secs`
/// after its last insert, and a dump of what it inserted since the last one).
pub async fn until_graphs_idle(ix: &Indexer) -> Result<()> {
    e2e::eventually(
        "every graph idle, its insert structure dropped",
        Duration::from_secs(3600),
        || async {
            let s = ix.status().await?;
            let parts = s["partitions"].as_array().context("partitions")?;
            let loaded = parts
                .iter()
                .any(|p| p["graph_insert_structure_loaded"].as_bool() == Some(true));
            Ok((!loaded).then_some(()))
        },
    )
    .await
}

/// The points in the graphs (old versions of updated rows included) and the live documents.
pub async fn graph_state(ix: &Indexer, r: &mut Report) -> Result<()> {
    let s = ix.status().await?;
    let parts = s["partitions"].as_array().context("partitions")?;
    let sum = |f: &str| parts.iter().filter_map(|p| p[f].as_u64()).sum::<u64>();
    r.put(
        "graph.points",
        json!({"points": sum("graph_points"), "documents": sum("documents"),
               "segments": sum("segments"), "partitions": parts.len()}),
    );
    Ok(())
}

/// The public API in front of the indexer at `listen`, open and without rate limits.
pub async fn query_api(dir: &Path, listen: &str) -> Result<QueryApi> {
    let cfg = dir.join("query-api.toml");
    // Every request of the run comes from one address, where it stands for many clients: the
    // per-client shares (requests in flight, searches waiting for their LSN) are the whole
    // API's, or the freshness probes at 5k rows/s would be refused for holding over 32 waits.
    std::fs::write(
        &cfg,
        format!(
            "[[shard]]\nurl = \"http://{listen}\"\n[auth]\nopen = true\n\
             [limits]\nrate_per_sec = 1000000.0\nburst = 1000000.0\nmax_concurrent_requests = 4096\n\
             max_concurrent_per_client = 4096\nmax_waits = 2048\nmax_waits_per_client = 2048\n"
        ),
    )?;
    QueryApi::start(&cfg, dir).await
}
