//! The peer wire format: `[u32 length][u8 kind][body]`, length counting kind and body, big
//! endian. A connection opens with a `Hello`; then each Raft message travels as one frame, or,
//! when larger than a frame (snapshots), as parts that the receiver joins, within a limit.
//! Anything else closes the connection: a peer cannot make a node allocate without bound,
//! panic, or step a message it failed to send whole.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use keel_core::codec::Codec;
use keel_core::node::Member;
use keel_core::raft::{Message, NodeId};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest frame on the wire; bigger messages go in parts.
pub const MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;
const HEADER_BYTES: usize = 5;

const KIND_HELLO: u8 = 1;
const KIND_MESSAGE: u8 = 2;
const KIND_PART: u8 = 3;
const KIND_LAST_PART: u8 = 4;
const KIND_REFUSAL: u8 = 5;
const KIND_QUESTION: u8 = 6;
const KIND_ANSWER: u8 = 7;
const KIND_SNAPSHOT_BEGIN: u8 = 8;
const KIND_SNAPSHOT_ROWS: u8 = 9;
const KIND_SNAPSHOT_END: u8 = 10;

/// Closes a snapshot stream (see `crate::peer::snapshot_stream`): how many rows it held and the
/// CRC-32C of every rows frame's body, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEnd {
    pub rows: u64,
    pub checksum: u32,
}

/// Opens a connection that carries Raft messages: who is speaking to whom, in which cluster,
/// and where the speaker listens for peers (see `crate::peer::transport::DialHints`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: u64,
    pub from: NodeId,
    pub to: NodeId,
    pub peer_urls: Vec<String>,
}

/// The one frame a member sends back on a connection whose hello it refuses, before
/// closing it, so the dialling member learns why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The dialling member was removed from the cluster: it must stop (etcd: "the member
    /// has been permanently removed from the cluster").
    Removed,
    /// Another cluster, another member: the text says which.
    Mismatch(String),
}

/// Opens a connection that asks one question outside Raft (see `crate::peer::query`); the
/// answer comes back as one frame and the connection closes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Question {
    /// The cluster's id and members as the asked member knows them.
    Members,
    /// The store's hash at `revision` (etcd's HashKV, for the corruption checks).
    HashKv { cluster_id: u64, revision: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    Members {
        cluster_id: u64,
        members: Vec<Member>,
        removed: Vec<NodeId>,
    },
    HashKv {
        hash: u32,
        revision: i64,
        compact_revision: i64,
    },
    /// The question could not be answered now; the text says why.
    Unanswered(String),
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame of {len_bytes} bytes is over the limit of {MAX_FRAME_BYTES}")]
    FrameTooLarge { len_bytes: usize },
    #[error("empty frame")]
    Empty,
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("message of {len_bytes} bytes is over the limit of {limit_bytes}")]
    MessageTooLarge {
        len_bytes: usize,
        limit_bytes: usize,
    },
    #[error("{what} does not decode: {reason}")]
    Undecodable { what: &'static str, reason: String },
    #[error("expected a hello first")]
    NoHello,
}

/// Frame bodies: fixed-width integers. A message larger than a frame travels in parts, so
/// encoding has no limit of its own; a decode reads no more than the body it is given.
const FRAMES: Codec = Codec::fixed(u64::MAX);

/// Encodes a hello frame.
pub fn encode_hello(hello: &Hello, out: &mut BytesMut) {
    let body = FRAMES
        .encode(hello)
        .expect("a hello is plain data and always serializes");
    put_frame(KIND_HELLO, &body, out);
}

/// Encodes one frame of a small value (a refusal, a question, an answer).
fn encode_small<T: Serialize>(kind: u8, value: &T, out: &mut BytesMut) -> Result<(), FrameError> {
    let body = FRAMES.encode(value).map_err(|e| FrameError::Undecodable {
        what: "outgoing frame",
        reason: e.to_string(),
    })?;
    if body.len() >= MAX_FRAME_BYTES {
        return Err(FrameError::FrameTooLarge {
            len_bytes: body.len(),
        });
    }
    put_frame(kind, &body, out);
    Ok(())
}

pub fn encode_refusal(refusal: &Refusal, out: &mut BytesMut) -> Result<(), FrameError> {
    encode_small(KIND_REFUSAL, refusal, out)
}

pub fn encode_question(question: &Question, out: &mut BytesMut) -> Result<(), FrameError> {
    encode_small(KIND_QUESTION, question, out)
}

pub fn encode_answer(answer: &Answer, out: &mut BytesMut) -> Result<(), FrameError> {
    encode_small(KIND_ANSWER, answer, out)
}

/// Opens a snapshot stream: the leader's `InstallSnapshot` message, whose store follows as
/// rows frames.
pub fn encode_snapshot_begin(message: &Message, out: &mut BytesMut) -> Result<(), FrameError> {
    encode_small(KIND_SNAPSHOT_BEGIN, message, out)
}

