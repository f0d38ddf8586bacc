//! Setting up a database for the service: `indexer migrate` applies the SQL files of
//! `migrations/` in order (each once, recorded in `search_migrations`; the files are idempotent
//! too), and `indexer seed` loads the sample places shipped in `data/sample/` with COPY.
//!
//! The sample file is gzipped COPY text (id, region, name, body, population, country_code,
//! lat, lon) plus one last column: the 384-d embedding as base64 of a little-endian f32 scale
//! followed by 384 signed bytes (value = byte × scale), widened to `real[]` at load. 8-bit
//! embeddings keep the repository small (the cosine to the f32 original is > 0.999).

use std::io::BufRead;
use std::path::Path;

use base64::Engine as _;
use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::Client;

use crate::{Error, Result};

/// Applies every `*.sql` file of `dir` not yet recorded, in name order, each in a
/// transaction with its record. Returns the names applied now.
pub async fn migrate(client: &mut Client, dir: &Path) -> Result<Vec<String>> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS search_migrations (
                 name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::Sample(format!("migrations directory {}: {e}", dir.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let mut applied = Vec::new();
    for path in files {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let done = client
            .query_opt("SELECT 1 FROM search_migrations WHERE name = $1", &[&name])
            .await?
            .is_some();
        if done {
            continue;
        }
        let sql = std::fs::read_to_string(&path)
            .map_err(|e| Error::Sample(format!("migration {}: {e}", path.display())))?;
        let tx = client.transaction().await?;
        tx.batch_execute(&sql)
            .await
            .map_err(|e| Error::Sample(format!("migration {name}: {e}")))?;
        tx.execute("INSERT INTO search_migrations (name) VALUES ($1)", &[&name])
            .await?;
        tx.commit().await?;
        applied.push(name);
    }
    Ok(applied)
}

/// Loads the sample file into `table` unless it already has rows. Returns the rows loaded.
pub async fn seed(client: &Client, file: &Path, table: &str) -> Result<u64> {
    let present: i64 = client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await?
        .get(0);
    if present > 0 {
        return Ok(0);
    }
    let gz = std::fs::File::open(file)
        .map_err(|e| Error::Sample(format!("sample file {}: {e}", file.display())))?;
    let sink = client
        .copy_in(&format!(
            "COPY {table} (id, region, name, body, population, country_code, lat, lon, embedding) FROM STDIN"
        ))
        .await?;
    futures_util::pin_mut!(sink);
    let mut chunk = String::new();
    for line in std::io::BufReader::new(flate2::read::GzDecoder::new(gz)).lines() {
        let line = line.map_err(|e| Error::Sample(format!("sample file: {e}")))?;
        let (row, packed) = line
            .rsplit_once('\t')
            .ok_or_else(|| Error::Sample("sample file: a line without columns".into()))?;
        chunk.push_str(row);
        chunk.push('\t');
        chunk.push_str(&widen(packed)?);
        chunk.push('\n');
        if chunk.len() > 1 << 20 {
            sink.send(Bytes::from(std::mem::take(&mut chunk))).await?;
        }
    }
    if !chunk.is_empty() {
        sink.send(Bytes::from(chunk)).await?;
    }
    Ok(sink.finish().await?)
}

/// One packed embedding (base64 of f32 scale + i8 values) as a `real[]` COPY literal.
pub fn widen(packed: &str) -> Result<String> {
    if packed == "\\N" {
        return Ok(packed.to_owned());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(packed)
        .map_err(|e| Error::Sample(format!("sample file: embedding: {e}")))?;
    let (scale, values) = bytes
        .split_first_chunk::<4>()
        .ok_or_else(|| Error::Sample("sample file: embedding too short".into()))?;
    let scale = f32::from_le_bytes(*scale);
    let mut out = String::with_capacity(values.len() * 8 + 2);
    out.push('{');
    for (i, &b) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&(f32::from(b as i8) * scale).to_string());
    }
    out.push('}');
    Ok(out)
}

/// Packs an embedding for the sample file: a per-vector scale so the largest magnitude is 127.
pub fn pack(values: &[f32]) -> String {
    let max = values.iter().fold(0f32, |m, v| m.max(v.abs()));
    let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
    let mut bytes = scale.to_le_bytes().to_vec();
    bytes.extend(
        values
            .iter()
            .map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8),
    );
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_embeddings_keep_their_direction() {
        let v: Vec<f32> = (0..384)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let text = widen(&pack(&v)).unwrap();
        let w: Vec<f32> = text
            .trim_matches(|c| c == '{' || c == '}')
            .split(',')
            .map(|x| x.parse().unwrap())
            .collect();
        let dot: f32 = v.iter().zip(&w).map(|(a, b)| a * b).sum();
        let norm = |x: &[f32]| x.iter().map(|a| a * a).sum::<f32>().sqrt();
        let cos = dot / (norm(&v) * norm(&w));
        assert!(cos > 0.999, "{cos}");
        assert_eq!(widen("\\N").unwrap(), "\\N");
        assert!(widen("!!").is_err());
    }
}
