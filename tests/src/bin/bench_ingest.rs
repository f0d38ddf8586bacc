//! Ingest benchmark for the indexer core (not a test): snapshot rows/s, streaming apply rows/s
//! and commit-to-applied latency, on the real dev rows (../shared/data/dev: 30k GeoNames cities
//! with 384-d embeddings), against a throwaway Postgres and the release indexer.
//!
//!   cargo build --release -p indexer -p e2e --bins && target/release/bench_ingest
//!   target/release/bench_ingest --rows 150000 --snapshot-only   # the dev set scaled, snapshots only
//!
//! Prints one table; figures come from this run only.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use e2e::{Indexer, PgServer};
use futures_util::SinkExt;

fn config(pg: &PgServer, db: &str, dir: &std::path::Path, vector: bool) -> Result<PathBuf> {
    let path = dir.join("bench.toml");
    let vector = if vector {
        "vector = { column = \"embedding\", dimension = 384 }"
    } else {
        ""
    };
    std::fs::write(
        &path,
        format!(
            "[source]\ndatabase_url = \"{}\"\npublication = \"bench_pub\"\nslot = \"bench_slot\"\n\
             [storage]\ndata_dir = \"{}\"\n[apply]\ncommit_interval_ms = {}\n\
             [[index]]\nname = \"places\"\ntable = \"places\"\nregion = \"region\"\n\
             text_fields = [{{ column = \"name\", boost = 2.0 }}, \"body\"]\ngeo = {{ lat = \"lat\", lon = \"lon\" }}\n{vector}\n\
             filter_fields = [\"population\", \"country_code\"]\n",
            pg.url(db),
            dir.join("data").display(),
            std::env::var("BENCH_COMMIT_MS").unwrap_or_else(|_| "1000".into()),
        ),
    )?;
    Ok(path)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut n = 30_000;
    let mut snapshot_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rows" => n = args.next().context("--rows N")?.parse()?,
            "--snapshot-only" => snapshot_only = true,
            _ => bail!("unknown argument {a}: --rows N --snapshot-only"),
        }
    }
    eprintln!("bench: {n} rows (the dev set, scaled above 30k)");
    let pg = PgServer::start_with_watchdog()?;
    let mut report = Vec::new();

    for vector in [false, true] {
        let db = pg.fresh_db().await?;
        let client = pg.connect(&db).await?;
        client.batch_execute(e2e::dev_data::PLACES).await?;
        let sink = client.copy_in("COPY places FROM STDIN").await?;
        futures_util::pin_mut!(sink);
        let mut rows = e2e::dev_data::Scaled::new(n)?;
        loop {
            let chunk = rows.chunk(1000)?;
            if chunk.is_empty() {
                break;
            }
            sink.send(Bytes::from(chunk.concat())).await?;
        }
        sink.finish().await?;
        client.batch_execute("ANALYZE places").await?;
        let dir = tempfile::tempdir()?;
        let cfg = config(&pg, &db, dir.path(), vector)?;
        let started = Instant::now();
        let mut ix = Indexer::start(&cfg, &dir.path().join("data")).await?;
        let status = ix.wait_ready().await?;
        let what = if vector {
            "text+geo+vector"
        } else {
            "text+geo"
        };
        report.push(format!(
            "snapshot ({what}, {n} rows): {:.0} rows/s ({:.2} s, copy + index + commit)",
            status["snapshot"]["rows_per_sec"].as_f64().unwrap_or(0.0),
            status["snapshot"]["seconds"].as_f64().unwrap_or(0.0)
        ));
        if let Some(pid) = ix.pid() {
            report.push(format!(
                "after the {what} snapshot: RSS {:.0} MB (anonymous {:.0} MB), data directory {:.0} MB",
                e2e::status_mb(pid, "VmRSS:")?,
                e2e::status_mb(pid, "RssAnon:")?,
                e2e::dir_mb(&dir.path().join("data")),
            ));
        }
        if vector {
            let ready = started.elapsed();
            e2e::eventually(
                "the graph to hold every vector",
                Duration::from_secs(7200),
                || async {
                    let s = ix.status().await?;
                    let pending: u64 = s["partitions"]
                        .as_array()
                        .context("partitions")?
                        .iter()
                        .map(|p| p["vectors_pending_graph"].as_u64().unwrap_or(1))
                        .sum();
                    Ok((pending == 0).then_some(()))
                },
            )
            .await?;
            let done = started.elapsed();
            report.push(format!(
                "graph of {n} vectors complete {:.1} s after the start ({:.0} vectors/s, snapshot included), {:.1} s after the snapshot was searchable",
                done.as_secs_f64(),
                n as f64 / done.as_secs_f64(),
                (done - ready).as_secs_f64()
            ));
            if let Some(pid) = ix.pid() {
                report.push(format!(
                    "with the graph complete: RSS {:.0} MB (anonymous {:.0} MB)",
                    e2e::status_mb(pid, "VmRSS:")?,
                    e2e::status_mb(pid, "RssAnon:")?,
                ));
            }
        }
        if !vector || snapshot_only {
            ix.stop()?;
            continue;
        }

        // Streaming apply at saturation: one transaction re-inserting every row under new keys,
        // then 30 transactions of 1,000 updates each.
        let t = Instant::now();
        client
            .batch_execute("INSERT INTO places SELECT id + 100000000, region, name, body, population, country_code, lat, lon, embedding FROM places")
            .await?;
        let committed = t.elapsed();
        let lsn = e2e::current_lsn(&client).await?;
        ix.wait_applied(&lsn).await?;
        let total = t.elapsed();
        report.push(format!(
            "stream apply, one {n}-row transaction: {:.0} rows/s end to end ({:.2} s; Postgres commit took {:.2} s of it)",
            n as f64 / total.as_secs_f64(),
            total.as_secs_f64(),
            committed.as_secs_f64()
        ));
        let t = Instant::now();
        for k in 0..30i64 {
            client
                .execute(
                    "UPDATE places SET population = population + 1 WHERE id IN (SELECT id FROM places ORDER BY id OFFSET $1 LIMIT 1000)",
                    &[&(k * 1000)],
                )
                .await?;
        }
        let lsn = e2e::current_lsn(&client).await?;
        ix.wait_applied(&lsn).await?;
        report.push(format!(
            "stream apply, 30 × 1,000-row update transactions: {:.0} rows/s end to end",
            30_000.0 / t.elapsed().as_secs_f64()
        ));

        // Commit-to-applied latency at ~1,000 single-row commits/s for 10 s.
        let ids: Vec<i64> = client
            .query("SELECT id FROM places ORDER BY id LIMIT 30000", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let http = reqwest::Client::new();
        let mut waits = Vec::new();
        let start = Instant::now();
        let target = 10_000u64;
        for k in 0..target {
            let due = start + Duration::from_micros(k * 1000);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                tokio::time::sleep(d).await;
            }
            let msgs = client
                .simple_query(&format!(
                    "BEGIN; UPDATE places SET population = population + 1 WHERE id = {}; COMMIT; SELECT pg_current_wal_lsn()::text",
                    ids[k as usize % ids.len()]
                ))
                .await?;
            let committed_at = Instant::now();
            let lsn = msgs
                .iter()
                .find_map(|m| match m {
                    tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                    _ => None,
                })
                .context("no lsn")?;
            let url = format!("{}/internal/wait?lsn={lsn}&timeout_ms=30000", ix.url);
            let http = http.clone();
            waits.push(tokio::spawn(async move {
                let ok = http
                    .get(url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                (ok, committed_at.elapsed())
            }));
        }
        let rate = target as f64 / start.elapsed().as_secs_f64();
        let mut lat = Vec::new();
        for w in waits {
            let (ok, d) = w.await?;
            if !ok {
                bail!("a commit was not applied within 30 s");
            }
            lat.push(d.as_secs_f64() * 1000.0);
        }
        lat.sort_by(f64::total_cmp);
        report.push(format!(
            "commit-to-applied at {rate:.0} single-row commits/s ({} commits): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            lat.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            lat[lat.len() - 1]
        ));
        let status = ix.status().await?;
        report.push(format!(
            "transactions applied in this run: {}",
            status["transactions_applied"]
        ));
        let metrics = reqwest::get(format!("{}/metrics", ix.url))
            .await?
            .text()
            .await?;
        let grab = |name: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().last())
                .unwrap_or("?")
                .to_owned()
        };
        report.push(format!(
            "group commits: {} taking {} s in all (p50 {} s, p99 {} s per commit)",
            grab("indexer_group_commits_total"),
            grab("indexer_group_commit_seconds_sum"),
            grab("indexer_group_commit_seconds{quantile=\"0.5\"}"),
            grab("indexer_group_commit_seconds{quantile=\"0.99\"}"),
        ));
        ix.stop()?;
    }
    println!(
        "\n## indexer ingest benchmark ({} cores)\n",
        std::thread::available_parallelism()?.get()
    );
    for line in report {
        println!("- {line}");
    }
    Ok(())
}
