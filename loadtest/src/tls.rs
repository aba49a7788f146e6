//! TLS on the generator's own event loops, through rustls, as the broker does it: no thread
//! per connection, no blocking handshake. A client that speaks TLS has a
//! `rustls::ClientConnection` beside its socket. Reads hand the socket's ciphertext to rustls
//! and each plaintext chunk it yields to the parser the plain path uses; flushes move the
//! client's queued plaintext into rustls and rustls's ciphertext to the socket. CONNECT is
//! queued as soon as TCP connects: rustls holds it until the handshake ends, so the connect
//! latency (TCP connect to CONNACK) includes the TLS handshake.
//!
//! rustls with the `ring` provider, TLS 1.3 and 1.2, no session resumption: every connection
//! makes a full handshake.

use std::io::{self, BufRead, Write};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::{ConfigError, TlsConfig};
use crate::error::ClientError;

/// What every TLS client of a run shares: the rustls configuration and the name the broker's
/// certificate must carry.
#[derive(Debug, Clone)]
pub struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Connector {
    /// The client side of `tls` for the broker at `host` (an IP address or a DNS name). Reads
    /// the CA file once, here.
    pub fn new(tls: &TlsConfig, host: &str) -> Result<Self, ConfigError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
        let builder = match tls {
            TlsConfig::CaFile { cafile } => {
                let bad = |reason: String| ConfigError::TlsCaFile {
                    path: cafile.clone(),
                    reason,
                };
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(cafile).map_err(|e| bad(e.to_string()))? {
                    let cert = cert.map_err(|e| bad(e.to_string()))?;
                    roots.add(cert).map_err(|e| bad(e.to_string()))?;
                }
                if roots.is_empty() {
                    return Err(bad("no certificate in it".into()));
                }
                builder.with_root_certificates(roots)
            }
            TlsConfig::Insecure => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))),
        };
        let mut config = builder.with_no_client_auth();
        // A resumed session skips the certificate and the key exchange's signature, which are
        // most of what a handshake costs the broker.
        config.resumption = Resumption::disabled();
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ConfigError::TlsServerName(host.to_owned()))?;
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }

    /// A session for a connection whose TCP connect just completed; its ClientHello is queued.
    pub(crate) fn connect(&self) -> Result<Box<ClientConnection>, ClientError> {
        ClientConnection::new(Arc::clone(&self.config), self.name.clone())
            .map(Box::new)
            .map_err(ClientError::Tls)
    }
}

/// Hands `ciphertext`, just read from the socket, to rustls and each plaintext chunk it yields
/// to `on_plaintext`, in order, without copying it out of rustls. `Closed` once the broker's
/// close_notify has arrived (after the plaintext before it).
pub(crate) fn decrypt(
    tls: &mut ClientConnection,
    mut ciphertext: &[u8],
    mut on_plaintext: impl FnMut(&[u8]) -> Result<(), ClientError>,
) -> Result<(), ClientError> {
    while !ciphertext.is_empty() {
        // rustls takes at most about a record per call (its deframer's buffer).
        if tls.read_tls(&mut ciphertext).map_err(ClientError::Io)? == 0 {
            return Err(ClientError::Closed);
        }
        let state = tls.process_new_packets().map_err(ClientError::Tls)?;
        let mut pending = state.plaintext_bytes_to_read();
        while pending > 0 {
            let mut reader = tls.reader();
            let chunk = reader.fill_buf().map_err(ClientError::Io)?;
            let n = chunk.len();
            if n == 0 {
                break;
            }
            on_plaintext(chunk)?;
            reader.consume(n);
            pending = pending.saturating_sub(n);
        }
        if state.peer_has_closed() {
            return Err(ClientError::Closed);
        }
    }
    Ok(())
}

/// Moves `wbuf`'s plaintext into rustls and rustls's ciphertext (handshake records included)
/// to the socket, until none is left (`Ok`), the socket is full (`WouldBlock`), or rustls
/// holds all the plaintext it takes before the handshake ends (`Ok`, `wbuf` not empty: the
/// read that ends the handshake leaves ciphertext to send, and the worker flushes again).
pub(crate) fn flush(
    tls: &mut ClientConnection,
    sock: &mut TcpStream,
    wbuf: &mut BytesMut,
) -> io::Result<()> {
    loop {
        write_out(tls, sock)?;
        if wbuf.is_empty() {
            return Ok(());
        }
        let n = tls.writer().write(wbuf)?;
        if n == 0 {
            return Ok(());
        }
        wbuf.advance(n);
    }
}

/// Writes the ciphertext rustls holds (an alert, a close_notify…) until it holds none or the
/// socket is full.
pub(crate) fn write_out(tls: &mut ClientConnection, sock: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the handshake agreed, e.g. `TLSv1_3 TLS13_AES_256_GCM_SHA384 X25519`.
pub(crate) fn describe(tls: &ClientConnection) -> Option<String> {
    let version = tls.protocol_version()?;
    let suite = tls.negotiated_cipher_suite()?;
    let mut s = format!("{version:?} {:?}", suite.suite());
    if let Some(group) = tls.negotiated_key_exchange_group() {
        s.push_str(&format!(" {:?}", group.name()));
    }
    Some(s)
}

/// `--insecure`: any certificate, for any name, is accepted. The signature that proves the
/// broker holds the certificate's key is still verified, so the handshake costs what a
/// verified one does, less the chain check.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
