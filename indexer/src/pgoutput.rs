//! Decoding (and, for tests, fuzzing and benchmarks, encoding) of the messages that
//! PostgreSQL's `pgoutput` logical-replication plugin emits with `proto_version '1'`,
//! as described in the PostgreSQL 15 docs, "Logical Replication Message Formats".
//! This module owns the byte-level wire format only: it turns the payload of one
//! `XLogData` frame into a [`Message`] and back, and it knows nothing about
//! replication connections, relation caches or how rows are interpreted. Decoding is
//! strict (trailing bytes, negative lengths or counts, unknown tags and markers and
//! truncation are all [`DecodeError`]s), never panics, never allocates more than the
//! input could possibly describe, and is zero-copy for column values and logical
//! message contents, which are [`Bytes`] slices of the input. Names (relations,
//! namespaces, columns, types, origins, message prefixes) are copied into `String`s.
//! The streaming and two-phase messages of protocol versions 2 and 3 are not
//! supported and decode as [`DecodeError::UnknownTag`].

use bytes::{BufMut, Bytes, BytesMut};

use wire::Lsn;

/// One `pgoutput` protocol-version-1 message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `'B'`: a transaction starts.
    Begin {
        /// The LSN of the transaction's commit record.
        final_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
        commit_time_micros: i64,
        /// Transaction id.
        xid: u32,
    },
    /// `'C'`: the transaction opened by the last `Begin` committed.
    Commit {
        /// Currently unused by the server (always 0).
        flags: u8,
        /// The LSN of the commit record.
        commit_lsn: Lsn,
        /// The LSN just past the end of the transaction.
        end_lsn: Lsn,
        /// Commit time, microseconds since 2000-01-01 00:00:00 UTC.
        commit_time_micros: i64,
    },
    /// `'O'`: the current transaction came from a named replication origin.
    Origin { commit_lsn: Lsn, name: String },
    /// `'R'`: the shape of a relation, sent before its first row change.
    Relation(Relation),
    /// `'Y'`: a non-built-in type used by a relation column.
    Type {
        oid: u32,
        /// Empty for `pg_catalog`.
        namespace: String,
        name: String,
    },
    /// `'I'`: a row was inserted.
    Insert { relation_id: u32, new: Tuple },
    /// `'U'`: a row was updated. `old` is present when the key changed (`Key`) or the
    /// relation has `REPLICA IDENTITY FULL` (`Full`).
    Update {
        relation_id: u32,
        old: Option<OldTuple>,
        new: Tuple,
    },
    /// `'D'`: a row was deleted; `old` identifies it.
    Delete { relation_id: u32, old: OldTuple },
    /// `'T'`: relations were truncated. `options` bit 1 is `CASCADE`, bit 2 is
    /// `RESTART IDENTITY`.
    Truncate { options: u8, relation_ids: Vec<u32> },
    /// `'M'`: a message written with `pg_logical_emit_message`.
    LogicalMessage {
        transactional: bool,
        lsn: Lsn,
        prefix: String,
        content: Bytes,
    },
}

/// The body of a `'R'` (Relation) message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation's OID, used as `relation_id` by row messages.
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `relreplident`: `b'd'` default, `b'n'` nothing, `b'f'` full, `b'i'` index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Whether the column is part of the replica identity key (flag bit 1).
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// The old row image carried by `Update` and `Delete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// `'K'`: only the replica identity key columns are meaningful.
    Key(Tuple),
    /// `'O'`: the whole old row (`REPLICA IDENTITY FULL`).
    Full(Tuple),
}

/// `TupleData`: one value per column, in relation column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple(pub Vec<TupleValue>);

/// One column value of a [`Tuple`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// `'n'`: SQL NULL.
    Null,
    /// `'u'`: a TOASTed value that did not change; its content is not sent.
    UnchangedToast,
    /// `'t'`: the value in text output format. Not validated as UTF-8 by [`decode`];
    /// see [`TupleValue::as_text`].
    Text(Bytes),
    /// `'b'`: the value in binary output format.
    Binary(Bytes),
}

