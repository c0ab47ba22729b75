//! Who a member is when it starts. A data dir that holds an identity (see
//! `keel_storage::Identity`) decides it: the flags that bootstrapped it no longer matter, as
//! in etcd (`--initial-cluster` is ignored once data exists). An empty data dir is where
//! operators' mistakes show, and where this module refuses to guess:
//!
//! - `--initial-cluster-state new`: the member's id comes from the flags (peer URLs and
//!   token, the same on every founding member). Before bootstrapping, the other founding
//!   members are asked for their member list: if one lists this member as started, it was
//!   bootstrapped before and its data dir is lost or wiped. Bootstrapping again would make a
//!   voter forget its votes and acknowledged entries, so it refuses (etcd: "member X has
//!   already been bootstrapped").
//! - `--initial-cluster-state existing`: the member was added with `member add`, which gave
//!   it an id. It asks the members in `--initial-cluster` for the member list and takes the
//!   id of the member with its peer URLs; a member that had started before is refused as
//!   above.

use std::time::Duration;

use anyhow::{bail, Context};
use keel_core::node::{cluster_id, Member, Node};
use keel_core::raft::InitialState;
use keel_storage::{Disk, Identity, Recovered, Storage};
use tracing::{info, warn};

use crate::config::{ClusterState, ServerConfig};
use crate::peer::query as peer_query;
use crate::tls::ClientTls;

/// How long one peer may take to answer a question at start-up.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a joining member keeps asking for the member list before it gives up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
const JOIN_RETRY: Duration = Duration::from_millis(500);

/// What to do on the peers a member cannot find.
pub fn recovery_procedure(name: &str, peer_urls: &[String]) -> String {
    format!(
        "to bring this member back, move its data dir aside (keep it for diagnosis), then on \
         a healthy member run `etcdctl member remove <this member's id>` and `etcdctl member \
         add {name} --peer-urls={}`, and start it again with an empty data dir and \
         --initial-cluster-state existing; the leader sends it a snapshot",
        peer_urls.join(",")
    )
}

/// How a member starts: its state, who it is, and whom to talk to until its state says.
#[derive(Debug)]
pub struct Start {
    pub initial: InitialState,
    pub identity: Identity,
    /// The members to dial before the node knows any (a new or joining member): the
    /// founding members, or the member list a joining member fetched.
    pub peers: Vec<Member>,
}

/// The member's starting state and identity, from its data dir or, for an empty one, by
/// bootstrapping or joining (see the module docs).
pub async fn open_member<D: Disk>(
    config: &ServerConfig,
    storage: &mut Storage<D>,
    recovered: Recovered,
    image_store: keel_core::mvcc::StoreConfig,
    peer_tls: Option<&ClientTls>,
) -> anyhow::Result<Start> {
    if !recovered.is_new {
        return open_existing(config, storage, recovered);
    }
    if config.force_new_cluster {
        bail!(
            "--force-new-cluster needs this member's data, and {} is empty",
            config.data_dir.display()
        );
    }
    config.check_bootstrap_flags()?;
    match config.cluster_state {
        ClusterState::New => bootstrap(config, storage, image_store, peer_tls).await,
        ClusterState::Existing => join(config, storage, peer_tls).await,
    }
}

/// A member whose data dir holds its state: who it is and where it stands (no network).
pub fn open_existing<D: Disk>(
    config: &ServerConfig,
    storage: &mut Storage<D>,
    recovered: Recovered,
) -> anyhow::Result<Start> {
    let identity = match recovered.identity {
        Some(identity) => identity,
        None => legacy_identity(config, storage)?,
    };
    let mut initial = recovered.into_initial_state();
    if config.force_new_cluster {
        force_new_cluster(storage, &mut initial, identity.member_id)?;
    }
    Ok(Start {
        initial,
        identity,
        peers: Vec::new(),
    })
}

/// etcd's `--force-new-cluster`: this member alone, with its data (see
/// `InitialState::force_new_cluster`); written to the data dir before it starts, so a
/// restart without the flag finds the same cluster.
fn force_new_cluster<D: Disk>(
    storage: &mut Storage<D>,
    initial: &mut InitialState,
    member_id: u64,
) -> anyhow::Result<()> {
    let removals = initial
        .force_new_cluster(member_id)
        .context("cannot force a new cluster")?;
    storage
        .append(&removals)
        .and_then(|()| storage.set_hard_state(initial.hard_state))
        .and_then(|()| storage.sync())
        .context("cannot write the forced membership to the data dir")?;
    warn!(
        removed = removals.len(),
        commit_index = initial.hard_state.commit_index,
        "forced a new cluster: this member is now its only member, with its data. Restart it \
         without --force-new-cluster, then add members back one at a time with `etcdctl \
         member add` and start each on an empty data dir with --initial-cluster-state existing"
    );
    Ok(())
}

/// A data dir written before keel kept identities: the flags still say who it is.
fn legacy_identity<D: Disk>(
    config: &ServerConfig,
    storage: &mut Storage<D>,
) -> anyhow::Result<Identity> {
    let identity = Identity {
        member_id: config.member_id,
        cluster_id: 0,
    };
    storage
        .save_identity(identity)
        .context("cannot record the member's identity in its data dir")?;
    info!(
        id = format!("{:x}", identity.member_id),
        "recorded this member's identity in its data dir (it predates keel keeping one)"
    );
    Ok(identity)
}

