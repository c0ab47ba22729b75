//! A deterministic in-memory Raft cluster: nodes, their "disks", a message queue with rules
//! (drop, duplicate, reorder, partition), crash and restart, and checkers for Raft's safety
//! properties. Tests drive it step by step; property tests drive it from a seed. Nothing here
//! reads a clock or the OS: the same seed gives the same run, which [`Cluster::trace_hash`]
//! lets a test prove.
//!
//! The state machine is a log of applied payloads; its snapshot is that log, encoded.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::{
    ConfState, Config, Entry, EntryPayload, HardState, Index, InitialState, Message, MessageBody,
    MessageError, NodeId, ProposeError, Proposed, Raft, ReadIndexError, ReadState, Ready, Role,
    Snapshot, SnapshotMeta, Term,
};

/// What a node has on disk: what its `Ready`s asked to persist, nothing more.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    pub hard_state: HardState,
    pub snapshot: Snapshot,
    pub entries: Vec<Entry>,
    /// The commit index as of the last sync; a crash loses a later, unsynced one.
    pub synced_commit_index: Index,
}

impl MemStorage {
    /// A founding member's disk whose log, after the bootstrap snapshot, holds one entry per
    /// item of `entry_terms` (payload `"t{term}i{index}"`), with `term` as its current term.
    pub fn with_log(voters: &[NodeId], entry_terms: &[Term], term: Term) -> MemStorage {
        let initial =
            InitialState::bootstrap(voters.iter().copied(), AppliedLog::default().encode());
        let first = initial.snapshot.meta.index + 1;
        let entries = entry_terms
            .iter()
            .zip(first..)
            .map(|(&entry_term, index)| Entry {
                index,
                term: entry_term,
                payload: EntryPayload::Normal(Bytes::from(format!("t{entry_term}i{index}"))),
            })
            .collect();
        MemStorage {
            hard_state: HardState {
                term: term.max(initial.hard_state.term),
                vote: None,
                commit_index: initial.hard_state.commit_index,
            },
            synced_commit_index: initial.hard_state.commit_index,
            snapshot: initial.snapshot,
            entries,
        }
    }

    /// Persists a `Ready` as the contract says: snapshot, entries (replacing any suffix from
    /// the first one's index), hard state.
    pub fn persist(&mut self, ready: &Ready) {
        if let Some(snapshot) = &ready.snapshot {
            self.snapshot = snapshot.clone();
            self.entries.clear();
        }
        if let Some(first) = ready.entries.first() {
            let keep = self.entries.partition_point(|e| e.index < first.index);
            self.entries.truncate(keep);
            self.entries.extend(ready.entries.iter().cloned());
        }
        if let Some(hard_state) = ready.hard_state {
            self.hard_state = hard_state;
        }
        if ready.must_sync() {
            self.synced_commit_index = self.hard_state.commit_index;
        }
    }

    /// A crash: what was written without a sync is gone. Entries, term and vote are always
    /// synced (`must_sync`); a commit index alone is not, so a restarted node may start
    /// behind what it had applied.
    pub fn lose_unsynced(&mut self) {
        let floor = self.snapshot.meta.index;
        self.hard_state.commit_index = self.synced_commit_index.max(floor);
    }

    /// Drops persisted entries covered by `snapshot`, keeping those after `keep_from`.
    pub fn compact(&mut self, snapshot: Snapshot, keep_from: Index) {
        self.entries.retain(|e| e.index >= keep_from);
        self.snapshot = snapshot;
    }

    /// What a restarted node starts from. The state machine is restored from the snapshot,
    /// so that is what has been applied.
    pub fn initial_state(&self) -> InitialState {
        let snapshot_index = self.snapshot.meta.index;
        InitialState {
            hard_state: self.hard_state,
            snapshot: self.snapshot.clone(),
            entries: self
                .entries
                .iter()
                .filter(|e| e.index > snapshot_index)
                .cloned()
                .collect(),
            applied_index: snapshot_index,
        }
    }
}