/// One chunk of a snapshot stream's rows (see `crate::peer::snapshot_stream` for the body).
pub fn encode_snapshot_rows(chunk: &[u8], out: &mut BytesMut) -> Result<(), FrameError> {
    if chunk.len() >= MAX_FRAME_BYTES {
        return Err(FrameError::FrameTooLarge {
            len_bytes: chunk.len(),
        });
    }
    put_frame(KIND_SNAPSHOT_ROWS, chunk, out);
    Ok(())
}

pub fn encode_snapshot_end(end: &SnapshotEnd, out: &mut BytesMut) -> Result<(), FrameError> {
    encode_small(KIND_SNAPSHOT_END, end, out)
}

/// Encodes `message` as one frame, or as parts when it is larger than a frame.
pub fn encode_message(message: &Message, out: &mut BytesMut) {
    let body = FRAMES
        .encode(message)
        .expect("a message is plain data and always serializes");
    let max_body = MAX_FRAME_BYTES - 1;
    if body.len() <= max_body {
        put_frame(KIND_MESSAGE, &body, out);
        return;
    }
    let mut chunks = body.chunks(max_body).peekable();
    while let Some(chunk) = chunks.next() {
        let kind = if chunks.peek().is_some() {
            KIND_PART
        } else {
            KIND_LAST_PART
        };
        put_frame(kind, chunk, out);
    }
}

fn put_frame(kind: u8, body: &[u8], out: &mut BytesMut) {
    let len = u32::try_from(body.len() + 1).expect("frames are below 4 GiB");
    out.reserve(HEADER_BYTES + body.len());
    out.put_u32(len);
    out.put_u8(kind);
    out.put_slice(body);
}

/// What a decoder produced from the bytes so far.
#[derive(Debug, PartialEq)]
pub enum Decoded {
    Hello(Hello),
    Message(Message),
    Refusal(Refusal),
    Question(Question),
    Answer(Answer),
    SnapshotBegin(Message),
    SnapshotRows(Bytes),
    SnapshotEnd(SnapshotEnd),
}

/// Turns the bytes of one connection into hellos and messages.
#[derive(Debug)]
pub struct Decoder {
    buffer: BytesMut,
    /// Parts of a large message received so far.
    parts: BytesMut,
    max_message_bytes: usize,
}

impl Decoder {
    pub fn new(max_message_bytes: usize) -> Decoder {
        Decoder {
            buffer: BytesMut::new(),
            parts: BytesMut::new(),
            max_message_bytes,
        }
    }

    /// Where newly read bytes go.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    /// The next complete hello or message, `None` if more bytes are needed.
    pub fn decode_next(&mut self) -> Result<Option<Decoded>, FrameError> {
        loop {
            let Some((kind, body)) = self.next_frame()? else {
                return Ok(None);
            };
            match kind {
                KIND_HELLO => return decode("hello", &body).map(|h| Some(Decoded::Hello(h))),
                KIND_REFUSAL => return decode("refusal", &body).map(|r| Some(Decoded::Refusal(r))),
                KIND_QUESTION => {
                    return decode("question", &body).map(|q| Some(Decoded::Question(q)))
                }
                KIND_ANSWER => return decode("answer", &body).map(|a| Some(Decoded::Answer(a))),
                KIND_SNAPSHOT_BEGIN => {
                    return decode("snapshot message", &body)
                        .map(|m| Some(Decoded::SnapshotBegin(m)))
                }
                KIND_SNAPSHOT_ROWS => return Ok(Some(Decoded::SnapshotRows(body))),
                KIND_SNAPSHOT_END => {
                    return decode("snapshot end", &body).map(|e| Some(Decoded::SnapshotEnd(e)))
                }
                KIND_MESSAGE => {
                    self.check_size(body.len())?;
                    return decode("message", &body).map(|m| Some(Decoded::Message(m)));
                }
                KIND_PART | KIND_LAST_PART => {
                    self.check_size(self.parts.len() + body.len())?;
                    self.parts.extend_from_slice(&body);
                    if kind == KIND_LAST_PART {
                        let whole = std::mem::take(&mut self.parts).freeze();
                        return decode("message", &whole).map(|m| Some(Decoded::Message(m)));
                    }
                }
                other => return Err(FrameError::UnknownKind { kind: other }),
            }
        }
    }

    fn check_size(&self, len_bytes: usize) -> Result<(), FrameError> {
        if len_bytes > self.max_message_bytes {
            return Err(FrameError::MessageTooLarge {
                len_bytes,
                limit_bytes: self.max_message_bytes,
            });
        }
        Ok(())
    }

