//! TLS end to end, with certificates from a CA each test makes: the indexer's Postgres
//! connections (replication included) under `sslmode`, and both tiers serving HTTPS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use e2e::{Indexer, PgServer, QueryApi};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tls::test_certs::TestCa;

use crate::api::{api_config, READ};
use crate::common::Fixture;

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `indexer check-config` with `database_url`: whether it succeeded, and what it printed.
async fn check_config(config: &Path, database_url: &str) -> Result<(bool, String)> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(e2e::indexer_bin())
            .args(["check-config", "--config", config.to_str().unwrap()])
            .env("INDEXER_DATABASE_URL", database_url)
            .output(),
    )
    .await
    .context("check-config did not finish in 60 s")??;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_reaches_postgres_over_tls_as_sslmode_says() -> Result<()> {
    // A server of its own: TLS on, and every role but the harness's must use it.
    let pg: &'static PgServer = Box::leak(Box::new(PgServer::start_with_watchdog()?));
    let ca = TestCa::new("test CA");
    let server = ca.issue(&["localhost"]);
    pg.enable_tls(&server.cert_pem, &server.key_pem)?;
    let f = Fixture::on(pg).await?;
    f.client
        .batch_execute("CREATE ROLE app_tls LOGIN SUPERUSER REPLICATION")
        .await?;
    f.insert_range(1, 40).await?;
    let config = f.config("", "")?;
    let ca_pem = write(f.dir.path(), "ca.pem", &ca.pem())?;
    let other_pem = write(
        f.dir.path(),
        "other-ca.pem",
        &TestCa::new("another CA").pem(),
    )?;
    let url = |host: &str, params: &str| {
        format!("postgres://app_tls@{host}:{}/{}?{params}", pg.port, f.db)
    };
    let root = format!("sslrootcert={}", ca_pem.display());

    // verify-full: the chain leads to the CA and the certificate names the host.
    let full = url("localhost", &format!("sslmode=verify-full&{root}"));
    let (ok, out) = check_config(&config, &full).await?;
    assert!(ok, "{out}");
    assert!(
        out.contains("postgres: TLSv1.3") && out.contains("sslmode=verify-full"),
        "{out}"
    );

    // The whole pipeline over it: snapshot, stream, and `verify`.
    let env = [("INDEXER_DATABASE_URL", full.clone())];
    let mut ix = Indexer::start_with_env(&config, &f.data_dir(), "127.0.0.1:0", &env).await?;
    ix.wait_ready().await?;
    f.client
        .execute(
            "INSERT INTO places (id, region, name, body) VALUES (41, 'europe', 'tlsville', 'x')",
            &[],
        )
        .await?;
    ix.wait_applied(&f.lsn().await?).await?;
    let v = ix
        .search_ok(&json!({"index": "places", "text": {"q": "tlsville"}, "limit": 5}))
        .await?;
    assert_eq!(e2e::hit_keys(&v), ["41"], "{v}");
    // Every connection of the indexer, the walsender included, is encrypted.
    let rows = f
        .client
        .query(
            "SELECT a.backend_type, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.usename = 'app_tls'",
            &[],
        )
        .await?;
    let seen: Vec<(String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert!(seen.iter().any(|(t, _)| t == "walsender"), "{seen:?}");
    assert!(seen.iter().all(|(_, ssl)| *ssl), "{seen:?}");
    let overrides = indexer::config::Overrides {
        database_url: Some(full.clone()),
        ..Default::default()
    };
    let cfg = indexer::config::Config::load(&config, &overrides)?;
    let report = indexer::verify::verify(&cfg, &ix.url, None, 5).await?;
    assert!(report.equal(), "{:?}", report.differences);
    ix.stop()?;

    // verify-ca checks the chain only: an address the certificate does not name is fine.
    let (ok, out) = check_config(
        &config,
        &url("127.0.0.1", &format!("sslmode=verify-ca&{root}")),
    )
    .await?;
    assert!(ok, "{out}");
    // Refusals, each naming what failed and the settings behind it.
    let (ok, out) = check_config(
        &config,
        &url("127.0.0.1", &format!("sslmode=verify-full&{root}")),
    )
    .await?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("not valid for name") && out.contains("sslmode=verify-full"),
        "{out}"
    );
    let foreign = format!("sslmode=verify-full&sslrootcert={}", other_pem.display());
    let (ok, out) = check_config(&config, &url("localhost", &foreign)).await?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("UnknownIssuer") && out.contains("other-ca.pem"),
        "{out}"
    );
    let (ok, out) = check_config(&config, &url("localhost", "sslmode=disable")).await?;
    assert!(!ok, "{out}");
    assert!(out.contains("no encryption"), "{out}");
    // The default (prefer) takes TLS when offered, as libpq does.
    let (ok, out) = check_config(&config, &url("localhost", "")).await?;
    assert!(ok && out.contains("postgres: TLSv1.3"), "{out}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tiers_serve_https_and_check_each_other() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 30).await?;
    let config = f.config("", "")?;
    let ca = TestCa::new("test CA");
    let issued = ca.issue(&["localhost"]);
    let dir = f.dir.path();
    let (cert, key) = (
        write(dir, "cert.pem", &issued.cert_pem)?,
        write(dir, "key.pem", &issued.key_pem)?,
    );
    let ca_pem = write(dir, "ca.pem", &ca.pem())?;
    let other_pem = write(dir, "other-ca.pem", &TestCa::new("another CA").pem())?;
    let path = |p: &Path| p.display().to_string();

    let env = [
        ("INDEXER_TLS_CERT", path(&cert)),
        ("INDEXER_TLS_KEY", path(&key)),
        ("INDEXER_SHARD_CA", path(&ca_pem)),
    ];
    let mut ix = Indexer::start_with_env(&config, &f.data_dir(), "127.0.0.1:0", &env).await?;
    assert!(ix.url.starts_with("https://localhost:"), "{}", ix.url);
    ix.wait_ready().await?;
    // Plain HTTP to the TLS port gets no answer.
    let port = ix.url.rsplit(':').next().unwrap().to_owned();
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "{plain:?}");
    // `verify` over HTTPS, trusting the CA.
    let cfg = indexer::config::Config::load(&config, &Default::default())?;
    let report = indexer::verify::verify(&cfg, &ix.url, Some(&ca_pem), 5).await?;
    assert!(report.equal(), "{:?}", report.differences);

    // query-api: HTTPS outside, the shard over HTTPS and the link over TLS inside.
    let api_env = |shard_ca: &Path| {
        vec![
            ("QUERY_API_TLS_CERT", path(&cert)),
            ("QUERY_API_TLS_KEY", path(&key)),
            ("QUERY_API_SHARD_CA", path(shard_ca)),
        ]
    };
    let api_conf = api_config(&f, &ix.url, "")?;
    let api = QueryApi::start_with_env(&api_conf, dir, &api_env(&ca_pem)).await?;
    assert!(api.url.starts_with("https://localhost:"), "{}", api.url);
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls::client_config(tls::Verify::Full, Some(&ca_pem))?)
        .timeout(Duration::from_secs(30))
        .build()?;
    let lsn = f.lsn().await?;
    let search = |base: String, body: Value| {
        let client = client.clone();
        async move {
            let resp = client
                .post(format!("{base}/v1/indexes/places/search"))
                .header("x-api-key", READ)
                .json(&body)
                .send()
                .await?;
            Ok::<_, anyhow::Error>((resp.status(), resp.json::<Value>().await?))
        }
    };
    let body = json!({"q": "place", "consistency": {"min_lsn": lsn}});
    let (st, v) = search(api.url.clone(), body).await?;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert!(!e2e::hit_keys(&v).is_empty(), "{v}");
    let resp = client
        .get(format!("{}/v1/indexes/places/documents/7", api.url))
        .header("x-api-key", READ)
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);

    // A query-api that trusts another CA will not talk to the shard.
    let wary = QueryApi::start_with_env(&api_conf, dir, &api_env(&other_pem)).await?;
    let (st, v) = search(wary.url.clone(), json!({"q": "place"})).await?;
    assert_eq!(st, StatusCode::SERVICE_UNAVAILABLE, "{v}");
    assert!(
        wary.log_text().contains("UnknownIssuer"),
        "{}",
        wary.log_text()
    );
    Ok(())
}
