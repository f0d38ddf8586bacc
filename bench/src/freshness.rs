//! Commit to searchable through the public API: transactions of new rows at a fixed rate,
//! spread over 8 writer connections, each carrying a unique word. For a sample of at most ~100
//! transactions a second (probing every one would load the machine being measured), the clock
//! starts when the commit returns and stops when a search for that word, waiting on the
//! commit's LSN, returns the row.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use e2e::{Indexer, PgServer};
use serde_json::{json, Value};

use crate::host::rss_mb;
use crate::load::Lat;
use crate::report::Report;

/// One freshness setting: the write rate, transaction size, duration and first new id.
struct WriteLoad {
    rows_per_sec: f64,
    txn_rows: usize,
    seconds: f64,
    first_id: i64,
}

/// The ids of the rows written here, removed again at the end.
const FIRST_ID: i64 = 8_000_000_000;

/// Every setting (100, 1,000 and 5,000 rows/s; 1 and 100 rows per transaction), then the new
/// rows deleted and applied again.
pub async fn run(
    pg: &PgServer,
    db: &str,
    http: &reqwest::Client,
    api: &str,
    ix: &Indexer,
    r: &mut Report,
) -> Result<()> {
    let mut next_id = FIRST_ID;
    let mut runs = Vec::new();
    for rate in [100.0, 1000.0, 5000.0] {
        for txn_rows in [1usize, 100] {
            let load = WriteLoad {
                rows_per_sec: rate,
                txn_rows,
                seconds: 5.0,
                first_id: next_id,
            };
            let (lat, achieved) = freshness(pg, db, http, api, load).await?;
            next_id += 100_000_000;
            runs.push(
                json!({"target_rows_per_sec": rate, "achieved_rows_per_sec": achieved,
                             "txn_rows": txn_rows, "latency": lat.json()}),
            );
        }
    }
    r.put("freshness", json!(runs));
    let writer = pg.connect(db).await?;
    writer
        .batch_execute(&format!("DELETE FROM places WHERE id >= {FIRST_ID}"))
        .await?;
    ix.wait_applied(&e2e::current_lsn(&writer).await?).await?;
    r.put("rss_mb.after_freshness", json!(rss_mb(ix.pid())));
    Ok(())
}

async fn freshness(
    pg: &PgServer,
    db: &str,
    http: &reqwest::Client,
    api: &str,
    load: WriteLoad,
) -> Result<(Lat, f64)> {
    let WriteLoad {
        rows_per_sec,
        txn_rows,
        seconds,
        first_id,
    } = load;
    const WRITERS: usize = 8;
    let txn_rate = rows_per_sec / txn_rows as f64;
    let n_txn = ((txn_rate * seconds).ceil() as usize).max(10);
    let probe_every = ((txn_rate / 100.0).ceil() as usize).max(1);
    let started = Instant::now();
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = pg.connect(db).await?;
        let (http, url) = (http.clone(), format!("{api}/v1/indexes/places/search"));
        writers.push(tokio::spawn(async move {
            let regions = ["europe", "asia", "africa", "north_america", "south_america", "oceania"];
            let mut probes = Vec::new();
            for k in (w..n_txn).step_by(WRITERS) {
                let due = started + Duration::from_secs_f64(k as f64 / txn_rate);
                if let Some(d) = due.checked_duration_since(Instant::now()) {
                    tokio::time::sleep(d).await;
                }
                let first = first_id + (k * txn_rows) as i64;
                let values: Vec<String> = (0..txn_rows as i64)
                    .map(|j| {
                        let id = first + j;
                        format!(
                            "({id}, '{}', 'probe {id}', 'freshness probe fresh{first}', 1, 'ZZ', 0, 0)",
                            regions[id as usize % regions.len()]
                        )
                    })
                    .collect();
                let msgs = client
                    .simple_query(&format!(
                        "BEGIN; INSERT INTO places (id, region, name, body, population, country_code, lat, lon) VALUES {}; COMMIT; SELECT pg_current_wal_lsn()::text",
                        values.join(",")
                    ))
                    .await?;
                let committed = Instant::now();
                if k % probe_every != 0 {
                    continue;
                }
                let lsn = msgs
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                        _ => None,
                    })
                    .context("no LSN")?;
                let (http, url) = (http.clone(), url.clone());
                probes.push(tokio::spawn(async move {
                    let body = json!({"q": format!("fresh{first}"), "limit": 1, "highlight": false,
                                      "consistency": {"min_lsn": lsn, "wait_timeout_ms": 25000}});
                    let v: Value = http.post(url).json(&body).send().await?.json().await?;
                    ensure!(v["hits"].as_array().is_some_and(|h| !h.is_empty()), "not found: {v}");
                    anyhow::Ok(committed.elapsed().as_secs_f64() * 1e3)
                }));
            }
            anyhow::Ok(probes)
        }));
    }
    let mut probes = Vec::new();
    for w in writers {
        probes.extend(w.await??);
    }
    let achieved = (n_txn * txn_rows) as f64 / started.elapsed().as_secs_f64();
    let mut lat = Vec::new();
    for p in probes {
        lat.push(p.await??);
    }
    Ok((Lat::of(lat, started.elapsed().as_secs_f64()), achieved))
}
