//! TLS with rustls for the client port, the peer port and the connections keel makes itself
//! (to peers, to the leader's client URL when forwarding, and from `keel bench`).
//!
//! Settings are etcd's (`--cert-file`, `--key-file`, `--trusted-ca-file`,
//! `--client-cert-auth`, `--auto-tls` and their `--peer-` twins, `--cipher-suites`,
//! `--tls-min-version`). Certificate rotation: the files are looked at again (at most once a
//! second, when a connection is accepted or made) and a changed certificate, key or CA file is
//! loaded for the next connections; established ones keep theirs. A changed file that does not
//! load is reported and the previous configuration stays in use.
//!
//! The simulator runs no TLS: its configurations have none, and this module is only reached
//! through them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use thiserror::Error;
use tokio::net::TcpStream;
use tracing::{info, warn};

/// How often certificate files are looked at for changes, at most.
const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take before the connection is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("cannot generate a self-signed certificate: {0}")]
    AutoTls(String),
    #[error("{0}")]
    Invalid(String),
}

/// `--tls-min-version`: rustls speaks TLS 1.2 and 1.3 only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

impl TlsVersion {
    /// etcd's spelling: `TLS1.2`, `TLS1.3` (`TLS1.0`/`TLS1.1` are refused: rustls has no
    /// support for them).
    pub fn parse(name: &str) -> Result<TlsVersion, TlsError> {
        match name {
            "TLS1.2" => Ok(TlsVersion::Tls12),
            "TLS1.3" => Ok(TlsVersion::Tls13),
            "TLS1.0" | "TLS1.1" => Err(TlsError::Invalid(format!(
                "{name} is not supported (keel speaks TLS1.2 and TLS1.3)"
            ))),
            other => Err(TlsError::Invalid(format!(
                "unknown TLS version {other:?} (TLS1.2 or TLS1.3)"
            ))),
        }
    }

    fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static TLS13_ONLY: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            TlsVersion::Tls12 => &BOTH,
            TlsVersion::Tls13 => &TLS13_ONLY,
        }
    }
}

/// Settings shared by every TLS endpoint of a member.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsOptions {
    pub min_version: TlsVersion,
    /// `--cipher-suites` (IANA names, as etcd takes them); empty: rustls' defaults. As in
    /// Go, the list restricts TLS 1.2; TLS 1.3's suites are always offered.
    pub cipher_suites: Vec<String>,
}

impl Default for TlsOptions {
    fn default() -> TlsOptions {
        TlsOptions {
            min_version: TlsVersion::Tls12,
            cipher_suites: Vec::new(),
        }
    }
}

impl TlsOptions {
    /// Checks the suite names, so a typo stops start-up rather than the first handshake.
    pub fn check(&self) -> Result<(), TlsError> {
        self.provider().map(|_| ())
    }

    fn provider(&self) -> Result<Arc<CryptoProvider>, TlsError> {
        let mut provider = rustls::crypto::ring::default_provider();
        if !self.cipher_suites.is_empty() {
            for name in &self.cipher_suites {
                let known = provider
                    .cipher_suites
                    .iter()
                    .any(|suite| suite_name(suite) == *name);
                if !known {
                    return Err(TlsError::Invalid(format!(
                        "unknown or unsupported cipher suite {name:?}"
                    )));
                }
            }
            provider.cipher_suites.retain(|suite| {
                suite.version() == &rustls::version::TLS13
                    || self.cipher_suites.contains(&suite_name(suite))
            });
        }
        Ok(Arc::new(provider))
    }
}

fn suite_name(suite: &rustls::SupportedCipherSuite) -> String {
    format!("{:?}", suite.suite())
}

/// Where a TLS endpoint's identity comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// Certificate chain and key files (PEM), re-read when they change.
    Files {
        cert_file: PathBuf,
        key_file: PathBuf,
    },
    /// A self-signed certificate made at start-up (`--auto-tls`), kept in memory.
    Generated { cert_pem: String, key_pem: String },
    /// No certificate: for a client that presents none (`keel bench` without `--cert`).
    Anonymous,
}

impl Identity {
    /// A self-signed certificate for `hosts` (names or IP addresses), as `--auto-tls` makes.
    pub fn self_signed(hosts: &[String]) -> Result<Identity, TlsError> {
        let certified = rcgen::generate_simple_self_signed(hosts.to_vec())
            .map_err(|e| TlsError::AutoTls(e.to_string()))?;
        Ok(Identity::Generated {
            cert_pem: certified.cert.pem(),
            key_pem: certified.key_pair.serialize_pem(),
        })
    }

