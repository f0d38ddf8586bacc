//! `indexer verify` and `indexer check-config` as a user runs them: real exit codes, and a
//! verification that does fail when the index and the table differ.

use std::process::Command;

use anyhow::Result;
use e2e::Indexer;

use crate::common::{Fixture, Writer, SCHEMA};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_each_difference_and_exits_1() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 200).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    ix.wait_applied(&f.lsn().await?).await?;

    let (code, out) = verify(&config, &ix.url, &[])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("equal"));

    // A second database with the same rows, then three differences: verify it against the
    // running index and every difference must be named.
    let other = f.pg.fresh_db().await?;
    let oc = f.pg.connect(&other).await?;
    oc.batch_execute(SCHEMA).await?;
    let rows = f
        .client
        .query(
            "SELECT id, region, name, body, population, lat, lon, embedding FROM places",
            &[],
        )
        .await?;
    for r in rows {
        let vals: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &r.get::<_, i64>(0),
            &r.get::<_, Option<String>>(1),
            &r.get::<_, Option<String>>(2),
            &r.get::<_, Option<String>>(3),
            &r.get::<_, Option<i64>>(4),
            &r.get::<_, Option<f64>>(5),
            &r.get::<_, Option<f64>>(6),
            &r.get::<_, Option<Vec<f32>>>(7),
        ];
        oc.execute("INSERT INTO places VALUES ($1,$2,$3,$4,$5,$6,$7,$8)", &vals)
            .await?;
    }
    oc.batch_execute(
        "UPDATE places SET body = 'tampered' WHERE id = 1; DELETE FROM places WHERE id = 2; \
         INSERT INTO places VALUES (999, 'asia', 'extra', 'x', 1, 1, 1, NULL); UPDATE places SET region = 'oceania' WHERE id = 3",
    )
    .await?;
    let other_config = config.with_file_name("other.toml");
    std::fs::write(
        &other_config,
        std::fs::read_to_string(&config)?.replace(&f.db, &other),
    )?;
    let (code, stdout) = verify(&other_config, &ix.url, &["--attempts", "1"])?;
    assert_eq!(code, Some(1), "{stdout}");
    for needle in [
        "key 1 (",
        "different content",
        "key 2 is in partition",
        "key 999 (asia) is missing",
        "key 3 is in partition",
        "4 differences",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
    Ok(())
}

/// `indexer verify` against `url`, with extra arguments: (exit code, stdout).
fn verify(config: &std::path::Path, url: &str, extra: &[&str]) -> Result<(Option<i32>, String)> {
    let out = Command::new(e2e::indexer_bin())
        .args([
            "verify",
            "--config",
            config.to_str().unwrap(),
            "--indexer-url",
            url,
        ])
        .args(extra)
        .output()?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Verify on a live system: a writer rewrites rows as fast as it can throughout, and verify
/// reports no difference (the keys changing while it reads the table are set aside and
/// compared in its next round); rows tampered with behind the change stream (the
/// publication not publishing for a moment) are each found, while the writer runs on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_is_exact_while_a_writer_runs() -> Result<()> {
    let f = Fixture::new().await?;
    f.insert_range(1, 2_000).await?;
    let config = f.config("", "")?;
    let mut ix = Indexer::start(&config, &f.data_dir()).await?;
    ix.wait_ready().await?;
    // The writer keeps to ids 1..=1000; the tampered rows lie above.
    let writer = Writer::start(f.pg, &f.db, 1, 1_000, 11).await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut set_aside = 0;
    for _ in 0..3 {
        // One round: the keys that changed meanwhile are not compared, the others must agree.
        let (code, out) = verify(&config, &ix.url, &["--attempts", "1"])?;
        assert_eq!(code, Some(0), "a false difference under writes:\n{out}");
        set_aside += out
            .split("round 1: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .expect("the round's line");
    }
    assert!(
        set_aside > 0,
        "the writer changed no row during three checks"
    );
    let (code, out) = verify(&config, &ix.url, &[])?;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("equal"), "{out}");
    let txs = writer.stop().await?;

    // Behind the stream's back: four rows made to differ.
    f.client
        .batch_execute(
            "ALTER PUBLICATION search_pub SET (publish = 'truncate');
             UPDATE places SET body = 'tampered' WHERE id = 1500;
             DELETE FROM places WHERE id = 1501;
             INSERT INTO places VALUES (5000, 'asia', 'unseen', 'x', 1, 1, 1, NULL);
             UPDATE places SET region = 'oceania' WHERE id = 1502;
             ALTER PUBLICATION search_pub SET (publish = 'insert, update, delete, truncate');",
        )
        .await?;
    let writer = Writer::start(f.pg, &f.db, 1, 1_000, 12).await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (code, out) = verify(&config, &ix.url, &[])?;
    let more = writer.stop().await?;
    assert_eq!(code, Some(1), "{out}");
    for needle in [
        "key 1500 (",
        "different content",
        "key 1501 is in partition",
        "key 5000 (asia) is missing",
        "key 1502 is in partition",
        "4 differences",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    eprintln!("writer: {txs} + {more} transactions; keys set aside in three one-round checks: {set_aside}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_column() -> Result<()> {
    let f = Fixture::new().await?;
    let good = f.config("", "")?;
    let out = Command::new(e2e::indexer_bin())
        .args(["check-config", "--config", good.to_str().unwrap()])
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = good.with_file_name("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(&good)?
            .replace("text_fields = [\"name\"", "text_fields = [\"nmae\""),
    )?;
    let out = Command::new(e2e::indexer_bin())
        .args(["check-config", "--config", bad.to_str().unwrap()])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("text column \"nmae\" not found in public.places"),
        "{stderr}"
    );

    let typo = good.with_file_name("typo.toml");
    std::fs::write(
        &typo,
        std::fs::read_to_string(&good)?.replace("[apply]", "[apply]\nmax_batch_row = 5"),
    )?;
    let out = Command::new(e2e::indexer_bin())
        .args(["check-config", "--config", typo.to_str().unwrap()])
        .output()?;
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("max_batch_row"),
        "unknown keys are named"
    );

    let wrong_type = good.with_file_name("wrongtype.toml");
    std::fs::write(
        &wrong_type,
        std::fs::read_to_string(&good)?.replace("lat = \"lat\"", "lat = \"name\""),
    )?;
    let out = Command::new(e2e::indexer_bin())
        .args(["check-config", "--config", wrong_type.to_str().unwrap()])
        .output()?;
    assert!(String::from_utf8_lossy(&out.stderr).contains("has type text; it must be numeric"));
    Ok(())
}

/// `LOG_FORMAT=json`: one JSON object per log line (for collectors); an unknown format is
/// refused by name. (An unreachable database makes the command log an error.)
#[test]
fn logs_are_json_lines_when_asked() -> Result<()> {
    let config = e2e::compose::repo().join("config/places.toml");
    let run = |format: &str| {
        Command::new(e2e::indexer_bin())
            .args(["check-config", "--config", config.to_str().unwrap()])
            .env(
                "INDEXER_DATABASE_URL",
                "postgres://postgres@127.0.0.1:1/postgres",
            )
            .env("LOG_FORMAT", format)
            .output()
    };
    let out = run("json")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in:\n{stderr}"));
    let v: serde_json::Value = serde_json::from_str(line)?;
    assert_eq!(v["level"], "ERROR", "{v}");
    assert!(
        v["timestamp"].is_string() && v["fields"]["message"].is_string(),
        "{v}"
    );
    let out = run("xml")?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("LOG_FORMAT=\"xml\""));
    Ok(())
}