impl TupleValue {
    /// The value as a string, if it is a text-format value holding valid UTF-8.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            TupleValue::Text(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// Why a byte string is not a valid `pgoutput` v1 message.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload had no bytes at all.
    #[error("empty pgoutput message")]
    Empty,
    /// The first byte is not a protocol-version-1 message tag.
    #[error("unknown pgoutput message tag {0:#04x}")]
    UnknownTag(u8),
    /// The message ended before `what` was complete (including a string with no NUL).
    #[error("pgoutput message truncated while reading {what}")]
    Truncated { what: &'static str },
    /// A marker byte (tuple kind, old/new tuple marker) had an unexpected value.
    #[error("bad marker byte {found:#04x}: expected {what}")]
    BadMarker { what: &'static str, found: u8 },
    /// A string field is not valid UTF-8.
    #[error("pgoutput {what} is not valid UTF-8")]
    InvalidUtf8 { what: &'static str },
    /// A length or count field was negative.
    #[error("negative pgoutput {what}: {value}")]
    Negative { what: &'static str, value: i32 },
    /// Bytes were left over after a complete message.
    #[error("{0} trailing bytes after a complete pgoutput message")]
    TrailingBytes(usize),
}

/// Decodes one complete message. `Text`/`Binary` values and logical message contents
/// are slices of `data` (no copy).
pub fn decode(data: &Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader { data, pos: 0 };
    let Ok(tag) = r.u8("message tag") else {
        return Err(DecodeError::Empty);
    };
    let msg = match tag {
        b'B' => {
            let final_lsn = r.lsn("begin final lsn")?;
            let commit_time_micros = r.i64("begin commit timestamp")?;
            let xid = r.u32("begin xid")?;
            Message::Begin {
                final_lsn,
                commit_time_micros,
                xid,
            }
        }
        b'C' => {
            let flags = r.u8("commit flags")?;
            let commit_lsn = r.lsn("commit lsn")?;
            let end_lsn = r.lsn("commit end lsn")?;
            let commit_time_micros = r.i64("commit timestamp")?;
            Message::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_micros,
            }
        }
        b'O' => {
            let commit_lsn = r.lsn("origin commit lsn")?;
            let name = r.string("origin name")?;
            Message::Origin { commit_lsn, name }
        }
        b'R' => Message::Relation(decode_relation(&mut r)?),
        b'Y' => {
            let oid = r.u32("type oid")?;
            let namespace = r.string("type namespace")?;
            let name = r.string("type name")?;
            Message::Type {
                oid,
                namespace,
                name,
            }
        }
        b'I' => {
            let relation_id = r.u32("insert relation id")?;
            r.expect_marker(b'N', "insert new-tuple marker", "'N'")?;
            let new = decode_tuple(&mut r)?;
            Message::Insert { relation_id, new }
        }
        b'U' => {
            let relation_id = r.u32("update relation id")?;
            let (old, marker) = match r.u8("update tuple marker")? {
                b'K' => {
                    let old = OldTuple::Key(decode_tuple(&mut r)?);
                    (Some(old), r.u8("update new-tuple marker")?)
                }
                b'O' => {
                    let old = OldTuple::Full(decode_tuple(&mut r)?);
                    (Some(old), r.u8("update new-tuple marker")?)
                }
                b'N' => (None, b'N'),
                found => {
                    return Err(DecodeError::BadMarker {
                        what: "update tuple marker 'K', 'O' or 'N'",
                        found,
                    })
                }
            };
            if marker != b'N' {
                return Err(DecodeError::BadMarker {
                    what: "update new-tuple marker 'N'",
                    found: marker,
                });
            }
            let new = decode_tuple(&mut r)?;
            Message::Update {
                relation_id,
                old,
                new,
            }
        }
        b'D' => {
            let relation_id = r.u32("delete relation id")?;
            let old = match r.u8("delete old-tuple marker")? {
                b'K' => OldTuple::Key(decode_tuple(&mut r)?),
                b'O' => OldTuple::Full(decode_tuple(&mut r)?),
                found => {
                    return Err(DecodeError::BadMarker {
                        what: "delete old-tuple marker 'K' or 'O'",
                        found,
                    })
                }
            };
            Message::Delete { relation_id, old }
        }
        b'T' => {
            let count = r.count_i32("truncate relation count")?;
            let options = r.u8("truncate options")?;
            let mut relation_ids = Vec::with_capacity(count.min(r.remaining() / 4));
            for _ in 0..count {
                relation_ids.push(r.u32("truncate relation id")?);
            }
            Message::Truncate {
                options,
                relation_ids,
            }
        }
        b'M' => {
            let flags = r.u8("logical message flags")?;
            let lsn = r.lsn("logical message lsn")?;
            let prefix = r.string("logical message prefix")?;
            let len = r.count_i32("logical message length")?;
            let content = r.slice(len, "logical message content")?;
            Message::LogicalMessage {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content,
            }
        }
        other => return Err(DecodeError::UnknownTag(other)),
    };
    match r.remaining() {
        0 => Ok(msg),
        n => Err(DecodeError::TrailingBytes(n)),
    }
}

fn decode_relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let id = r.u32("relation oid")?;
    let namespace = r.string("relation namespace")?;
    let name = r.string("relation name")?;
    let replica_identity = r.u8("relation replica identity")?;
    let count = r.count_i16("relation column count")?;
    // A column takes at least 10 bytes: flags, an empty name's NUL, type oid, typmod.
    let mut columns = Vec::with_capacity(count.min(r.remaining() / 10));
    for _ in 0..count {
        let flags = r.u8("relation column flags")?;
        let name = r.string("relation column name")?;
        let type_oid = r.u32("relation column type oid")?;
        let type_modifier = r.i32("relation column type modifier")?;
        columns.push(RelationColumn {
            is_key: flags & 1 != 0,
            name,
            type_oid,
            type_modifier,
        });
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn decode_tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let count = r.count_i16("tuple column count")?;
    // Every value takes at least its one kind byte.
    let mut values = Vec::with_capacity(count.min(r.remaining()));
    for _ in 0..count {
        let value = match r.u8("tuple value kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            b't' => {
                let len = r.count_i32("text value length")?;
                TupleValue::Text(r.slice(len, "text value")?)
            }
            b'b' => {
                let len = r.count_i32("binary value length")?;
                TupleValue::Binary(r.slice(len, "binary value")?)
            }
            found => {
                return Err(DecodeError::BadMarker {
                    what: "tuple value kind 'n', 'u', 't' or 'b'",
                    found,
                })
            }
        };
        values.push(value);
    }
    Ok(Tuple(values))
}

/// A bounds-checked cursor over one message.
struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let data: &'a [u8] = self.data;
        let out = &data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn lsn(&mut self, what: &'static str) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.array(what)?)))
    }

    fn count_i16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let value = self.i16(what)?;
        usize::try_from(value).map_err(|_| DecodeError::Negative {
            what,
            value: value.into(),
        })
    }