    fn next_frame(&mut self) -> Result<Option<(u8, Bytes)>, FrameError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([
            self.buffer[0],
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
        ]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > MAX_FRAME_BYTES {
            return Err(FrameError::FrameTooLarge { len_bytes: len });
        }
        if self.buffer.len() < 4 + len {
            return Ok(None);
        }
        self.buffer.advance(4);
        let kind = self.buffer.get_u8();
        let body = self.buffer.split_to(len - 1).freeze();
        Ok(Some((kind, body)))
    }
}

fn decode<T: for<'de> Deserialize<'de>>(what: &'static str, body: &[u8]) -> Result<T, FrameError> {
    FRAMES.decode(body).map_err(|e| FrameError::Undecodable {
        what,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use keel_core::raft::{ConfState, MessageBody, Snapshot, SnapshotMeta};

    use super::*;

    fn snapshot_message(data_bytes: usize) -> Message {
        Message {
            from: 1,
            to: 2,
            term: 3,
            body: MessageBody::InstallSnapshot(Snapshot {
                meta: SnapshotMeta {
                    index: 9,
                    term: 3,
                    conf_state: ConfState::with_voters([1, 2, 3]),
                },
                data: Bytes::from(vec![7u8; data_bytes]),
            }),
        }
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Decoded>, FrameError> {
        let mut decoder = Decoder::new(max);
        let mut out = Vec::new();
        // Feed in small pieces, as a socket would.
        for piece in bytes.chunks(1000) {
            decoder.buffer_mut().extend_from_slice(piece);
            while let Some(item) = decoder.decode_next()? {
                out.push(item);
            }
        }
        Ok(out)
    }

    #[test]
    fn hello_and_messages_round_trip_including_a_message_in_parts() {
        let mut out = BytesMut::new();
        let hello = Hello {
            cluster_id: 5,
            from: 1,
            to: 2,
            peer_urls: vec!["http://10.0.0.1:2380".into()],
        };
        encode_hello(&hello, &mut out);
        let small = snapshot_message(10);
        let large = snapshot_message(3 * MAX_FRAME_BYTES + 17);
        encode_message(&small, &mut out);
        encode_message(&large, &mut out);
        let decoded = decode_all(&out, 64 * 1024 * 1024).unwrap();
        assert_eq!(
            decoded,
            vec![
                Decoded::Hello(hello.clone()),
                Decoded::Message(small),
                Decoded::Message(large)
            ]
        );
    }

    #[test]
    fn refusals_questions_and_answers_round_trip() {
        let mut out = BytesMut::new();
        let answer = Answer::Members {
            cluster_id: 7,
            members: vec![Member {
                id: 3,
                name: "n3".into(),
                peer_urls: vec!["http://10.0.0.3:2380".into()],
                client_urls: vec![],
                is_learner: true,
            }],
            removed: vec![9],
        };
        encode_refusal(&Refusal::Removed, &mut out).unwrap();
        encode_question(
            &Question::HashKv {
                cluster_id: 7,
                revision: 12,
            },
            &mut out,
        )
        .unwrap();
        encode_answer(&answer, &mut out).unwrap();
        let decoded = decode_all(&out, 1 << 20).unwrap();
        assert_eq!(
            decoded,
            vec![
                Decoded::Refusal(Refusal::Removed),
                Decoded::Question(Question::HashKv {
                    cluster_id: 7,
                    revision: 12
                }),
                Decoded::Answer(answer)
            ]
        );
    }

    #[test]
    fn oversized_or_garbage_frames_are_errors_not_panics() {
        let mut big = BytesMut::new();
        big.put_u32(MAX_FRAME_BYTES as u32 + 1);
        assert!(matches!(
            decode_all(&big, 1 << 20),
            Err(FrameError::FrameTooLarge { .. })
        ));
        let mut garbage = BytesMut::new();
        put_frame(KIND_MESSAGE, b"not bincode at all", &mut garbage);
        assert!(matches!(
            decode_all(&garbage, 1 << 20),
            Err(FrameError::Undecodable { .. })
        ));
        let mut unknown = BytesMut::new();
        put_frame(99, b"x", &mut unknown);
        assert!(matches!(
            decode_all(&unknown, 1 << 20),
            Err(FrameError::UnknownKind { kind: 99 })
        ));
        let mut large = BytesMut::new();
        encode_message(&snapshot_message(2 * MAX_FRAME_BYTES), &mut large);
        assert!(matches!(
            decode_all(&large, MAX_FRAME_BYTES),
            Err(FrameError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn any_bytes_give_messages_or_an_error() {
        let mut state = 0x1234_5678_u64;
        for _ in 0..2000 {
            let len = (state % 64) as usize;
            let mut bytes = BytesMut::new();
            bytes.put_u32(len as u32 + 1);
            bytes.put_u8(KIND_MESSAGE);
            for _ in 0..len {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                bytes.put_u8((state >> 33) as u8);
            }
            let _ = decode_all(&bytes, 1 << 20);
        }
    }
}
