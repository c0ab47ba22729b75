//! The workload: clients that put, read, delete, run transactions and watch against the
//! cluster while the nemesis works, each operation recorded in the history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::client::{Endpoint, Recorder, SimClient};
use crate::history::{ClientId, MemberRevision, Outcome, Request, Response};
use crate::watcher::watch_loop_with;
use crate::workload::{Workload, WorkloadConfig, WorkloadMix};
use crate::world::{World, CLIENT_TIMEOUT};

use super::config::RunConfig;
use super::{pb, Verdicts};

/// What the clients of a run send while the nemesis works, each on a node of its own.
pub(super) struct Clients {
    tasks: Vec<madsim::task::JoinHandle<()>>,
    lease_verdict: Arc<std::sync::Mutex<Option<Result<(), String>>>>,
    auth_verdict: Arc<std::sync::Mutex<Option<Result<usize, String>>>>,
}

impl Clients {
    /// Starts every client the configuration asks for; the workload's and watchers' seeds
    /// come from `rng`, in that order.
    pub(super) fn spawn(
        world: &mut World,
        config: &RunConfig,
        endpoints: &[Endpoint],
        recorder: &Recorder,
        stop: &Arc<AtomicBool>,
        rng: &mut ChaCha8Rng,
    ) -> Clients {
        let mut clients = Clients {
            tasks: Vec::new(),
            lease_verdict: Arc::new(std::sync::Mutex::new(None)),
            auth_verdict: Arc::new(std::sync::Mutex::new(None)),
        };
        clients.spawn_workload(world, config, endpoints, recorder, stop, rng);
        clients.spawn_extras(world, config, endpoints, recorder, stop);
        clients
    }

    /// The workload's clients and the watchers.
    pub(super) fn spawn_workload(
        &mut self,
        world: &mut World,
        config: &RunConfig,
        endpoints: &[Endpoint],
        recorder: &Recorder,
        stop: &Arc<AtomicBool>,
        rng: &mut ChaCha8Rng,
    ) {
        for client in 0..config.clients as ClientId {
            let node = world.client_node(&format!("client{client}"));
            let task = client_loop(
                client,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                config.workload,
                config.extras.mix,
                ChaCha8Rng::seed_from_u64(rng.gen()),
            );
            self.tasks.push(node.spawn(task));
        }
        for watcher in 0..config.watchers as ClientId {
            let node = world.client_node(&format!("watcher{watcher}"));
            let task = watch_loop_with(
                1000 + watcher,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                watcher as usize,
                config.extras.watch,
                ChaCha8Rng::seed_from_u64(rng.gen()),
            );
            self.tasks.push(node.spawn(task));
        }
    }

    /// The clients a scenario adds: a lease holder, a member probe, compaction watches,
    /// lock holders, an auth toggler.
    pub(super) fn spawn_extras(
        &mut self,
        world: &mut World,
        config: &RunConfig,
        endpoints: &[Endpoint],
        recorder: &Recorder,
        stop: &Arc<AtomicBool>,
    ) {
        let extras = &config.extras;
        if config.lease_holder {
            let node = world.client_node("lease-holder");
            let task = crate::lease_holder::hold(
                2000,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                self.lease_verdict.clone(),
            );
            self.tasks.push(node.spawn(task));
        }
        if let Some(every) = extras.member_probe {
            let node = world.client_node("member-probe");
            let task = probe_members(endpoints.to_vec(), recorder.clone(), stop.clone(), every);
            self.tasks.push(node.spawn(task));
        }
        if extras.compaction_watches {
            let node = world.client_node("compaction-watcher");
            let task = crate::watcher::compaction_watches(
                3000,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                ChaCha8Rng::seed_from_u64(config.seed ^ 0x18089),
            );
            self.tasks.push(node.spawn(task));
        }
        for holder in 0..extras.lock_holders as ClientId {
            let node = world.client_node(&format!("lock-holder{holder}"));
            let task = crate::client::hold_locks(
                4000 + holder,
                endpoints.to_vec(),
                recorder.clone(),
                stop.clone(),
                ChaCha8Rng::seed_from_u64(config.seed ^ (0x3430 + holder)),
            );
            self.tasks.push(node.spawn(task));
        }
        if extras.auth_toggling {
            let node = world.client_node("auth-toggler");
            let until =
                tokio::time::Instant::now() + config.safety.saturating_sub(Duration::from_secs(1));
            let endpoints = endpoints.to_vec();
            let verdict = self.auth_verdict.clone();
            let rng = ChaCha8Rng::seed_from_u64(config.seed ^ 0x14571);
            self.tasks.push(node.spawn(async move {
                let result = crate::client::toggle_auth(endpoints, until, rng).await;
                if let Ok(mut slot) = verdict.lock() {
                    *slot = Some(result);
                }
            }));
        }
    }

    /// Waits for every client to stop and takes the verdicts.
    pub(super) async fn join(self) -> Verdicts {
        for task in self.tasks {
            let _ = task.await;
        }
        Verdicts {
            lease_holder: self.lease_verdict.lock().ok().and_then(|v| v.clone()),
            auth: self.auth_verdict.lock().ok().and_then(|v| v.clone()),
        }
    }
}

pub(super) async fn client_loop(
    id: ClientId,
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    workload: WorkloadConfig,
    mix: WorkloadMix,
    mut rng: ChaCha8Rng,
) {
    let mut client = SimClient::new(id, endpoints, recorder.clone(), CLIENT_TIMEOUT);
    let mut workload = Workload::with_mix(id, workload, mix);
    while !stop.load(Ordering::Relaxed) {
        let request = workload.next(&mut rng);
        let server = rng.gen_range(0..client.endpoints().len());
        let outcome = client.execute(server, request.clone()).await;
        if let (Request::LeaseGrant { .. }, Outcome::Ok(Response::LeaseGrant { id, .. })) =
            (&request, &outcome)
        {
            // The lease may expire: its expiry is a revoke nobody sees complete.
            let time = recorder.now();
            recorder.with(|h| h.may_expire(*id, time));
        }
        workload.observe(&request, &outcome);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..20))).await;
    }
}

/// Asks every member, one after another, for its revision and compact revision (`HashKV`
/// at its current revision answers both) until `stop`; records what each says.
pub(super) async fn probe_members(
    endpoints: Vec<Endpoint>,
    recorder: Recorder,
    stop: Arc<AtomicBool>,
    every: Duration,
) {
    while !stop.load(Ordering::Relaxed) {
        for endpoint in &endpoints {
            let url = endpoint.url.clone();
            let attempt = async {
                let mut client = MaintenanceClient::connect(url).await.ok()?;
                client
                    .hash_kv(pb::HashKvRequest { revision: 0 })
                    .await
                    .ok()
                    .map(|r| r.into_inner())
            };
            let Ok(Some(hash)) = tokio::time::timeout(Duration::from_secs(1), attempt).await else {
                continue;
            };
            let time = recorder.now();
            // The id that answered: a member replaced by an operator is a new member, whose
            // revision starts over.
            let member = hash
                .header
                .as_ref()
                .map_or(endpoint.member, |h| h.member_id);
            recorder.with(|h| {
                h.member_revisions.push(MemberRevision {
                    member,
                    time,
                    revision: hash.header.as_ref().map_or(0, |h| h.revision),
                    compact_revision: Some(hash.compact_revision),
                })
            });
        }
        tokio::time::sleep(every).await;
    }
}
