//! The README's commands, as a user pastes them: every fenced shell block of the README that
//! runs the product (the indexer's commands, query-api, read-your-own-write) is run in order
//! by bash, from a directory laid out like the checkout, against a fresh database. Only two
//! edits are made, the ones a reader makes: the database URL in the `export` line is this
//! test's server, and the two long-running commands go to the background (the README says to
//! run what follows in another shell). The rest is skipped, each with its reason:
//! `scripts/demo` and `scripts/test` (the demo test and CI run them), `docker compose` (no
//! Docker here: `compose.rs` checks the file), the benchmark programs (minutes each), and
//! blocks that are not shell (TOML).

use std::time::Duration;

use anyhow::{ensure, Context, Result};

/// The README's fenced shell blocks, in order.
fn shell_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_start().strip_prefix("```")) {
            (None, Some(lang)) => {
                current = (lang == "sh" || lang == "bash").then(String::new);
                if current.is_none() {
                    // A block in another language: skip to its end.
                    current = Some("\u{0}".into());
                }
            }
            (Some(_), Some(_)) => {
                let block = current.take().expect("open");
                if !block.starts_with('\u{0}') {
                    blocks.push(block);
                }
            }
            (Some(block), None) => {
                block.push_str(line);
                block.push('\n');
            }
            (None, None) => {}
        }
    }
    blocks
}

/// Whether a block runs the product (else: why not here).
fn runs_here(block: &str) -> Result<(), &'static str> {
    if block.contains("scripts/demo") || block.contains("scripts/test") {
        Err("the README's two commands: the demo test and CI run them")
    } else if block.contains("docker compose") {
        Err("no Docker on this machine: compose.rs checks the file")
    } else if block.contains("bench_") {
        Err("benchmark programs: minutes each")
    } else {
        Ok(())
    }
}

/// The block as a reader runs it: the `export DATABASE_URL=` line names `url`, and the
/// commands that run until stopped go to the background, waited for until they answer.
fn as_run(block: &str, url: &str) -> String {
    let mut script = String::new();
    for line in block.lines() {
        let command = line.split(" #").next().unwrap_or("").trim_end();
        if command.starts_with("export DATABASE_URL=") {
            script.push_str(&format!("export DATABASE_URL='{url}'\n"));
        } else if command.contains("indexer run ") {
            script.push_str(&format!(
                "{command} > indexer.log 2>&1 &\n\
                 for i in $(seq 600); do curl -sf http://127.0.0.1:7070/healthz >/dev/null && break; sleep 0.2; done\n"
            ));
        } else if command.contains("target/release/query-api ") {
            script.push_str(&format!(
                "{command} > query-api.log 2>&1 &\n\
                 for i in $(seq 300); do curl -sf http://127.0.0.1:8080/healthz >/dev/null && break; sleep 0.2; done\n"
            ));
        } else {
            script.push_str(line);
            script.push('\n');
        }
    }
    script
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_readme_command_works_as_written() -> Result<()> {
    let repo = e2e::compose::repo();
    let readme = std::fs::read_to_string(repo.join("README.md"))?;
    let pg = e2e::PgServer::shared();
    let db = pg.fresh_db().await?;
    let url = pg.url(&db);

    // A directory laid out like the checkout: its config, migrations and sample; the built
    // binaries where the README names them; the index data lands here (./data/indexer).
    let dir = tempfile::tempdir()?;
    let at = dir.path();
    for link in ["config", "migrations"] {
        std::os::unix::fs::symlink(repo.join(link), at.join(link))?;
    }
    std::fs::create_dir_all(at.join("data"))?;
    std::os::unix::fs::symlink(repo.join("data/sample"), at.join("data/sample"))?;
    std::fs::create_dir_all(at.join("target"))?;
    let bins = e2e::indexer_bin()
        .parent()
        .context("the binaries' directory")?
        .to_owned();
    std::os::unix::fs::symlink(&bins, at.join("target/release"))?;

    let mut script =
        String::from("set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait' EXIT\nKEY=''\n");
    let mut ran = Vec::new();
    for block in shell_blocks(&readme) {
        match runs_here(&block) {
            Ok(()) => {
                ran.push(block.lines().next().unwrap_or("").to_owned());
                script.push_str(&as_run(&block, &url));
            }
            Err(why) => eprintln!("skipped ({why}): {}", block.lines().next().unwrap_or("")),
        }
    }
    ensure!(ran.len() >= 3, "the README's command blocks: {ran:?}");
    let path = std::env::var("PATH").unwrap_or_default();
    let out = tokio::time::timeout(
        Duration::from_secs(600),
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(at)
            .env_remove("DATABASE_URL")
            .env_remove("INDEXER_DATABASE_URL")
            .env("PATH", format!("{}:{path}", e2e::pg_bin_dir()?.display()))
            .output(),
    )
    .await??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let logs = ["indexer.log", "query-api.log"]
        .map(|f| std::fs::read_to_string(at.join(f)).unwrap_or_default());
    // Whatever happened, the slot the config names is not left holding WAL on the shared server.
    let client = pg.connect(&db).await?;
    for _ in 0..50 {
        let gone = client
            .query_opt(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = current_database()",
                &[],
            )
            .await;
        if gone.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ensure!(
        out.status.success(),
        "the README's commands failed:\n{stdout}\n{}\nindexer: {}\nquery-api: {}",
        String::from_utf8_lossy(&out.stderr),
        logs[0],
        logs[1]
    );
    // What each step says it did.
    for said in [
        "migrations: applied 0001_places.sql",
        "seed: loaded 30000 rows into places",
        "config ok",
        "\nequal\n",
        "Zorbville",
    ] {
        ensure!(stdout.contains(said), "missing {said:?} in:\n{stdout}");
    }
    ensure!(
        at.join("data/indexer").is_dir(),
        "the index data is where the config says"
    );
    Ok(())
}