/// The test state machine: every applied application payload with its index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedLog {
    pub applied_index: Index,
    pub payloads: Vec<(Index, Bytes)>,
}

impl AppliedLog {
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::new();
        buf.put_u64(self.applied_index);
        buf.put_u64(self.payloads.len() as u64);
        for (index, data) in &self.payloads {
            buf.put_u64(*index);
            buf.put_u32(data.len() as u32);
            buf.put_slice(data);
        }
        buf.freeze()
    }

    /// Decodes a snapshot image; `None` if it is malformed.
    pub fn decode(mut data: Bytes) -> Option<AppliedLog> {
        if data.is_empty() {
            return Some(AppliedLog::default());
        }
        if data.remaining() < 16 {
            return None;
        }
        let applied_index = data.get_u64();
        let count = data.get_u64();
        let mut payloads = Vec::new();
        for _ in 0..count {
            if data.remaining() < 12 {
                return None;
            }
            let index = data.get_u64();
            let len = data.get_u32() as usize;
            if data.remaining() < len {
                return None;
            }
            payloads.push((index, data.split_to(len)));
        }
        Some(AppliedLog {
            applied_index,
            payloads,
        })
    }
}

/// One member: its Raft (absent while crashed), disk and state machine.
#[derive(Debug)]
pub struct SimNode {
    pub raft: Option<Raft>,
    pub storage: MemStorage,
    pub state_machine: AppliedLog,
    /// Reads answered to this node, with the applied index at which they were served.
    pub read_states: Vec<ReadState>,
    /// Highest commit index seen in this incarnation (commit must never move back).
    commit_seen: Index,
}

/// A rule-driven in-memory network.
#[derive(Debug, Default)]
struct Network {
    queue: VecDeque<Message>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    drop_percent: u32,
    duplicate_percent: u32,
    /// Chance that a message due for delivery is sent to the back of the queue instead.
    delay_percent: u32,
    reorder: bool,
}

/// An entry known to be committed, with an upper bound on the term it was committed in: the
/// term of the first node seen knowing it committed (it learned that from a leader of that
/// term or an earlier one).
#[derive(Clone, Debug)]
struct CommittedEntry {
    entry: Entry,
    commit_term_bound: Term,
}

/// A safety property that failed, with what shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Upper bound on delivery rounds in [`Cluster::stabilize`]: more means a livelock.
const MAX_STABILIZE_ROUNDS: usize = 100_000;

pub struct Cluster {
    pub nodes: BTreeMap<NodeId, SimNode>,
    network: Network,
    rng: ChaCha8Rng,
    seed: u64,
    config_for: Box<dyn Fn(NodeId, u64) -> Config>,
    /// Every entry known committed, by index: all nodes must apply the same (§5.4.3), and
    /// every leader of a later term must hold it (§5.4 Leader Completeness).
    committed: BTreeMap<Index, CommittedEntry>,
    /// The leader of each term, as observed (§5.2 Election Safety).
    leaders_by_term: BTreeMap<Term, NodeId>,
    /// For each outstanding read (node, request id): the highest commit index any node knew
    /// when it was issued. Its read index may not be lower (linearizability).
    reads_issued: BTreeMap<(NodeId, u64), Index>,
    step_errors: Vec<(NodeId, MessageError)>,
    trace: DefaultHasher,
    trace_events: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("seed", &self.seed)
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .field("in_flight", &self.network.queue.len())
            .finish()
    }
}

/// The configuration the harness uses unless told otherwise: etcd's shape (heartbeat 1,
/// election 10), PreVote and CheckQuorum on, a seed per node.
pub fn default_config(id: NodeId, seed: u64) -> Config {
    let mut config = Config::new(id);
    config.seed = seed.wrapping_mul(1_000_003).wrapping_add(id);
    config
}