    fn count_i32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let value = self.i32(what)?;
        usize::try_from(value).map_err(|_| DecodeError::Negative { what, value })
    }

    fn expect_marker(
        &mut self,
        expected: u8,
        what: &'static str,
        description: &'static str,
    ) -> Result<(), DecodeError> {
        match self.u8(what)? {
            found if found == expected => Ok(()),
            found => Err(DecodeError::BadMarker {
                what: description,
                found,
            }),
        }
    }

    /// A NUL-terminated UTF-8 string; a missing NUL is truncation.
    fn string(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated { what })?;
        let s = std::str::from_utf8(&rest[..len]).map_err(|_| DecodeError::InvalidUtf8 { what })?;
        self.pos += len + 1;
        Ok(s.to_owned())
    }

    /// The next `n` bytes as a zero-copy slice of the input.
    fn slice(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        if n > self.remaining() {
            return Err(DecodeError::Truncated { what });
        }
        let out = self.data.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }
}

/// Appends the wire encoding of `msg` to `out`; the inverse of [`decode`].
///
/// `is_key` is written as column flags 1/0 and `transactional` as message flags 1/0.
///
/// # Panics
///
/// If `msg` cannot be represented on the wire: a string containing a NUL byte, more
/// than `i16::MAX` relation columns or tuple values, or more than `i32::MAX`
/// truncated relations or bytes in one value or logical message.
pub fn encode(msg: &Message, out: &mut BytesMut) {
    match msg {
        Message::Begin {
            final_lsn,
            commit_time_micros,
            xid,
        } => {
            out.put_u8(b'B');
            out.put_u64(final_lsn.0);
            out.put_i64(*commit_time_micros);
            out.put_u32(*xid);
        }
        Message::Commit {
            flags,
            commit_lsn,
            end_lsn,
            commit_time_micros,
        } => {
            out.put_u8(b'C');
            out.put_u8(*flags);
            out.put_u64(commit_lsn.0);
            out.put_u64(end_lsn.0);
            out.put_i64(*commit_time_micros);
        }
        Message::Origin { commit_lsn, name } => {
            out.put_u8(b'O');
            out.put_u64(commit_lsn.0);
            put_string(out, name);
        }
        Message::Relation(rel) => {
            out.put_u8(b'R');
            out.put_u32(rel.id);
            put_string(out, &rel.namespace);
            put_string(out, &rel.name);
            out.put_u8(rel.replica_identity);
            put_count_i16(out, rel.columns.len());
            for col in &rel.columns {
                out.put_u8(u8::from(col.is_key));
                put_string(out, &col.name);
                out.put_u32(col.type_oid);
                out.put_i32(col.type_modifier);
            }
        }
        Message::Type {
            oid,
            namespace,
            name,
        } => {
            out.put_u8(b'Y');
            out.put_u32(*oid);
            put_string(out, namespace);
            put_string(out, name);
        }
        Message::Insert { relation_id, new } => {
            out.put_u8(b'I');
            out.put_u32(*relation_id);
            out.put_u8(b'N');
            put_tuple(out, new);
        }
        Message::Update {
            relation_id,
            old,
            new,
        } => {
            out.put_u8(b'U');
            out.put_u32(*relation_id);
            if let Some(old) = old {
                put_old_tuple(out, old);
            }
            out.put_u8(b'N');
            put_tuple(out, new);
        }
        Message::Delete { relation_id, old } => {
            out.put_u8(b'D');
            out.put_u32(*relation_id);
            put_old_tuple(out, old);
        }
        Message::Truncate {
            options,
            relation_ids,
        } => {
            out.put_u8(b'T');
            put_count_i32(out, relation_ids.len());
            out.put_u8(*options);
            for id in relation_ids {
                out.put_u32(*id);
            }
        }
        Message::LogicalMessage {
            transactional,
            lsn,
            prefix,
            content,
        } => {
            out.put_u8(b'M');
            out.put_u8(u8::from(*transactional));
            out.put_u64(lsn.0);
            put_string(out, prefix);
            put_count_i32(out, content.len());
            out.put_slice(content);
        }
    }
}

