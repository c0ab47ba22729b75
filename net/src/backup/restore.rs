//! `keel snapshot restore`: a new member's data dir from a saved snapshot (keel's or
//! etcd's), as `etcdutl snapshot restore` makes one. Every member of the new cluster is
//! restored from the same file with the same `--initial-cluster` and token; each then
//! starts with its usual flags. The store keeps the snapshot's revisions, so the cluster's
//! revision goes on from the old one's; `--bump-revision N --mark-compacted` (etcd 3.6)
//! moves it N further and compacts there, so a watcher of the old cluster resuming at a
//! revision it saw gets `ErrCompacted` instead of missing the writes after the snapshot.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use keel_core::mvcc::{compacted_history, StoreBuilder, StoreConfig};
use keel_core::node::{cluster_id, found_cluster_on, Member};
use keel_storage::{Disk, FsDisk, Identity, RedbEngine, Storage, StorageOptions};

use super::etcd_file::{self, EtcdSnapshot};
use crate::config::{parse_initial_cluster, DEFAULT_CLUSTER_TOKEN, DEFAULT_NAME, DEFAULT_PEER_URL};

/// Beside the data dir (whose opening removes stray files), the file a saved snapshot's
/// database is copied to while it is read.
fn staged_db(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".restore-db.tmp");
    data_dir.with_file_name(name)
}

#[derive(clap::Args, Clone, Debug)]
pub struct RestoreArgs {
    /// The saved snapshot (`etcdctl snapshot save`'s file, from keel or etcd).
    pub file: PathBuf,
    /// The data dir to create [default: <name>.keel]; it must not exist or be empty.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// This member's name in --initial-cluster.
    #[arg(long, default_value = DEFAULT_NAME)]
    pub name: String,
    /// The new cluster's members, name=peer-url,… [default: <name>=<initial-advertise-peer-urls>].
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// The new cluster's token (pass the same one to every member).
    #[arg(long, default_value = DEFAULT_CLUSTER_TOKEN)]
    pub initial_cluster_token: String,
    /// This member's peer URLs, as in --initial-cluster.
    #[arg(long, default_value = DEFAULT_PEER_URL)]
    pub initial_advertise_peer_urls: String,
    /// Restore a file without the SHA-256 a snapshot stream ends with (a database copied
    /// from a data dir), or despite a wrong one.
    #[arg(long)]
    pub skip_hash_check: bool,
    /// Move the revision this many past the snapshot's (with --mark-compacted).
    #[arg(long, default_value_t = 0)]
    pub bump_revision: u64,
    /// Compact at the restored revision (after the bump): watchers of the old cluster
    /// resuming at an older revision are told they missed writes.
    #[arg(long)]
    pub mark_compacted: bool,
}

/// What a restore wrote.
#[derive(Clone, Debug)]
pub struct Restored {
    pub data_dir: PathBuf,
    pub member_id: u64,
    pub cluster_id: u64,
    pub revision: i64,
    pub compact_revision: i64,
    pub keys: u64,
    pub leases: usize,
}

impl RestoreArgs {
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.keel", self.name)))
    }
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).map_or(true, |mut entries| entries.next().is_none())
}

/// Restores `args.file` into a new data dir (see the module docs). A failure removes what
/// it wrote.
pub fn restore(args: &RestoreArgs) -> anyhow::Result<Restored> {
    if args.bump_revision > 0 && !args.mark_compacted {
        bail!("--mark-compacted required if --bump-revision > 0");
    }
    let data_dir = args.data_dir();
    if !is_empty_dir(&data_dir) {
        bail!("data-dir {} exists and is not empty", data_dir.display());
    }
    let existed = data_dir.exists();
    let result = restore_into(args, &data_dir);
    let _ = std::fs::remove_file(staged_db(&data_dir));
    if result.is_err() {
        if existed {
            if let Ok(entries) = std::fs::read_dir(&data_dir) {
                for entry in entries.flatten() {
                    let _ = std::fs::remove_dir_all(entry.path())
                        .or_else(|_| std::fs::remove_file(entry.path()));
                }
            }
        } else {
            let _ = std::fs::remove_dir_all(&data_dir);
        }
    }
    result
}

