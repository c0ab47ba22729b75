//! Flag values as etcd spells them: URL lists, listen addresses, `--initial-cluster`,
//! durations in Go's syntax, the auto-compaction retention, log levels.

use std::net::SocketAddr;
use std::time::Duration;

use keel_core::node::{member_id, AutoCompaction, Member};
use url::Url;

use super::{invalid, CompactionMode, ConfigError};

pub(super) fn sorted(urls: &[String]) -> Vec<String> {
    let mut urls = urls.to_vec();
    urls.sort();
    urls
}

pub(super) fn positive(flag: &'static str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 {
        return Err(invalid(flag, "must be at least 1"));
    }
    Ok(value)
}

/// Raft ticks at the heartbeat interval; the election timeout is a whole number of ticks.
/// etcd's rules: the election timeout must be at least 5 heartbeats (it warns below 10).
pub(super) fn timing(heartbeat_ms: u64, election_ms: u64) -> Result<(Duration, u32), ConfigError> {
    if heartbeat_ms == 0 {
        return Err(invalid("heartbeat-interval", "must be at least 1 ms"));
    }
    if election_ms < 5 * heartbeat_ms {
        return Err(invalid(
            "election-timeout",
            format!("{election_ms} ms must be at least 5 times --heartbeat-interval ({heartbeat_ms} ms)"),
        ));
    }
    if election_ms > 50_000 {
        return Err(invalid("election-timeout", "must be at most 50000 ms"));
    }
    let ticks = u32::try_from(election_ms / heartbeat_ms)
        .map_err(|_| invalid("election-timeout", "too many heartbeats per election"))?;
    Ok((Duration::from_millis(heartbeat_ms), ticks))
}

/// A comma-separated list of URLs, each `http://host:port` or `https://host:port`.
pub(super) fn urls(flag: &'static str, list: &str) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(invalid(flag, "needs at least one URL"));
    }
    for raw in &urls {
        let url = Url::parse(raw).map_err(|e| invalid(flag, format!("{raw:?}: {e}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(invalid(
                flag,
                format!("{raw:?}: scheme must be http or https"),
            ));
        }
        if url.host_str().is_none() || url.port().is_none() {
            return Err(invalid(flag, format!("{raw:?}: needs a host and a port")));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(invalid(flag, format!("{raw:?}: must not have a path")));
        }
    }
    Ok(urls)
}

/// One address to listen on, and whether it speaks TLS (an `https://` URL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenUrl {
    pub addr: SocketAddr,
    pub https: bool,
}

/// Listen URLs must name IP addresses (or `localhost`), as etcd requires.
pub(super) fn socket_addrs(flag: &'static str, list: &str) -> Result<Vec<ListenUrl>, ConfigError> {
    urls(flag, list)?
        .iter()
        .map(|raw| {
            let url = Url::parse(raw).map_err(|e| invalid(flag, format!("{raw:?}: {e}")))?;
            let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
            let host = if host == "localhost" {
                "127.0.0.1"
            } else {
                host
            };
            let port = url.port().unwrap_or_default();
            let ip: std::net::IpAddr = host.parse().map_err(|_| {
                invalid(
                    flag,
                    format!("{raw:?}: listen URLs need an IP address, not a name"),
                )
            })?;
            Ok(ListenUrl {
                addr: SocketAddr::new(ip, port),
                https: url.scheme() == "https",
            })
        })
        .collect()
}

/// `name1=url1,name1=url2,name2=url3`: one member per name, ids from URLs and token.
pub fn parse_initial_cluster(spec: &str, token: &str) -> Result<Vec<Member>, ConfigError> {
    let mut by_name: Vec<(String, Vec<String>)> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, url) = item
            .split_once('=')
            .ok_or_else(|| invalid("initial-cluster", format!("{item:?} is not name=peer-url")))?;
        let url = urls("initial-cluster", url)?.remove(0);
        match by_name.iter_mut().find(|(n, _)| n == name) {
            Some((_, list)) => list.push(url),
            None => by_name.push((name.to_string(), vec![url])),
        }
    }
    if by_name.is_empty() {
        return Err(invalid("initial-cluster", "names no member"));
    }
    let members: Vec<Member> = by_name
        .into_iter()
        .map(|(name, peer_urls)| Member {
            id: member_id(&peer_urls, token),
            name,
            peer_urls,
            client_urls: Vec::new(),
            is_learner: false,
        })
        .collect();
    for (i, a) in members.iter().enumerate() {
        for b in &members[i + 1..] {
            if a.peer_urls.iter().any(|u| b.peer_urls.contains(u)) {
                return Err(invalid(
                    "initial-cluster",
                    format!("{:?} and {:?} share a peer URL", a.name, b.name),
                ));
            }
        }
    }
    Ok(members)
}

pub(super) fn auto_compaction(
    mode: CompactionMode,
    retention: &str,
) -> Result<AutoCompaction, ConfigError> {
    let flag = "auto-compaction-retention";
    let retention = retention.trim();
    if retention == "0" || retention.is_empty() {
        return Ok(AutoCompaction::Off);
    }
    match mode {
        CompactionMode::Revision => retention
            .parse::<i64>()
            .ok()
            .filter(|&r| r > 0)
            .map(AutoCompaction::Revision)
            .ok_or_else(|| invalid(flag, format!("{retention:?} is not a revision count"))),
        CompactionMode::Periodic => {
            // A bare number means hours, as in etcd.
            if let Ok(hours) = retention.parse::<u64>() {
                return Ok(AutoCompaction::Periodic(Duration::from_secs(hours * 3600)));
            }
            humantime::parse_duration(retention)
                .map(AutoCompaction::Periodic)
                .map_err(|e| invalid(flag, format!("{retention:?}: {e}")))
        }
    }
}

/// A duration as etcd's flags write them (Go's: `10s`, `1m30s`, `500ms`; `0` or `0s`).
pub(super) fn go_duration(flag: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let value = value.trim();
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(value).map_err(|e| invalid(flag, format!("{value:?}: {e}")))
}

pub(super) fn log_level(level: &str) -> Result<String, ConfigError> {
    match level {
        "debug" | "info" | "warn" | "error" => Ok(level.to_string()),
        other => Err(invalid(
            "log-level",
            format!("{other:?} is not one of debug, info, warn, error"),
        )),
    }
}
