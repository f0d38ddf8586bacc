//! `scripts/demo`: the service on a throwaway local Postgres (or `$DATABASE_URL`), with the
//! same harness the end-to-end tests use and the same commands docker-compose runs:
//! `indexer migrate`, `indexer seed` (30k real GeoNames cities with embeddings, from
//! data/sample), `indexer run --config config/places.toml` and
//! `query-api --config config/query-api.toml`, with the deployment's values in environment
//! variables. A small live writer makes CDC visible; ready-to-paste requests are printed.
//!
//! `--examples-file PATH` also writes the examples as `label<TAB>command` lines (the demo
//! test runs each of them). Logs go to `--log-dir DIR` (default `target/demo-logs`):
//! `indexer.log` and `query-api.log` as they run (plain text), `postgres.log` copied there at
//! the end; they are kept after Ctrl-C unless `--remove-logs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use e2e::{Indexer, PgServer, QueryApi};
use tokio_postgres::NoTls;

/// Runs one of the product's commands as docker-compose does, failing with its output.
fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
    let out = std::process::Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{} {} failed: {text}{}",
            bin.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(text)
}

/// Quotes a string for a POSIX shell.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut examples_file: Option<PathBuf> = None;
    let mut log_dir: Option<PathBuf> = None;
    let mut remove_logs = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--examples-file" => examples_file = args.next().map(PathBuf::from),
            "--log-dir" => log_dir = args.next().map(PathBuf::from),
            "--remove-logs" => remove_logs = true,
            other => bail!(
                "unknown argument {other:?} (--examples-file PATH, --log-dir DIR, --remove-logs)"
            ),
        }
    }
    let repo = std::fs::canonicalize(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))?;
    let log_dir = log_dir.unwrap_or_else(|| repo.join("target/demo-logs"));
    std::fs::create_dir_all(&log_dir)
        .with_context(|| format!("--log-dir {}", log_dir.display()))?;
    let log_dir = std::fs::canonicalize(&log_dir)?;
    e2e::log_to(&log_dir);
    eprintln!(
        "demo: logs in {} (indexer.log, query-api.log; postgres.log at the end){}",
        log_dir.display(),
        if remove_logs {
            ", removed on exit"
        } else {
            ", kept after Ctrl-C"
        }
    );
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
    let indexer_bin = e2e::indexer_bin();
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("data");
    // The shards' secret, new for each run (the compose file's default is for a local try).
    let secret = {
        use std::hash::{BuildHasher, Hasher};
        let word = || {
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        format!("demo-{:016x}{:016x}", word(), word())
    };
    // The compose file's commands, its variables given this machine's values.
    let local = |var: &str| -> Result<Option<String>> {
        Ok(match var {
            "INDEXER_SHARD_SECRET" | "QUERY_API_SHARD_SECRET" => Some(secret.clone()),
            "DATABASE_URL" | "INDEXER_DATABASE_URL" => Some(url.clone()),
            "INDEXER_DATA_DIR" => Some(data_dir.display().to_string()),
            // Listening addresses: the harness picks free local ports.
            "INDEXER_LISTEN" | "QUERY_API_LISTEN" => None,
            // Filled in once the indexer listens.
            "QUERY_API_SHARDS" => None,
            other => bail!("docker-compose.yml sets {other}: the demo does not know it"),
        })
    };
    let env_of = |svc: &e2e::compose::Service| -> Result<Vec<(String, String)>> {
        let mut env = Vec::new();
        for (k, _) in &svc.environment {
            if let Some(v) = local(k)? {
                env.push((k.clone(), v));
            }
        }
        Ok(env)
    };
    for name in ["migrate", "seed"] {
        let svc = e2e::compose::service(name)?;
        let args = svc.local_args(&repo);
        let env = env_of(&svc)?;
        eprintln!("demo: {} {}", svc.command[0], args.join(" "));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        eprint!("demo: {}", run(&indexer_bin, &args, &env)?);
    }
    let (client, conn) = tokio_postgres::connect(&url, NoTls)
        .await
        .context("connect to Postgres")?;
    tokio::spawn(conn);

    let config_of = |svc: &e2e::compose::Service| -> Result<PathBuf> {
        let args = svc.local_args(&repo);
        let at = args
            .iter()
            .position(|a| a == "--config")
            .context("compose command without --config")?;
        Ok(PathBuf::from(&args[at + 1]))
    };
    let svc = e2e::compose::service("indexer")?;
    anyhow::ensure!(svc.command[..2] == ["indexer", "run"], "{:?}", svc.command);
    let indexer_config = config_of(&svc)?;
    let mut indexer = Indexer::start_with_env(
        &indexer_config,
        &data_dir,
        "127.0.0.1:0",
        &env_of(&svc)?
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect::<Vec<_>>(),
    )
    .await?;
    let status = indexer.wait_ready().await?;
    eprintln!("demo: indexer ready, snapshot {}", status["snapshot"]);

    // A small live writer so changes flow through CDC while you look: every 250 ms a "live"
    // copy of a real city is written (same embedding), an older one deleted, a population bumped.
    let (wc, wconn) = tokio_postgres::connect(&url, NoTls).await?;
    tokio::spawn(wconn);
    tokio::spawn(async move {
        let mut i: i64 = 0;
        loop {
            i += 1;
            let live = 9_000_000_000 + i % 200;
            let _ = wc
                .batch_execute(&format!(
                    "INSERT INTO places (id, region, name, body, population, country_code, lat, lon, embedding) \
                     SELECT {live}, region, 'Live ' || name, 'Written by the demo writer (round {i}): ' || body, \
                            population, country_code, lat + 0.01, lon + 0.01, embedding \
                     FROM places WHERE id < 9000000000 ORDER BY id OFFSET {} LIMIT 1 \
                     ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body, name = EXCLUDED.name; \
                     UPDATE places SET population = population + 1 \
                     WHERE id = (SELECT id FROM places WHERE id < 9000000000 ORDER BY id OFFSET {} LIMIT 1); \
                     DELETE FROM places WHERE id = {};",
                    i * 7919 % 29_000,
                    i * 104_729 % 29_000,
                    9_000_000_000 + (i + 100) % 200
                ))
                .await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });

    // The public API, as config/query-api.toml describes it (open: no keys), in front of it.
    let svc = e2e::compose::service("query-api")?;
    anyhow::ensure!(svc.command[0] == "query-api", "{:?}", svc.command);
    let mut env: Vec<(&str, String)> = Vec::new();
    for (k, _) in &svc.environment {
        if k == "QUERY_API_SHARDS" {
            env.push(("QUERY_API_SHARDS", indexer.url.clone()));
        } else if let Some(v) = local(k)? {
            env.push((k.as_str(), v));
        }
    }
    let api = QueryApi::start_with_env(&config_of(&svc)?, dir.path(), &env).await?;
    eprintln!("demo: query-api listening on {}", api.url);

    // Request bodies that carry a stored row's embedding (Paris).
    let paris: String = client
        .query_one(
            "SELECT array_to_json(embedding)::text FROM places \
             WHERE name = 'Paris' AND country_code = 'FR' ORDER BY population DESC LIMIT 1",
            &[],
        )
        .await
        .context("the sample has Paris")?
        .get(0);
    let vector_body = dir.path().join("vector-paris.json");
    std::fs::write(
        &vector_body,
        format!(r#"{{"vector": {{"values": {paris}, "k": 5}}, "limit": 5}}"#),
    )?;
    let hybrid_body = dir.path().join("hybrid-paris.json");
    std::fs::write(
        &hybrid_body,
        format!(
            r#"{{"text": {{"q": "capital", "operator": "or"}}, "vector": {{"values": {paris}, "k": 10}}, "hybrid": {{}}, "limit": 5}}"#
        ),
    )?;
    let psql = e2e::pg_bin_dir()
        .map(|d| d.join("psql"))
        .ok()
        .filter(|p| p.exists())
        .map_or_else(|| "psql".to_owned(), |p| p.display().to_string());

    let a = &api.url;
    let search = format!("{a}/v1/indexes/places/search");
    let examples: Vec<(&str, String)> = vec![
        (
            "full text",
            format!(r#"curl -s {search} -d '{{"q": "amsterdam", "limit": 3}}'"#),
        ),
        (
            "full text, another script",
            format!(r#"curl -s {search} -d '{{"q": "東京", "limit": 3}}'"#),
        ),
        (
            "within 50 km of Paris",
            format!("curl -s '{search}?lat=48.8566&lon=2.3522&radius=50000&limit=5'"),
        ),
        (
            "nearest to Tokyo",
            format!("curl -s '{search}?lat=35.68&lon=139.69&limit=5'"),
        ),
        (
            "filter, sort, facets",
            format!(
                r#"curl -s {search} -d '{{"q": "capital", "filter": {{"range": {{"population": {{"gte": 1000000}}}}}}, "sort": {{"field": "population", "order": "desc"}}, "facets": [{{"field": "country_code", "size": 5}}], "limit": 3}}'"#
            ),
        ),
        (
            "vector: cities like Paris (its stored embedding)",
            format!("curl -s {search} -d @{}", vector_body.display()),
        ),
        (
            "hybrid: text + vector, fused by RRF",
            format!("curl -s {search} -d @{}", hybrid_body.display()),
        ),
        (
            "read your own write: the LSN of your commit as consistency.min_lsn",
            format!(
                r#"LSN=$({psql} {} -qAt -c "INSERT INTO places (id, region, name, body, lat, lon) VALUES (999999, 'europe', 'Zorbville', 'a new town on the demo map', 48.1, 11.6) ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body" -c 'SELECT pg_current_wal_lsn()') && curl -s {search} -d "{{\"q\": \"zorbville\", \"consistency\": {{\"min_lsn\": \"$LSN\"}}}}""#,
                sh(&url)
            ),
        ),
        (
            "the change feed (server-sent events; the demo writer, 5 s)",
            format!("curl -sN --max-time 5 {a}/v1/indexes/places/changes"),
        ),
        (
            "status of every shard and partition",
            format!("curl -s {a}/v1/status"),
        ),
        ("the OpenAPI document", format!("curl -s {a}/openapi.json")),
        (
            "the indexer's own status (its endpoint asks for the shards' secret)",
            format!(
                "curl -s -H {} {}/status",
                sh(&format!("Authorization: Bearer {secret}")),
                indexer.url
            ),
        ),
        (
            "compare the index with Postgres, exactly, while the demo writer runs",
            format!(
                "INDEXER_DATABASE_URL={} INDEXER_SHARD_SECRET={} {} verify --config {} --indexer-url {}",
                sh(&url),
                sh(&secret),
                indexer_bin.display(),
                indexer_config.display(),
                indexer.url
            ),
        ),
    ];
    println!(
        "\nThe indexer is streaming changes from {url}; the public API is {a}\n\
         Open {a}/ in a browser: the search page (answers as you type; a map to click for places near a point).\n\
         Or try (pipe to `jq .` for pretty output):\n"
    );
    for (label, cmd) in &examples {
        println!("# {label}\n{cmd}\n");
    }
    println!(
        "Ctrl-C stops everything{cleanup}.",
        cleanup = if server.is_some() {
            " and removes the temporary cluster"
        } else {
            ""
        }
    );
    if let Some(path) = examples_file {
        let text: String = examples
            .iter()
            .map(|(label, cmd)| format!("{label}\t{cmd}\n"))
            .collect();
        std::fs::write(&path, text)?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    eprintln!("demo: stopping");
    drop(api);
    indexer.stop()?;
    if let Some(s) = &server {
        let _ = std::fs::copy(s.dir.join("server.log"), log_dir.join("postgres.log"));
    }
    drop(server);
    if remove_logs {
        for f in ["indexer.log", "query-api.log", "postgres.log"] {
            let _ = std::fs::remove_file(log_dir.join(f));
        }
    } else {
        eprintln!("demo: logs kept in {}", log_dir.display());
    }
    Ok(())
}
