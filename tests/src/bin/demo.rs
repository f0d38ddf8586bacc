//! `scripts/demo`: the service on a throwaway local Postgres (or `$DATABASE_URL`), with the
//! same harness the end-to-end tests use. Applies migrations, loads sample rows, starts the
//! indexer, runs a small live writer so CDC is visible, and prints requests to try.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::{Indexer, PgServer, QueryApi};
use tokio_postgres::NoTls;

const SAMPLE_ROWS: i64 = 10_000;

#[tokio::main]
async fn main() -> Result<()> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let (server, url) = match std::env::var("DATABASE_URL") {
        Ok(url) => (None, url),
        Err(_) => {
            eprintln!("demo: starting a throwaway Postgres cluster ...");
            // Stopped and removed by a watchdog when this process exits, however it exits.
            let s = PgServer::start_with_watchdog()?;
            let url = s.url("postgres");
            (Some(s), url)
        }
    };
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .context("connect to Postgres")?;
    tokio::spawn(conn);

    let mut migrations: Vec<PathBuf> = std::fs::read_dir(repo.join("migrations"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    migrations.sort();
    for m in &migrations {
        client
            .batch_execute(&std::fs::read_to_string(m)?)
            .await
            .with_context(|| format!("migration {}", m.display()))?;
        eprintln!("demo: applied {}", m.file_name().unwrap().to_string_lossy());
    }
    let count: i64 = client
        .query_one("SELECT count(*) FROM places", &[])
        .await?
        .get(0);
    if count == 0 {
        client
            .execute(
                "INSERT INTO places SELECT g, (ARRAY['europe','asia','africa','north_america','south_america','oceania'])[1 + g % 6], \
                 'Place ' || g, 'Sample place number ' || g || ' with population ' || (g * 37 % 100000), \
                 g * 37 % 100000, 'C' || (g % 50), (g * 7 % 170) - 85, (g * 13 % 360) - 180, \
                 ARRAY(SELECT sin(g + i)::real FROM generate_series(1, 8) i) \
                 FROM generate_series(1, $1::bigint) g",
                &[&SAMPLE_ROWS],
            )
            .await?;
        eprintln!("demo: loaded {SAMPLE_ROWS} sample rows");
    }

    let dir = tempfile::tempdir()?;
    let config_text = std::fs::read_to_string(repo.join("config/places.toml"))?
        .replace("postgres://postgres@127.0.0.1:5432/postgres", &url)
        .replace(
            "./data/indexer",
            &dir.path().join("data").display().to_string(),
        );
    let config = dir.path().join("places.toml");
    std::fs::write(&config, config_text)?;
    let mut indexer = Indexer::start(&config, &dir.path().join("data")).await?;
    let status = indexer.wait_ready().await?;
    eprintln!("demo: indexer ready, snapshot {}", status["snapshot"]);

    // A small live writer so changes flow through CDC while you look.
    let (wc, wconn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(wconn);
    tokio::spawn(async move {
        let mut i: i64 = 0;
        loop {
            i += 1;
            let id = SAMPLE_ROWS + 1 + i % 500;
            let _ = wc
                .batch_execute(&format!(
                    "INSERT INTO places VALUES ({id}, 'europe', 'Live {id}', 'written by the demo writer, round {i}', {i}, 'LV', 48.85, 2.35, NULL) \
                     ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, population = EXCLUDED.population; \
                     UPDATE places SET population = population + 1 WHERE id = {}; \
                     DELETE FROM places WHERE id = {};",
                    1 + i % SAMPLE_ROWS,
                    SAMPLE_ROWS + 1 + (i + 250) % 500
                ))
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });

    // The public API in front of it, as config/query-api.toml describes (open: no keys).
    let api_config = dir.path().join("query-api.toml");
    std::fs::write(
        &api_config,
        std::fs::read_to_string(repo.join("config/query-api.toml"))?
            .replace("http://127.0.0.1:7070", &indexer.url),
    )?;
    let api = QueryApi::start(&api_config, dir.path()).await?;
    eprintln!("demo: query-api listening on {}", api.url);

    let (u, a) = (&indexer.url, &api.url);
    println!(
        "\nThe indexer is streaming changes from {url}; the public API is {a}\n\
         Try:\n  \
         curl -s {a}/v1/indexes/places/search -d '{{\"text\": {{\"q\": \"sample\"}}, \"limit\": 3}}' | jq .\n  \
         curl -s '{a}/v1/indexes/places/search?lat=48.85&lon=2.35&radius=500000&limit=3' | jq .\n  \
         curl -s '{a}/v1/indexes/places/search?lat=48.85&lon=2.35&limit=3' | jq .   # nearest\n  \
         curl -s {a}/v1/indexes/places/search -d '{{\"filter\": {{\"range\": {{\"population\": {{\"gte\": 100}}}}}}, \"sort\": {{\"field\": \"population\", \"order\": \"desc\"}}, \"facets\": [{{\"field\": \"country_code\"}}], \"limit\": 3}}' | jq .\n  \
         curl -sN {a}/v1/indexes/places/changes        # live change feed (the demo writer)\n  \
         curl -s {a}/v1/status | jq .\n\
         Read your own write: take the LSN of your commit and pass it as consistency.min_lsn\n  \
         LSN=$(psql '{url}' -qAt -c \"INSERT INTO places (id, region, name, body, lat, lon) VALUES (999999, 'europe', 'Zorbville', 'a new town', 48.1, 11.6) ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name\" -c 'SELECT pg_current_wal_lsn()')\n  \
         curl -s {a}/v1/indexes/places/search -d \"{{\\\"text\\\": {{\\\"q\\\": \\\"zorbville\\\"}}, \\\"consistency\\\": {{\\\"min_lsn\\\": \\\"$LSN\\\"}}}}\" | jq .\n\
         The indexer's own endpoint:\n  curl -s {u}/status | jq .\n  curl -s {u}/metrics | grep ^indexer_\n  \
         target/release/indexer verify --config {cfg} --indexer-url {u}\n\
         Ctrl-C stops everything{cleanup}.\n",
        cfg = config.display(),
        cleanup = if server.is_some() {
            " and removes the temporary cluster"
        } else {
            ""
        }
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    eprintln!("demo: stopping");
    drop(api);
    indexer.stop()?;
    drop(server);
    Ok(())
}
