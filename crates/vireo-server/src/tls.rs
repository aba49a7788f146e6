//! TLS on the workers' own event loops, through rustls: no thread per connection, no blocking
//! handshake. A TLS connection is a plain `Conn` with a `rustls::ServerConnection` beside its
//! socket; reads pull ciphertext from the socket into rustls and plaintext out of it into the
//! connection's read buffer, writes push the output queue's frames into rustls and its
//! ciphertext out to the socket. Everything above (decoding, routing, back-pressure, the
//! frame log) sees plaintext and does not know TLS is there.
//!
//! rustls with the `aws-lc-rs` provider: TLS 1.3 and 1.2, the certificate chain and key from PEM
//! files.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use mio::net::TcpStream;
use parking_lot::RwLock;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// A TLS connection's state: the rustls session and what its listener says about identity.
#[derive(Debug)]
pub(crate) struct TlsSession {
    pub session: ServerConnection,
    /// The client certificate's Common Name becomes the user name (`use_identity_as_username`).
    pub identity_as_username: bool,
}

/// A TLS listener's configuration as each accepted connection needs it. The rustls
/// configuration is swapped whole by a reload (SIGHUP: new certificates); sessions already
/// made keep theirs.
#[derive(Debug, Clone)]
pub(crate) struct TlsListener {
    pub config: Arc<RwLock<Arc<ServerConfig>>>,
    pub identity_as_username: bool,
}

impl TlsListener {
    /// A session for a connection just accepted.
    pub(crate) fn accept(&self) -> Result<TlsSession, rustls::Error> {
        let config = Arc::clone(&self.config.read());
        Ok(TlsSession {
            session: ServerConnection::new(config)?,
            identity_as_username: self.identity_as_username,
        })
    }
}

/// The Common Name of the client's certificate (the first CN of its subject), if it sent one
/// the listener verified.
pub(crate) fn peer_common_name(session: &ServerConnection) -> Option<String> {
    let cert = session.peer_certificates()?.first()?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Plaintext read out of rustls per call, at most.
const PLAINTEXT_CHUNK: usize = 16 * 1024;

/// The server side of a TLS listener: certificate chain and key from PEM files; with
/// `client_ca`, client certificates are verified against it, and required when `require`.
pub(crate) fn server_config(
    certificate: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    require: bool,
) -> Result<Arc<ServerConfig>, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .map_err(|e| format!("{}: {e}", certificate.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", certificate.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", certificate.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca).map_err(|e| format!("{}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", ca.display()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            );
            let verifier = if require {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            builder.with_client_cert_verifier(
                verifier
                    .build()
                    .map_err(|e| format!("{}: {e}", ca.display()))?,
            )
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| format!("certificate and key: {e}"))?;
    Ok(Arc::new(config))
}

/// Reads plaintext into `buf`: what rustls already holds, else ciphertext from the socket
/// first. `Ok(0)` at the end of the stream (the peer's close_notify or FIN), `WouldBlock`
/// when the socket is drained and no plaintext is left. A TLS error (a failed handshake, a
/// bad record) is sent to the peer as an alert when possible, and returned. `buf` grows by
/// exactly the plaintext taken (at most `PLAINTEXT_CHUNK`).
pub(crate) fn read(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    let pending = plaintext_ready(tls, stream)?.min(PLAINTEXT_CHUNK);
    if pending == 0 {
        return Ok(0);
    }
    let start = buf.len();
    buf.resize(start + pending, 0);
    let n = tls.reader().read(&mut buf[start..]);
    buf.truncate(start + *n.as_ref().unwrap_or(&0));
    n
}

/// As [`read`], into a slice (for a layer above TLS: WebSocket).
pub(crate) fn read_slice(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
    out: &mut [u8],
) -> io::Result<usize> {
    if out.is_empty() || plaintext_ready(tls, stream)? == 0 {
        return Ok(0);
    }
    tls.reader().read(out)
}

/// Feeds rustls ciphertext from the socket until it has plaintext: how much (0 at the end
/// of the stream).
fn plaintext_ready(tls: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<usize> {
    loop {
        let state = match tls.process_new_packets() {
            Ok(state) => state,
            Err(e) => {
                // The alert rustls queued for it, best effort.
                let _ = flush(tls, stream);
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
        };
        let pending = state.plaintext_bytes_to_read();
        if pending > 0 {
            return Ok(pending);
        }
        if state.peer_has_closed() {
            return Ok(0);
        }
        if tls.read_tls(stream)? == 0 {
            return Ok(0);
        }
    }
}

/// Writes ciphertext rustls holds to the socket until it holds none (`Ok`) or the socket is
/// full (`WouldBlock`).
pub(crate) fn flush(tls: &mut ServerConnection, stream: &mut TcpStream) -> io::Result<()> {
    while tls.wants_write() {
        match tls.write_tls(stream) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Takes plaintext from `iov` as a socket write would: the bytes taken, or `WouldBlock` when
/// neither rustls nor the socket has room. Ciphertext made earlier goes out first.
pub(crate) fn write_vectored(
    tls: &mut ServerConnection,
    stream: &mut TcpStream,
    iov: &[io::IoSlice<'_>],
) -> io::Result<usize> {
    flush(tls, stream)?;
    let n = tls.writer().write_vectored(iov)?;
    match flush(tls, stream) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(e) => return Err(e),
    }
    if n == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}
