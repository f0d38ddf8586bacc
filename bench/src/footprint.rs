//! Footprint and restart: the indexer's resident set and data directory after the query
//! phase, the size of its vector graph dumps once a clean stop has written them, and the time
//! from a restart (graph reloaded from its dump) to answering again.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::host::{dir_bytes, memory, rss_mb, unnamed_bytes};
use crate::ingest::Indexed;
use crate::report::Report;

/// Measures, stops the indexer, measures its files, and restarts it until `probe` finds hits
/// (it stays up: the caller stops it).
pub async fn measure(
    indexed: &mut Indexed,
    http: &reqwest::Client,
    search_url: &str,
    probe: &Value,
    rows: usize,
    r: &mut Report,
) -> Result<()> {
    r.put("memory.final", memory(indexed.ix.pid()));
    let rss_kb = rss_mb(indexed.ix.pid()) * 1024.0;
    // The mapped vector files have no name: counted from the indexer's open files.
    let mapped = unnamed_bytes(indexed.ix.pid(), &indexed.data) as f64;
    let disk = dir_bytes(&indexed.data, None) as f64 + mapped;
    r.put(
        "footprint",
        json!({"rss_mb": rss_kb / 1024.0, "disk_mb": disk / 1048576.0,
               "mapped_vectors_mb": mapped / 1048576.0,
               "rss_gb_per_1m": rss_kb / 1048576.0 * 1e6 / rows as f64,
               "disk_gb_per_1m": disk / 1073741824.0 * 1e6 / rows as f64}),
    );
    // A clean stop waits for the (idle-priority) graph dump: each partition's `graph` directory.
    indexed.ix.stop()?;
    r.put(
        "footprint.stopped",
        json!({"data_dir_bytes": dir_bytes(&indexed.data, None),
               "graph_dump_bytes": dir_bytes(&indexed.data, Some("graph"))}),
    );
    let t = Instant::now();
    indexed.ix = e2e::Indexer::start_on(&indexed.cfg, &indexed.data, &indexed.listen).await?;
    e2e::eventually(
        "answers after the restart",
        Duration::from_secs(600),
        || async {
            let resp = http.post(search_url).json(probe).send().await?;
            Ok(
                (resp.status().is_success() && !e2e::hit_keys(&resp.json().await?).is_empty())
                    .then_some(()),
            )
        },
    )
    .await?;
    r.put("restart_to_serving_s", json!(t.elapsed().as_secs_f64()));
    Ok(())
}
