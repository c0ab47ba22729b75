//! Questions one member asks another on the peer port, outside Raft, as etcd's peer HTTP
//! endpoints answer them (`/members`, `/members/hashkv`):
//!
//! - who is in the cluster: a member starting on an empty data dir learns from it whether it
//!   was bootstrapped before (then its data is lost and it must not start, see
//!   `crate::identity`) and, when it joins, its own member id;
//! - the store's hash at a revision: the corruption checks compare members with it (see
//!   `crate::corruption`).
//!
//! A question opens its own connection (see `crate::peer::frame`), gets one answer, and the
//! connection closes; a member that cannot answer says why.

use crate::server_loop::handle::Consistency;
use keel_core::node::query::HashKv;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::BytesMut;
use keel_core::node::{Member, Members};
use keel_core::raft::NodeId;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::peer::frame::{self, Answer, Decoded, Decoder, Question};
use crate::peer::transport::{self, PeerStream};
use crate::server_loop::handle::NodeHandle;
use crate::tls::ClientTls;

/// Largest answer read (a member list of thousands of members fits many times over).
const MAX_ANSWER_BYTES: usize = frame::MAX_FRAME_BYTES;

/// The members as this member last applied them, for answers and for refusing removed
/// members' connections; the server loop keeps it current.
#[derive(Clone, Debug, Default)]
pub struct MembersView(Arc<RwLock<Members>>);

impl MembersView {
    pub fn set(&self, members: &Members) {
        if let Ok(mut view) = self.0.write() {
            if *view != *members {
                *view = members.clone();
            }
        }
    }

    pub fn get(&self) -> Members {
        self.0.read().map(|m| m.clone()).unwrap_or_default()
    }

    pub fn is_member(&self, id: NodeId) -> bool {
        self.0.read().is_ok_and(|m| m.get(id).is_some())
    }

    pub fn is_removed(&self, id: NodeId) -> bool {
        self.0.read().is_ok_and(|m| m.is_removed(id))
    }
}

/// What answering needs: the members, and the loop for hashes.
#[derive(Clone, Debug)]
pub struct AnswerDesk {
    pub members: MembersView,
    pub node: NodeHandle,
}

impl AnswerDesk {
    pub async fn answer(&self, question: Question, local_cluster_id: u64) -> Answer {
        match question {
            Question::Members => {
                let members = self.members.get();
                let removed = members.removed_ids().collect();
                Answer::Members {
                    cluster_id: members.cluster_id(),
                    members: members.iter().cloned().collect(),
                    removed,
                }
            }
            Question::HashKv {
                cluster_id,
                revision,
            } => {
                if cluster_id != local_cluster_id {
                    return Answer::Unanswered(format!(
                        "asked for cluster {cluster_id:x}, this is cluster {local_cluster_id:x}"
                    ));
                }
                // The hash at a revision this member reached is the same whether or not it
                // is fenced after a restart: no need to wait for the fence.
                let hashed = self
                    .node
                    .ask(Consistency::Unfenced, HashKv { revision })
                    .await
                    .map(|hashed| hashed.value);
                match hashed {
                    Ok(Ok(hashed)) => Answer::HashKv {
                        hash: hashed.hash,
                        revision: hashed.hash_revision,
                        compact_revision: hashed.compact_revision,
                    },
                    Ok(Err(error)) => Answer::Unanswered(error.to_string()),
                    Err(error) => Answer::Unanswered(error.to_string()),
                }
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum AskError {
    #[error("cannot reach {url}: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{url} did not answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered with something else than an answer: {what}")]
    Garbled { url: String, what: String },
}

/// Asks the member at peer URL `url` one question.
pub async fn ask(
    url: &str,
    tls: Option<&ClientTls>,
    question: &Question,
    timeout: Duration,
) -> Result<Answer, AskError> {
    match tokio::time::timeout(timeout, ask_now(url, tls, question)).await {
        Ok(answer) => answer,
        Err(_) => Err(AskError::Timeout {
            url: url.to_string(),
            timeout,
        }),
    }
}

async fn ask_now(
    url: &str,
    tls: Option<&ClientTls>,
    question: &Question,
) -> Result<Answer, AskError> {
    let unreachable = |source| AskError::Unreachable {
        url: url.to_string(),
        source,
    };
    let garbled = |what: String| AskError::Garbled {
        url: url.to_string(),
        what,
    };
    let mut stream: PeerStream = transport::connect(url, tls).await.map_err(unreachable)?;
    let mut out = BytesMut::new();
    frame::encode_question(question, &mut out).map_err(|e| garbled(e.to_string()))?;
    stream.write_all(&out).await.map_err(unreachable)?;
    stream.flush().await.map_err(unreachable)?;
    let mut decoder = Decoder::new(MAX_ANSWER_BYTES);
    loop {
        match decoder.decode_next() {
            Ok(Some(Decoded::Answer(answer))) => return Ok(answer),
            Ok(Some(other)) => return Err(garbled(format!("{other:?}"))),
            Ok(None) => {}
            Err(error) => return Err(garbled(error.to_string())),
        }
        let read = stream
            .read_buf(decoder.buffer_mut())
            .await
            .map_err(unreachable)?;
        if read == 0 {
            return Err(garbled("the connection closed before the answer".into()));
        }
    }
}

/// Asks each of `urls` for the members, in order, until one answers; `None` if none did.
pub async fn members_from_any(
    urls: &[String],
    tls: Option<&ClientTls>,
    timeout: Duration,
) -> Option<(String, u64, Vec<Member>, Vec<NodeId>)> {
    for url in urls {
        match ask(url, tls, &Question::Members, timeout).await {
            Ok(Answer::Members {
                cluster_id,
                members,
                removed,
            }) => return Some((url.clone(), cluster_id, members, removed)),
            Ok(other) => tracing::debug!(url, ?other, "no member list from peer"),
            Err(error) => tracing::debug!(url, %error, "no member list from peer"),
        }
    }
    None
}