impl Cluster {
    /// A new cluster of voters `1..=size`, bootstrapped, no leader yet.
    pub fn new(size: u64, seed: u64) -> Cluster {
        Cluster::with_config(size, seed, default_config)
    }

    pub fn with_config(
        size: u64,
        seed: u64,
        config_for: impl Fn(NodeId, u64) -> Config + 'static,
    ) -> Cluster {
        let voters: Vec<NodeId> = (1..=size).collect();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            network: Network::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            seed,
            config_for: Box::new(config_for),
            committed: BTreeMap::new(),
            leaders_by_term: BTreeMap::new(),
            reads_issued: BTreeMap::new(),
            step_errors: Vec::new(),
            trace: DefaultHasher::new(),
            trace_events: 0,
        };
        let image = AppliedLog::default().encode();
        for &id in &voters {
            let initial = InitialState::bootstrap(voters.iter().copied(), image.clone());
            let storage = MemStorage {
                hard_state: initial.hard_state,
                snapshot: initial.snapshot.clone(),
                entries: Vec::new(),
                synced_commit_index: initial.hard_state.commit_index,
            };
            cluster.add_node(id, storage);
        }
        cluster
    }

    /// A cluster whose nodes start from the given disks (hand-made logs for paper tests).
    pub fn with_storages(
        storages: BTreeMap<NodeId, MemStorage>,
        seed: u64,
        config_for: impl Fn(NodeId, u64) -> Config + 'static,
    ) -> Cluster {
        let mut cluster = Cluster::with_config(0, seed, config_for);
        for (id, storage) in storages {
            cluster.add_node(id, storage);
        }
        cluster
    }

    fn add_node(&mut self, id: NodeId, storage: MemStorage) {
        let state_machine = AppliedLog::decode(storage.snapshot.data.clone()).unwrap_or_default();
        let config = (self.config_for)(id, self.seed);
        let raft = Raft::new(config, storage.initial_state())
            .unwrap_or_else(|e| panic!("node {id} cannot start: {e}"));
        self.nodes.insert(
            id,
            SimNode {
                raft: Some(raft),
                storage,
                state_machine,
                read_states: Vec::new(),
                commit_seen: 0,
            },
        );
    }

    /// Starts a brand-new empty node `id` that will join through a membership change.
    pub fn add_empty_node(&mut self, id: NodeId) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists");
        self.add_node(id, MemStorage::default());
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.nodes
            .get(&id)
            .and_then(|n| n.raft.as_ref())
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn raft_mut(&mut self, id: NodeId) -> &mut Raft {
        self.nodes
            .get_mut(&id)
            .and_then(|n| n.raft.as_mut())
            .unwrap_or_else(|| panic!("node {id} is not running"))
    }

    pub fn is_running(&self, id: NodeId) -> bool {
        self.nodes.get(&id).is_some_and(|n| n.raft.is_some())
    }

    pub fn node(&self, id: NodeId) -> &SimNode {
        &self.nodes[&id]
    }

    /// The running leader of the highest term, if any.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .iter()
            .filter_map(|(&id, n)| n.raft.as_ref().map(|r| (id, r)))
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term())
            .map(|(id, _)| id)
    }

    // ---- Network rules ----

    /// Cuts both directions between every node of `a` and every node of `b`.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        for &x in a {
            for &y in b {
                self.network.cut.insert((x, y));
                self.network.cut.insert((y, x));
            }
        }
    }

    /// Cuts `id` off from everyone.
    pub fn isolate(&mut self, id: NodeId) {
        let others: Vec<NodeId> = self.ids().into_iter().filter(|&o| o != id).collect();
        self.partition(&[id], &others);
    }

    /// Cuts one direction only.
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.network.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.network.cut.clear();
    }

    pub fn set_drop_percent(&mut self, percent: u32) {
        self.network.drop_percent = percent.min(100);
    }

    pub fn set_duplicate_percent(&mut self, percent: u32) {
        self.network.duplicate_percent = percent.min(100);
    }

    /// Delays messages: each one due for delivery goes to the back of the queue with this
    /// chance, so it arrives after messages sent later.
    pub fn set_delay_percent(&mut self, percent: u32) {
        self.network.delay_percent = percent.min(99);
    }

    pub fn set_reorder(&mut self, reorder: bool) {
        self.network.reorder = reorder;
    }

    pub fn in_flight(&self) -> usize {
        self.network.queue.len()
    }

    /// Removes and returns queued messages matching `filter` (for tests that hand-deliver).
    pub fn take_messages(&mut self, filter: impl Fn(&Message) -> bool) -> Vec<Message> {
        let (taken, kept): (Vec<Message>, Vec<Message>) =
            self.network.queue.drain(..).partition(|m| filter(m));
        self.network.queue = kept.into();
        taken
    }

    fn send(&mut self, message: Message) {
        if self.network.cut.contains(&(message.from, message.to)) {
            return;
        }
        if self.network.drop_percent > 0 && self.rng.gen_range(0..100) < self.network.drop_percent {
            return;
        }
        if self.network.duplicate_percent > 0
            && self.rng.gen_range(0..100) < self.network.duplicate_percent
        {
            self.network.queue.push_back(message.clone());
        }
        self.network.queue.push_back(message);
    }

    /// Delivers one queued message (the oldest, or a random one when reordering). Returns
    /// false when nothing is queued.
    pub fn deliver_one(&mut self) -> bool {
        let message = if self.network.reorder && !self.network.queue.is_empty() {
            let at = self.rng.gen_range(0..self.network.queue.len());
            self.network.queue.swap_remove_back(at)
        } else {
            self.network.queue.pop_front()
        };
        let Some(message) = message else {
            return false;
        };
        if self.network.delay_percent > 0 && self.rng.gen_range(0..100) < self.network.delay_percent
        {
            self.network.queue.push_back(message);
            return true;
        }
        self.deliver(message);
        true
    }

    /// Steps `message` into its recipient now, unless the link is cut or it is down.
    pub fn deliver(&mut self, message: Message) {
        if self.network.cut.contains(&(message.from, message.to)) {
            return;
        }
        let to = message.to;
        if !self.is_running(to) {
            return;
        }
        self.record(&("deliver", &message));
        if let Err(error) = self.raft_mut(to).step(message) {
            self.step_errors.push((to, error));
        }
    }

    // ---- Driving ----

    /// Carries out every pending `Ready` of `id`, in the contract's order.
    pub fn process_ready(&mut self, id: NodeId) {
        loop {
            let Some(node) = self.nodes.get_mut(&id) else {
                return;
            };
            let Some(raft) = node.raft.as_mut() else {
                return;
            };
            let Some(mut ready) = raft.ready() else {
                return;
            };
            let messages = std::mem::take(&mut ready.messages);
            for message in messages {
                self.send(message);
            }
            let node = self.nodes.get_mut(&id).expect("node exists");
            node.storage.persist(&ready);
            let persisted_messages = std::mem::take(&mut ready.persisted_messages);
            for message in persisted_messages {
                self.send(message);
            }
            self.apply_ready(id, &ready);
            self.record(&("ready", id, ready.hard_state, ready.entries.len()));
            let node = self.nodes.get_mut(&id).expect("node exists");
            if let Some(raft) = node.raft.as_mut() {
                raft.advance(&ready);
            }
        }
    }

    fn apply_ready(&mut self, id: NodeId, ready: &Ready) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let term = node.raft.as_ref().map_or(0, Raft::term);
        if let Some(snapshot) = &ready.snapshot {
            node.state_machine = AppliedLog::decode(snapshot.data.clone())
                .unwrap_or_else(|| panic!("node {id}: undecodable snapshot"));
            node.state_machine.applied_index = snapshot.meta.index;
        }
        for entry in &ready.committed_entries {
            if let EntryPayload::Normal(data) = &entry.payload {
                node.state_machine
                    .payloads
                    .push((entry.index, data.clone()));
            }
            node.state_machine.applied_index = entry.index;
        }
        for entry in &ready.committed_entries {
            if let Err(violation) = Self::note_committed(&mut self.committed, entry, term) {
                panic!("seed {}: node {id} applied: {violation}", self.seed);
            }
        }
        let node = self.nodes.get_mut(&id).expect("node exists");
        for read in &ready.read_states {
            node.read_states.push(*read);
            if let Some(floor) = self.reads_issued.remove(&(id, read.request_id)) {
                assert!(
                    read.read_index >= floor,
                    "stale read (seed {}): node {id} read {} got read index {} below commit \
                     index {floor} known when it was issued",
                    self.seed,
                    read.request_id,
                    read.read_index
                );
            }
        }
    }

    /// Takes `id`'s next `Ready`, sends its `messages` (step 1 of the contract) and crashes
    /// before persisting anything: the window in which a node's words outrun its disk.
    pub fn crash_mid_ready(&mut self, id: NodeId) {
        let ready = self
            .nodes
            .get_mut(&id)
            .and_then(|n| n.raft.as_mut())
            .and_then(Raft::ready);
        if let Some(ready) = ready {
            for message in ready.messages {
                self.send(message);
            }
        }
        self.crash(id);
    }

    /// Processes every node's `Ready`.
    pub fn process_all_ready(&mut self) {
        for id in self.ids() {
            self.process_ready(id);
        }
    }

    /// Processes `Ready`s and delivers messages until nothing moves. Panics on a livelock.
    pub fn stabilize(&mut self) {
        for _ in 0..MAX_STABILIZE_ROUNDS {
            self.process_all_ready();
            if self.network.queue.is_empty() {
                return;
            }
            let pending = self.network.queue.len();
            for _ in 0..pending {
                self.deliver_one();
            }
        }
        panic!(
            "cluster did not stabilize after {MAX_STABILIZE_ROUNDS} rounds (seed {})",
            self.seed
        );
    }

    pub fn tick(&mut self, id: NodeId) {
        if let Some(raft) = self.nodes.get_mut(&id).and_then(|n| n.raft.as_mut()) {
            raft.tick();
        }
    }

    pub fn tick_all(&mut self) {
        for id in self.ids() {
            self.tick(id);
        }
    }

    /// Ticks every node `ticks` times, stabilizing after each.
    pub fn run_ticks(&mut self, ticks: u32) {
        for _ in 0..ticks {
            self.tick_all();
            self.stabilize();
        }
    }

    /// Makes `id` campaign and stabilizes; panics if it did not become the leader.
    pub fn elect(&mut self, id: NodeId) {
        self.raft_mut(id).campaign();
        self.stabilize();
        assert_eq!(
            self.raft(id).role(),
            Role::Leader,
            "node {id} failed to win an election (seed {})",
            self.seed
        );
    }

    /// Ticks until some node leads, at most `max_ticks`; returns it.
    pub fn wait_for_leader(&mut self, max_ticks: u32) -> Option<NodeId> {
        for _ in 0..max_ticks {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            self.tick_all();
            self.stabilize();
        }
        self.leader()
    }

    pub fn propose(
        &mut self,
        id: NodeId,
        data: impl Into<Bytes>,
    ) -> Result<Proposed, ProposeError> {
        let data = data.into();
        self.record(&("propose", id, &data));
        self.raft_mut(id).propose(data)
    }

    /// Issues a linearizable read; its read index is checked against the commit index the
    /// cluster had reached now.
    pub fn read_index(&mut self, id: NodeId, request_id: u64) -> Result<(), ReadIndexError> {
        let floor = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .map(|r| r.commit_index())
            .max()
            .unwrap_or(0);
        self.raft_mut(id).read_index(request_id)?;
        self.reads_issued.insert((id, request_id), floor);
        Ok(())
    }

    /// Takes a snapshot of `id`'s state machine at its applied index and compacts its log,
    /// keeping `retain_entries` entries before it.
    pub fn compact(&mut self, id: NodeId, retain_entries: u64) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let Some(raft) = node.raft.as_mut() else {
            return;
        };
        let index = node.state_machine.applied_index;
        if index <= raft.status().snapshot_index {
            return;
        }
        let Some(term) = raft.log_term(index) else {
            return;
        };
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                conf_state: raft.conf_state().clone(),
            },
            data: node.state_machine.encode(),
        };
        raft.compact(snapshot.clone(), retain_entries);
        let keep_from = raft.first_index();
        node.storage.compact(snapshot, keep_from);
    }

    /// Crashes `id`: its process state is gone, its disk stays, less what was not synced
    /// (a commit index written without a sync is lost).
    pub fn crash(&mut self, id: NodeId) {
        self.record(&("crash", id));
        if let Some(node) = self.nodes.get_mut(&id) {
            node.raft = None;
            node.read_states.clear();
            node.storage.lose_unsynced();
        }
        self.reads_issued.retain(|(node, _), _| *node != id);
    }

    /// Restarts `id` from its disk.
    pub fn restart(&mut self, id: NodeId) {
        self.record(&("restart", id));
        let config = (self.config_for)(id, self.seed.wrapping_add(self.trace_events));
        let node = self.nodes.get_mut(&id).expect("node exists");
        assert!(node.raft.is_none(), "node {id} is running");
        let raft = Raft::new(config, node.storage.initial_state())
            .unwrap_or_else(|e| panic!("node {id} cannot restart: {e}"));
        node.state_machine = AppliedLog::decode(node.storage.snapshot.data.clone())
            .unwrap_or_else(|| panic!("node {id}: undecodable snapshot on disk"));
        node.state_machine.applied_index = node.storage.snapshot.meta.index;
        node.commit_seen = 0;
        node.raft = Some(raft);
    }

    // ---- Checkers ----

    /// Checks Raft's safety properties across the cluster as it stands.
    pub fn check_invariants(&mut self) -> Result<(), Violation> {
        if let Some((id, error)) = self.step_errors.first() {
            return Err(Violation(format!(
                "node {id} refused a message from a correct peer: {error}"
            )));
        }
        self.check_election_safety()?;
        self.check_no_lost_state()?;
        self.check_node_monotonicity()?;
        self.check_leader_completeness()?;
        self.check_log_matching()
    }

    /// The harness's disks never lose what was synced, so no node may conclude that it lost
    /// state (a false alarm would stop a healthy member).
    fn check_no_lost_state(&self) -> Result<(), Violation> {
        for (id, node) in &self.nodes {
            if let Some(lost) = node.raft.as_ref().and_then(Raft::lost_state) {
                return Err(Violation(format!(
                    "node {id} thinks it lost state on an intact disk: {lost}"
                )));
            }
        }
        Ok(())
    }

    /// At most one leader per term (§5.2). A leadership counts once its term and self-vote
    /// are on disk: before that nothing it did can have left the node (a lone voter wins
    /// without a round trip, and may crash before its term is persisted).
    fn check_election_safety(&mut self) -> Result<(), Violation> {
        for (&id, node) in &self.nodes {
            let Some(raft) = &node.raft else { continue };
            let durable = node.storage.hard_state.term == raft.term()
                && node.storage.hard_state.vote == Some(id);
            if raft.role() != Role::Leader || !durable {
                continue;
            }
            let leader = *self.leaders_by_term.entry(raft.term()).or_insert(id);
            if leader != id {
                return Err(Violation(format!(
                    "Election Safety: nodes {leader} and {id} both led term {}",
                    raft.term()
                )));
            }
        }
        Ok(())
    }

    fn check_node_monotonicity(&mut self) -> Result<(), Violation> {
        for (&id, node) in self.nodes.iter_mut() {
            let Some(raft) = &node.raft else { continue };
            let status = raft.status();
            if status.commit_index < node.commit_seen {
                return Err(Violation(format!(
                    "node {id}: commit index went back from {} to {}",
                    node.commit_seen, status.commit_index
                )));
            }
            node.commit_seen = status.commit_index;
            if !(status.applied_index <= status.commit_index
                && status.commit_index <= status.last_index)
            {
                return Err(Violation(format!(
                    "node {id}: applied {} <= committed {} <= last {} does not hold",
                    status.applied_index, status.commit_index, status.last_index
                )));
            }
        }
        Ok(())
    }

    /// Records that `entry` is committed, as known by a node in term `term`; it must be the
    /// entry everyone else knows committed at that index (State Machine Safety).
    fn note_committed(
        committed: &mut BTreeMap<Index, CommittedEntry>,
        entry: &Entry,
        term: Term,
    ) -> Result<(), Violation> {
        match committed.get_mut(&entry.index) {
            Some(known) if known.entry != *entry => Err(Violation(format!(
                "State Machine Safety: {entry:?} committed at index {}, but so was {:?}",
                entry.index, known.entry
            ))),
            Some(known) => {
                known.commit_term_bound = known.commit_term_bound.min(term);
                Ok(())
            }
            None => {
                committed.insert(
                    entry.index,
                    CommittedEntry {
                        entry: entry.clone(),
                        commit_term_bound: term,
                    },
                );
                Ok(())
            }
        }
    }

    /// Every entry committed in a term before a leader's is in that leader's log (§5.4
    /// Leader Completeness). Also learns what leaders know to be committed.
    fn check_leader_completeness(&mut self) -> Result<(), Violation> {
        for (&id, node) in &self.nodes {
            let Some(raft) = &node.raft else { continue };
            if raft.role() != Role::Leader {
                continue;
            }
            let known_to = self.committed.last_key_value().map_or(0, |(&i, _)| i);
            for index in (known_to + 1).max(raft.first_index())..=raft.commit_index() {
                if let Some(entry) = raft.log_entry(index) {
                    Self::note_committed(&mut self.committed, entry, raft.term())?;
                }
            }
            let first = raft.first_index();
            for (&index, known) in self.committed.range(first..) {
                if known.commit_term_bound >= raft.term() {
                    continue;
                }
                let entry = &known.entry;
                match raft.log_entry(index) {
                    Some(own) if own == entry => {}
                    own => {
                        return Err(Violation(format!(
                            "Leader Completeness: leader {id} (term {}) has {own:?} at {index}, \
                             but {entry:?} was committed in term {} or earlier",
                            raft.term(),
                            known.commit_term_bound
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Where two logs hold an entry with the same index and term, they hold the same
    /// entry, and agree on everything before it (§5.3 Log Matching).
    fn check_log_matching(&self) -> Result<(), Violation> {
        let running: Vec<(NodeId, &Raft)> = self
            .nodes
            .iter()
            .filter_map(|(&id, n)| n.raft.as_ref().map(|r| (id, r)))
            .collect();
        for (i, (a_id, a)) in running.iter().enumerate() {
            for (b_id, b) in running.iter().skip(i + 1) {
                let from = a.first_index().max(b.first_index());
                let to = a.last_index().min(b.last_index());
                // Walk down from the top: once two entries match, all below must too.
                let mut matched = false;
                let mut index = to;
                while index >= from && index > 0 {
                    let (ea, eb) = (a.log_entry(index), b.log_entry(index));
                    if let (Some(ea), Some(eb)) = (ea, eb) {
                        if ea.term == eb.term && ea != eb {
                            return Err(Violation(format!(
                                "Log Matching: nodes {a_id} and {b_id} hold different entries \
                                 with term {} at index {index}",
                                ea.term
                            )));
                        }
                        if matched && ea != eb {
                            return Err(Violation(format!(
                                "Log Matching: nodes {a_id} and {b_id} agree above index \
                                 {index} but differ at it"
                            )));
                        }
                        matched |= ea.term == eb.term;
                    }
                    index -= 1;
                }
            }
        }
        Ok(())
    }

    /// Every running node has applied exactly the same entries.
    pub fn check_converged(&self) -> Result<(), Violation> {
        self.check_converged_among(&self.ids())
    }

    /// Every running node of `ids` has applied exactly the same entries.
    pub fn check_converged_among(&self, ids: &[NodeId]) -> Result<(), Violation> {
        let logs: Vec<(NodeId, &AppliedLog)> = self
            .nodes
            .iter()
            .filter(|(id, n)| n.raft.is_some() && ids.contains(id))
            .map(|(&id, n)| (id, &n.state_machine))
            .collect();
        let Some((first_id, first)) = logs.first() else {
            return Ok(());
        };
        for (id, log) in &logs[1..] {
            if log != first {
                return Err(Violation(format!(
                    "nodes {first_id} and {id} did not converge: applied {} vs {}, {} vs {} payloads",
                    first.applied_index,
                    log.applied_index,
                    first.payloads.len(),
                    log.payloads.len()
                )));
            }
        }
        Ok(())
    }

    /// One line per node: role, term, indexes, and (for a leader) its followers' progress.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for (&id, node) in &self.nodes {
            let Some(raft) = &node.raft else {
                out.push_str(&format!("  node {id}: crashed\n"));
                continue;
            };
            let s = raft.status();
            out.push_str(&format!(
                "  node {id}: {:?} term {} vote {:?} leader {:?} first {} last {} persisted {} \
                 commit {} applied {} snapshot {} voters {:?} learners {:?}\n",
                s.role,
                s.term,
                s.vote,
                s.leader,
                s.first_index,
                s.last_index,
                s.persisted_index,
                s.commit_index,
                s.applied_index,
                s.snapshot_index,
                s.conf_state.voters,
                s.conf_state.learners
            ));
            for (peer, p) in &s.progress {
                out.push_str(&format!(
                    "      -> {peer}: match {} next {} {:?} inflight {}\n",
                    p.match_index, p.next_index, p.state, p.inflight_appends
                ));
            }
        }
        out.push_str(&format!("  in flight: {}\n", self.network.queue.len()));
        out
    }

    /// A hash of everything that happened, for determinism checks.
    pub fn trace_hash(&self) -> u64 {
        self.trace.finish()
    }

    fn record(&mut self, event: &impl Hash) {
        event.hash(&mut self.trace);
        self.trace_events += 1;
    }

    /// The membership every running node agrees on, if they do.
    pub fn agreed_conf_state(&self) -> Option<ConfState> {
        let mut confs = self
            .nodes
            .values()
            .filter_map(|n| n.raft.as_ref())
            .map(|r| r.conf_state().clone());
        let first = confs.next()?;
        confs.all(|c| c == first).then_some(first)
    }

    /// Drops every queued message addressed to or sent by `id`.
    pub fn drop_messages_of(&mut self, id: NodeId) {
        self.network.queue.retain(|m| m.from != id && m.to != id);
    }

    /// Number of queued messages of a kind (by [`MessageBody::kind_name`]).
    pub fn count_in_flight(&self, kind: &str) -> usize {
        self.network
            .queue
            .iter()
            .filter(|m| m.body.kind_name() == kind)
            .count()
    }
}

/// Shorthand for tests: is this a message of the given kind?
pub fn is_kind(message: &Message, kind: &str) -> bool {
    message.body.kind_name() == kind
}

/// Whether a message body is a vote request of either flavour.
pub fn is_vote_request(body: &MessageBody) -> bool {
    matches!(body, MessageBody::RequestVote(_))
}
