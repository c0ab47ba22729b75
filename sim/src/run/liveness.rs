//! After the faults: the cluster must recover and serve, every member must agree with the
//! others, and reads at the end must see what was acknowledged.

use std::time::Duration;

use bytes::Bytes;
use keel_net::proto::etcdserverpb::kv_client::KvClient;
use keel_net::proto::etcdserverpb::maintenance_client::MaintenanceClient;

use crate::client::{key_value, Endpoint, Recorder};
use crate::history::{FinalRead, MemberHash, MemberId, MemberRevision, Outcome, Time};
use crate::nemesis;
use crate::workload::{prefix_end, KEY_PREFIX};
use crate::world::World;

use super::config::RunConfig;
use super::{pb, Recovered, Verdicts};

/// After the faults: waits for the healthy members to serve, then lets the clients go on
/// for a while with everything healed and serving.
pub(super) async fn recover(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
    config: &RunConfig,
    mut liveness: Result<(), String>,
) -> Recovered {
    // A server whose disk was damaged on purpose may rightly refuse to start; the rest
    // must serve, and must agree with it if it does serve.
    let healthy: Vec<Endpoint> = endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| !world.damaged.contains(*i))
        .map(|(_, e)| e.clone())
        .collect();
    if liveness.is_ok() {
        liveness = wait_until_serving(world, &healthy, config.recovery).await;
    }
    // Liveness: with everything healed and serving, clients keep going a while and every
    // request they start from now on must succeed.
    let serving_since = recorder.now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let leader_after = nemesis::leader_and_term(world).await;
    Recovered {
        liveness,
        healthy,
        serving_since,
        leader_after,
    }
}

/// Liveness, judged once the clients stopped: what they started after recovery succeeded,
/// the healthy members agree with the history and damaged ones that serve agree too, and
/// auth toggling (when the run has it) ended well.
pub(super) async fn judge_liveness(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
    config: &RunConfig,
    recovered: &Recovered,
    verdicts: &Verdicts,
) -> Result<(), String> {
    let mut liveness = recovered.liveness.clone();
    if liveness.is_ok() {
        let (healthy, since) = (&recovered.healthy, recovered.serving_since);
        liveness = served_after_recovery(world, healthy, recorder, since, config).await;
    }
    // Asked even after a failure: a run's requests are the same whatever it finds.
    let damaged_serving = damaged_members_agree(world, endpoints, recorder).await;
    if let (Ok(()), Err(why)) = (&liveness, damaged_serving) {
        liveness = Err(why);
    }
    if let (Ok(()), Err(why)) = (&liveness, verdicts.auth_toggling_ended(config)) {
        liveness = Err(why);
    }
    liveness
}

/// After recovery: every request started since `serving_since` succeeded, and reads from
/// every healthy member agree with the history.
pub(super) async fn served_after_recovery(
    world: &World,
    healthy: &[Endpoint],
    recorder: &Recorder,
    serving_since: Time,
    config: &RunConfig,
) -> Result<(), String> {
    let healthy_members: Vec<MemberId> = healthy.iter().map(|e| e.member).collect();
    requests_after_recovery_succeeded(recorder, serving_since, &healthy_members)?;
    final_reads(world, healthy, recorder, config.recovery).await
}

/// Every request invoked once the healed cluster served again got a definite answer from
/// a healthy member (a member with a damaged disk may rightly refuse to start).
pub(super) fn requests_after_recovery_succeeded(
    recorder: &Recorder,
    since: crate::history::Time,
    healthy_members: &[MemberId],
) -> Result<(), String> {
    recorder.with(|history| {
        let failed: Vec<String> = history
            .operations
            .iter()
            .enumerate()
            .filter(|(_, op)| op.invoke >= since && op.client != crate::history::EXPIRY_CLIENT)
            .filter(|(_, op)| op.member.is_none_or(|m| healthy_members.contains(&m)))
            .filter(|(_, op)| matches!(op.outcome, Outcome::Indeterminate(_)))
            .map(|(i, op)| format!("op #{i} {:?}: {:?}", op.request, op.outcome))
            .take(5)
            .collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "requests failed after recovery: {}",
                failed.join("; ")
            ))
        }
    })
}

