//! Questions the server puts to the node, and the small commands that change only this
//! member's own state (its watches, a leader transfer it starts, its engine's file): a
//! closed set of typed requests, each with its typed answer. The server sends a [`Query`]
//! into its loop, which calls [`Node::answer`] and sends the [`Answer`] back; the caller
//! takes its answer out with [`Ask::take`], whose type the query names. Nothing outside
//! this module reaches into the node's Raft or store to answer them.
//!
//! When a query is answered (at once, from the applied state once the node serves from it,
//! or after a ReadIndex round) is the caller's choice, not the query's: the same hash is
//! asked for by a client (from the applied state) and by the corruption check (at once).

use std::fmt;
use std::sync::Arc;

use crate::auth::{self, AuthError, AuthStatus, Credentials};
use crate::mvcc::{
    self, AlarmRequest, AlarmType, ChunkLimits, Command, Defragmenting, HashKvResponse,
    RangeCursor, RangeStreamChunk, StoreConfig, StreamId, View, WatchCreateRequest, WatchId,
};
use crate::raft::{NodeId, TransferError};

use super::{CallerCheck, Member, Node, NodeProposeError, ProposalBody, NO_CLIENT};

/// A query of type `Self`, and the type of its answer.
pub trait Ask: Sized {
    type Answer;
    fn into_query(self) -> Query;
    /// The answer to this query out of what [`Node::answer`] gave. `None` only for an
    /// answer to another query, which `Node::answer` never gives.
    fn take(answer: Answer) -> Option<Self::Answer>;
}

