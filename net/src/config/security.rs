//! The security flags: TLS for clients, peers and metrics (etcd's `--cert-file`,
//! `--peer-*`, `--auto-tls`...), client certificate auth, and the auth token's kind and TTL.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use url::Url;

use crate::jwt::{JwtOptions, JwtTokens};
use crate::tls::{Identity, TlsOptions, TlsSettings, TlsVersion};

use super::parse::positive;
use super::{invalid, ConfigError};

/// etcd's security flags: TLS for clients and peers, and authentication.
#[derive(Clone, Debug, Default, Args)]
pub struct SecurityArgs {
    /// Path to the client server TLS cert file.
    #[arg(long, env = "KEEL_CERT_FILE")]
    pub cert_file: Option<PathBuf>,

    /// Path to the client server TLS key file.
    #[arg(long, env = "KEEL_KEY_FILE")]
    pub key_file: Option<PathBuf>,

    /// Path to the client server TLS trusted CA cert file.
    #[arg(long, env = "KEEL_TRUSTED_CA_FILE")]
    pub trusted_ca_file: Option<PathBuf>,

    /// Enable client cert authentication.
    #[arg(
        long,
        env = "KEEL_CLIENT_CERT_AUTH",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub client_cert_auth: bool,

    /// Path to the client certificate revocation list file: a client presenting a
    /// certificate it revokes is refused at the handshake (PEM; reloaded when it changes).
    #[arg(long, env = "KEEL_CLIENT_CRL_FILE")]
    pub client_crl_file: Option<PathBuf>,

    /// Client TLS using generated certificates.
    #[arg(
        long,
        env = "KEEL_AUTO_TLS",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub auto_tls: bool,

    /// Path to the peer server TLS cert file.
    #[arg(long, env = "KEEL_PEER_CERT_FILE")]
    pub peer_cert_file: Option<PathBuf>,

    /// Path to the peer server TLS key file.
    #[arg(long, env = "KEEL_PEER_KEY_FILE")]
    pub peer_key_file: Option<PathBuf>,

    /// Path to the peer server TLS trusted CA file.
    #[arg(long, env = "KEEL_PEER_TRUSTED_CA_FILE")]
    pub peer_trusted_ca_file: Option<PathBuf>,

    /// Enable peer client cert authentication.
    #[arg(
        long,
        env = "KEEL_PEER_CLIENT_CERT_AUTH",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub peer_client_cert_auth: bool,

    /// Path to the peer certificate revocation list file: a peer presenting a certificate
    /// it revokes is refused at the handshake (PEM; reloaded when it changes).
    #[arg(long, env = "KEEL_PEER_CRL_FILE")]
    pub peer_crl_file: Option<PathBuf>,

    /// Peer TLS using generated certificates.
    #[arg(
        long,
        env = "KEEL_PEER_AUTO_TLS",
        num_args = 0..=1,
        default_value = "false",
        default_missing_value = "true",
        action = clap::ArgAction::Set,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub peer_auto_tls: bool,

    /// Comma-separated list of supported TLS cipher suites between client/server and peers
    /// (empty will be auto-populated by rustls).
    #[arg(long, env = "KEEL_CIPHER_SUITES", default_value = "")]
    pub cipher_suites: String,

    /// Minimum TLS version supported: TLS1.2 or TLS1.3.
    #[arg(long, env = "KEEL_TLS_MIN_VERSION", default_value = "TLS1.2")]
    pub tls_min_version: String,

    /// Specify auth token specific options: 'simple' (etcd's default) or
    /// 'jwt,pub-key=<path>,priv-key=<path>,sign-method=<RS256|ES256|EdDSA|HS256|…>,ttl=<5m>'.
    #[arg(long, env = "KEEL_AUTH_TOKEN", default_value = "simple")]
    pub auth_token: String,

    /// The lifetime in seconds of the auth token.
    #[arg(long, env = "KEEL_AUTH_TOKEN_TTL", default_value_t = 300)]
    pub auth_token_ttl: u64,

    /// Specify bcrypt algorithm cost factor for auth password hashing (4 to 31).
    #[arg(long, env = "KEEL_BCRYPT_COST", default_value_t = 10)]
    pub bcrypt_cost: u32,
}

/// Authentication settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthSettings {
    pub token_ttl: Duration,
    pub bcrypt_cost: u32,
    /// `--auth-token jwt,…`: signed tokens instead of simple ones.
    pub jwt: Option<Arc<JwtTokens>>,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            token_ttl: Duration::from_secs(300),
            bcrypt_cost: crate::grpc::auth::DEFAULT_BCRYPT_COST,
            jwt: None,
        }
    }
}

/// One side's TLS flags.
pub(super) struct TlsFlags<'a> {
    side: &'static str,
    cert_file: &'a Option<PathBuf>,
    key_file: &'a Option<PathBuf>,
    trusted_ca_file: &'a Option<PathBuf>,
    client_cert_auth: bool,
    crl_file: &'a Option<PathBuf>,
    auto_tls: bool,
}