fn restore_into(args: &RestoreArgs, data_dir: &Path) -> anyhow::Result<Restored> {
    let token = &args.initial_cluster_token;
    let spec = args
        .initial_cluster
        .clone()
        .unwrap_or_else(|| format!("{}={}", args.name, args.initial_advertise_peer_urls));
    let members = parse_initial_cluster(&spec, token)?;
    let Some(this) = members.iter().find(|m| m.name == args.name) else {
        bail!(
            "--initial-cluster {spec:?} has no member named {:?}",
            args.name
        );
    };
    let mut advertised: Vec<String> = args
        .initial_advertise_peer_urls
        .split(',')
        .map(|u| u.trim().to_string())
        .collect();
    let mut listed = this.peer_urls.clone();
    advertised.sort();
    listed.sort();
    if advertised != listed {
        bail!(
            "--initial-cluster lists {:?} at {listed:?}, but --initial-advertise-peer-urls is \
             {advertised:?}",
            args.name
        );
    }
    let plan = RestorePlan {
        member_id: this.id,
        members: members.clone(),
        bump_revision: args.bump_revision,
        mark_compacted: args.mark_compacted,
    };
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let staged = staged_db(data_dir);
    super::copy_checked(&args.file, &staged, args.skip_hash_check)?;
    etcd_file::add_empty_freelist(&staged)?;
    let disk = FsDisk::open(data_dir)
        .with_context(|| format!("cannot open the data dir {}", data_dir.display()))?;
    let mut restored = restore_to_disk(disk, &plan, &staged)
        .with_context(|| format!("cannot restore into {}", data_dir.display()))?;
    restored.data_dir = data_dir.to_path_buf();
    Ok(restored)
}

/// Who the restored member is, in which new cluster, and how the revision moves.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub member_id: u64,
    /// The new cluster's founding members (this one among them).
    pub members: Vec<Member>,
    pub bump_revision: u64,
    pub mark_compacted: bool,
}

/// Writes a new member's data dir onto `disk` (which must hold none) from etcd's backend
/// file `db` (its SHA-256 trailer already checked and cut: see `super::copy_checked`):
/// the store in the engine, the node's rows for a new cluster of `plan.members`, its
/// identity and the Raft log's start. The server and the simulator restore through here.
pub fn restore_to_disk<D: Disk + Send + 'static>(
    disk: D,
    plan: &RestorePlan,
    db: &Path,
) -> anyhow::Result<Restored> {
    let mut snapshot = etcd_file::read(db)?;
    if plan.bump_revision > 0 {
        let bump = i64::try_from(plan.bump_revision).context("--bump-revision is too large")?;
        snapshot.current_rev = snapshot
            .current_rev
            .checked_add(bump)
            .context("--bump-revision is too large")?;
    }
    if plan.mark_compacted {
        snapshot.compact_rev = snapshot.current_rev;
    }
    let (mut storage, recovered) =
        Storage::open(disk, StorageOptions::default()).context("cannot open the data dir")?;
    if !recovered.is_new {
        bail!("the data dir is not empty");
    }
    let engine_disk = storage
        .disk()
        .share()
        .context("cannot open the data dir again")?;
    let engine = RedbEngine::open(engine_disk, keel_storage::DEFAULT_ENGINE_CACHE_SIZE_BYTES)
        .context("cannot create the store's engine")?;
    let (revision, compact_revision, leases) = (
        snapshot.current_rev,
        snapshot.compact_rev,
        snapshot.leases.len(),
    );
    let auth = std::mem::take(&mut snapshot.auth);
    let mut store = build_store(Box::new(engine), snapshot, db)?;
    let keys = store.key_count() as u64;
    let initial = found_cluster_on(&mut store, &plan.members, &auth);
    store
        .commit(true)
        .context("cannot write the restored store")?;
    drop(store);
    let cluster = cluster_id(plan.members.iter().map(|m| m.id));
    storage
        .save_identity(Identity {
            member_id: plan.member_id,
            cluster_id: cluster,
        })
        .context("cannot record the member's identity")?;
    storage
        .bootstrap(&initial)
        .context("cannot write the new cluster's Raft log")?;
    Ok(Restored {
        data_dir: PathBuf::new(),
        member_id: plan.member_id,
        cluster_id: cluster,
        revision,
        compact_revision,
        keys,
        leases,
    })
}

/// The store of `snapshot`, compaction applied, in `engine`; values are read from `file`.
fn build_store(
    engine: Box<dyn keel_core::mvcc::Engine>,
    mut snapshot: EtcdSnapshot,
    file: &Path,
) -> anyhow::Result<keel_core::mvcc::Store> {
    let mut builder = StoreBuilder::new(
        engine,
        StoreConfig::default(),
        snapshot.current_rev,
        snapshot.compact_rev,
    )?;
    for lease in &snapshot.leases {
        builder.lease(lease.id, lease.ttl_s, lease.remaining_ttl_s)?;
    }
    let compact_rev = snapshot.compact_rev;
    let mut keys = std::mem::take(&mut snapshot.keys);
    keys.retain(|_, history| {
        let dropped = history.len() - compacted_history(history, compact_rev).len();
        history.drain(..dropped);
        !history.is_empty()
    });
    etcd_file::with_values(file, keys, &mut |key, history| {
        builder.key(key, &history).map_err(|e| e.to_string())
    })?;
    Ok(builder.finish()?)
}
