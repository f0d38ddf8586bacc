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
//!
//! Long (~610 lines) on purpose: one message format, decoded and encoded side by side so each
//! message's two directions can be read (and changed) together; tests in `pgoutput/tests.rs`.

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
mod tests;
