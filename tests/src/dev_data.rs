//! The shared dev data set (../shared/data/dev: 30k GeoNames cities, 384-d MiniLM embeddings,
//! query files with exact answers), loaded into a `places` table with COPY.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};

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

/// The cells of one of [`copy_lines`]' lines: `\N` is NULL, and the escapes `escape` makes
/// are undone.
pub fn cells(line: &str) -> Vec<Option<String>> {
    line.trim_end_matches('\n')
        .split('\t')
        .map(|field| {
            if field == "\\N" {
                return None;
            }
            let mut out = String::with_capacity(field.len());
            let mut chars = field.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('t') => out.push('\t'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some(other) => out.push(other),
                    None => {}
                }
            }
            Some(out)
        })
        .collect()
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

/// Writes an indexer config over the dev `places` table at `url`: its own `slot`, data in
/// `data`, the `[apply]` lines given, and the `[[index]]` lines after name, table and region.
pub fn write_config(
    path: &Path,
    url: &str,
    slot: &str,
    data: &Path,
    apply: &str,
    index: &str,
) -> Result<()> {
    let text = format!(
        "[source]\ndatabase_url = \"{url}\"\npublication = \"p\"\nslot = \"{slot}\"\n\
         [storage]\ndata_dir = \"{}\"\n[apply]\n{apply}\n\
         [[index]]\nname = \"places\"\ntable = \"places\"\nregion = \"region\"\n{index}\n",
        data.display()
    );
    std::fs::write(path, text)?;
    Ok(())
}

/// An indexer's place over the dev `places` table: a fresh directory holding its config
/// (`write_config`, a slot named from a prefix) and its data directory.
pub struct DevShard {
    pub config: PathBuf,
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl DevShard {
    /// Writes the config for the database at `url`, with the `[apply]` and `[[index]]` lines.
    pub fn new(url: &str, slot_prefix: &str, apply: &str, index: &str) -> Result<DevShard> {
        let dir = tempfile::tempdir()?;
        let config = dir.path().join(format!("{slot_prefix}.toml"));
        let data = dir.path().join("data");
        let slot = crate::fixture::uniq_name(slot_prefix);
        write_config(&config, url, &slot, &data, apply, index)?;
        Ok(DevShard {
            config,
            data,
            _dir: dir,
        })
    }

    /// Starts an indexer on it and waits until it serves.
    pub async fn start(&self) -> Result<crate::Indexer> {
        let mut ix = crate::Indexer::start(&self.config, &self.data).await?;
        ix.wait_ready().await?;
        Ok(ix)
    }
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

/// The dev rows as COPY lines (as `copy_lines(true)`), scaled to `target` rows, a chunk at a
/// time: the 30k real rows first (or the first `target` of them), then copies. Copy c of row
/// r: id + c·10⁹; latitude and longitude each moved by a uniform ±0.5° (clamped); name and
/// body unchanged; the embedding by `Scaling`. Seeded xorshift: every run makes the same rows.
pub struct Scaled {
    base: Vec<String>,
    parsed: Vec<(Vec<String>, Vec<f32>)>,
    rng: u64,
    made: usize,
    target: usize,
    scaling: Scaling,
}

/// How a copy's embedding is made from its real row's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scaling {
    /// 0.75 of row r's + 0.25 of a random other row's + uniform ±0.02 noise per dimension,
    /// renormalised: new directions between real ones, not clusters of near-copies.
    Mix,
    /// Row r's + uniform ±0.05 noise, renormalised: tight clusters of near-copies (33 per
    /// real row at 1M), which HNSW links to themselves.
    Perturb,
}

impl Scaling {
    /// `BENCH_SCALING=perturb`, else `Mix`.
    pub fn from_env() -> Scaling {
        match std::env::var("BENCH_SCALING").as_deref() {
            Ok("perturb") => Scaling::Perturb,
            _ => Scaling::Mix,
        }
    }
}

impl Scaled {
    /// `target` rows scaled by mixing embeddings.
    pub fn new(target: usize) -> Result<Scaled> {
        Self::with(target, Scaling::Mix)
    }

    pub fn with(target: usize, scaling: Scaling) -> Result<Scaled> {
        let base = copy_lines(true)?;
        let parsed = base
            .iter()
            .map(|l| {
                let cols: Vec<String> = l
                    .trim_end_matches('\n')
                    .split('\t')
                    .map(str::to_owned)
                    .collect();
                let v: Vec<f32> = cols[8]
                    .trim_matches(|c| c == '{' || c == '}')
                    .split(',')
                    .map(|x| x.parse().unwrap_or(0.0))
                    .collect();
                (cols, v)
            })
            .collect();
        Ok(Scaled {
            base,
            parsed,
            rng: 0x2545_F491_4F6C_DD1D,
            made: 0,
            target,
            scaling,
        })
    }

    pub fn scaling(&self) -> Scaling {
        self.scaling
    }

    fn next(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next (at most) `n` lines; empty when all `target` were made.
    pub fn chunk(&mut self, n: usize) -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n && self.made < self.target {
            let (copy, i) = (self.made / self.base.len(), self.made % self.base.len());
            self.made += 1;
            if copy == 0 {
                out.push(self.base[i].clone());
                continue;
            }
            let other = (self.next() * self.base.len() as f64) as usize % self.base.len();
            let noise: Vec<f64> = (0..self.parsed[i].1.len()).map(|_| self.next()).collect();
            let (dlat, dlon) = (self.next() - 0.5, self.next() - 0.5);
            let (cols, v) = &self.parsed[i];
            let mut w: Vec<f32> = match self.scaling {
                Scaling::Mix => v
                    .iter()
                    .zip(&self.parsed[other].1)
                    .zip(&noise)
                    .map(|((x, y), e)| 0.75 * x + 0.25 * y + ((e - 0.5) * 0.04) as f32)
                    .collect(),
                Scaling::Perturb => v
                    .iter()
                    .zip(&noise)
                    .map(|(x, e)| x + ((e - 0.5) * 0.1) as f32)
                    .collect(),
            };
            let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
            w.iter_mut().for_each(|x| *x /= norm);
            let id: i64 = cols[0].parse()?;
            let lat = (cols[6].parse::<f64>()? + dlat).clamp(-90.0, 90.0);
            let lon = (cols[7].parse::<f64>()? + dlon).clamp(-180.0, 180.0);
            out.push(format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{lat}\t{lon}\t{{{}}}\n",
                id + copy as i64 * 1_000_000_000,
                cols[1],
                cols[2],
                cols[3],
                cols[4],
                cols[5],
                w.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ));
        }
        Ok(out)
    }
}