async fn bootstrap<D: Disk>(
    config: &ServerConfig,
    storage: &mut Storage<D>,
    image_store: keel_core::mvcc::StoreConfig,
    peer_tls: Option<&ClientTls>,
) -> anyhow::Result<Start> {
    let others = other_members_urls(config);
    if !others.is_empty() {
        refuse_if_bootstrapped_before(config, &others, peer_tls).await?;
    }
    let identity = Identity {
        member_id: config.member_id,
        cluster_id: cluster_id(config.initial_members.iter().map(|m| m.id)),
    };
    storage
        .save_identity(identity)
        .context("cannot record the member's identity in its data dir")?;
    let image = Node::bootstrap_image(&config.initial_members, image_store);
    let initial = InitialState::bootstrap(config.initial_members.iter().map(|m| m.id), image);
    storage
        .bootstrap(&initial)
        .context("cannot bootstrap the data dir")?;
    info!(
        members = config.initial_members.len(),
        cluster = format!("{:x}", identity.cluster_id),
        "bootstrapped a new cluster"
    );
    Ok(Start {
        initial,
        identity,
        peers: config.initial_members.clone(),
    })
}

/// Peer URLs of the founding members other than this one.
fn other_members_urls(config: &ServerConfig) -> Vec<String> {
    config
        .initial_members
        .iter()
        .filter(|m| m.id != config.member_id)
        .flat_map(|m| m.peer_urls.iter().cloned())
        .collect()
}

/// Asks every other founding member once; any that lists this member as started proves it
/// was bootstrapped before. Members that do not answer prove nothing (a new cluster's
/// members start at about the same time).
async fn refuse_if_bootstrapped_before(
    config: &ServerConfig,
    others: &[String],
    peer_tls: Option<&ClientTls>,
) -> anyhow::Result<()> {
    for url in others {
        let answer = peer_query::ask(
            url,
            peer_tls,
            &crate::peer::frame::Question::Members,
            ASK_TIMEOUT,
        )
        .await;
        let Ok(crate::peer::frame::Answer::Members {
            cluster_id,
            members,
            removed,
        }) = answer
        else {
            continue;
        };
        let id = config.member_id;
        if removed.contains(&id) {
            bail!(
                "member {id:x} ({}) was removed from cluster {cluster_id:x} (as {url} knows it) \
                 and its data dir is empty: {}",
                config.name,
                recovery_procedure(&config.name, &config.advertise_peer_urls)
            );
        }
        // Its own id, or its peer URLs: a member moved by `member update` keeps the id
        // derived from its old URLs, which flags naming the new URLs no longer give.
        let own_urls = sorted(&config.advertise_peer_urls);
        let is_self = |m: &Member| m.id == id || sorted(&m.peer_urls) == own_urls;
        if members.iter().any(|m| is_self(m) && is_started(m)) {
            bail!(
                "member {id:x} ({}) has already been bootstrapped: {url} lists it as a started \
                 member of cluster {cluster_id:x}, but its data dir {} is empty, so it lost \
                 its state (a wiped or replaced disk). Starting it again would make it forget \
                 its votes and the entries it acknowledged; {}",
                config.name,
                config.data_dir.display(),
                recovery_procedure(&config.name, &config.advertise_peer_urls)
            );
        }
    }
    Ok(())
}

/// A member has run once it published its client URLs (etcd's `isMemberBootstrapped`;
/// founding members carry their names from `--initial-cluster` before they ever ran).
fn is_started(member: &Member) -> bool {
    !member.client_urls.is_empty()
}

async fn join<D: Disk>(
    config: &ServerConfig,
    storage: &mut Storage<D>,
    peer_tls: Option<&ClientTls>,
) -> anyhow::Result<Start> {
    let others = other_members_urls(config);
    if others.is_empty() {
        bail!(
            "--initial-cluster-state existing, but --initial-cluster names no other member to \
             ask for the cluster's member list"
        );
    }
    let deadline = tokio::time::Instant::now() + JOIN_TIMEOUT;
    let (url, cluster_id, members) = loop {
        if let Some((url, cluster_id, members, _)) =
            peer_query::members_from_any(&others, peer_tls, ASK_TIMEOUT).await
        {
            if cluster_id != 0 {
                break (url, cluster_id, members);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!(
                "cannot fetch the cluster's member list from {} within {JOIN_TIMEOUT:?}: start \
                 this member once the cluster's members are reachable",
                others.join(",")
            );
        }
        warn!("no member of --initial-cluster answered with the member list yet; retrying");
        tokio::time::sleep(JOIN_RETRY).await;
    };
    let own_urls = sorted(&config.advertise_peer_urls);
    let Some(own) = members.iter().find(|m| sorted(&m.peer_urls) == own_urls) else {
        bail!(
            "cluster {cluster_id:x} (as {url} knows it) has no member with peer URLs {}: add \
             this member first with `etcdctl member add {} --peer-urls={}`",
            own_urls.join(","),
            config.name,
            own_urls.join(",")
        );
    };
    if is_started(own) {
        bail!(
            "member {:x} ({}) has already been started in cluster {cluster_id:x} (as {url} \
             knows it), but its data dir {} is empty, so it lost its state (a wiped or \
             replaced disk); {}",
            own.id,
            own.name,
            config.data_dir.display(),
            recovery_procedure(&config.name, &config.advertise_peer_urls)
        );
    }
    let identity = Identity {
        member_id: own.id,
        cluster_id,
    };
    storage
        .save_identity(identity)
        .context("cannot record the member's identity in its data dir")?;
    info!(
        id = format!("{:x}", own.id),
        cluster = format!("{cluster_id:x}"),
        from = url,
        "joining an existing cluster; waiting for the leader's snapshot"
    );
    Ok(Start {
        initial: InitialState::join(),
        identity,
        peers: members,
    })
}

fn sorted(urls: &[String]) -> Vec<String> {
    let mut urls = urls.to_vec();
    urls.sort();
    urls
}
