//! Crash loops: an indexer killed every two seconds still gets its work done, and loses
//! nothing.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use e2e::Indexer;
use indexer::checkpoint::Checkpoint;

use crate::common::{Fixture, Writer};

/// Enough rows that the work spans several two-second lives on a fast host (200k finished
/// in one or two lives on this one in December 2026, failing the "several lives" checks).
const ROWS: i64 = 400_000;

/// The crash loops take turns: each keeps both cores busy, and beside each other a life spent
/// most of its two seconds receiving what the last made durable again.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Ends a life: SIGKILL, but the third life a clean stop (SIGTERM), which must keep what it
/// did too.
fn end_life(ix: &mut Indexer, lives_before: usize) -> Result<()> {
    if lives_before == 2 {
        let code = ix.stop()?;
        anyhow::ensure!(code.success(), "{code}: {}", ix.log_text());
    } else {
        ix.kill9();
    }
    Ok(())
}

/// A 400k-row snapshot, the indexer killed (SIGKILL; the third time SIGTERM) two seconds
/// after every start, with a writer changing rows on both sides of the copy's position
/// throughout: each life makes the copy durable part-way and the next goes on from there (in
/// a later snapshot, the stream replaying over it), until the snapshot is done; then the
/// index equals the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_killed_every_two_seconds_still_finishes() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let f = Fixture::new().await?;
    // Bodies of ~0.5 KB: enough indexing work per row that the copy spans several lives.
    f.insert_with_bodies(ROWS, 16).await?;
    let config = f.config("", "")?;
    let writer = Writer::start(f.pg, &f.db, 1, ROWS + 1_000, 0x5eed).await?;
    let started = Instant::now();
    // Rows durable in the copy after each life.
    let mut marks: Vec<u64> = Vec::new();
    let mut resumed_lives = 0;
    loop {
        let mut ix = Indexer::spawn(&config, &f.data_dir())?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        end_life(&mut ix, marks.len())?;
        if ix.log_text().contains("resuming the snapshot's copy") {
            resumed_lives += 1;
        }
        match Checkpoint::load(&f.data_dir())? {
            Some(c) if c.snapshot_done => break,
            Some(c) => marks.push(c.copied.map_or(0, |m| m.rows)),
            None => marks.push(0),
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "the snapshot did not finish in 5 minutes of lives; durable rows after each: {marks:?}; the last life's log: {}",
                ix.log_text()
            );
        }
    }
    let txs = writer.stop().await?;
    println!(
        "snapshot done after {} kills in {:.0?} ({resumed_lives} lives resumed the copy); durable rows after each: {marks:?}; writer: {txs} transactions",
        marks.len() + 1,
        started.elapsed()
    );
    // It took several lives, each going on from the last (a copy started over each time
    // would never finish in two seconds), and none went backwards.
    assert!(marks.len() >= 3, "{marks:?}");
    assert!(resumed_lives >= 2, "{resumed_lives}");
    assert!(marks.windows(2).all(|w| w[0] <= w[1]), "{marks:?}");
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    // The stream replays every change since the slot's consistent point: the writer's whole
    // run (tens of thousands of transactions), slower while other tests share the cores.
    let caught_up = Instant::now();
    ix.wait_applied_within(&f.lsn().await?, Duration::from_secs(300))
        .await?;
    println!("caught up with the writer in {:.1?}", caught_up.elapsed());
    f.assert_every_row(&config, &ix).await?;
    Ok(())
}

/// One transaction rewriting all of 400k rows (a fifth of them moving to another region),
/// the indexer killed (SIGKILL; the third time SIGTERM) after two seconds of work on the
/// transaction in every life: Postgres sends the whole transaction again after each restart,
/// each life skips what the last made durable of it and adds more, until it is applied; then
/// the index equals the table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_transaction_killed_every_two_seconds_still_applies() -> Result<()> {
    let _turn = ONE_AT_A_TIME.lock().await;
    let f = Fixture::new().await?;
    f.insert_with_bodies(ROWS, 2).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    ix.wait_applied_within(&f.lsn().await?, Duration::from_secs(300))
        .await?;
    let code = ix.stop()?;
    assert!(code.success(), "{code}: {}", ix.log_text());
    // Before its commit record: a checkpoint past it holds the whole transaction.
    let before_commit: wire::Lsn = f
        .client
        .query_one(
            "WITH u AS (UPDATE places SET body = body || ' rewritten', \
               region = CASE WHEN id % 5 = 0 THEN 'oceania' ELSE region END RETURNING 1) \
             SELECT count(*), pg_current_wal_insert_lsn()::text FROM u",
            &[],
        )
        .await
        .map(|r| r.get::<_, String>(1))?
        .parse()?;
    let started = Instant::now();
    // Changes of the transaction durable after each life.
    let mut marks: Vec<u64> = Vec::new();
    loop {
        let mut ix = Indexer::spawn(&config, &f.data_dir())?;
        // Two seconds of work on the transaction: Postgres sends all of it again after every
        // restart, so a life must outlast the sending of what is durable to add to it (this
        // waits for the start of the rest: its first part, or the end of what is skipped).
        e2e::eventually(
            "the transaction's work to start",
            Duration::from_secs(60),
            || {
                let log = ix.log_text();
                async move {
                    Ok(
                        (log.contains("applying it in parts") || log.contains("applying the rest"))
                            .then_some(()),
                    )
                }
            },
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        end_life(&mut ix, marks.len())?;
        let c = Checkpoint::load(&f.data_dir())?.expect("a checkpoint");
        if c.lsn > before_commit {
            assert_eq!(c.large, None, "applied whole: no progress kept");
            break;
        }
        marks.push(c.large.map_or(0, |m| m.changes));
        if started.elapsed() > Duration::from_secs(300) {
            bail!(
                "the transaction was not applied in 5 minutes of lives; durable changes after each: {marks:?}; the last life's log: {}",
                ix.log_text()
            );
        }
    }
    println!(
        "transaction applied after {} kills in {:.0?}; durable changes after each: {marks:?}",
        marks.len() + 1,
        started.elapsed()
    );
    // Several lives, each going on from the last: none went backwards. (The third life
    // stops cleanly, applying all it received first: it may finish the transaction.)
    assert!(marks.len() >= 2, "{marks:?}");
    assert!(marks.windows(2).all(|w| w[0] <= w[1]), "{marks:?}");
    // A killed life (not the third, which stops cleanly and drains its queue) moved it on.
    let killed_moved_on = (0..marks.len())
        .filter(|&i| i != 2)
        .any(|i| marks[i] > if i == 0 { 0 } else { marks[i - 1] });
    assert!(killed_moved_on, "{marks:?}");
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    ix.wait_applied_within(&f.lsn().await?, Duration::from_secs(300))
        .await?;
    f.assert_every_row(&config, &ix).await?;
    Ok(())
}