    fn load(&self) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
        match self {
            Identity::Files {
                cert_file,
                key_file,
            } => Ok((read_certs(cert_file)?, read_key(key_file)?)),
            Identity::Generated { cert_pem, key_pem } => {
                let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| TlsError::AutoTls(e.to_string()))?;
                let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
                    .map_err(|e| TlsError::AutoTls(e.to_string()))?;
                Ok((certs, key))
            }
            Identity::Anonymous => Err(TlsError::Invalid(
                "a TLS server needs a certificate and key".into(),
            )),
        }
    }

    fn files(&self) -> Vec<PathBuf> {
        match self {
            Identity::Files {
                cert_file,
                key_file,
            } => vec![cert_file.clone(), key_file.clone()],
            Identity::Generated { .. } | Identity::Anonymous => Vec::new(),
        }
    }
}

/// One side of a member's TLS: the client port's or the peer port's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub identity: Identity,
    /// `--trusted-ca-file`: verifies clients' certificates (with `client_cert_auth`) and, for
    /// connections this member makes, the server's. Without it, connections this member
    /// makes verify nothing (as etcd does with `--auto-tls`).
    pub trusted_ca_file: Option<PathBuf>,
    /// `--client-cert-auth`: a client must present a certificate signed by the trusted CA.
    pub client_cert_auth: bool,
    /// `--client-crl-file`: certificates it revokes are refused when a client presents one
    /// (as etcd's, it only matters where client certificates are verified).
    pub crl_file: Option<PathBuf>,
    pub options: TlsOptions,
}

impl TlsSettings {
    fn files(&self) -> Vec<PathBuf> {
        let mut files = self.identity.files();
        files.extend(self.trusted_ca_file.iter().cloned());
        files.extend(self.crl_file.iter().cloned());
        files
    }

    fn crls(&self) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
        let Some(path) = &self.crl_file else {
            return Ok(Vec::new());
        };
        let crls: Vec<CertificateRevocationListDer<'static>> = read_pem(path)?;
        if crls.is_empty() {
            return Err(TlsError::File {
                path: path.clone(),
                reason: "no certificate revocation list in it (PEM \"X509 CRL\")".into(),
            });
        }
        Ok(crls)
    }

    fn roots(&self) -> Result<Option<RootCertStore>, TlsError> {
        let Some(path) = &self.trusted_ca_file else {
            return Ok(None);
        };
        let mut roots = RootCertStore::empty();
        for cert in read_certs(path)? {
            roots.add(cert)?;
        }
        Ok(Some(roots))
    }

    /// The rustls server configuration, offering `alpn` protocols.
    fn server_config(&self, alpn: &[&[u8]]) -> Result<ServerConfig, TlsError> {
        let provider = self.options.provider()?;
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.options.min_version.versions())?;
        let builder = match (self.client_cert_auth, self.roots()?) {
            (true, Some(roots)) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .with_crls(self.crls()?)
                        .build()
                        .map_err(|e| TlsError::Invalid(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            (true, None) => {
                return Err(TlsError::Invalid(
                    "client certificate authentication needs a trusted CA file".into(),
                ))
            }
            (false, _) => builder.with_no_client_auth(),
        };
        let (certs, key) = self.identity.load()?;
        let mut config = builder.with_single_cert(certs, key)?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }

    /// The rustls client configuration for connections this member makes: it presents its
    /// own certificate (for peers or servers that ask for one) and verifies the server with
    /// the trusted CA, or not at all without one.
    fn client_config(&self, alpn: &[&[u8]]) -> Result<ClientConfig, TlsError> {
        let provider = self.options.provider()?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(self.options.min_version.versions())?;
        let builder = match self.roots()? {
            Some(roots) => builder.with_root_certificates(roots),
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert::new(&provider))),
        };
        let mut config = match self.identity {
            Identity::Anonymous => builder.with_no_client_auth(),
            _ => {
                let (certs, key) = self.identity.load()?;
                builder.with_client_auth_cert(certs, key)?
            }
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Every PEM section of `T`'s kind in the file at `path` (others are skipped).
fn read_pem<T: PemObject>(path: &Path) -> Result<Vec<T>, TlsError> {
    let pem = read_file(path)?;
    T::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = read_pem(path)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// When the files were last changed (as far as the file system says).
fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|path| std::fs::metadata(path).and_then(|m| m.modified()).ok())
        .collect()
}

