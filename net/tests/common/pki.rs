//! Certificates for TLS tests, made with rcgen: a CA, server and client certificates it
//! signs, written as PEM files.

use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicU64, Ordering};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevocationReason,
    RevokedCertParams, SerialNumber,
};

/// Serial numbers of issued certificates, unique within a test process.
static NEXT_SERIAL: AtomicU64 = AtomicU64::new(1000);

/// A certificate authority that signs certificates into `dir`.
pub struct Ca {
    name: String,
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: KeyPair,
    pub cert_file: PathBuf,
}

/// A certificate and key on disk.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub serial: u64,
}

impl Pair {
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert_file).unwrap()
    }

    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key_file).unwrap()
    }
}

impl Ca {
    pub fn new(dir: &Path, name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        let cert_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        Ca {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            cert,
            key,
            cert_file,
        }
    }

    /// A certificate for `common_name`, valid for loopback as a server and as a client.
    pub fn issue(&self, common_name: &str) -> Pair {
        let key = KeyPair::generate().unwrap();
        let hosts = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(hosts).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        params.serial_number = Some(SerialNumber::from(serial));
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let stem = format!("{}-{common_name}", self.name);
        let pair = Pair {
            cert_file: self.dir.join(format!("{stem}.pem")),
            key_file: self.dir.join(format!("{stem}-key.pem")),
            serial,
        };
        std::fs::write(&pair.cert_file, cert.pem()).unwrap();
        std::fs::write(&pair.key_file, key.serialize_pem()).unwrap();
        pair
    }

    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// Writes to `file` this CA's revocation list (number `number`), revoking `revoked`.
    pub fn write_crl(&self, file: &Path, number: u64, revoked: &[&Pair]) {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(2099, 1, 1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|pair| RevokedCertParams {
                    serial_number: SerialNumber::from(pair.serial),
                    revocation_time: date_time_ymd(2024, 1, 1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.cert, &self.key).unwrap();
        std::fs::write(file, crl.pem().unwrap()).unwrap();
    }
}
