//! Messages travel as bincode (version 1). Whatever bytes a peer sends, decoding gives a
//! message or an error, never a panic; a decoded message is then checked by `validate`.

// In tests a failed unwrap is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use keel_core::raft::*;
use proptest::prelude::*;

fn sample_messages() -> Vec<Message> {
    let entry = |index, term| Entry {
        index,
        term,
        payload: EntryPayload::Normal(Bytes::from_static(b"payload")),
    };
    let body = vec![
        MessageBody::Append(Append {
            prev_log_index: 4,
            prev_log_term: 2,
            entries: vec![entry(5, 3), entry(6, 3)],
            commit_index: 4,
        }),
        MessageBody::AppendResponse(AppendResponse::Rejected {
            rejected_index: 9,
            hint_index: 7,
            hint_term: 2,
        }),
        MessageBody::Heartbeat(Heartbeat {
            commit_index: 3,
            read_round: 11,
            acknowledged_index: 0,
        }),
        MessageBody::RequestVote(RequestVote {
            pre_vote: true,
            last_log_index: 6,
            last_log_term: 3,
            leader_transfer: false,
        }),
        MessageBody::InstallSnapshot(Snapshot {
            meta: SnapshotMeta {
                index: 10,
                term: 3,
                conf_state: ConfState::with_voters([1, 2, 3]),
            },
            data: Bytes::from_static(b"image"),
        }),
        MessageBody::Propose(Propose {
            payloads: vec![EntryPayload::ConfChange(ConfChange {
                kind: ConfChangeKind::AddLearner,
                node_id: 4,
                context: Bytes::from_static(b"http://10.0.0.4:2380"),
            })],
        }),
        MessageBody::ReadIndexResponse(ReadIndexResponse {
            request_id: 5,
            read_index: 9,
        }),
        MessageBody::TimeoutNow,
    ];
    body.into_iter()
        .map(|body| Message {
            from: 2,
            to: 1,
            term: 3,
            body,
        })
        .collect()
}

#[test]
fn messages_round_trip_through_bincode() {
    for message in sample_messages() {
        let bytes = bincode::serialize(&message).unwrap();
        let decoded: Message = bincode::deserialize(&bytes).unwrap();
        assert_eq!(decoded, message);
        assert!(decoded.validate(1, &Config::new(1).message_limits).is_ok());
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_decode_to_an_error_or_a_message(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        // bincode 1 bounds allocations by the input it is given when told a limit.
        use bincode::Options;
        let options = bincode::DefaultOptions::new()
            .with_fixint_encoding()
            .allow_trailing_bytes()
            .with_limit(1 << 20);
        if let Ok(message) = options.deserialize::<Message>(&bytes) {
            let _ = message.validate(1, &Config::new(1).message_limits);
        }
    }

    #[test]
    fn truncated_messages_never_decode_wrongly(cut in 0usize..64) {
        for message in sample_messages() {
            let bytes = bincode::serialize(&message).unwrap();
            let cut = cut.min(bytes.len().saturating_sub(1));
            let decoded = bincode::deserialize::<Message>(&bytes[..cut]);
            prop_assert!(decoded.is_err(), "a truncated message decoded");
        }
    }
}