/// A configuration built from files, rebuilt when they change.
#[derive(Debug)]
struct Reloading<C> {
    built: Arc<C>,
    stamps: Vec<Option<SystemTime>>,
    checked: Instant,
}

/// Makes a configuration from the settings (reading their files).
type Build<C> = dyn Fn(&TlsSettings) -> Result<C, TlsError> + Send + Sync;

/// Builds with `build` and rebuilds when `settings`' files change.
#[derive(Clone)]
struct Reloader<C> {
    settings: Arc<TlsSettings>,
    build: Arc<Build<C>>,
    state: Arc<Mutex<Reloading<C>>>,
    what: &'static str,
}

impl<C> std::fmt::Debug for Reloader<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("what", &self.what)
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl<C> Reloader<C> {
    fn new(
        settings: TlsSettings,
        what: &'static str,
        build: impl Fn(&TlsSettings) -> Result<C, TlsError> + Send + Sync + 'static,
    ) -> Result<Reloader<C>, TlsError> {
        let stamps = modified(&settings.files());
        let built = Arc::new(build(&settings)?);
        Ok(Reloader {
            settings: Arc::new(settings),
            build: Arc::new(build),
            state: Arc::new(Mutex::new(Reloading {
                built,
                stamps,
                checked: Instant::now(),
            })),
            what,
        })
    }

    /// The configuration for the next connection: rebuilt first if a file changed.
    fn current(&self) -> Arc<C> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.checked.elapsed() < RELOAD_CHECK_INTERVAL {
            return state.built.clone();
        }
        state.checked = Instant::now();
        let stamps = modified(&self.settings.files());
        if stamps != state.stamps {
            state.stamps = stamps;
            match (self.build)(&self.settings) {
                Ok(built) => {
                    info!(what = self.what, "certificate files changed; reloaded them");
                    state.built = Arc::new(built);
                }
                Err(error) => warn!(
                    what = self.what,
                    %error,
                    "certificate files changed but do not load; keeping the previous ones"
                ),
            }
        }
        state.built.clone()
    }
}

/// The server side of a TLS listener.
#[derive(Clone, Debug)]
pub struct ServerTls {
    config: Reloader<ServerConfig>,
}

impl ServerTls {
    /// Loads the configuration now (so a bad file stops start-up), offering `alpn`.
    pub fn new(
        settings: TlsSettings,
        alpn: &'static [&'static [u8]],
        what: &'static str,
    ) -> Result<ServerTls, TlsError> {
        let config = Reloader::new(settings, what, move |s| s.server_config(alpn))?;
        Ok(ServerTls { config })
    }

    /// Runs the server side of the handshake on `stream`, with the current certificates.
    pub async fn accept(
        &self,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.current());
        timeout_handshake(acceptor.accept(stream)).await
    }
}

/// The client side: connections this member makes.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Reloader<ClientConfig>,
}

impl ClientTls {
    pub fn new(
        settings: TlsSettings,
        alpn: &'static [&'static [u8]],
        what: &'static str,
    ) -> Result<ClientTls, TlsError> {
        let config = Reloader::new(settings, what, move |s| s.client_config(alpn))?;
        Ok(ClientTls { config })
    }

    /// Runs the client side of the handshake on `stream` to `host` (a name or an IP).
    pub async fn connect(
        &self,
        host: &str,
        stream: TcpStream,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connector = tokio_rustls::TlsConnector::from(self.config.current());
        timeout_handshake(connector.connect(name, stream)).await
    }
}

