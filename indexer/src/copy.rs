//! Reading tables with `COPY (SELECT ...) TO STDOUT (FORMAT binary)`: the snapshot and
//! `verify` both read rows this way. Every column but the vector is selected as its type's
//! text output (`format('%s', c)`: the same text pgoutput sends), so binary framing only
//! saves escaping; the vector column comes in its binary send format, so no float is printed
//! by Postgres or parsed here (that was most of a snapshot's cost with 384-d vectors).

use std::pin::Pin;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio_postgres::{Client, CopyOutStream};

use crate::catalog::{quote_ident, ResolvedIndex};
use crate::error::{Error, Result};
use engine::document::Row;
use engine::schema::VectorType;

/// Batches of rows from one `COPY` of a configured table.
pub struct CopyRows {
    stream: Pin<Box<CopyOutStream>>,
    parser: CopyBinaryParser,
    done: bool,
}

/// Which rows a COPY reads, in which order.
#[derive(Clone, Copy, Debug)]
pub enum Range<'a> {
    /// Every row, in the order Postgres finds them.
    All,
    /// In primary-key order, after this key and up to that one when given (each key
    /// column's text form): a copy that stops can go on from the last key it delivered.
    KeyOrder {
        after: Option<&'a [String]>,
        upto: Option<&'a [String]>,
    },
}

impl CopyRows {
    pub async fn start(client: &Client, ix: &ResolvedIndex, range: Range<'_>) -> Result<CopyRows> {
        let stream = client.copy_out(&copy_sql(ix, range)).await?;
        Ok(CopyRows {
            stream: Box::pin(stream),
            parser: CopyBinaryParser::new(
                ix.columns.len(),
                ix.vector.map(|v| (v.column, v.sql_type)),
            ),
            done: false,
        })
    }

    /// The next rows (at least one, about `batch`), or `None` at the end.
    pub async fn next_batch(&mut self, batch: usize) -> Result<Option<Vec<Row>>> {
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

/// The COPY statement: the configured columns in order, each as text but the vector. COPY
/// takes no parameters, so a key to start after is written as quoted literals; they are
/// Postgres's own output of the key columns (the untyped literal takes the column's type).
fn copy_sql(ix: &ResolvedIndex, range: Range<'_>) -> String {
    let vector = ix.vector.map(|v| v.column);
    let columns: Vec<String> = ix
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let c = quote_ident(c);
            if Some(i) == vector {
                c
            } else {
                // `format` prints with the type's output function (a cast to text may not:
                // `true::text` is 'true', the output is 't'); it prints NULL as ''.
                format!("CASE WHEN {c} IS NULL THEN NULL ELSE format('%s', {c}) END")
            }
        })
        .collect();
    let mut tail = String::new();
    if let Range::KeyOrder { after, upto } = range {
        let key: Vec<String> = ix.pk.iter().map(|&p| quote_ident(&ix.columns[p])).collect();
        let key = key.join(", ");
        let literals = |values: &[String]| -> String {
            let values: Vec<String> = values.iter().map(|v| escaped_literal(v)).collect();
            values.join(", ")
        };
        let mut conditions = Vec::new();
        if let Some(after) = after {
            conditions.push(format!("({key}) > ({})", literals(after)));
        }
        if let Some(upto) = upto {
            conditions.push(format!("({key}) <= ({})", literals(upto)));
        }
        if !conditions.is_empty() {
            tail += &format!(" WHERE {}", conditions.join(" AND "));
        }
        tail += &format!(" ORDER BY {key}");
    }
    format!(
        "COPY (SELECT {} FROM {}{tail}) TO STDOUT (FORMAT binary)",
        columns.join(", "),
        crate::catalog::qualified_table(ix)
    )
}