fn put_string(out: &mut BytesMut, s: &str) {
    assert!(
        !s.as_bytes().contains(&0),
        "pgoutput strings cannot contain NUL bytes: {s:?}"
    );
    out.put_slice(s.as_bytes());
    out.put_u8(0);
}

fn put_count_i16(out: &mut BytesMut, n: usize) {
    out.put_i16(i16::try_from(n).expect("pgoutput column count exceeds i16::MAX"));
}

fn put_count_i32(out: &mut BytesMut, n: usize) {
    out.put_i32(i32::try_from(n).expect("pgoutput length or count exceeds i32::MAX"));
}

fn put_old_tuple(out: &mut BytesMut, old: &OldTuple) {
    let (marker, tuple) = match old {
        OldTuple::Key(t) => (b'K', t),
        OldTuple::Full(t) => (b'O', t),
    };
    out.put_u8(marker);
    put_tuple(out, tuple);
}

fn put_tuple(out: &mut BytesMut, tuple: &Tuple) {
    put_count_i16(out, tuple.0.len());
    for value in &tuple.0 {
        match value {
            TupleValue::Null => out.put_u8(b'n'),
            TupleValue::UnchangedToast => out.put_u8(b'u'),
            TupleValue::Text(b) => {
                out.put_u8(b't');
                put_count_i32(out, b.len());
                out.put_slice(b);
            }
            TupleValue::Binary(b) => {
                out.put_u8(b'b');
                put_count_i32(out, b.len());
                out.put_slice(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Concatenates hand-written wire fragments.
    fn wire(parts: &[&[u8]]) -> Bytes {
        Bytes::from(parts.concat())
    }

    fn encoded(msg: &Message) -> Bytes {
        let mut out = BytesMut::new();
        encode(msg, &mut out);
        out.freeze()
    }

    /// `raw` decodes to `expected`, and `expected` encodes back to exactly `raw`.
    fn check(raw: &Bytes, expected: &Message) {
        assert_eq!(decode(raw).as_ref(), Ok(expected));
        assert_eq!(&encoded(expected), raw);
    }

    fn text(s: &str) -> TupleValue {
        TupleValue::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn points_into(value: &Bytes, data: &Bytes) -> bool {
        let start = data.as_ptr() as usize;
        let p = value.as_ptr() as usize;
        p >= start && p + value.len() <= start + data.len()
    }

    #[test]
    fn begin() {
        let raw = wire(&[
            b"B",
            &0x0000_0001_0000_00A0u64.to_be_bytes(),
            &(-5i64).to_be_bytes(),
            &742u32.to_be_bytes(),
        ]);
        check(
            &raw,
            &Message::Begin {
                final_lsn: Lsn(0x0000_0001_0000_00A0),
                commit_time_micros: -5,
                xid: 742,
            },
        );
    }

    #[test]
    fn commit() {
        let raw = wire(&[
            b"C",
            &[0],
            &100u64.to_be_bytes(),
            &180u64.to_be_bytes(),
            &757_382_400_000_000i64.to_be_bytes(),
        ]);
        check(
            &raw,
            &Message::Commit {
                flags: 0,
                commit_lsn: Lsn(100),
                end_lsn: Lsn(180),
                commit_time_micros: 757_382_400_000_000,
            },
        );
    }

    #[test]
    fn origin() {
        let raw = wire(&[b"O", &77u64.to_be_bytes(), b"pg_16390\0"]);
        check(
            &raw,
            &Message::Origin {
                commit_lsn: Lsn(77),
                name: "pg_16390".into(),
            },
        );
    }

    #[test]
    fn relation_with_three_columns() {
        let raw = wire(&[
            b"R",
            &16_385u32.to_be_bytes(),
            b"public\0",
            b"items\0",
            b"d",
            &3i16.to_be_bytes(),
            // id bigint, key
            &[1],
            b"id\0",
            &20u32.to_be_bytes(),
            &(-1i32).to_be_bytes(),
            // title varchar(200)
            &[0],
            b"title\0",
            &1043u32.to_be_bytes(),
            &204i32.to_be_bytes(),
            // body text
            &[0],
            b"body\0",
            &25u32.to_be_bytes(),
            &(-1i32).to_be_bytes(),
        ]);
        check(
            &raw,
            &Message::Relation(Relation {
                id: 16_385,
                namespace: "public".into(),
                name: "items".into(),
                replica_identity: b'd',
                columns: vec![
                    RelationColumn {
                        is_key: true,
                        name: "id".into(),
                        type_oid: 20,
                        type_modifier: -1,
                    },
                    RelationColumn {
                        is_key: false,
                        name: "title".into(),
                        type_oid: 1043,
                        type_modifier: 204,
                    },
                    RelationColumn {
                        is_key: false,
                        name: "body".into(),
                        type_oid: 25,
                        type_modifier: -1,
                    },
                ],
            }),
        );
    }

    #[test]
    fn relation_in_pg_catalog_has_empty_namespace() {
        let raw = wire(&[
            b"R",
            &1u32.to_be_bytes(),
            b"\0",
            b"t\0",
            b"n",
            &0i16.to_be_bytes(),
        ]);
        let Ok(Message::Relation(rel)) = decode(&raw) else {
            panic!("not a relation");
        };
        assert_eq!(rel.namespace, "");
        assert!(rel.columns.is_empty());
    }

    #[test]
    fn type_message() {
        let raw = wire(&[b"Y", &16_400u32.to_be_bytes(), b"public\0", b"mood\0"]);
        check(
            &raw,
            &Message::Type {
                oid: 16_400,
                namespace: "public".into(),
                name: "mood".into(),
            },
        );
    }

    #[test]
    fn insert_with_text_null_and_binary_is_zero_copy() {
        let raw = wire(&[
            b"I",
            &16_385u32.to_be_bytes(),
            b"N",
            &3i16.to_be_bytes(),
            b"t",
            &2i32.to_be_bytes(),
            b"42",
            b"n",
            b"b",
            &3i32.to_be_bytes(),
            &[0, 0xFF, 7],
        ]);
        let expected = Message::Insert {
            relation_id: 16_385,
            new: Tuple(vec![
                text("42"),
                TupleValue::Null,
                TupleValue::Binary(Bytes::from_static(&[0, 0xFF, 7])),
            ]),
        };
        check(&raw, &expected);
        let Ok(Message::Insert { new, .. }) = decode(&raw) else {
            panic!("not an insert");
        };
        let (TupleValue::Text(t), TupleValue::Binary(b)) = (&new.0[0], &new.0[2]) else {
            panic!("unexpected values {new:?}");
        };
        assert!(points_into(t, &raw), "text value was copied");
        assert!(points_into(b, &raw), "binary value was copied");
        assert_eq!(new.0[0].as_text(), Some("42"));
    }

    #[test]
    fn update_with_key_old_tuple_and_unchanged_toast() {
        let raw = wire(&[
            b"U",
            &16_385u32.to_be_bytes(),
            b"K",
            &3i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            b"7",
            b"n",
            b"n",
            b"N",
            &3i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            b"8",
            b"t",
            &5i32.to_be_bytes(),
            b"hello",
            b"u",
        ]);
        check(
            &raw,
            &Message::Update {
                relation_id: 16_385,
                old: Some(OldTuple::Key(Tuple(vec![
                    text("7"),
                    TupleValue::Null,
                    TupleValue::Null,
                ]))),
                new: Tuple(vec![text("8"), text("hello"), TupleValue::UnchangedToast]),
            },
        );
    }

    #[test]
    fn update_without_old_tuple() {
        let raw = wire(&[
            b"U",
            &9u32.to_be_bytes(),
            b"N",
            &1i16.to_be_bytes(),
            b"t",
            &0i32.to_be_bytes(),
        ]);
        check(
            &raw,
            &Message::Update {
                relation_id: 9,
                old: None,
                new: Tuple(vec![text("")]),
            },
        );
    }

    #[test]
    fn update_with_full_old_tuple() {
        let raw = wire(&[
            b"U",
            &9u32.to_be_bytes(),
            b"O",
            &1i16.to_be_bytes(),
            b"n",
            b"N",
            &1i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            b"x",
        ]);
        check(
            &raw,
            &Message::Update {
                relation_id: 9,
                old: Some(OldTuple::Full(Tuple(vec![TupleValue::Null]))),
                new: Tuple(vec![text("x")]),
            },
        );
    }

    #[test]
    fn delete_with_full_old_tuple() {
        let raw = wire(&[
            b"D",
            &16_385u32.to_be_bytes(),
            b"O",
            &2i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            b"7",
            b"t",
            &3i32.to_be_bytes(),
            b"abc",
        ]);
        check(
            &raw,
            &Message::Delete {
                relation_id: 16_385,
                old: OldTuple::Full(Tuple(vec![text("7"), text("abc")])),
            },
        );
    }

    #[test]
    fn delete_with_key() {
        let raw = wire(&[
            b"D",
            &1u32.to_be_bytes(),
            b"K",
            &1i16.to_be_bytes(),
            b"t",
            &1i32.to_be_bytes(),
            b"1",
        ]);
        check(
            &raw,
            &Message::Delete {
                relation_id: 1,
                old: OldTuple::Key(Tuple(vec![text("1")])),
            },
        );
    }

    #[test]
    fn truncate_of_two_relations() {
        let raw = wire(&[
            b"T",
            &2i32.to_be_bytes(),
            &[3],
            &16_385u32.to_be_bytes(),
            &16_390u32.to_be_bytes(),
        ]);
        check(
            &raw,
            &Message::Truncate {
                options: 3,
                relation_ids: vec![16_385, 16_390],
            },
        );
    }

    #[test]
    fn logical_message() {
        let raw = wire(&[
            b"M",
            &[1],
            &500u64.to_be_bytes(),
            b"indexer\0",
            &4i32.to_be_bytes(),
            b"ping",
        ]);
        let expected = Message::LogicalMessage {
            transactional: true,
            lsn: Lsn(500),
            prefix: "indexer".into(),
            content: Bytes::from_static(b"ping"),
        };
        check(&raw, &expected);
        let Ok(Message::LogicalMessage { content, .. }) = decode(&raw) else {
            panic!("not a logical message");
        };
        assert!(points_into(&content, &raw), "content was copied");
    }

    #[test]
    fn as_text_only_for_valid_utf8_text() {
        assert_eq!(text("héllo").as_text(), Some("héllo"));
        assert_eq!(
            TupleValue::Text(Bytes::from_static(&[0xFF])).as_text(),
            None
        );
        assert_eq!(TupleValue::Binary(Bytes::from_static(b"x")).as_text(), None);
        assert_eq!(TupleValue::Null.as_text(), None);
        assert_eq!(TupleValue::UnchangedToast.as_text(), None);
    }

    #[test]
    fn empty_input_is_rejected() {
        assert_eq!(decode(&Bytes::new()), Err(DecodeError::Empty));
    }

    #[test]
    fn unknown_tag_is_rejected() {
        // 'S' (stream start) belongs to protocol version 2.
        assert_eq!(
            decode(&wire(&[b"S", &[0; 5]])),
            Err(DecodeError::UnknownTag(b'S'))
        );
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let raw = wire(&[b"O", &77u64.to_be_bytes(), b"o\0", b"xy"]);
        assert_eq!(decode(&raw), Err(DecodeError::TrailingBytes(2)));
    }

    #[test]
    fn negative_lengths_and_counts_are_rejected() {
        let text_len = wire(&[
            b"I",
            &1u32.to_be_bytes(),
            b"N",
            &1i16.to_be_bytes(),
            b"t",
            &(-1i32).to_be_bytes(),
        ]);
        assert_eq!(
            decode(&text_len),
            Err(DecodeError::Negative {
                what: "text value length",
                value: -1
            })
        );
        let ncols = wire(&[b"I", &1u32.to_be_bytes(), b"N", &(-2i16).to_be_bytes()]);
        assert!(matches!(
            decode(&ncols),
            Err(DecodeError::Negative { value: -2, .. })
        ));
        let nrels = wire(&[b"T", &i32::MIN.to_be_bytes(), &[0]]);
        assert!(matches!(
            decode(&nrels),
            Err(DecodeError::Negative {
                value: i32::MIN,
                ..
            })
        ));
        let msg_len = wire(&[
            b"M",
            &[0],
            &1u64.to_be_bytes(),
            b"p\0",
            &(-3i32).to_be_bytes(),
        ]);
        assert!(matches!(
            decode(&msg_len),
            Err(DecodeError::Negative { value: -3, .. })
        ));
    }

    #[test]
    fn huge_counts_fail_as_truncated_without_allocating() {
        let nrels = wire(&[b"T", &i32::MAX.to_be_bytes(), &[0], &1u32.to_be_bytes()]);
        assert!(matches!(decode(&nrels), Err(DecodeError::Truncated { .. })));
        let len = wire(&[
            b"I",
            &1u32.to_be_bytes(),
            b"N",
            &1i16.to_be_bytes(),
            b"b",
            &i32::MAX.to_be_bytes(),
            b"abc",
        ]);
        assert_eq!(
            decode(&len),
            Err(DecodeError::Truncated {
                what: "binary value"
            })
        );
    }

    #[test]
    fn bad_markers_are_rejected() {
        let insert = wire(&[b"I", &1u32.to_be_bytes(), b"K", &0i16.to_be_bytes()]);
        assert!(matches!(
            decode(&insert),
            Err(DecodeError::BadMarker { found: b'K', .. })
        ));
        let update = wire(&[b"U", &1u32.to_be_bytes(), b"X", &0i16.to_be_bytes()]);
        assert!(matches!(
            decode(&update),
            Err(DecodeError::BadMarker { found: b'X', .. })
        ));
        let update_second = wire(&[
            b"U",
            &1u32.to_be_bytes(),
            b"K",
            &0i16.to_be_bytes(),
            b"K",
            &0i16.to_be_bytes(),
        ]);
        assert!(matches!(
            decode(&update_second),
            Err(DecodeError::BadMarker { found: b'K', .. })
        ));
        let delete = wire(&[b"D", &1u32.to_be_bytes(), b"N", &0i16.to_be_bytes()]);
        assert!(matches!(
            decode(&delete),
            Err(DecodeError::BadMarker { found: b'N', .. })
        ));
        let value_kind = wire(&[b"I", &1u32.to_be_bytes(), b"N", &1i16.to_be_bytes(), b"z"]);
        assert!(matches!(
            decode(&value_kind),
            Err(DecodeError::BadMarker { found: b'z', .. })
        ));
    }

    #[test]
    fn bad_strings_are_rejected() {
        let utf8 = wire(&[b"Y", &1u32.to_be_bytes(), b"\xC3\x28\0", b"t\0"]);
        assert_eq!(
            decode(&utf8),
            Err(DecodeError::InvalidUtf8 {
                what: "type namespace"
            })
        );
        let unterminated = wire(&[b"Y", &1u32.to_be_bytes(), b"public\0", b"mood"]);
        assert_eq!(
            decode(&unterminated),
            Err(DecodeError::Truncated { what: "type name" })
        );
    }

    #[test]
    fn errors_display_readably() {
        assert_eq!(
            DecodeError::BadMarker {
                what: "'N'",
                found: b'K'
            }
            .to_string(),
            "bad marker byte 0x4b: expected 'N'"
        );
        assert_eq!(
            DecodeError::TrailingBytes(3).to_string(),
            "3 trailing bytes after a complete pgoutput message"
        );
    }

    #[test]
    #[should_panic(expected = "NUL")]
    fn encode_refuses_strings_with_nul() {
        let msg = Message::Origin {
            commit_lsn: Lsn(1),
            name: "a\0b".into(),
        };
        encode(&msg, &mut BytesMut::new());
    }

    fn arb_lsn() -> impl Strategy<Value = Lsn> {
        any::<u64>().prop_map(Lsn)
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[^\\x00]{0,12}"
    }

    fn arb_bytes() -> impl Strategy<Value = Bytes> {
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(Bytes::from)
    }

    fn arb_value() -> impl Strategy<Value = TupleValue> {
        prop_oneof![
            Just(TupleValue::Null),
            Just(TupleValue::UnchangedToast),
            arb_bytes().prop_map(TupleValue::Text),
            arb_bytes().prop_map(TupleValue::Binary),
        ]
    }

    fn arb_tuple() -> impl Strategy<Value = Tuple> {
        proptest::collection::vec(arb_value(), 0..6).prop_map(Tuple)
    }

    fn arb_old_tuple() -> impl Strategy<Value = OldTuple> {
        prop_oneof![
            arb_tuple().prop_map(OldTuple::Key),
            arb_tuple().prop_map(OldTuple::Full),
        ]
    }

    fn arb_relation() -> impl Strategy<Value = Relation> {
        let column = (any::<bool>(), arb_name(), any::<u32>(), any::<i32>()).prop_map(
            |(is_key, name, type_oid, type_modifier)| RelationColumn {
                is_key,
                name,
                type_oid,
                type_modifier,
            },
        );
        (
            any::<u32>(),
            arb_name(),
            arb_name(),
            any::<u8>(),
            proptest::collection::vec(column, 0..6),
        )
            .prop_map(
                |(id, namespace, name, replica_identity, columns)| Relation {
                    id,
                    namespace,
                    name,
                    replica_identity,
                    columns,
                },
            )
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (arb_lsn(), any::<i64>(), any::<u32>()).prop_map(
                |(final_lsn, commit_time_micros, xid)| Message::Begin {
                    final_lsn,
                    commit_time_micros,
                    xid,
                }
            ),
            (any::<u8>(), arb_lsn(), arb_lsn(), any::<i64>()).prop_map(
                |(flags, commit_lsn, end_lsn, commit_time_micros)| Message::Commit {
                    flags,
                    commit_lsn,
                    end_lsn,
                    commit_time_micros,
                }
            ),
            (arb_lsn(), arb_name())
                .prop_map(|(commit_lsn, name)| Message::Origin { commit_lsn, name }),
            arb_relation().prop_map(Message::Relation),
            (any::<u32>(), arb_name(), arb_name()).prop_map(|(oid, namespace, name)| {
                Message::Type {
                    oid,
                    namespace,
                    name,
                }
            }),
            (any::<u32>(), arb_tuple())
                .prop_map(|(relation_id, new)| Message::Insert { relation_id, new }),
            (
                any::<u32>(),
                proptest::option::of(arb_old_tuple()),
                arb_tuple()
            )
                .prop_map(|(relation_id, old, new)| Message::Update {
                    relation_id,
                    old,
                    new,
                }),
            (any::<u32>(), arb_old_tuple())
                .prop_map(|(relation_id, old)| Message::Delete { relation_id, old }),
            (any::<u8>(), proptest::collection::vec(any::<u32>(), 0..8)).prop_map(
                |(options, relation_ids)| Message::Truncate {
                    options,
                    relation_ids,
                }
            ),
            (any::<bool>(), arb_lsn(), arb_name(), arb_bytes()).prop_map(
                |(transactional, lsn, prefix, content)| Message::LogicalMessage {
                    transactional,
                    lsn,
                    prefix,
                    content,
                }
            ),
        ]
    }

    /// Arbitrary bytes, usually behind a real tag so the fuzzing reaches the bodies.
    fn arb_wire() -> impl Strategy<Value = Vec<u8>> {
        let tag = prop_oneof![
            3 => proptest::sample::select(b"BCORYIUDTM".to_vec()),
            1 => any::<u8>(),
        ];
        (tag, proptest::collection::vec(any::<u8>(), 0..64)).prop_map(|(tag, mut rest)| {
            rest.insert(0, tag);
            rest
        })
    }

    proptest! {
        #[test]
        fn prop_encode_decode_round_trips(msg in arb_message()) {
            let raw = encoded(&msg);
            prop_assert_eq!(decode(&raw), Ok(msg));
        }

        #[test]
        fn prop_decode_never_panics(data in arb_wire()) {
            let raw = Bytes::from(data);
            if let Ok(msg) = decode(&raw) {
                // Whatever decodes must re-encode to something that decodes the same.
                prop_assert_eq!(decode(&encoded(&msg)), Ok(msg));
            }
        }

        #[test]
        fn prop_decode_never_panics_on_raw_bytes(
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = decode(&Bytes::from(data));
        }

        #[test]
        fn prop_strict_prefixes_fail(msg in arb_message()) {
            let raw = encoded(&msg);
            prop_assert_eq!(decode(&raw.slice(..0)), Err(DecodeError::Empty));
            for len in 1..raw.len() {
                let result = decode(&raw.slice(..len));
                prop_assert!(
                    matches!(result, Err(DecodeError::Truncated { .. })),
                    "prefix of {} of {} bytes decoded as {:?}",
                    len,
                    raw.len(),
                    result
                );
            }
        }

        #[test]
        fn prop_trailing_bytes_fail(
            msg in arb_message(),
            extra in proptest::collection::vec(any::<u8>(), 1..8),
        ) {
            let mut raw = BytesMut::new();
            encode(&msg, &mut raw);
            raw.extend_from_slice(&extra);
            prop_assert_eq!(
                decode(&raw.freeze()),
                Err(DecodeError::TrailingBytes(extra.len()))
            );
        }
    }
}
