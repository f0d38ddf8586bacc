//! docker/docker-compose.yml cannot run here (no Docker): every binary, subcommand, flag, file,
//! variable, port and health check it names is checked against the project instead. The
//! embedded demo runs the same services' commands (it reads them from the file).

use std::collections::HashSet;

use anyhow::{ensure, Context, Result};
use e2e::compose::{self, Service};

/// The string literals of the product's sources: variables read by hand appear there.
fn product_sources() -> Result<String> {
    let mut text = String::new();
    for dir in ["indexer/src", "query-api/src"] {
        let mut stack = vec![compose::repo().join(dir)];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d)? {
                let p = e?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    text += &std::fs::read_to_string(&p)?;
                }
            }
        }
    }
    Ok(text)
}

fn help(bin: &std::path::Path, sub: Option<&str>) -> Result<String> {
    let mut cmd = std::process::Command::new(bin);
    if let Some(s) = sub {
        cmd.arg(s);
    }
    let out = cmd.arg("--help").output()?;
    ensure!(
        out.status.success(),
        "{} {sub:?} --help failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn env<'a>(s: &'a Service, k: &str) -> Option<&'a str> {
    s.environment
        .iter()
        .find(|(x, _)| x == k)
        .map(|(_, v)| v.as_str())
}

fn port(addr: &str) -> &str {
    addr.rsplit(':').next().unwrap_or_default()
}

#[test]
fn the_compose_file_names_only_real_binaries_flags_files_and_variables() -> Result<()> {
    let repo = compose::repo();
    let services = compose::load()?;
    let names: HashSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for want in ["postgres", "migrate", "seed", "indexer", "query-api"] {
        assert!(names.contains(want), "service {want} missing: {names:?}");
    }
    let dockerfile = std::fs::read_to_string(repo.join("docker/Dockerfile"))?;
    assert_eq!(
        dockerfile.matches("\nFROM ").count() + usize::from(dockerfile.starts_with("FROM ")),
        2,
        "multi-stage"
    );
    assert!(dockerfile.contains("cargo build --release"));
    assert!(dockerfile
        .lines()
        .any(|l| l.starts_with("USER ") && !l.contains("root")));
    let sources = product_sources()?;

    for s in &services {
        for (dep, condition) in &s.depends_on {
            let d = services
                .iter()
                .find(|x| &x.name == dep)
                .with_context(|| format!("{} depends on unknown {dep}", s.name))?;
            match condition.as_str() {
                "service_healthy" => assert!(!d.healthcheck.is_empty(), "{dep} has no healthcheck"),
                "service_completed_successfully" | "service_started" => {}
                other => panic!("{}: unknown condition {other:?}", s.name),
            }
        }
        if s.name == "postgres" {
            assert!(
                s.image
                    .as_deref()
                    .is_some_and(|i| i.starts_with("postgres:16")),
                "{s:?}"
            );
            assert!(s.command.iter().any(|a| a == "wal_level=logical"), "{s:?}");
            let init = s
                .volumes
                .iter()
                .find(|v| v.contains("/docker-entrypoint-initdb.d"))
                .context("initdb scripts")?;
            let local = repo.join("docker").join(init.split(':').next().unwrap());
            assert!(
                local.join("10-replication.sh").exists(),
                "{}",
                local.display()
            );
            continue;
        }
        // The project's own image: a real binary, subcommand and flags.
        assert!(s.built, "{} must build the project's image", s.name);
        let bin = match s.command[0].as_str() {
            "indexer" => e2e::indexer_bin(),
            "query-api" => e2e::query_api_bin(),
            other => panic!("{}: unknown binary {other}", s.name),
        };
        let sub = (s.command[0] == "indexer").then(|| s.command[1].as_str());
        let help = help(&bin, sub)?;
        for flag in s.command.iter().filter(|a| a.starts_with("--")) {
            assert!(
                help.contains(flag.as_str()),
                "{}: {flag} is not a flag of {:?}:\n{help}",
                s.name,
                s.command
            );
        }
        for a in &s.command {
            if let Some(p) = compose::repo_path(&repo, a) {
                assert!(
                    p.exists(),
                    "{}: {a} → {} does not exist",
                    s.name,
                    p.display()
                );
                let top = a.trim_start_matches("/app/").split('/').next().unwrap();
                assert!(
                    dockerfile
                        .lines()
                        .any(|l| l.starts_with("COPY ") && l.contains(&format!("/app/{top}"))),
                    "the Dockerfile does not copy {top} to /app"
                );
            }
        }
        for (k, _) in &s.environment {
            assert!(
                help.contains(&format!("[env: {k}=")) || sources.contains(&format!("\"{k}\"")),
                "{}: {k} is read by neither {:?} nor the product's code",
                s.name,
                s.command
            );
        }
    }

    // Addresses agree: health checks and shard URLs use the listening ports, the published
    // port is query-api's, index data lives on a volume.
    let ix = services.iter().find(|s| s.name == "indexer").unwrap();
    let api = services.iter().find(|s| s.name == "query-api").unwrap();
    let ix_port = port(env(ix, "INDEXER_LISTEN").context("INDEXER_LISTEN")?);
    let api_port = port(env(api, "QUERY_API_LISTEN").context("QUERY_API_LISTEN")?);
    assert!(
        ix.healthcheck
            .iter()
            .any(|a| a.contains(&format!(":{ix_port}/healthz"))),
        "{ix:?}"
    );
    assert!(
        api.healthcheck
            .iter()
            .any(|a| a.contains(&format!(":{api_port}/readyz"))),
        "{api:?}"
    );
    assert_eq!(
        env(api, "QUERY_API_SHARDS"),
        Some(format!("http://indexer:{ix_port}").as_str())
    );
    assert!(
        api.ports
            .iter()
            .any(|p| p.ends_with(&format!(":{api_port}"))),
        "{api:?}"
    );
    let data = env(ix, "INDEXER_DATA_DIR").context("INDEXER_DATA_DIR")?;
    assert!(
        ix.volumes
            .iter()
            .any(|v| v.split(':').nth(1).is_some_and(|m| data.starts_with(m))),
        "{data} is not on a volume: {:?}",
        ix.volumes
    );
    // The database URLs name the compose Postgres and its password.
    for s in &services {
        for (k, v) in &s.environment {
            if k.ends_with("DATABASE_URL") {
                assert!(
                    v.starts_with("postgres://postgres:postgres@postgres:5432/"),
                    "{k}={v}"
                );
            }
        }
    }
    Ok(())
}
