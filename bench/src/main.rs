//! The benchmark harness (not a test): one run on this machine against a throwaway Postgres,
//! the release indexer and query-api, side by side with Postgres's own indexes (tsvector +
//! GIN + ts_rank_cd, PostGIS + GiST, pgvector HNSW when installed). Writes BENCHMARKS.md and
//! the raw figures as BENCHMARKS.json; every figure comes from this run.
//!
//!   scripts/bench [--rows N] [--seconds S] [--rounds R] [--out PATH] [--only TEXT] [--scale]
//!
//! N: 30000 (the dev set) by default, 1000000 scales it; S: seconds per load (3); R: rounds
//! of interleaved loads per query type (3), reported as medians with their spread. `--only`
//! is for working on one query type: it runs the ingest and only the query types whose name
//! contains TEXT (the recall curve only when a vector type is among them), prints the figures
//! and writes no report. `--scale` measures our side alone at N rows (no peers, no
//! freshness run) and keeps the figures beside other sizes' in BENCHMARKS-SCALE.md (`scale`);
//! `--scale --render` writes that report again from its JSON.
//!
//! Data: the dev set (../shared/data/dev: 30k GeoNames cities, 384-d MiniLM embeddings);
//! above 30k rows, seeded copies (`e2e::dev_data::Scaled` documents how).
//!
//! Phases, in order, one module each: ingest (COPY, snapshot, graph, streaming), freshness
//! through the public API, the peers' tables and indexes, the recall curve (`vector`), the
//! query phase in interleaved rounds (`queries`, `load`), footprint and restart, the report.

mod footprint;
mod freshness;
mod host;
mod ingest;
mod load;
mod peers;
mod profile;
mod queries;
mod report;
mod scale;
mod vector;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e::PgServer;
use serde_json::json;

use crate::host::{proc_field, sh, Workdir};
use crate::load::Loads;
use crate::peers::Extensions;
use crate::profile::Profiler;
use crate::report::Report;

struct Args {
    rows: usize,
    seconds: f64,
    rounds: usize,
    out: Option<PathBuf>,
    only: Option<String>,
    scale: bool,
    render: bool,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut a = Args {
            rows: 30_000,
            seconds: 3.0,
            rounds: 3,
            out: None,
            only: None,
            scale: false,
            render: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--rows" => a.rows = value()?.parse()?,
                "--seconds" => a.seconds = value()?.parse()?,
                "--rounds" => a.rounds = value()?.parse()?,
                "--out" => a.out = Some(value()?.into()),
                "--only" => a.only = Some(value()?),
                "--scale" => a.scale = true,
                "--render" => a.render = true,
                _ => bail!(
                    "unknown argument {flag}: --rows N --seconds S --rounds R --out PATH --only TEXT --scale --render"
                ),
            }
        }
        ensure!(
            a.rows > 0 && a.seconds > 0.0 && a.rounds > 0,
            "--rows, --seconds and --rounds must be positive"
        );
        Ok(a)
    }
}

fn main() -> Result<()> {
    // Threads named so that the machine-wide profiles count the load generator apart.
    tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let args = Args::parse()?;
    if args.render {
        let out = args.out.clone().unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS-SCALE.md")
        });
        return report::scale::rewrite(&out);
    }
    let (rows, seconds) = (args.rows, args.seconds);
    let repo = std::fs::canonicalize(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))?;
    let out_md = args
        .out
        .clone()
        .unwrap_or_else(|| repo.join("BENCHMARKS.md"));
    ensure!(
        e2e::dev_data::dir().is_some(),
        "../shared/data/dev is needed (or BENCH_DATA)"
    );
    let mut r = Report::default();
    let run_started = Instant::now();

    // The machine and the versions.
    let pg = PgServer::start_with_watchdog()?;
    let db = pg.fresh_db().await?;
    let client = pg.connect(&db).await?;
    let pg_version: String = client.query_one("SHOW server_version", &[]).await?.get(0);
    let ext = Extensions::probe(&client).await?;
    r.put(
        "machine",
        json!({"cores": std::thread::available_parallelism()?.get(),
               "cpu": proc_field("/proc/cpuinfo", "model name"), "memory": proc_field("/proc/meminfo", "MemTotal"),
               "kernel": sh("uname", &["-r"]), "date": sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
               "git": sh("git", &["-C", &repo.to_string_lossy(), "rev-parse", "--short", "HEAD"]),
               "postgres": pg_version, "postgis": ext.postgis, "pgvector": ext.pgvector,
               "rows": rows, "seconds_per_load": seconds, "rounds": args.rounds}),
    );
    if args.scale {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| repo.join("BENCHMARKS-SCALE.md"));
        return scale::run(&pg, &db, &client, &args, &out, r).await;
    }

    // 1. Ingest: the rows into Postgres, the snapshot and graph, streaming apply.
    ingest::copy_rows(&client, rows, &mut r).await?;
    let dir = Workdir::from_env()?;
    let mut indexed = ingest::snapshots(&pg, &db, &client, dir.path(), rows, &mut r).await?;
    ingest::streaming(&indexed.ix, &client, rows, &mut r).await?;
    let api = ingest::query_api(dir.path(), &indexed.listen).await?;
    let search_url = format!("{}/v1/indexes/places/search", api.url);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(60))
        .build()?;

    // 2. Freshness: commit to searchable through the public API.
    if args.only.is_none() {
        freshness::run(&pg, &db, &http, &api.url, &indexed.ix, &mut r).await?;
    }

    // 3. The peers' tables and indexes, all built before any query is measured.
    let work = queries::Workload::load()?;
    peers::build(&client, &ext, rows, &mut r).await?;
    if ext.pgvector.is_some() {
        let probe = vector::embedding(&work.vectors[0]);
        peers::check_vector_plans(&pg, &db, &probe, vector::REGION, &vector::EFS, &mut r).await?;
    }

    // 4. The recall curve of both sides, which picks the breadths compared below.
    ingest::graph_state(&indexed.ix, &mut r).await?;
    let peer_db = ext.pgvector.is_some().then_some((&pg, db.as_str()));
    let sweep = args
        .only
        .as_ref()
        .is_none_or(|o| o.contains("vector") || "vector k=10".contains(o.as_str()));
    let curves = if sweep {
        vector::sweep(&http, &search_url, peer_db, &work.vectors, rows, &mut r).await?
    } else {
        Vec::new()
    };

    // 5. Queries: each type in interleaved rounds against its peer.
    let loads = Loads {
        url: &search_url,
        pg: &pg,
        db: &db,
        budget: Duration::from_secs_f64(seconds),
    };
    let profiler = Profiler::new(dir.path());
    let mut cells = queries::cells(&work, &ext, &curves);
    if let Some(only) = &args.only {
        cells.retain(|c| c.name.contains(only.as_str()));
        ensure!(
            !cells.is_empty(),
            "--only {only}: no query type has that in its name"
        );
        queries::run(&loads, &cells, args.rounds, &profiler, &mut r).await?;
        return Ok(());
    }
    queries::run(&loads, &cells, args.rounds, &profiler, &mut r).await?;

    // 6. Footprint and restart.
    let probe = json!({"vector": {"values": vector::embedding(&work.vectors[0]), "k": 10}});
    footprint::measure(&mut indexed, &http, &search_url, &probe, rows, &mut r).await?;
    indexed.ix.stop()?;
    drop(api);

    r.put("run_seconds", json!(run_started.elapsed().as_secs_f64()));
    report::write(&r, &out_md)?;
    Ok(())
}