/// A string literal whatever `standard_conforming_strings` says: `E'...'` with backslashes
/// and quotes doubled.
fn escaped_literal(v: &str) -> String {
    format!("E'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// Incremental parser of Postgres' binary COPY format (a header; per row a field count,
/// then each field's length, -1 for NULL, and bytes; a trailer of -1), tolerant of chunks
/// that split it anywhere.
pub struct CopyBinaryParser {
    columns: usize,
    vector: Option<(usize, VectorType)>,
    pending: Vec<u8>,
    header: bool,
    ended: bool,
}

/// A big-endian reader over a byte slice; `None` when it runs out.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

impl CopyBinaryParser {
    pub fn new(columns: usize, vector: Option<(usize, VectorType)>) -> Self {
        CopyBinaryParser {
            columns,
            vector,
            pending: Vec::new(),
            header: false,
            ended: false,
        }
    }

    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Row>) -> Result<(), String> {
        self.pending.extend_from_slice(chunk);
        let mut c = Cursor {
            bytes: &self.pending,
            at: 0,
        };
        if !self.header {
            let Some(fixed) = c.take(SIGNATURE.len() + 8) else {
                return Ok(());
            };
            if &fixed[..SIGNATURE.len()] != SIGNATURE {
                return Err("copy data is not in the binary format".into());
            }
            let ext = &fixed[SIGNATURE.len() + 4..];
            let ext = u32::from_be_bytes([ext[0], ext[1], ext[2], ext[3]]) as usize;
            if c.take(ext).is_none() {
                return Ok(());
            }
            self.header = true;
        }
        let mut done = c.at;
        while !self.ended {
            match self.row(&mut c)? {
                Some(Some(row)) => out.push(row),
                Some(None) => self.ended = true,
                None => break,
            }
            done = c.at;
        }
        self.pending.drain(..done);
        Ok(())
    }

    /// One row; `Some(None)` at the trailer; `None` when the row is not complete yet.
    fn row(&self, c: &mut Cursor) -> Result<Option<Option<Row>>, String> {
        let Some(n) = c.i16() else { return Ok(None) };
        if n == -1 {
            return Ok(Some(None));
        }
        if n as usize != self.columns {
            return Err(format!(
                "copy row has {n} columns, expected {}",
                self.columns
            ));
        }
        let mut row = Row {
            raw: Vec::with_capacity(self.columns),
            vector: None,
        };
        for i in 0..self.columns {
            let Some(len) = c.i32() else { return Ok(None) };
            if len < 0 {
                row.raw.push(None);
                continue;
            }
            let Some(bytes) = c.take(len as usize) else {
                return Ok(None);
            };
            match self.vector {
                Some((at, ty)) if at == i => match decode_vector(bytes, ty)? {
                    Vector::Floats(v) => {
                        row.raw.push(None);
                        row.vector = Some(v);
                    }
                    Vector::Text(t) => row.raw.push(Some(t)),
                },
                _ => row
                    .raw
                    .push(Some(String::from_utf8_lossy(bytes).into_owned())),
            }
        }
        Ok(Some(Some(row)))
    }

    pub fn finish(&self) -> Result<(), String> {
        match (self.ended, self.pending.len()) {
            (true, 0) => Ok(()),
            (true, n) => Err(format!("{n} bytes of copy data after its end")),
            (false, n) => Err(format!(
                "copy data ends without its trailer ({n} bytes of a partial row)"
            )),
        }
    }
}

/// A vector value in binary: its floats, or (an array with NULL elements or several
/// dimensions, which no index takes) the text Postgres would print, for the rejection.
#[derive(Debug, PartialEq)]
enum Vector {
    Floats(Vec<f32>),
    Text(String),
}

/// Decodes `array_send` (`real[]`, `double precision[]`) or pgvector's `vector_send`.
fn decode_vector(bytes: &[u8], ty: VectorType) -> Result<Vector, String> {
    let bad = || {
        format!(
            "vector value of {} bytes is not a valid {ty:?}",
            bytes.len()
        )
    };
    let mut c = Cursor { bytes, at: 0 };
    if ty == VectorType::Pgvector {
        let dim = c.i16().ok_or_else(bad)? as u16 as usize;
        c.take(2).ok_or_else(bad)?;
        let data = c.take(dim * 4).ok_or_else(bad)?;
        return Ok(Vector::Floats(
            data.chunks_exact(4)
                .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        ));
    }
    let ndim = c.i32().ok_or_else(bad)?;
    let _has_nulls = c.i32().ok_or_else(bad)?;
    let _element_type = c.i32().ok_or_else(bad)?;
    let mut dims = Vec::new();
    for _ in 0..ndim.max(0) {
        let size = c.i32().ok_or_else(bad)?;
        c.i32().ok_or_else(bad)?;
        dims.push(usize::try_from(size).map_err(|_| bad())?);
    }
    let count = if dims.is_empty() {
        0
    } else {
        dims.iter().product()
    };
    let mut values: Vec<Option<f32>> = Vec::with_capacity(count);
    for _ in 0..count {
        let len = c.i32().ok_or_else(bad)?;
        if len < 0 {
            values.push(None);
            continue;
        }
        let b = c.take(len as usize).ok_or_else(bad)?;
        values.push(Some(match (ty, b.len()) {
            (VectorType::Double, 8) => {
                f64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            (_, 4) => f32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            _ => return Err(bad()),
        }));
    }
    if dims.len() <= 1 && values.iter().all(Option::is_some) {
        return Ok(Vector::Floats(values.into_iter().flatten().collect()));
    }
    Ok(Vector::Text(array_text(&dims, &values)))
}

/// Postgres' text for an array of these dimensions (NULL elements as `NULL`).
fn array_text(dims: &[usize], values: &[Option<f32>]) -> String {
    fn nest(dims: &[usize], values: &mut std::slice::Iter<Option<f32>>, out: &mut String) {
        out.push('{');
        for i in 0..dims[0] {
            if i > 0 {
                out.push(',');
            }
            if dims.len() > 1 {
                nest(&dims[1..], values, out);
            } else {
                match values.next().copied().flatten() {
                    Some(x) => {
                        use std::fmt::Write;
                        write!(out, "{x}").expect("writing to a String");
                    }
                    None => out.push_str("NULL"),
                }
            }
        }
        out.push('}');
    }
    let mut out = String::new();
    if dims.is_empty() {
        return "{}".into();
    }
    nest(dims, &mut values.iter(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_copy_in_key_order_starts_after_a_key_written_as_escaped_literals() {
        let mut ix = engine::schema::test_index(&["id", "region", "body"], Some(2), None, None);
        let all = copy_sql(&ix, Range::All);
        assert!(!all.contains("ORDER BY") && !all.contains("WHERE"), "{all}");
        let first = copy_sql(
            &ix,
            Range::KeyOrder {
                after: None,
                upto: None,
            },
        );
        assert!(
            first.contains(r#"FROM "public"."places" ORDER BY "id")"#),
            "{first}"
        );
        ix.pk = vec![1, 0];
        let after = ["it's".to_owned(), r"back\slash".to_owned()];
        let rest = copy_sql(
            &ix,
            Range::KeyOrder {
                after: Some(&after),
                upto: None,
            },
        );
        assert!(
            rest.contains(
                r#"WHERE ("region", "id") > (E'it''s', E'back\\slash') ORDER BY "region", "id")"#
            ),
            "{rest}"
        );
        let upto = ["z".to_owned(), "9".to_owned()];
        let between = copy_sql(
            &ix,
            Range::KeyOrder {
                after: Some(&after),
                upto: Some(&upto),
            },
        );
        assert!(
            between.contains(
                r#"WHERE ("region", "id") > (E'it''s', E'back\\slash') AND ("region", "id") <= (E'z', E'9') ORDER BY"#
            ),
            "{between}"
        );
    }

    /// Binary COPY data for rows of text cells (what `format('%s', c)` sends).
    fn encode(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        for r in rows {
            out.extend_from_slice(&(r.len() as i16).to_be_bytes());
            for f in r {
                match f {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(b) => {
                        out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                        out.extend_from_slice(b);
                    }
                }
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    /// `array_send` of a one-dimensional float4 array (None: a NULL element).
    fn real_array(values: &[Option<f32>]) -> Vec<u8> {
        let mut out = Vec::new();
        for x in [1i32, i32::from(values.contains(&None)), 700] {
            out.extend_from_slice(&x.to_be_bytes());
        }
        out.extend_from_slice(&(values.len() as i32).to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for v in values {
            match v {
                None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(x) => {
                    out.extend_from_slice(&4i32.to_be_bytes());
                    out.extend_from_slice(&x.to_be_bytes());
                }
            }
        }
        out
    }

    #[test]
    fn vectors_come_as_floats_and_other_columns_as_text() {
        let rows = vec![vec![
            Some(b"1".to_vec()),
            None,
            Some(real_array(&[Some(0.5), Some(-2.0)])),
        ]];
        let mut p = CopyBinaryParser::new(3, Some((2, VectorType::Real)));
        let mut out = Vec::new();
        p.feed(&encode(&rows), &mut out).unwrap();
        p.finish().unwrap();
        assert_eq!(
            out,
            vec![Row {
                raw: vec![Some("1".into()), None, None],
                vector: Some(vec![0.5, -2.0]),
            }]
        );
    }

    #[test]
    fn every_vector_type_decodes() {
        let mut dbl = Vec::new();
        for x in [1i32, 0, 701, 2, 1] {
            dbl.extend_from_slice(&x.to_be_bytes());
        }
        for x in [0.1f64, 3.0] {
            dbl.extend_from_slice(&8i32.to_be_bytes());
            dbl.extend_from_slice(&x.to_be_bytes());
        }
        assert_eq!(
            decode_vector(&dbl, VectorType::Double).unwrap(),
            Vector::Floats(vec![0.1, 3.0])
        );
        let mut pgv = vec![0, 2, 0, 0];
        for x in [1.5f32, -0.25] {
            pgv.extend_from_slice(&x.to_be_bytes());
        }
        assert_eq!(
            decode_vector(&pgv, VectorType::Pgvector).unwrap(),
            Vector::Floats(vec![1.5, -0.25])
        );
        // No element at all: an empty array.
        let mut empty = Vec::new();
        for x in [0i32, 0, 700] {
            empty.extend_from_slice(&x.to_be_bytes());
        }
        assert_eq!(
            decode_vector(&empty, VectorType::Real).unwrap(),
            Vector::Floats(vec![])
        );
        assert!(decode_vector(&pgv[..6], VectorType::Pgvector).is_err());
        assert!(decode_vector(&dbl[..30], VectorType::Double).is_err());
    }

    #[test]
    fn arrays_no_index_takes_come_as_postgres_text() {
        assert_eq!(
            decode_vector(&real_array(&[Some(1.0), None]), VectorType::Real).unwrap(),
            Vector::Text("{1,NULL}".into())
        );
        let mut two = Vec::new();
        for x in [2i32, 0, 700, 2, 1, 1, 1] {
            two.extend_from_slice(&x.to_be_bytes());
        }
        for x in [1.0f32, 2.0] {
            two.extend_from_slice(&4i32.to_be_bytes());
            two.extend_from_slice(&x.to_be_bytes());
        }
        assert_eq!(
            decode_vector(&two, VectorType::Real).unwrap(),
            Vector::Text("{{1},{2}}".into())
        );
    }

    #[test]
    fn malformed_data_is_an_error() {
        let mut p = CopyBinaryParser::new(2, None);
        assert!(p
            .feed(b"1\t2\n3\t4\n, a text COPY, not binary", &mut Vec::new())
            .is_err());
        let mut p = CopyBinaryParser::new(2, None);
        assert!(p
            .feed(&encode(&[vec![Some(b"1".to_vec())]]), &mut Vec::new())
            .is_err());
        // Cut short: no trailer.
        let mut p = CopyBinaryParser::new(1, None);
        let data = encode(&[vec![Some(b"1".to_vec())]]);
        p.feed(&data[..data.len() - 2], &mut Vec::new()).unwrap();
        assert!(p.finish().is_err());
    }

    proptest! {
        #[test]
        fn any_split_of_any_rows_round_trips(
            rows in proptest::collection::vec(proptest::collection::vec(proptest::option::of(".*"), 3), 0..8),
            split in any::<prop::sample::Index>(),
            split2 in any::<prop::sample::Index>(),
        ) {
            let encoded: Vec<Vec<Option<Vec<u8>>>> = rows
                .iter()
                .map(|r| r.iter().map(|c| c.as_ref().map(|s| s.as_bytes().to_vec())).collect())
                .collect();
            let bytes = encode(&encoded);
            let mut cuts = [split.index(bytes.len()), split2.index(bytes.len())];
            cuts.sort_unstable();
            let mut p = CopyBinaryParser::new(3, None);
            let mut out = Vec::new();
            p.feed(&bytes[..cuts[0]], &mut out).unwrap();
            p.feed(&bytes[cuts[0]..cuts[1]], &mut out).unwrap();
            p.feed(&bytes[cuts[1]..], &mut out).unwrap();
            p.finish().unwrap();
            let got: Vec<_> = out.into_iter().map(|r| r.raw).collect();
            prop_assert_eq!(got, rows);
        }
    }
}
