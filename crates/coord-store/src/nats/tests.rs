//! Tests of the NATS log's encoding and index (the log against a real
//! server is tested in the workspace's integration suite).

use super::*;

fn rec(seq: u64) -> Record {
    Record {
        seq,
        source: "api".into(),
        tx_id: format!("tx{seq}"),
        kind: "x.test".into(),
        ingress_ms: 1,
        json: format!("{{\"seq\":{seq}}}"),
    }
}

#[test]
fn batch_round_trips_through_its_message() {
    let batch = Batch {
        records: vec![rec(5), rec(6)],
        txns: vec![TxnRecord {
            source: "api".into(),
            tx_id: "T".into(),
            seq: 6,
            response: "{}".into(),
        }],
        attachments: vec![
            AttachmentOp::Put {
                key: "body/a/m".into(),
                value: b"hi\nthere".to_vec(),
            },
            AttachmentOp::Delete { key: "x".into() },
        ],
        ..Default::default()
    };
    let (_, bytes) = encode(&batch).expect("encode");
    let d = decode(&bytes).expect("decode");
    assert_eq!(d.header.first, 5);
    assert_eq!(d.events.len(), 2);
    assert_eq!(d.events[1].seq, 6);
    assert_eq!(d.events[1].json, "{\"seq\":6}");
    assert_eq!(d.header.put[0].1, "hi\nthere");
    assert_eq!(d.header.delete, vec!["x".to_string()]);
}

#[test]
fn a_batch_whose_lines_disagree_with_its_header_is_refused() {
    let (_, mut bytes) = encode(&Batch {
        records: vec![rec(1), rec(2)],
        ..Default::default()
    })
    .expect("encode");
    bytes.extend_from_slice(b"\n{}");
    assert!(matches!(decode(&bytes), Err(StoreError::Invalid(_))));
    assert!(matches!(decode(b"not json"), Err(StoreError::Invalid(_))));
}

#[test]
fn index_skips_what_it_has_and_finds_stream_sequences() {
    let mut idx = Index::default();
    let d = |first: u64, last: u64| Decoded {
        header: Header {
            first,
            last,
            ms: 0,
            txns: vec![],
            put: vec![],
            delete: vec![],
        },
        events: vec![],
    };
    assert!(idx.add(1, d(1, 3)));
    assert!(idx.add(4, d(4, 4)), "a gap in stream sequences is fine");
    assert!(!idx.add(4, d(4, 4)), "the same message twice is skipped");
    assert!(
        !idx.add(5, d(2, 4)),
        "a batch at or below the head is skipped"
    );
    assert_eq!(idx.head, 4);
    assert_eq!(idx.stream_seq_ending_at(3), Some(1));
    assert_eq!(idx.stream_seq_ending_at(4), Some(4));
    assert_eq!(idx.stream_seq_ending_at(2), None);
}

#[test]
fn urls_and_versions_parse() {
    let t = NatsTarget::parse("nats://a:4222,b:4223/fleet", 3).expect("parse");
    assert_eq!(t.servers, vec!["a:4222", "b:4223"]);
    assert_eq!(t.log, "fleet");
    assert_eq!(t.stream_name(), "COORD_fleet");
    assert!(NatsTarget::parse("nats://a:4222", 1).is_err());
    assert!(NatsTarget::parse("nats://a:4222/bad.name", 1).is_err());
    assert!(NatsTarget::parse("http://a/x", 1).is_err());
    assert!(NatsTarget::parse("nats://a/x", 0).is_err());
    assert_eq!(parse_version("2.15.1"), Some((2, 15, 1)));
    assert_eq!(parse_version("2.10.0-beta.1"), Some((2, 10, 0)));
    assert!(parse_version("2.9.10").expect("v") < MIN_SERVER);
}

fn decoded(first: u64, last: u64) -> Decoded {
    let batch = Batch {
        records: (first..=last).map(rec).collect(),
        ..Default::default()
    };
    let (_, bytes) = encode(&batch).expect("encode");
    decode(&bytes).expect("decode")
}

/// A batch that does not continue the head (the stream was compacted past
/// what this index holds, while its daemon slept) is never indexed: the
/// index says so and is rebuilt from the snapshot instead of holding a
/// hole that reads would stop at.
#[test]
fn a_batch_past_a_hole_is_flagged_not_indexed() {
    let mut idx = Index::default();
    assert!(idx.add(1, decoded(1, 5)));
    assert!(!idx.hole);
    assert!(!idx.add(9, decoded(20, 30)), "indexed across a hole");
    assert!(idx.hole);
    assert_eq!(idx.head, 5, "the head did not jump past the hole");
}
