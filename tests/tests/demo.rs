//! The README's first command, non-interactively: the demo (real sample data, migrations and
//! seed through the product's own commands, indexer, query-api, live writer) comes up, every
//! example it prints returns a sensible answer, the search page works in a real headless
//! Chromium (and leaves target/screenshots/search-page.png); Ctrl-C stops it cleanly.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use serde_json::Value;

fn hits(v: &Value) -> usize {
    v["hits"].as_array().map_or(0, Vec::len)
}

/// What a sensible answer to each printed example is.
fn check(label: &str, out: &str) -> Result<()> {
    if label.starts_with("compare the index") {
        ensure!(out.contains("\nequal\n"), "{out}");
        return Ok(());
    }
    if label.starts_with("the change feed") {
        ensure!(out.contains("event: start"), "{out}");
        // The live writer changes rows several times a second.
        ensure!(out.contains("event: change"), "no change within 5 s: {out}");
        return Ok(());
    }
    let v: Value = serde_json::from_str(out).with_context(|| format!("not JSON: {out}"))?;
    ensure!(v.get("error").is_none(), "{v}");
    match label {
        l if l.starts_with("status") => {
            ensure!(v["shards"][0]["reachable"] == true, "{v}");
            ensure!(
                v["shards"][0]["partitions"].as_array().map_or(0, Vec::len) >= 6,
                "{v}"
            );
        }
        l if l.starts_with("the OpenAPI") => ensure!(v["paths"].is_object(), "{v}"),
        l if l.starts_with("the indexer's own status") => {
            ensure!(
                v["stream"] == "streaming" && v["applied_lsn"].is_string(),
                "{v}"
            )
        }
        l if l.starts_with("read your own write") => {
            ensure!(v["hits"][0]["key"] == "999999", "{v}")
        }
        l if l.starts_with("full text,") => {
            ensure!(hits(&v) > 0, "{v}");
            ensure!(v["hits"][0]["fields"]["name"] == "Tokyo", "{v}");
        }
        "full text" => {
            ensure!(v["hits"][0]["fields"]["name"] == "Amsterdam", "{v}")
        }
        l if l.starts_with("within 50 km") => {
            ensure!(hits(&v) == 5, "{v}");
            ensure!(
                v["hits"][0]["distance_m"]
                    .as_f64()
                    .is_some_and(|d| d < 50_000.0),
                "{v}"
            );
        }
        l if l.starts_with("vector") => {
            ensure!(hits(&v) == 5, "{v}");
            ensure!(
                v["hits"][0]["fields"]["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("Paris")),
                "{v}"
            );
        }
        l if l.starts_with("hybrid") => {
            ensure!(hits(&v) == 5 && v["hits"][0]["ranks"].is_object(), "{v}")
        }
        l if l.starts_with("filter") => {
            ensure!(hits(&v) == 3, "{v}");
            ensure!(
                v["facets"]["country_code"]
                    .as_array()
                    .is_some_and(|f| !f.is_empty()),
                "{v}"
            );
        }
        _ => ensure!(hits(&v) > 0, "{label}: {v}"),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_comes_up_and_every_printed_example_answers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let examples = dir.path().join("examples.tsv");
    let log = dir.path().join("demo.log");
    let logs = dir.path().join("logs");
    let mut demo = tokio::process::Command::new(env!("CARGO_BIN_EXE_demo"))
        .args(["--examples-file", examples.to_str().unwrap()])
        .args(["--log-dir", logs.to_str().unwrap()])
        .env_remove("DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.path().join("demo.out"))?)
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()?;
    let lines = e2e::eventually("the demo's examples", Duration::from_secs(300), || {
        let (examples, log) = (examples.clone(), log.clone());
        let exited = demo.try_wait().ok().flatten();
        async move {
            if let Some(status) = exited {
                anyhow::bail!(
                    "the demo exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            Ok(std::fs::read_to_string(&examples).ok())
        }
    })
    .await?;
    let printed = std::fs::read_to_string(dir.path().join("demo.out"))?;
    assert!(
        printed.contains("/ in a browser: the search page"),
        "the demo names the search page: {printed}"
    );
    let mut n = 0;
    for line in lines.lines() {
        let (label, cmd) = line.split_once('\t').context("label<TAB>command")?;
        // What the user sees is what the test runs.
        assert!(printed.contains(cmd), "{cmd} is not printed as is");
        let out = tokio::process::Command::new("bash")
            .args(["-c", cmd])
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        check(label, &stdout).with_context(|| format!("{label}: {cmd}"))?;
        n += 1;
    }
    assert_eq!(n, 13, "{lines}");

    let api = printed
        .split("the public API is ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .context("the API address")?;
    ranks_as_a_user_expects(api).await?;

    // The search page in a real headless browser: a query, the live writer's changes through
    // the change stream, a click on the world plot; the screenshot stays in target/.
    let shot = e2e::compose::repo().join("target/screenshots/search-page.png");
    std::fs::create_dir_all(shot.parent().unwrap())?;
    let _ = std::fs::remove_file(&shot);
    let report = e2e::browser::run("search_page.cjs", &[api, shot.to_str().unwrap()]).await?;
    assert!(
        report.contains("live rows found through the page"),
        "{report}"
    );
    eprintln!("{report}screenshot: {}", shot.display());
    assert!(
        std::fs::metadata(&shot)?.len() > 10_000,
        "{}",
        shot.display()
    );

    // Ctrl-C: everything stops.
    let pid = demo.id().context("demo pid")?;
    std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(60), demo.wait()).await??;
    assert!(status.success(), "{}", std::fs::read_to_string(&log)?);
    let said = std::fs::read_to_string(&log)?;
    assert!(said.contains("demo: stopping"));
    // The logs: named at start, plain text, kept after Ctrl-C.
    assert!(
        said.contains(&format!("demo: logs in {}", logs.display())),
        "{said}"
    );
    for (file, needle) in [
        ("indexer.log", "snapshot"),
        ("query-api.log", "listening"),
        ("postgres.log", ""),
    ] {
        let text = std::fs::read_to_string(logs.join(file))
            .with_context(|| format!("{file} kept after Ctrl-C"))?;
        assert!(text.contains(needle), "{file}: {text}");
        assert!(!text.contains('\u{1b}'), "{file} has terminal escapes");
    }
    Ok(())
}

/// The demo's ranking (`ranking` in config/places.toml: the name field's full matches first,
/// then BM25 plus population) on the sample's real places: top hits a user expects.
async fn ranks_as_a_user_expects(api: &str) -> Result<()> {
    let http = reqwest::Client::new();
    let search = |body: Value| {
        let req = http
            .post(format!("{api}/v1/indexes/places/search"))
            .json(&body);
        async move {
            let v: Value = req.send().await?.json().await?;
            ensure!(v.get("error").is_none(), "{v}");
            anyhow::Ok(v)
        }
    };
    let lenient = |q: &str| serde_json::json!({"text": {"q": q, "typo": "auto", "prefix": "last"}});
    for (body, name, country) in [
        (serde_json::json!({"q": "東京"}), "Tokyo", "JP"),
        (serde_json::json!({"q": "paris"}), "Paris", "FR"),
        (lenient("amster"), "Amsterdam", "NL"),
        (lenient("amsterdm"), "Amsterdam", "NL"),
        (lenient("pari"), "Paris", "FR"),
    ] {
        let v = search(body.clone()).await?;
        let top = &v["hits"][0]["fields"];
        ensure!(
            top["name"] == name && top["country_code"] == country,
            "{body}: top hit {top}, want {name} ({country})"
        );
    }
    // Seven Springfields of the United States: the most populous first (the rest by BM25 plus
    // popularity: their texts differ, so close populations may swap).
    let v = search(serde_json::json!({"q": "springfield", "limit": 10})).await?;
    let springfields: Vec<i64> = v["hits"]
        .as_array()
        .context("hits")?
        .iter()
        .filter(|h| h["fields"]["name"] == "Springfield")
        .map(|h| h["fields"]["population"].as_i64().unwrap_or(0))
        .collect();
    ensure!(springfields.len() >= 5, "{v}");
    ensure!(
        springfields.iter().all(|p| *p <= springfields[0]),
        "Springfields by population: {springfields:?}"
    );
    // Without the prefix, "amster" is no word of any place.
    let v = search(serde_json::json!({"q": "amster"})).await?;
    ensure!(hits(&v) == 0, "{v}");
    Ok(())
}

/// Runs `indexer <args>` with `DATABASE_URL`, returning its output.
fn indexer(url: &str, args: &[&str]) -> Result<String> {
    let out = std::process::Command::new(e2e::indexer_bin())
        .args(args)
        .env("DATABASE_URL", url)
        .output()?;
    ensure!(
        out.status.success(),
        "indexer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_and_seed_are_idempotent_and_the_sample_is_faithful() -> Result<()> {
    let pg = e2e::PgServer::shared();
    let db = pg.fresh_db().await?;
    let url = pg.url(&db);
    let repo = e2e::compose::repo();
    let migrations = repo.join("migrations");
    let sample = repo.join("data/sample/places.tsv.gz");
    let first = indexer(&url, &["migrate", "--dir", migrations.to_str().unwrap()])?;
    assert!(first.contains("applied 0001_places.sql"), "{first}");
    assert!(first.contains("applied 0002_publication.sql"), "{first}");
    let again = indexer(&url, &["migrate", "--dir", migrations.to_str().unwrap()])?;
    assert!(again.contains("up to date"), "{again}");
    // The files themselves are idempotent too (re-run by hand, or after a lost record).
    let client = pg.connect(&db).await?;
    for f in ["0001_places.sql", "0002_publication.sql"] {
        client
            .batch_execute(&std::fs::read_to_string(migrations.join(f))?)
            .await?;
    }
    let loaded = indexer(&url, &["seed", "--file", sample.to_str().unwrap()])?;
    assert!(loaded.contains("loaded 30000 rows"), "{loaded}");
    let skipped = indexer(&url, &["seed", "--file", sample.to_str().unwrap()])?;
    assert!(skipped.contains("nothing loaded"), "{skipped}");
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM places WHERE array_length(embedding, 1) = 384",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(n, 30_000);
    let published: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_publication_tables WHERE pubname = 'search_pub' AND tablename = 'places'",
            &[],
        )
        .await?
        .get(0);
    assert_eq!(published, 1);

    // Against the original float32 rows (when the shared dev set is here): same rows, same
    // text, embeddings within cosine 0.999.
    if e2e::dev_data::dir().is_some() {
        let originals = e2e::dev_data::copy_lines(true)?;
        let mut worst = 1.0f64;
        for line in originals.iter().step_by(97) {
            let cols: Vec<&str> = line.trim_end().split('\t').collect();
            let id: i64 = cols[0].parse()?;
            let row = client
                .query_one("SELECT name, embedding FROM places WHERE id = $1", &[&id])
                .await?;
            let name: String = row.get(0);
            let got: Vec<f32> = row.get(1);
            assert_eq!(name, cols[2].replace("\\t", "\t").replace("\\\\", "\\"));
            let want: Vec<f64> = cols[8]
                .trim_matches(|c| c == '{' || c == '}')
                .split(',')
                .map(|x| x.parse().unwrap())
                .collect();
            let dot: f64 = want.iter().zip(&got).map(|(a, b)| a * f64::from(*b)).sum();
            let norm = |x: &mut dyn Iterator<Item = f64>| x.map(|a| a * a).sum::<f64>().sqrt();
            let cos = dot
                / (norm(&mut want.iter().copied()) * norm(&mut got.iter().map(|&b| f64::from(b))));
            worst = worst.min(cos);
        }
        assert!(worst > 0.999, "worst cosine {worst}");
        eprintln!("sample embeddings: worst cosine to the originals {worst:.6}");
    }
    Ok(())
}