/// Declares the queries: the [`Query`] and [`Answer`] enums (one variant per query, of the
/// query's name), [`Ask`] for each query, and [`Node::answer`], which hands each query to
/// its own `answer` method.
macro_rules! queries {
    ($( $(#[$meta:meta])* $query:ident => $answer:ty; )*) => {
        /// A question for the node, or a command on its own state (see the module's doc).
        #[derive(Clone, Debug)]
        pub enum Query {
            $( $(#[$meta])* $query($query), )*
        }

        /// The node's answer to a [`Query`], in the variant of the query's name.
        pub enum Answer {
            $( $query($answer), )*
        }

        impl fmt::Debug for Answer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let name = match self {
                    $( Answer::$query(_) => stringify!($query), )*
                };
                write!(f, "Answer::{name}")
            }
        }

        $(
            impl Ask for $query {
                type Answer = $answer;

                fn into_query(self) -> Query {
                    Query::$query(self)
                }

                fn take(answer: Answer) -> Option<$answer> {
                    #[allow(unreachable_patterns)]
                    match answer {
                        Answer::$query(answer) => Some(answer),
                        _ => None,
                    }
                }
            }
        )*

        impl Node {
            /// Answers `query` from this node's state as it is now, if `asked_by` (when
            /// given) may ask it.
            pub fn answer_for(
                &mut self,
                asked_by: Option<&AskedBy>,
                query: Query,
            ) -> Result<Answer, AuthError> {
                if let Some(asked_by) = asked_by {
                    self.authorize(&asked_by.credentials, &asked_by.check)?;
                }
                Ok(self.answer(query))
            }

            /// Answers `query` from this node's state as it is now.
            pub fn answer(&mut self, query: Query) -> Answer {
                match query {
                    $( Query::$query(query) => Answer::$query(query.answer(self)), )*
                }
            }
        }
    };
}

queries! {
    /// Whether this member serves: its name published, a leader known (systemd's readiness).
    Serving => bool;
    /// The leader, if this member knows one and its client URLs (to forward a request to).
    LeaderClientUrls => Option<LeaderUrls>;
    /// The leader this member knows of, and its term.
    LeaderAndTerm => (Option<NodeId>, u64);
    /// Whether this member leads.
    IsLeader => bool;
    /// The term and the store's revision, for a response header.
    Header => (u64, i64);
    /// The index applied here (asked after a ReadIndex round: to wait until this member
    /// has applied what was committed when asked).
    AppliedIndex => u64;
    /// The members, with the term.
    MemberList => (Vec<Member>, u64);
    /// The hash of the store's key space at a revision (0: the current one).
    HashKv => Headed<Result<HashKvResponse, mvcc::Error>>;
    /// The store's compacted revision.
    CompactRevision => i64;
    /// Whether this member's store is compacted through a revision physically too (etcd's
    /// `Compact` with `physical` waits for it: a defragment after it frees the space).
    PhysicallyCompacted => bool;
    /// What a health check looks at.
    Health => HealthView;
    /// A consistent view of the store as of its last engine commit (made now), with what a
    /// backup of it needs.
    SnapshotView => StoreSnapshot;
    /// Starts moving leadership to another voter (etcd: asked of the leader, for a voting
    /// member); the caller waits for the new leader.
    TransferLeader => Result<(), TransferRefused>;
    /// Starts rewriting the engine's file without its free pages (see `Store::defragment`).
    Defragment => Result<Defragmenting, mvcc::Error>;
    /// Proposes an alarm change of this member's own (not a client's: nobody waits for it
    /// to apply).
    ProposeAlarm => Result<(), NodeProposeError>;
    /// A range of the store.
    Range => Headed<Result<mvcc::RangeResponse, mvcc::Error>>;
    /// A txn that only reads, checked against this member's limits first.
    ReadTxn => Headed<Result<mvcc::TxnResponse, mvcc::Error>>;
    /// The first chunk of a `RangeStream` (or, for a sorted request, its whole answer).
    StartRangeStream => Headed<Result<RangeStreamStart, mvcc::Error>>;
    /// The next chunk of a `RangeStream`, and the cursor after it.
    NextRangeChunk => Headed<Result<(RangeCursor, RangeStreamChunk), mvcc::Error>>;
    /// What `Maintenance.Status` reports of this member.
    Status => NodeStatus;
    /// Creates a watch on a stream (a refused one is answered in the stream, as etcd's).
    CreateWatch => ();
    /// Cancels a watch of a stream.
    CancelWatch => ();
    /// Whether a stream has a watch of that id.
    WatchExists => bool;
    /// Asks for a progress notification on a stream.
    RequestProgress => ();
    /// Sends what watches have gathered, and progress notifications when due.
    FlushWatches => ();
    /// Nothing but the check of the caller's [`AskedBy`].
    Authorize => ();
    /// Whether auth is on, and the auth store's revision.
    ReadAuthStatus => Headed<Result<AuthStatus, AuthError>>;
    /// A user's roles.
    UserGet => Headed<Result<Vec<String>, AuthError>>;
    /// Every user's name.
    UserList => Headed<Result<Vec<String>, AuthError>>;
    /// A role's permissions.
    RoleGet => Headed<Result<Vec<auth::Permission>, AuthError>>;
    /// Every role's name.
    RoleList => Headed<Result<Vec<String>, AuthError>>;
    /// Renews a lease (on the leader; elsewhere `NotPrimary`).
    LeaseKeepAlive => Headed<Result<mvcc::LeaseKeepAliveResponse, mvcc::Error>>;
    /// A lease's time to live, and its keys if asked (on the leader; elsewhere
    /// `NotPrimary`).
    LeaseTimeToLive => Headed<Result<mvcc::LeaseTimeToLiveResponse, mvcc::Error>>;
    /// Every lease.
    LeaseLeases => Headed<mvcc::LeaseLeasesResponse>;
    /// A user's password hash and the auth revision it was read at, to check a password
    /// against off the loop.
    PasswordHash => Result<(String, u64), AuthError>;
}

/// Who asks, and the check a query needs of them (see [`Node::answer_for`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AskedBy {
    pub credentials: Credentials,
    pub check: CallerCheck,
}

/// An answer with what its response header needs: the term and the store's revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headed<T> {
    pub value: T,
    pub term: u64,
    pub revision: i64,
}

impl<T> Headed<T> {
    fn of(node: &Node, value: T) -> Headed<T> {
        Headed {
            value,
            term: node.raft().term(),
            revision: node.store().current_revision(),
        }
    }
}

/// See [`Query::LeaseKeepAlive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseKeepAlive(pub mvcc::LeaseKeepAliveRequest);

impl LeaseKeepAlive {
    fn answer(self, node: &mut Node) -> Headed<Result<mvcc::LeaseKeepAliveResponse, mvcc::Error>> {
        let renewed = node.lease_keep_alive(&self.0);
        Headed::of(node, renewed)
    }
}

/// See [`Query::LeaseTimeToLive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseTimeToLive(pub mvcc::LeaseTimeToLiveRequest);

