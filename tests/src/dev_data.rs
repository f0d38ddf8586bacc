//! The shared dev data set (../shared/data/dev: 30k GeoNames cities, 384-d MiniLM embeddings,
//! query files with exact answers), loaded into a `places` table with COPY.

use std::io::{BufRead, Read};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

pub const PLACES: &str = "CREATE TABLE places (id bigint PRIMARY KEY, region text NOT NULL, name text, body text, \
    population bigint, country_code text, lat double precision, lon double precision, embedding real[])";

/// `$BENCH_DATA`, else ../shared/data/dev beside the checkout, when it exists.
pub fn dir() -> Option<PathBuf> {
    let dir = std::env::var("BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/dev")
        });
    dir.join("rows.jsonl.gz").exists().then_some(dir)
}

/// The data directory, or a clear failure under CI (where it must exist) and `None` elsewhere.
pub fn require() -> Option<PathBuf> {
    match dir() {
        Some(d) => Some(d),
        None if std::env::var("CI").is_ok() => panic!("../shared/data/dev is missing"),
        None => {
            eprintln!("SKIPPED: ../shared/data/dev not found (set BENCH_DATA)");
            None
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

/// The dev rows as COPY text lines (id, region, name, body, population, country_code, lat,
/// lon, embedding); the embedding is NULL unless `embeddings`.
pub fn copy_lines(embeddings: bool) -> Result<Vec<String>> {
    let dir = dir().context("../shared/data/dev not found")?;
    let gz = std::fs::File::open(dir.join("rows.jsonl.gz"))?;
    let mut npy = Vec::new();
    if embeddings {
        std::fs::File::open(dir.join("embeddings.f32.npy"))?.read_to_end(&mut npy)?;
        // .npy v1: magic(6) version(2) header_len(u16 LE) header, then little-endian f32.
        if npy.get(..6) != Some(b"\x93NUMPY".as_slice()) {
            bail!("embeddings.f32.npy is not a .npy file");
        }
    }
    let data = if embeddings {
        let header_len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        &npy[10 + header_len..]
    } else {
        &[][..]
    };
    let dim = 384;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(flate2::read::GzDecoder::new(gz))
        .lines()
        .enumerate()
    {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let emb = if embeddings {
            let vals: Vec<String> = (0..dim)
                .map(|j| {
                    let o = (i * dim + j) * 4;
                    f32::from_le_bytes(data[o..o + 4].try_into().unwrap()).to_string()
                })
                .collect();
            format!("{{{}}}", vals.join(","))
        } else {
            "\\N".to_owned()
        };
        out.push(format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            v["id"],
            escape(v["region"].as_str().unwrap_or("")),
            escape(v["title"].as_str().unwrap_or("")),
            escape(v["body"].as_str().unwrap_or("")),
            v["population"]
                .as_i64()
                .map(|p| p.to_string())
                .unwrap_or_else(|| "\\N".into()),
            escape(v["country_code"].as_str().unwrap_or("")),
            v["lat"],
            v["lon"],
            emb
        ));
    }
    Ok(out)
}

/// Creates `places` and COPYs the dev rows into it; returns the row count.
pub async fn load(client: &Client, embeddings: bool) -> Result<usize> {
    let lines = copy_lines(embeddings)?;
    client.batch_execute(PLACES).await?;
    let sink = client.copy_in("COPY places FROM STDIN").await?;
    futures_util::pin_mut!(sink);
    for chunk in lines.chunks(1000) {
        sink.send(Bytes::from(chunk.concat())).await?;
    }
    sink.finish().await?;
    client.batch_execute("ANALYZE places").await?;
    Ok(lines.len())
}

/// One JSON object per line of a query file.
pub fn queries(file: &str) -> Result<Vec<serde_json::Value>> {
    let dir = dir().context("../shared/data/dev not found")?;
    let text = std::fs::read_to_string(dir.join(file))?;
    text.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}
