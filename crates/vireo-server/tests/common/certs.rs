//! Test certificates: a CA and a server certificate made by rcgen in a temporary directory,
//! and a rustls client stream trusting that CA.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use vireo_server::{ListenerConfig, ListenerProtocol};

use super::WAIT;

/// A CA and a server certificate for 127.0.0.1 / localhost, as PEM files in a fresh
/// directory (removed on drop).
pub struct Certs {
    dir: PathBuf,
    pub ca_der: Vec<u8>,
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Certs {
    pub fn new(name: &str) -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
        let dir = std::env::temp_dir().join(format!("vireo-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "Vireo test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params
            .distinguished_name
            .push(DnType::CommonName, "127.0.0.1");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
        Self {
            dir,
            ca_der: ca.der().to_vec(),
            ca,
            ca_key,
        }
    }

    /// A client certificate with Common Name `cn`, signed by the CA: `client-CN.pem` and
    /// `client-CN.key`.
    pub fn client(&self, cn: &str) -> (PathBuf, PathBuf) {
        use rcgen::{CertificateParams, DnType, KeyPair};
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (c, k) = (
            self.path(&format!("client-{cn}.pem")),
            self.path(&format!("client-{cn}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// A TLS listener on a free loopback port with these files.
    pub fn listener(&self) -> ListenerConfig {
        ListenerConfig {
            address: "127.0.0.1:0".parse().unwrap(),
            protocol: ListenerProtocol::Tls,
            tls_certificate: Some(self.path("cert.pem")),
            tls_key: Some(self.path("key.pem")),
            ..ListenerConfig::tcp("127.0.0.1:0".parse().unwrap())
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TLS client stream to `addr` trusting the test CA (read timeout `WAIT`).
pub fn tls_stream(
    addr: SocketAddr,
    certs: &Certs,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.ca_der.clone().into()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "127.0.0.1".try_into().unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}