impl LeaseTimeToLive {
    fn answer(self, node: &mut Node) -> Headed<Result<mvcc::LeaseTimeToLiveResponse, mvcc::Error>> {
        Headed::of(node, node.lease_time_to_live(&self.0))
    }
}

/// See [`Query::LeaseLeases`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseLeases;

impl LeaseLeases {
    fn answer(self, node: &mut Node) -> Headed<mvcc::LeaseLeasesResponse> {
        Headed::of(node, node.store().lease_leases())
    }
}

/// See [`Query::Authorize`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authorize;

impl Authorize {
    fn answer(self, _node: &mut Node) {}
}

/// See [`Query::ReadAuthStatus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadAuthStatus;

impl ReadAuthStatus {
    fn answer(self, node: &mut Node) -> Headed<Result<AuthStatus, AuthError>> {
        Headed::of(node, Ok(node.auth().status()))
    }
}

/// See [`Query::UserGet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserGet {
    pub name: String,
}

impl UserGet {
    fn answer(self, node: &mut Node) -> Headed<Result<Vec<String>, AuthError>> {
        Headed::of(node, node.auth().user_get(&self.name))
    }
}

/// See [`Query::UserList`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserList;

impl UserList {
    fn answer(self, node: &mut Node) -> Headed<Result<Vec<String>, AuthError>> {
        Headed::of(node, Ok(node.auth().user_names()))
    }
}

/// See [`Query::RoleGet`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleGet {
    pub role: String,
}

impl RoleGet {
    fn answer(self, node: &mut Node) -> Headed<Result<Vec<auth::Permission>, AuthError>> {
        Headed::of(node, node.auth().role_get(&self.role))
    }
}

/// See [`Query::RoleList`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleList;

impl RoleList {
    fn answer(self, node: &mut Node) -> Headed<Result<Vec<String>, AuthError>> {
        Headed::of(node, Ok(node.auth().role_names()))
    }
}

/// See [`Query::PasswordHash`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PasswordHash {
    pub name: String,
}

impl PasswordHash {
    fn answer(self, node: &mut Node) -> Result<(String, u64), AuthError> {
        node.auth().password_hash(&self.name)
    }
}

/// See [`Query::Serving`]: this member is `member_id`, named `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Serving {
    pub member_id: NodeId,
    pub name: String,
}

impl Serving {
    fn answer(self, node: &mut Node) -> bool {
        let published = node
            .members()
            .get(self.member_id)
            .is_some_and(|member| member.name == self.name);
        published && node.raft().leader().is_some()
    }
}

/// See [`Query::LeaderClientUrls`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderClientUrls;

/// The leader and where its clients reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderUrls {
    pub id: NodeId,
    pub client_urls: Vec<String>,
}

impl LeaderClientUrls {
    fn answer(self, node: &mut Node) -> Option<LeaderUrls> {
        let id = node.raft().leader()?;
        let member = node.members().get(id)?;
        (!member.client_urls.is_empty()).then(|| LeaderUrls {
            id,
            client_urls: member.client_urls.clone(),
        })
    }
}

/// See [`Query::LeaderAndTerm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderAndTerm;

impl LeaderAndTerm {
    fn answer(self, node: &mut Node) -> (Option<NodeId>, u64) {
        (node.raft().leader(), node.raft().term())
    }
}

/// See [`Query::IsLeader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IsLeader;

impl IsLeader {
    fn answer(self, node: &mut Node) -> bool {
        node.is_leader()
    }
}

/// See [`Query::Header`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header;

impl Header {
    fn answer(self, node: &mut Node) -> (u64, i64) {
        (node.raft().term(), node.store().current_revision())
    }
}

/// See [`Query::AppliedIndex`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedIndex;

impl AppliedIndex {
    fn answer(self, node: &mut Node) -> u64 {
        node.applied_index()
    }
}

/// See [`Query::MemberList`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberList;

impl MemberList {
    fn answer(self, node: &mut Node) -> (Vec<Member>, u64) {
        let members = node.members().iter().cloned().collect();
        (members, node.raft().term())
    }
}

/// See [`Query::HashKv`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HashKv {
    pub revision: i64,
}

impl HashKv {
    fn answer(self, node: &mut Node) -> Headed<Result<HashKvResponse, mvcc::Error>> {
        Headed::of(node, node.store().hash_kv(self.revision))
    }
}

/// See [`Query::CompactRevision`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactRevision;

