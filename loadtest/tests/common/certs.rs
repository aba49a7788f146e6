//! Certificates for the TLS tests: a CA the test makes (rcgen) and a certificate for
//! 127.0.0.1 it signed.

use std::path::PathBuf;

use vireo_loadtest::config::TlsConfig;

use super::TempDir;

/// A CA (`ca.pem`), a certificate for 127.0.0.1 it signed (`cert.pem`, `key.pem`), and a
/// second CA that signed nothing (`other-ca.pem`), in a directory removed on drop.
pub struct Certs(TempDir);

impl Certs {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let dir = TempDir::new("tls");
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.distinguished_name.push(DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            (params.self_signed(&key).unwrap(), key)
        };
        let (ca_cert, ca_key) = ca("loadtest CA");
        let (other, _) = ca("another CA");
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.0.join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.0.join("other-ca.pem"), other.pem()).unwrap();
        std::fs::write(dir.0.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.0.join("key.pem"), key.serialize_pem()).unwrap();
        Self(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.0.join(name)
    }

    pub fn verify_with(&self, name: &str) -> Option<TlsConfig> {
        Some(TlsConfig::CaFile {
            cafile: self.path(name),
        })
    }
}