async fn timeout_handshake<T>(
    handshake: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
        Ok(result) => result,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

/// Accepts any server certificate (still checking the handshake's signatures): for
/// connections made without a trusted CA, as etcd's `--auto-tls` does.
#[derive(Debug)]
struct AnyServerCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AnyServerCert {
    fn new(provider: &CryptoProvider) -> AnyServerCert {
        AnyServerCert {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The common name of the subject of a DER certificate.
pub fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let name = cert.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_string)
}

/// The common name of the certificate a gRPC client presented on a TLS connection (verified
/// by the handshake when client certificate authentication is on).
pub fn peer_common_name<T>(request: &tonic::Request<T>) -> Option<String> {
    let certs = request.peer_certs()?;
    common_name(certs.first()?)
}

/// ALPN for the client port: gRPC (HTTP/2) and the JSON gateway (HTTP/1.1).
pub const CLIENT_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// The metrics listeners speak HTTP/1.1 only.
pub const METRICS_ALPN: &[&[u8]] = &[b"http/1.1"];
/// ALPN for gRPC connections this member makes (forwarding to the leader).
pub const GRPC_ALPN: &[&[u8]] = &[b"h2"];
/// The peer port speaks keel's own framing.
pub const PEER_ALPN: &[&[u8]] = &[b"keel-peer"];

/// A gRPC channel to `url` (a client URL), over TLS with `tls` for `https://`.
pub fn grpc_channel(
    url: &str,
    tls: Option<&ClientTls>,
) -> Result<tonic::transport::Channel, String> {
    use tonic::transport::Endpoint;
    let Some(rest) = url.strip_prefix("https://") else {
        let endpoint = Endpoint::from_shared(url.to_string()).map_err(|e| e.to_string())?;
        return Ok(endpoint.connect_lazy());
    };
    let tls = tls.ok_or("an https:// URL, but this member has no client TLS settings")?;
    let authority = rest.trim_end_matches('/').to_string();
    let host = host_of(&authority);
    // tonic refuses https:// with a connector of its own: the connector does the TLS, and
    // the channel sees a plain URL.
    let endpoint =
        Endpoint::from_shared(format!("http://{authority}")).map_err(|e| e.to_string())?;
    let connector = TlsConnector {
        tls: tls.clone(),
        host,
    };
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// The host of `host:port` (an IPv6 address keeps no brackets).
pub fn host_of(authority: &str) -> String {
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => authority,
    };
    host.trim_matches(['[', ']']).to_string()
}

/// Dials TCP and runs the TLS handshake for a gRPC channel (the simulator's channels ignore
/// connectors).
#[derive(Clone, Debug)]
#[cfg_attr(madsim, allow(dead_code))]
pub struct TlsConnector {
    tls: ClientTls,
    host: String,
}

#[cfg(not(madsim))]
impl tower::Service<tonic::codegen::http::Uri> for TlsConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: tonic::codegen::http::Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .map(|a| a.to_string())
                .ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?;
            let stream = TcpStream::connect(&authority).await?;
            let _ = stream.set_nodelay(true);
            let tls = connector.tls.connect(&connector.host, stream).await?;
            Ok(hyper_util::rt::TokioIo::new(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_from_authorities() {
        assert_eq!(host_of("127.0.0.1:2379"), "127.0.0.1");
        assert_eq!(host_of("[::1]:2379"), "::1");
        assert_eq!(host_of("localhost"), "localhost");
    }

    #[test]
    fn tls_versions_and_suites_are_checked() {
        assert_eq!(TlsVersion::parse("TLS1.3").unwrap(), TlsVersion::Tls13);
        assert!(TlsVersion::parse("TLS1.0").is_err());
        let good = TlsOptions {
            min_version: TlsVersion::Tls12,
            cipher_suites: vec!["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into()],
        };
        assert!(good.check().is_ok());
        let bad = TlsOptions {
            cipher_suites: vec!["TLS_RSA_WITH_RC4_128_SHA".into()],
            ..good
        };
        assert!(bad.check().is_err());
    }

    #[test]
    fn a_generated_certificate_names_its_common_name() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "alice");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(common_name(cert.der()).as_deref(), Some("alice"));
    }
}

/// The client listener's connections, each through the TLS handshake (those that fail it —
/// no certificate, or one from another CA, with `--client-cert-auth` — are dropped with a
/// log line), for tonic's `serve_with_incoming`.
#[cfg(not(madsim))]
pub fn incoming(
    listener: tokio::net::TcpListener,
    tls: ServerTls,
) -> tokio_stream_compat::Incoming {
    let (accepted, incoming) = tokio::sync::mpsc::channel(ACCEPT_QUEUE);
    tokio::spawn(async move {
        loop {
            let (stream, addr) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "client listener failed to accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            if accepted.is_closed() {
                return;
            }
            let (tls, handshaken) = (tls.clone(), accepted.clone());
            tokio::spawn(async move {
                match tls.accept(stream).await {
                    Ok(stream) => {
                        let _ = handshaken.send(Ok(stream)).await;
                    }
                    Err(error) => {
                        tracing::info!(%addr, %error, "refused a client: TLS handshake failed")
                    }
                }
            });
        }
    });
    tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(incoming)
}

/// Handshaken client connections waiting for the gRPC server.
#[cfg(not(madsim))]
const ACCEPT_QUEUE: usize = 128;

#[cfg(not(madsim))]
pub use tokio_stream_compat::Incoming;

#[cfg(not(madsim))]
mod tokio_stream_compat {
    pub type Incoming = tonic::codegen::tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>,
    >;
}