impl CompactRevision {
    fn answer(self, node: &mut Node) -> i64 {
        node.store().compact_revision()
    }
}

/// See [`Query::PhysicallyCompacted`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PhysicallyCompacted {
    pub revision: i64,
}

impl PhysicallyCompacted {
    fn answer(self, node: &mut Node) -> bool {
        let store = node.store();
        store.compact_revision() >= self.revision && store.compacted_physically()
    }
}

/// See [`Query::Health`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health;

/// What etcd's `/health` looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthView {
    pub alarms: Vec<AlarmType>,
    pub has_leader: bool,
    pub is_learner: bool,
}

impl Health {
    fn answer(self, node: &mut Node) -> HealthView {
        HealthView {
            alarms: node.store().alarms().iter().map(|a| a.alarm).collect(),
            has_leader: node.raft().leader().is_some(),
            is_learner: node.raft().conf_state().learners.contains(&node.id()),
        }
    }
}

/// See [`Query::SnapshotView`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotView;

/// A view of the store to copy off the loop, and what the copy's header needs.
pub struct StoreSnapshot {
    pub view: Result<Arc<dyn View>, mvcc::Error>,
    pub config: StoreConfig,
    pub term: u64,
    pub revision: i64,
}

impl fmt::Debug for StoreSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreSnapshot")
            .field("term", &self.term)
            .field("revision", &self.revision)
            .finish_non_exhaustive()
    }
}

impl SnapshotView {
    fn answer(self, node: &mut Node) -> StoreSnapshot {
        // The view is of the engine's last commit: commit what was applied first.
        let view = node.commit_store(false).and_then(|()| node.store().view());
        StoreSnapshot {
            view,
            config: *node.store().config(),
            term: node.raft().term(),
            revision: node.store().current_revision(),
        }
    }
}

/// See [`Query::TransferLeader`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferLeader {
    pub target: NodeId,
}

/// Why a leader transfer was not started (etcd's errors for `MoveLeader`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferRefused {
    #[error("not the leader")]
    NotLeader,
    /// The target is not a voting member.
    #[error("the target is not a voting member")]
    BadTransferee,
}

impl TransferLeader {
    fn answer(self, node: &mut Node) -> Result<(), TransferRefused> {
        if !node.is_leader() {
            return Err(TransferRefused::NotLeader);
        }
        match node.members().get(self.target) {
            Some(member) if !member.is_learner => {}
            _ => return Err(TransferRefused::BadTransferee),
        }
        node.raft
            .transfer_leader(self.target)
            .map_err(|error| match error {
                TransferError::NotLeader => TransferRefused::NotLeader,
                TransferError::NotVoter { .. } => TransferRefused::BadTransferee,
            })
    }
}

/// See [`Query::Defragment`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defragment;

impl Defragment {
    fn answer(self, node: &mut Node) -> Result<Defragmenting, mvcc::Error> {
        node.begin_store_defragment()
    }
}

/// See [`Query::ProposeAlarm`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProposeAlarm {
    pub alarm: AlarmRequest,
}

impl ProposeAlarm {
    fn answer(self, node: &mut Node) -> Result<(), NodeProposeError> {
        node.propose(NO_CLIENT, ProposalBody::Store(Command::Alarm(self.alarm)))
    }
}

/// See [`Query::Range`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range(pub mvcc::RangeRequest);

impl Range {
    fn answer(self, node: &mut Node) -> Headed<Result<mvcc::RangeResponse, mvcc::Error>> {
        Headed::of(node, node.store().range(&self.0))
    }
}

/// See [`Query::ReadTxn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadTxn(pub mvcc::TxnRequest);

impl ReadTxn {
    fn answer(self, node: &mut Node) -> Headed<Result<mvcc::TxnResponse, mvcc::Error>> {
        let store = node.store();
        let read = mvcc::check_command(&Command::Txn(self.0.clone()), &store.config().limits)
            .and_then(|()| store.read_txn(&self.0));
        Headed::of(node, read)
    }
}

/// See [`Query::StartRangeStream`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartRangeStream(pub mvcc::RangeRequest);

/// How a `RangeStream` starts: the first chunk of a stream in key order, or the whole
/// answer of a sorted request.
#[derive(Clone, Debug)]
pub enum RangeStreamStart {
    Chunked(Box<RangeCursor>, RangeStreamChunk),
    Whole(mvcc::RangeResponse),
}

