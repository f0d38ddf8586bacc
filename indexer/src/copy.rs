//! Reading tables with `COPY ... TO STDOUT` (text format): the snapshot and `verify` both
//! read rows this way, so values arrive in the same text form as pgoutput sends them.

use std::pin::Pin;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use crate::catalog::ResolvedIndex;
use crate::error::{Error, Result};
use engine::document::RawRow;

/// Batches of rows from one `COPY` of a configured table.
pub struct CopyRows {
    stream: Pin<Box<CopyOutStream>>,
    parser: CopyTextParser,
    done: bool,
}

impl CopyRows {
    pub async fn start(client: &Client, ix: &ResolvedIndex) -> Result<CopyRows> {
        let sql = format!(
            "COPY {} ({}) TO STDOUT",
            crate::catalog::qualified_table(ix),
            crate::catalog::column_list(ix)
        );
        let stream = client.copy_out(&sql).await?;
        Ok(CopyRows {
            stream: Box::pin(stream),
            parser: CopyTextParser::new(ix.columns.len()),
            done: false,
        })
    }

    /// The next rows (at least one, about `batch`), or `None` at the end.
    pub async fn next_batch(&mut self, batch: usize) -> Result<Option<Vec<RawRow>>> {
        let mut out = Vec::with_capacity(batch);
        while !self.done && out.len() < batch {
            match self.stream.next().await {
                Some(chunk) => {
                    let chunk: Bytes = chunk?;
                    self.parser
                        .feed(&chunk, &mut out)
                        .map_err(Error::Protocol)?;
                }
                None => {
                    self.done = true;
                    self.parser.finish().map_err(Error::Protocol)?;
                }
            }
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }
}

/// Incremental parser of Postgres' COPY text format (tab-separated, `\N` for NULL,
/// backslash escapes), tolerant of chunks that split rows anywhere.
pub struct CopyTextParser {
    columns: usize,
    pending: Vec<u8>,
}

impl CopyTextParser {
    pub fn new(columns: usize) -> Self {
        CopyTextParser {
            columns,
            pending: Vec::new(),
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<RawRow>) -> Result<(), String> {
        self.pending.extend_from_slice(chunk);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let line = &self.pending[start..start + nl];
            out.push(parse_line(line, self.columns)?);
            start += nl + 1;
        }
        self.pending.drain(..start);
        Ok(())
    }

    pub fn finish(&self) -> Result<(), String> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "copy data ends in a partial row of {} bytes",
                self.pending.len()
            ))
        }
    }
}

fn parse_line(line: &[u8], columns: usize) -> Result<RawRow, String> {
    let mut row = Vec::with_capacity(columns);
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            row.push(None);
        } else {
            row.push(Some(unescape(field)?));
        }
    }
    if row.len() != columns {
        return Err(format!(
            "copy row has {} columns, expected {columns}",
            row.len()
        ));
    }
    Ok(row)
}

fn unescape(field: &[u8]) -> Result<String, String> {
    if !field.contains(&b'\\') {
        return Ok(String::from_utf8_lossy(field).into_owned());
    }
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        let b = field[i];
        if b != b'\\' {
            out.push(b);
            i += 1;
            continue;
        }
        let Some(&e) = field.get(i + 1) else {
            return Err("copy field ends in a lone backslash".into());
        };
        i += 2;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                let mut n = 1;
                while n < 3 {
                    match field.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                            n += 1;
                        }
                        _ => break,
                    }
                }
                out.push((v & 0xff) as u8);
            }
            b'x' => {
                let mut v = 0u32;
                let mut n = 0;
                while n < 2 {
                    match field.get(i).and_then(|d| (*d as char).to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            i += 1;
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 {
                    out.push(b'x');
                } else {
                    out.push(v as u8);
                }
            }
            other => out.push(other),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn escape(s: &str) -> String {
        let mut o = String::new();
        for c in s.chars() {
            match c {
                '\\' => o.push_str("\\\\"),
                '\n' => o.push_str("\\n"),
                '\r' => o.push_str("\\r"),
                '\t' => o.push_str("\\t"),
                c => o.push(c),
            }
        }
        o
    }

    #[test]
    fn parses_nulls_and_escapes() {
        let mut p = CopyTextParser::new(3);
        let mut out = Vec::new();
        p.feed(b"1\t\\N\ta\\tb\\\\c\\nd\\101\\x41\n", &mut out)
            .unwrap();
        assert_eq!(
            out,
            vec![vec![Some("1".into()), None, Some("a\tb\\c\ndAA".into())]]
        );
    }

    #[test]
    fn wrong_column_count_is_an_error() {
        let mut p = CopyTextParser::new(2);
        assert!(p.feed(b"1\n", &mut Vec::new()).is_err());
    }

    proptest! {
        #[test]
        fn any_split_of_any_rows_round_trips(
            rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(".*"), 3), 0..8),
            split in any::<prop::sample::Index>(),
        ) {
            let mut text = String::new();
            for r in &rows {
                let fields: Vec<String> = r.iter().map(|v| match v { None => "\\N".into(), Some(s) => escape(s) }).collect();
                text.push_str(&fields.join("\t"));
                text.push('\n');
            }
            let bytes = text.as_bytes();
            let at = if bytes.is_empty() { 0 } else { split.index(bytes.len()) };
            let mut p = CopyTextParser::new(3);
            let mut out = Vec::new();
            p.feed(&bytes[..at], &mut out).unwrap();
            p.feed(&bytes[at..], &mut out).unwrap();
            p.finish().unwrap();
            prop_assert_eq!(out, rows);
        }
    }
}