/// Waits until every server answers a linearizable read, or `within` passes.
pub(super) async fn wait_until_serving(
    world: &World,
    endpoints: &[Endpoint],
    within: Duration,
) -> Result<(), String> {
    let endpoints = endpoints.to_vec();
    let probe = world.control.spawn(async move {
        let deadline = tokio::time::Instant::now() + within;
        for endpoint in &endpoints {
            loop {
                if range(&endpoint.url, false).await.is_ok() {
                    break;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "{} did not serve a linearizable read within {within:?}",
                        endpoint.url
                    ));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Ok(())
    });
    probe
        .await
        .unwrap_or_else(|e| Err(format!("probe task failed: {e}")))
}

pub(super) async fn range(url: &str, serializable: bool) -> Result<pb::RangeResponse, String> {
    let attempt = async {
        let mut kv = KvClient::connect(url.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let request = pb::RangeRequest {
            key: Bytes::from(KEY_PREFIX),
            range_end: prefix_end(),
            serializable,
            ..Default::default()
        };
        kv.range(request)
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// Every member converges: they serve the same revision, and their `HashKV` there agree.
/// Records the read-back and the hashes for the durability and cross-member checks.
pub(super) async fn final_reads(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
    within: Duration,
) -> Result<(), String> {
    let endpoints = endpoints.to_vec();
    let recorder = recorder.clone();
    let task = world.control.spawn(async move {
        let deadline = tokio::time::Instant::now() + within;
        // A linearizable read gives the revision everyone must reach.
        let target = loop {
            if let Ok(read) = range(&endpoints[0].url, false).await {
                let revision = read.header.as_ref().map_or(0, |h| h.revision);
                recorder.with(|h| {
                    h.final_reads.push(FinalRead {
                        member: Some(endpoints[0].member),
                        time: recorder.now(),
                        revision,
                        kvs: read.kvs.into_iter().map(key_value).collect(),
                    })
                });
                break revision;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err("no final linearizable read".to_string());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        for endpoint in &endpoints {
            let hash = loop {
                match hash_kv(&endpoint.url, target).await {
                    Ok(hash) => break hash,
                    Err(why) if tokio::time::Instant::now() >= deadline => {
                        return Err(format!(
                            "{} never reached revision {target}: {why}",
                            endpoint.url
                        ));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            };
            recorder.with(|h| {
                h.hashes.push(MemberHash {
                    member: endpoint.member,
                    revision: hash.hash_revision,
                    compact_revision: hash.compact_revision,
                    hash: hash.hash,
                });
                h.member_revisions.push(MemberRevision {
                    member: endpoint.member,
                    time: recorder.now(),
                    revision: hash.header.as_ref().map_or(0, |h| h.revision),
                    compact_revision: Some(hash.compact_revision),
                });
            });
        }
        Ok(())
    });
    task.await
        .unwrap_or_else(|e| Err(format!("final read task failed: {e}")))
}

/// A damaged member that did start must hold the same data as the others (its `HashKV`
/// at the final revision joins the cross-member check); one that refused is fine.
pub(super) async fn damaged_members_agree(
    world: &World,
    endpoints: &[Endpoint],
    recorder: &Recorder,
) -> Result<(), String> {
    let Some(target) = recorder.with(|h| h.final_reads.first().map(|r| r.revision)) else {
        return Ok(());
    };
    for index in world.damaged.all() {
        let endpoint = endpoints[index].clone();
        let url = endpoint.url.clone();
        let answer = world
            .control
            .spawn(async move {
                for _ in 0..50 {
                    if let Ok(hash) = hash_kv(&url, target).await {
                        return Some(hash);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None
            })
            .await
            .ok()
            .flatten();
        if let Some(hash) = answer {
            recorder.with(|h| {
                h.hashes.push(MemberHash {
                    member: endpoint.member,
                    revision: hash.hash_revision,
                    compact_revision: hash.compact_revision,
                    hash: hash.hash,
                })
            });
        }
    }
    Ok(())
}

/// `HashKV(revision)` once the member has applied it.
pub(super) async fn hash_kv(url: &str, revision: i64) -> Result<pb::HashKvResponse, String> {
    let attempt = async {
        let mut client = MaintenanceClient::connect(url.to_string())
            .await
            .map_err(|e| e.to_string())?;
        let status = client
            .status(pb::StatusRequest {})
            .await
            .map_err(|e| e.to_string())?
            .into_inner();
        let current = status.header.as_ref().map_or(0, |h| h.revision);
        if current < revision {
            return Err(format!("at revision {current}"));
        }
        client
            .hash_kv(pb::HashKvRequest { revision })
            .await
            .map(|r| r.into_inner())
            .map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .map_err(|_| "timed out".to_string())?
}