impl StartRangeStream {
    fn answer(self, node: &mut Node) -> Headed<Result<RangeStreamStart, mvcc::Error>> {
        let store = node.store();
        let start = RangeCursor::start(store, &self.0, ChunkLimits::default()).and_then(|cursor| {
            match cursor {
                Some(mut cursor) => {
                    let chunk = cursor.next_chunk(store)?;
                    Ok(RangeStreamStart::Chunked(Box::new(cursor), chunk))
                }
                None => Ok(RangeStreamStart::Whole(store.range(&self.0)?)),
            }
        });
        Headed::of(node, start)
    }
}

/// See [`Query::NextRangeChunk`]: the cursor the last chunk left.
#[derive(Clone, Debug)]
pub struct NextRangeChunk(pub RangeCursor);

impl NextRangeChunk {
    fn answer(
        self,
        node: &mut Node,
    ) -> Headed<Result<(RangeCursor, RangeStreamChunk), mvcc::Error>> {
        let mut cursor = self.0;
        let chunk = cursor.next_chunk(node.store());
        Headed::of(node, chunk.map(|chunk| (cursor, chunk)))
    }
}

/// See [`Query::Status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status;

/// This member as `Maintenance.Status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeStatus {
    pub leader: Option<NodeId>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub is_learner: bool,
    /// The engine's file, and of it what the store holds (see [`db_sizes`]).
    pub db_size_bytes: u64,
    pub db_size_in_use_bytes: u64,
    pub quota_bytes: u64,
    pub alarms: Vec<mvcc::AlarmMember>,
    pub revision: i64,
}

impl Status {
    fn answer(self, node: &mut Node) -> NodeStatus {
        let raft = node.raft();
        let store = node.store();
        let (db_size_bytes, db_size_in_use_bytes) = db_sizes(store);
        NodeStatus {
            leader: raft.leader(),
            term: raft.term(),
            commit_index: raft.commit_index(),
            applied_index: node.applied_index(),
            is_learner: raft.conf_state().learners.contains(&node.id()),
            db_size_bytes,
            db_size_in_use_bytes,
            quota_bytes: store.config().quota_bytes,
            alarms: store.alarms(),
            revision: store.current_revision(),
        }
    }
}

/// The store's size as Status and the metrics report it: the engine's file, and of it what
/// is in use — the store's own estimate of what it holds (what the quota counts), which the
/// file's free pages do not change. O(1).
pub fn db_sizes(store: &mvcc::Store) -> (u64, u64) {
    let logical_bytes = store.size_bytes();
    let file_bytes = match store.size_on_disk() {
        (0, _) => logical_bytes,
        (file, _) => file,
    };
    (file_bytes, logical_bytes.min(file_bytes))
}

/// See [`Query::CreateWatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateWatch {
    pub stream: StreamId,
    pub request: WatchCreateRequest,
}

impl CreateWatch {
    fn answer(self, node: &mut Node) {
        // A refused create was answered in the stream by the hub (created + canceled).
        let Ok(id) = node.watches.create_watch(self.stream, &self.request) else {
            return;
        };
        if node.watches().is_unsynced(self.stream, id) {
            // Start catching up now rather than at the next timer.
            node.sync_watches();
        }
    }
}

/// See [`Query::CancelWatch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CancelWatch {
    pub stream: StreamId,
    pub watch_id: WatchId,
}

impl CancelWatch {
    fn answer(self, node: &mut Node) {
        node.watches.cancel_watch(self.stream, self.watch_id);
    }
}

/// See [`Query::WatchExists`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchExists {
    pub stream: StreamId,
    pub watch_id: WatchId,
}

impl WatchExists {
    fn answer(self, node: &mut Node) -> bool {
        node.watches().has_watch(self.stream, self.watch_id)
    }
}

/// See [`Query::RequestProgress`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestProgress {
    pub stream: StreamId,
}

impl RequestProgress {
    fn answer(self, node: &mut Node) {
        node.watches.request_progress(self.stream);
    }
}

/// See [`Query::FlushWatches`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlushWatches {
    /// A progress notification is due on every stream that asked for them.
    pub progress_due: bool,
}

impl FlushWatches {
    fn answer(self, node: &mut Node) {
        node.sync_watches();
        if self.progress_due {
            node.watches.progress_tick();
        }
    }
}
