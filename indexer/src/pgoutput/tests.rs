//! Tests of the pgoutput decoder: hand-written messages decode and encode back byte for
//! byte; property tests round-trip every message and feed the decoder malformed input.
//!
//! Long (~720 lines): one hand-written wire example per message kind, plus the property tests.

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
        (arb_lsn(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time_micros, xid)| {
            Message::Begin {
                final_lsn,
                commit_time_micros,
                xid,
            }
        }),
        (any::<u8>(), arb_lsn(), arb_lsn(), any::<i64>()).prop_map(
            |(flags, commit_lsn, end_lsn, commit_time_micros)| Message::Commit {
                flags,
                commit_lsn,
                end_lsn,
                commit_time_micros,
            }
        ),
        (arb_lsn(), arb_name()).prop_map(|(commit_lsn, name)| Message::Origin { commit_lsn, name }),
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
