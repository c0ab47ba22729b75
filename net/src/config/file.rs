//! `--config-file`: etcd's YAML configuration file, whose keys are the flags' names
//! (`name`, `data-dir`, `listen-client-urls`, …) with the TLS settings nested under
//! `client-transport-security` and `peer-transport-security`. The file is turned into the
//! flags it stands for, so it is checked exactly as the command line is; as in etcd, a
//! configuration file replaces the command line and the environment.

use yaml_rust2::{Yaml, YamlLoader};

use super::{invalid, ConfigError};

/// etcd keys (from its `etcd.conf.yml.sample`) of features keel does not have, skipped when
/// they hold etcd's default: the v2 proxy and discovery, and the old debug switch.
const SKIPPED_AT_DEFAULT: [(&str, &str); 9] = [
    ("self-signed-cert-validity", "1"),
    ("proxy", "off"),
    ("discovery-fallback", "proxy"),
    ("proxy-failure-wait", "5000"),
    ("proxy-refresh-interval", "30000"),
    ("proxy-dial-timeout", "1000"),
    ("proxy-write-timeout", "5000"),
    ("proxy-read-timeout", "0"),
    ("debug", "false"),
];

/// Keys whose flag takes a duration. etcd reads its file into Go's `time.Duration`, so a
/// number there is nanoseconds (`grpc-keepalive-interval: 7200000000000`).
const DURATION_KEYS: [&str; 7] = [
    "backend-batch-interval",
    "experimental-corrupt-check-time",
    "experimental-compact-hash-check-time",
    "experimental-watch-progress-notify-interval",
    "grpc-keepalive-min-time",
    "grpc-keepalive-interval",
    "grpc-keepalive-timeout",
];

/// The TLS keys of a `*-transport-security` section, and the flag each stands for (with
/// `peer-` in front for the peer section).
const TRANSPORT_SECURITY_KEYS: [&str; 5] = [
    "cert-file",
    "key-file",
    "client-cert-auth",
    "trusted-ca-file",
    "auto-tls",
];

/// The flags (`--key=value`) the YAML document `text` stands for.
pub fn flags_from_yaml(text: &str) -> Result<Vec<String>, ConfigError> {
    let documents = YamlLoader::load_from_str(text)
        .map_err(|e| invalid("config-file", format!("not YAML: {e}")))?;
    let mut flags = Vec::new();
    let Some(document) = documents.into_iter().next() else {
        return Ok(flags);
    };
    let Yaml::Hash(entries) = document else {
        return Err(invalid(
            "config-file",
            "the file must hold a mapping of keys",
        ));
    };
    for (key, value) in entries {
        let key = key_name(&key)?;
        match key.as_str() {
            "client-transport-security" => transport_security(&mut flags, "", &value)?,
            "peer-transport-security" => transport_security(&mut flags, "peer-", &value)?,
            _ => {
                if let Some(value) = scalar(&key, &value)? {
                    let skipped = SKIPPED_AT_DEFAULT
                        .iter()
                        .any(|&(name, default)| name == key && default == value);
                    if !skipped {
                        flags.push(format!("--{key}={value}"));
                    }
                }
            }
        }
    }
    Ok(flags)
}

fn key_name(key: &Yaml) -> Result<String, ConfigError> {
    match key {
        Yaml::String(name) => Ok(name.clone()),
        other => Err(invalid(
            "config-file",
            format!("a key is not a name: {other:?}"),
        )),
    }
}

/// A section's TLS settings as the `prefix`ed flags.
fn transport_security(
    flags: &mut Vec<String>,
    prefix: &str,
    section: &Yaml,
) -> Result<(), ConfigError> {
    let entries = match section {
        Yaml::Hash(entries) => entries,
        Yaml::Null => return Ok(()),
        other => {
            return Err(invalid(
                "config-file",
                format!("{prefix}transport-security must be a mapping, not {other:?}"),
            ))
        }
    };
    for (key, value) in entries {
        let key = key_name(key)?;
        // An empty value is etcd's default, whatever the key (its sample leaves
        // `allowed-cn` and `allowed-hostname` empty).
        let Some(value) = scalar(&key, value)? else {
            continue;
        };
        if !TRANSPORT_SECURITY_KEYS.contains(&key.as_str()) {
            return Err(invalid(
                "config-file",
                format!("{prefix}transport-security: {key:?} is not supported"),
            ));
        }
        flags.push(format!("--{prefix}{key}={value}"));
    }
    Ok(())
}

/// A value as its flag takes it: lists comma-separated; `None` for an empty value (etcd's
/// default then applies).
fn scalar(key: &str, value: &Yaml) -> Result<Option<String>, ConfigError> {
    let text = match value {
        Yaml::Null => return Ok(None),
        Yaml::String(text) if text.is_empty() => return Ok(None),
        Yaml::String(text) | Yaml::Real(text) => text.clone(),
        Yaml::Integer(nanoseconds) if DURATION_KEYS.contains(&key) => format!("{nanoseconds}ns"),
        Yaml::Integer(number) => number.to_string(),
        Yaml::Boolean(flag) => flag.to_string(),
        Yaml::Array(items) => {
            let mut texts = Vec::new();
            for item in items {
                if matches!(item, Yaml::Array(_) | Yaml::Hash(_)) {
                    return Err(invalid("config-file", format!("{key}: lists hold values")));
                }
                texts.extend(scalar(key, item)?);
            }
            texts.join(",")
        }
        other => {
            return Err(invalid(
                "config-file",
                format!("{key}: {other:?} is not a value a flag takes"),
            ))
        }
    };
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcds_sample_keys_become_flags() {
        let yaml = "\
# This is the configuration file for the etcd server.
name: 'n1'
data-dir: /var/lib/etcd
wal-dir:
snapshot-count: 10000
heartbeat-interval: 100
listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379
initial-cluster-state: 'new'
strict-reconfig-check: true
enable-pprof: false
proxy: 'off'
discovery-fallback: 'proxy'
cipher-suites: [TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384]
client-transport-security:
  cert-file: /etc/ssl/server.crt
  client-cert-auth: true
  auto-tls: false
grpc-keepalive-interval: 7200000000000
self-signed-cert-validity: 1
peer-transport-security:
  trusted-ca-file: /etc/ssl/ca.crt
  allowed-cn:
  allowed-hostname:
";
        assert_eq!(
            flags_from_yaml(yaml).unwrap(),
            [
                "--name=n1",
                "--data-dir=/var/lib/etcd",
                "--snapshot-count=10000",
                "--heartbeat-interval=100",
                "--listen-client-urls=http://127.0.0.1:2379,http://10.0.0.1:2379",
                "--initial-cluster-state=new",
                "--strict-reconfig-check=true",
                "--enable-pprof=false",
                "--cipher-suites=TLS_AES_128_GCM_SHA256,TLS_AES_256_GCM_SHA384",
                "--cert-file=/etc/ssl/server.crt",
                "--client-cert-auth=true",
                "--auto-tls=false",
                "--grpc-keepalive-interval=7200000000000ns",
                "--peer-trusted-ca-file=/etc/ssl/ca.crt",
            ]
        );
    }

    #[test]
    fn what_no_flag_can_take_is_refused() {
        for yaml in [
            "- a list",
            "name: [[nested]]",
            "client-transport-security: yes-please",
            "peer-transport-security:\n  allowed-cn: x",
            "name: {a: b}",
            "key: 'unterminated",
        ] {
            let error = flags_from_yaml(yaml).unwrap_err();
            assert!(
                error.to_string().starts_with("--config-file"),
                "{yaml}: {error}"
            );
        }
    }
}
