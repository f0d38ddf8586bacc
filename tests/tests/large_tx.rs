//! Large transactions: a single transaction of hundreds of thousands of rows is applied in
//! parts, atomically, without holding it in memory, and leaves nothing behind for later
//! queries to scan.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use e2e::Indexer;
use serde_json::json;

use crate::common::Fixture;

const ROWS: i64 = 200_000;

/// Starts the kernel's peak (`VmHWM`) over from the current resident memory.
fn reset_peak(pid: u32) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .context("resetting VmHWM through /proc/PID/clear_refs")
}

/// The highest resident anonymous memory (`RssAnon`), sampled every 20 ms until stopped.
/// The kernel's `VmHWM` also counts the mapped index files that tantivy's merges read after
/// a large commit (page cache: ~500 MB for these 200k rows, in proportion to the index).
struct AnonPeak {
    peak: Arc<Mutex<f64>>,
    task: tokio::task::JoinHandle<()>,
}

impl AnonPeak {
    fn start(pid: u32) -> AnonPeak {
        let peak = Arc::new(Mutex::new(0.0f64));
        let seen = peak.clone();
        let task = tokio::spawn(async move {
            while let Ok(anon) = e2e::status_mb(pid, "RssAnon:") {
                {
                    let mut m = seen.lock().unwrap();
                    *m = m.max(anon);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        AnonPeak { peak, task }
    }

    fn stop(self) -> f64 {
        self.task.abort();
        *self.peak.lock().unwrap()
    }
}

/// Waits (long-polling, several rounds) until the indexer has applied the database's LSN.
async fn wait_caught_up(f: &Fixture, ix: &Indexer) -> Result<Duration> {
    let lsn = f.lsn().await?;
    let started = Instant::now();
    e2e::eventually(
        "the indexer to apply the update",
        Duration::from_secs(300),
        || {
            let lsn = lsn.clone();
            async move { Ok(ix.wait_applied(&lsn).await.ok()) }
        },
    )
    .await?;
    Ok(started.elapsed())
}

/// Runs one UPDATE (one transaction) and measures the indexer while it applies it: (anonymous
/// peak, VmHWM) in MB.
async fn update(f: &Fixture, ix: &Indexer, pid: u32, sql: &str) -> Result<(f64, f64)> {
    let anon = AnonPeak::start(pid);
    f.client.batch_execute(sql).await?;
    let took = wait_caught_up(f, ix).await?;
    let (anon, hwm) = (anon.stop(), e2e::status_mb(pid, "VmHWM:")?);
    println!("{sql}: applied in {took:.1?}; peak anonymous {anon:.0} MB, VmHWM {hwm:.0} MB");
    Ok((anon, hwm))
}

/// How many documents match `q` (every match counted).
async fn matches(ix: &Indexer, q: &str) -> Result<serde_json::Value> {
    let answer = ix
        .search_ok(&json!({"index": "places", "q": q, "limit": 1, "track_total_hits": true}))
        .await?;
    Ok(answer["total"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_transactions_of_20k_and_200k_rows_apply_in_bounded_memory() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_with_bodies(ROWS, 60).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    let pid = ix.pid().context("indexer running")?;

    // Peaks from here: the snapshot's own is not what is measured.
    reset_peak(pid)?;
    let (anon_20k, _) = update(
        &f,
        &ix,
        pid,
        "UPDATE places SET body = body || ' small', population = population + 1 WHERE id <= 20000",
    )
    .await?;
    f.assert_equal(&config, &ix).await?;
    let (anon_200k, _) = update(
        &f,
        &ix,
        pid,
        "UPDATE places SET body = body || ' large', population = population + 1",
    )
    .await?;

    // Right after it is searchable, nothing of it waits in a fresh layer: a query scans the
    // committed segments only, whatever the write's size.
    let status = ix.status().await?;
    for p in status["partitions"].as_array().context("partitions")? {
        assert_eq!(p["fresh_documents"], 0, "{p}");
    }
    let started = Instant::now();
    let total = matches(&ix, "large").await?;
    let query = started.elapsed();
    println!("text query right after: {query:?}");
    assert_eq!(total, ROWS, "every row has the new word");
    // A liveness bound, not a speed goal: scanning 200k fresh 2 KB documents exactly took
    // tens of seconds; the committed index answers in milliseconds.
    assert!(query < Duration::from_secs(2), "{query:?}");

    // 400 MB of rows went through. Holding the transaction, as before, grew the peak from
    // 501 MB to 3,522 MB here; in parts it grows by the bounded queues (64 MB of changes,
    // the writers' gates and arenas), the last 200k change events for the feed (~100 MB),
    // and ~1 KB per row not yet accounted for (see ARCHITECTURE.md, known limits). Since the
    // parts are made durable every second (crash loops), the growth measured 371 MB alone
    // and 408 MB in the full suite (2026-12-03): the bound was 400 MB, it is 500 — still a
    // sixth of what holding the transaction took.
    const BOUND_MB: f64 = 500.0;
    assert!(
        anon_200k - anon_20k < BOUND_MB,
        "peak anonymous memory grew from {anon_20k:.0} MB to {anon_200k:.0} MB"
    );
    let log = ix.log_text();
    assert_eq!(
        log.matches("large transaction applied").count(),
        2,
        "both went through the large-transaction path"
    );
    f.assert_every_row(&config, &ix).await?;
    Ok(())
}

/// The indexer is killed while a large transaction is half written to its partitions: after
/// the restart nothing of it was visible or durable, the stream sends it again, and the index
/// equals the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_inside_a_large_transaction_loses_nothing() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_with_bodies(60_000, 60).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    // Every row changes, some move to another partition, some go.
    f.client
        .batch_execute(
            "BEGIN;
             UPDATE places SET body = body || ' moved', region = 'oceania' WHERE id % 5 = 0;
             UPDATE places SET body = body || ' kept' WHERE id % 5 <> 0;
             DELETE FROM places WHERE id % 7 = 0;
             COMMIT;",
        )
        .await?;
    let ix_ref = &ix;
    e2e::eventually(
        "a part of the transaction to be applied",
        Duration::from_secs(120),
        || async move {
            Ok(ix_ref
                .log_text()
                .contains("large transaction: applying it in parts")
                .then_some(()))
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        matches(&ix, "moved OR kept").await?,
        0,
        "nothing of it is searchable before its end"
    );
    ix.kill9();
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    f.assert_every_row(&config, &ix).await?;
    assert_eq!(
        matches(&ix, "moved OR kept").await?,
        f.count().await?,
        "all of it after the replay"
    );
    Ok(())
}