impl SecurityArgs {
    pub(super) fn options(&self) -> Result<TlsOptions, ConfigError> {
        let min_version = TlsVersion::parse(&self.tls_min_version)
            .map_err(|e| invalid("tls-min-version", e.to_string()))?;
        let cipher_suites = self
            .cipher_suites
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let options = TlsOptions {
            min_version,
            cipher_suites,
        };
        options
            .check()
            .map_err(|e| invalid("cipher-suites", e.to_string()))?;
        Ok(options)
    }

    /// The client port's TLS flags (the metrics listeners' too, as etcd's).
    pub(super) fn client_flags(&self) -> TlsFlags<'_> {
        TlsFlags {
            side: "",
            cert_file: &self.cert_file,
            key_file: &self.key_file,
            trusted_ca_file: &self.trusted_ca_file,
            client_cert_auth: self.client_cert_auth,
            crl_file: &self.client_crl_file,
            auto_tls: self.auto_tls,
        }
    }

    pub(super) fn client_tls(
        &self,
        listen: &str,
        advertise: &str,
    ) -> Result<Option<TlsSettings>, ConfigError> {
        self.tls(
            &self.client_flags(),
            "listen-client-urls",
            listen,
            advertise,
        )
    }

    /// An `https://` metrics URL serves with the client port's certificate and checks,
    /// as etcd's does.
    pub(super) fn metrics_tls(&self, listen: &str) -> Result<Option<TlsSettings>, ConfigError> {
        self.tls(&self.client_flags(), "listen-metrics-urls", listen, "")
    }

    pub(super) fn peer_tls(
        &self,
        listen: &str,
        advertise: &str,
    ) -> Result<Option<TlsSettings>, ConfigError> {
        let flags = TlsFlags {
            side: "peer-",
            cert_file: &self.peer_cert_file,
            key_file: &self.peer_key_file,
            trusted_ca_file: &self.peer_trusted_ca_file,
            client_cert_auth: self.peer_client_cert_auth,
            crl_file: &self.peer_crl_file,
            auto_tls: self.peer_auto_tls,
        };
        self.tls(&flags, "listen-peer-urls", listen, advertise)
    }

    /// TLS settings when the listen URLs are `https://`; an `https://` URL without a
    /// certificate (or `--auto-tls`) is refused, as is a certificate without its key.
    pub(super) fn tls(
        &self,
        flags: &TlsFlags<'_>,
        listen_flag: &'static str,
        listen: &str,
        advertise: &str,
    ) -> Result<Option<TlsSettings>, ConfigError> {
        let https = listen.split(',').any(|u| u.trim().starts_with("https://"));
        let cert_flag = if flags.side.is_empty() {
            "cert-file"
        } else {
            "peer-cert-file"
        };
        if !https {
            return Ok(None);
        }
        let identity = match (flags.cert_file, flags.key_file, flags.auto_tls) {
            (Some(cert_file), Some(key_file), _) => Identity::Files {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            },
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(invalid(
                    cert_flag,
                    "a certificate needs its key, and a key its certificate",
                ))
            }
            (None, None, true) => Identity::self_signed(&tls_hosts(listen, advertise))
                .map_err(|e| invalid(cert_flag, e.to_string()))?,
            (None, None, false) => {
                return Err(invalid(
                    listen_flag,
                    format!(
                        "https:// needs --{cert_flag} and its key, or --{}auto-tls",
                        flags.side
                    ),
                ))
            }
        };
        if flags.client_cert_auth && flags.trusted_ca_file.is_none() {
            let flag = if flags.side.is_empty() {
                "client-cert-auth"
            } else {
                "peer-client-cert-auth"
            };
            return Err(invalid(
                flag,
                format!("needs --{}trusted-ca-file", flags.side),
            ));
        }
        Ok(Some(TlsSettings {
            identity,
            trusted_ca_file: flags.trusted_ca_file.clone(),
            client_cert_auth: flags.client_cert_auth,
            crl_file: flags.crl_file.clone(),
            options: self.options()?,
        }))
    }

    pub(super) fn auth(&self) -> Result<AuthSettings, ConfigError> {
        let (kind, options) = self
            .auth_token
            .split_once(',')
            .unwrap_or((self.auth_token.as_str(), ""));
        let jwt = match kind {
            "simple" => None,
            "jwt" => {
                let options = JwtOptions::parse(options).map_err(|e| invalid("auth-token", e))?;
                let tokens = JwtTokens::load(options).map_err(|e| invalid("auth-token", e))?;
                Some(Arc::new(tokens))
            }
            other => {
                return Err(invalid(
                    "auth-token",
                    format!("{other:?}: simple or jwt,pub-key=…,priv-key=…,sign-method=…"),
                ))
            }
        };
        if !(4..=31).contains(&self.bcrypt_cost) {
            return Err(invalid("bcrypt-cost", "must be between 4 and 31"));
        }
        Ok(AuthSettings {
            token_ttl: Duration::from_secs(positive("auth-token-ttl", self.auth_token_ttl)?),
            bcrypt_cost: self.bcrypt_cost,
            jwt,
        })
    }
}

/// The hosts a generated certificate names: those of the URLs, and the loopback names.
pub(super) fn tls_hosts(listen: &str, advertise: &str) -> Vec<String> {
    let mut hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for raw in listen.split(',').chain(advertise.split(',')) {
        if let Some(host) = Url::parse(raw.trim())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
        {
            let host = host.trim_matches(['[', ']']).to_string();
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    }
    hosts
}
