//! `scripts/soak`: kill rounds under a random writer, Postgres restarts, a slot invalidated
//! while the indexer is stalled, a full disk (as root), then verify (`e2e::soak`). Prints a
//! summary; exits 1 when the index differs from the table.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};

fn options() -> Result<e2e::soak::Options> {
    let mut opts = e2e::soak::Options {
        rounds: 20,
        rows: 45_000,
        seed: 0x5EED_50AC,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => opts.rounds = value()?.parse()?,
            "--rows" => opts.rows = value()?.parse()?,
            "--seed" => opts.seed = value()?.parse()?,
            other => bail!("unknown argument {other}: --rounds N --rows N --seed N"),
        }
    }
    Ok(opts)
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let opts = options()?;
    eprintln!(
        "soak: {} rounds over {} rows (seed {}); takes a few minutes",
        opts.rounds, opts.rows, opts.seed
    );
    let summary = e2e::soak::soak(&opts).await?;
    println!("{summary}");
    Ok(if summary.equal() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
