//! Bridges to other brokers: the sockets around `vireo_broker::bridge`'s state machine.
//!
//! Each bridge is one thread with its own mio loop over two connections:
//!
//! - **local**, into this broker: a loopback TCP pair made by the thread itself (it connects
//!   to a listener it bound on 127.0.0.1:0 and drops at once, and checks that the connection
//!   it accepted is its own). The broker end is handed to the worker that owns the bridge's
//!   client id as an already-decoded CONNECT (`WorkerMsg::Adopt`), marked `INTERNAL`: no
//!   listener, no password, no ACL. From then on it is an ordinary MQTT 5.0 session, so the
//!   broker's own queue (bounded by `max_queued_messages`) holds what waits for the remote.
//! - **remote**, to the other broker over TCP or TLS (rustls), opened again with backoff
//!   whenever it fails.
//!
//! The thread moves bytes; every protocol decision is the state machine's.

pub(crate) mod config;

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vireo_broker::bridge::{Action, Bridge, BridgeSpec, Lost};
use vireo_broker::protocol::Limits;
use vireo_codec::ProtocolVersion;

pub use config::{BridgeConfig, BridgeTopic, BridgeTransport, DirectionName};

use crate::conn::INTERNAL;
use crate::shared::{Adoption, Shared, WorkerMsg};

const LOCAL: Token = Token(0);
const REMOTE: Token = Token(1);
/// Longest poll: how soon the thread notices a shutdown.
const MAX_WAIT: Duration = Duration::from_millis(100);
/// Bytes read per call.
const READ_CHUNK: usize = 16 * 1024;

/// What the metrics and `$SYS` show of a bridge.
#[derive(Debug)]
pub(crate) struct BridgeStatus {
    pub name: String,
    pub connected: AtomicBool,
    pub forwarded_out: AtomicU64,
    pub forwarded_in: AtomicU64,
    pub dropped: AtomicU64,
    pub connects: AtomicU64,
}

impl BridgeStatus {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            connected: AtomicBool::new(false),
            forwarded_out: AtomicU64::new(0),
            forwarded_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            connects: AtomicU64::new(0),
        }
    }
}

/// A bridge ready to run: its configuration checked and its TLS files read, so that a
/// mistake stops the broker at start instead of failing in the background.
pub(crate) struct Prepared {
    spec: BridgeSpec,
    host: String,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

/// Checks a bridge's configuration and loads its TLS files.
pub(crate) fn prepare(cfg: &BridgeConfig, limits: &Limits) -> Result<Prepared, String> {
    let spec = cfg.spec(limits)?;
    let (host, port) = cfg.host_port()?;
    let tls = match cfg.protocol {
        BridgeTransport::Tcp => None,
        BridgeTransport::Tls => {
            let name = cfg.tls_server_name.as_deref().unwrap_or(host);
            let server_name = ServerName::try_from(name.to_owned())
                .map_err(|e| format!("bridge {:?}: tls_server_name {name:?}: {e}", cfg.name))?;
            let config = client_config(cfg).map_err(|e| format!("bridge {:?}: {e}", cfg.name))?;
            Some((config, server_name))
        }
    };
    Ok(Prepared {
        spec,
        host: host.to_owned(),
        port,
        tls,
    })
}

fn client_config(cfg: &BridgeConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &cfg.tls_ca_file {
        Some(ca) => {
            let shown = |e: &dyn std::fmt::Display| format!("tls_ca_file {}: {e}", ca.display());
            for cert in CertificateDer::pem_file_iter(ca).map_err(|e| shown(&e))? {
                roots
                    .add(cert.map_err(|e| shown(&e))?)
                    .map_err(|e| shown(&e))?;
            }
            if roots.is_empty() {
                return Err(shown(&"no certificate in it"));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert); // the system store may hold some rustls refuses
            }
            if roots.is_empty() {
                return Err("no system CA certificates found: set tls_ca_file".into());
            }
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let config = match (&cfg.tls_certificate, &cfg.tls_key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| format!("tls_certificate {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("tls_key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("tls_certificate and tls_key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// Starts a prepared bridge on its own thread.
pub(crate) fn spawn(
    prepared: Prepared,
    status: Arc<BridgeStatus>,
    shared: Arc<Shared>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let name = prepared.spec.name.clone();
    let runner = Runner::new(prepared, status, shared)?;
    std::thread::Builder::new()
        .name(format!("vireo-bridge-{name}"))
        .spawn(move || runner.run())
}

/// A loopback connection to ourselves: (our end, the broker's end).
fn local_pair() -> io::Result<(std::net::TcpStream, std::net::TcpStream)> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let ours = std::net::TcpStream::connect(listener.local_addr()?)?;
    let me = ours.local_addr()?;
    // Another local process could connect in the instant the listener exists: only the
    // connection from our own socket is taken.
    for _ in 0..16 {
        let (theirs, peer) = listener.accept()?;
        if peer == me {
            ours.set_nodelay(true)?;
            theirs.set_nodelay(true)?;
            return Ok((ours, theirs));
        }
    }
    Err(io::Error::other(
        "could not make the bridge's local connection",
    ))
}

/// The remote connection while it is open.
struct RemoteConn {
    stream: TcpStream,
    tls: Option<ClientConnection>,
    rbuf: BytesMut,
    /// The TCP connect completed.
    established: bool,
    /// Reading stopped because the state machine holds a window of messages: read again
    /// once it has room (no readiness event will come for bytes already waiting).
    paused: bool,
}

struct Runner {
    core: Bridge,
    poll: Poll,
    local: TcpStream,
    local_rbuf: BytesMut,
    remote: Option<RemoteConn>,
    host: String,
    port: u16,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
    status: Arc<BridgeStatus>,
    shared: Arc<Shared>,
    max_packet: usize,
}

impl Runner {
    fn new(p: Prepared, status: Arc<BridgeStatus>, shared: Arc<Shared>) -> io::Result<Self> {
        let poll = Poll::new()?;
        let (ours, theirs) = local_pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        let peer = ours.local_addr()?;
        let mut local = TcpStream::from_std(ours);
        poll.registry()
            .register(&mut local, LOCAL, Interest::READABLE | Interest::WRITABLE)?;
        let core = Bridge::new(p.spec, Instant::now());
        let connect = core.local_connect();
        let home = crate::worker::home_of_client(&connect.client_id, shared.mailboxes.len());
        shared.mailboxes[home].send(WorkerMsg::Adopt(Box::new(Adoption {
            stream: TcpStream::from_std(theirs),
            peer,
            listener: INTERNAL,
            layers: None,
            connect: Box::new(connect),
            rest: BytesMut::new(),
            assigned: false,
            refused: None,
        })));
        let max_packet = shared.config.max_packet_size;
        Ok(Self {
            core,
            poll,
            local,
            local_rbuf: BytesMut::new(),
            remote: None,
            host: p.host,
            port: p.port,
            tls: p.tls,
            status,
            shared,
            max_packet,
        })
    }

    fn name(&self) -> &str {
        &self.core.spec().name
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(16);
        loop {
            let now = Instant::now();
            if self.shared.shutdown.load(Ordering::Relaxed) {
                self.core.shutdown(now);
                let _ = self.flush_remote();
                break;
            }
            while let Some(action) = self.core.tick(now) {
                match action {
                    Action::Connect => self.open_remote(now),
                    Action::Close(why) => self.drop_remote(now, &why.to_string()),
                }
            }
            if self.remote.as_ref().is_some_and(|r| r.paused) && self.core.wants_remote_input() {
                self.read_remote(now);
            }
            if let Err(e) = self.flush_local() {
                tracing::error!(bridge = %self.name(), error = %e, "local connection failed; bridge stops");
                break;
            }
            if let Err(e) = self.flush_remote() {
                self.drop_remote(now, &e.to_string());
            }
            self.publish_status();
            let wait = self
                .core
                .next_deadline()
                .saturating_duration_since(Instant::now())
                .min(MAX_WAIT);
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!(bridge = %self.name(), error = %e, "poll failed; bridge stops");
                break;
            }
            let now = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LOCAL => {
                        if let Err(e) = self.read_local(now) {
                            if !self.shared.shutdown.load(Ordering::Relaxed) {
                                tracing::error!(bridge = %self.name(), error = %e, "local connection ended; bridge stops");
                            }
                            self.core.shutdown(now);
                            let _ = self.flush_remote();
                            self.status.connected.store(false, Ordering::Relaxed);
                            return;
                        }
                    }
                    REMOTE => self.on_remote_event(event, now),
                    _ => {}
                }
            }
        }
        self.status.connected.store(false, Ordering::Relaxed);
    }

    fn publish_status(&self) {
        let s = self.core.stats();
        let st = &self.status;
        st.connected.store(self.core.is_up(), Ordering::Relaxed);
        st.forwarded_out.store(s.forwarded_out, Ordering::Relaxed);
        st.forwarded_in.store(s.forwarded_in, Ordering::Relaxed);
        st.dropped.store(s.dropped, Ordering::Relaxed);
    }

    fn read_local(&mut self, now: Instant) -> Result<(), String> {
        loop {
            match read_chunk(&mut self.local, &mut self.local_rbuf) {
                Ok(0) => return Err("closed by the broker".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        loop {
            match vireo_codec::decode(&mut self.local_rbuf, ProtocolVersion::V5, self.max_packet) {
                Ok(Some(packet)) => self.core.on_local(packet, now).map_err(|e| e.to_string())?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("undecodable packet from the broker: {e}")),
            }
        }
    }

    fn flush_local(&mut self) -> io::Result<()> {
        while !self.core.local_out.is_empty() {
            match self.local.write(&self.core.local_out) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.core.local_out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn open_remote(&mut self, now: Instant) {
        let addr = match (self.host.as_str(), self.port).to_socket_addrs() {
            Ok(mut addrs) => addrs.next(),
            Err(e) => {
                let why = format!("cannot resolve {}: {e}", self.host);
                return self.drop_remote(now, &why);
            }
        };
        let Some(addr) = addr else {
            let why = format!("{} resolves to no address", self.host);
            return self.drop_remote(now, &why);
        };
        match self.connect_to(addr) {
            Ok(remote) => {
                tracing::info!(bridge = %self.name(), %addr, "bridge connecting");
                self.status.connects.fetch_add(1, Ordering::Relaxed);
                self.remote = Some(remote);
            }
            Err(e) => self.drop_remote(now, &format!("connect to {addr}: {e}")),
        }
    }

    fn connect_to(&mut self, addr: SocketAddr) -> io::Result<RemoteConn> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        self.poll.registry().register(
            &mut stream,
            REMOTE,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let tls = match &self.tls {
            Some((config, name)) => Some(
                ClientConnection::new(Arc::clone(config), name.clone())
                    .map_err(io::Error::other)?,
            ),
            None => None,
        };
        Ok(RemoteConn {
            stream,
            tls,
            rbuf: BytesMut::new(),
            established: false,
            paused: false,
        })
    }

    /// Closes the remote connection if open, and has the state machine schedule the next
    /// attempt.
    fn drop_remote(&mut self, now: Instant, why: &str) {
        if let Some(mut remote) = self.remote.take() {
            if let Some(tls) = &mut remote.tls {
                tls.send_close_notify();
                let _ = tls.write_tls(&mut remote.stream);
            }
            let _ = self.poll.registry().deregister(&mut remote.stream);
        }
        let was_up = self.core.is_up();
        let delay = self.core.remote_lost(now, fastrand::f64());
        self.status.connected.store(false, Ordering::Relaxed);
        if was_up {
            tracing::warn!(bridge = %self.name(), reason = why, retry_in_ms = delay.as_millis() as u64, "bridge connection lost");
        } else {
            tracing::warn!(bridge = %self.name(), reason = why, retry_in_ms = delay.as_millis() as u64, "bridge could not connect");
        }
    }

    fn on_remote_event(&mut self, event: &mio::event::Event, now: Instant) {
        let Some(remote) = &mut self.remote else {
            return;
        };
        if !remote.established {
            if let Ok(Some(e)) | Err(e) = remote.stream.take_error() {
                return self.drop_remote(now, &format!("connect: {e}"));
            }
            match remote.stream.peer_addr() {
                Ok(_) => remote.established = true,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if event.is_error() || event.is_write_closed() {
                        return self.drop_remote(now, "connect failed");
                    }
                    return;
                }
                Err(e) => return self.drop_remote(now, &format!("connect: {e}")),
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_remote(now);
        }
        if let Err(e) = self.flush_remote() {
            self.drop_remote(now, &e.to_string());
        }
    }

    fn read_remote(&mut self, now: Instant) {
        let Some(remote) = &mut self.remote else {
            return;
        };
        remote.paused = false;
        let mut ended = None;
        loop {
            if !self.core.wants_remote_input() {
                remote.paused = true;
                break;
            }
            let read = match &mut remote.tls {
                Some(tls) => read_tls(tls, &mut remote.stream, &mut remote.rbuf),
                None => read_chunk(&mut remote.stream, &mut remote.rbuf),
            };
            let got_bytes = match read {
                Ok(0) => {
                    ended = Some("closed by the remote".to_owned());
                    false
                }
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    ended = Some(e.to_string());
                    false
                }
            };
            let version = self.core.spec().remote_version;
            let mut progressed = false;
            loop {
                match vireo_codec::decode(&mut remote.rbuf, version, self.max_packet) {
                    Ok(Some(packet)) => {
                        progressed = true;
                        if let Err(lost) = self.core.on_remote(packet, now) {
                            return self.lose(now, &lost);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        let why = format!("undecodable packet from the remote: {e}");
                        return self.drop_remote(now, &why);
                    }
                }
            }
            if let Some(why) = ended {
                return self.drop_remote(now, &why);
            }
            if !progressed && !got_bytes {
                break; // drained
            }
        }
    }

    fn lose(&mut self, now: Instant, lost: &Lost) {
        if let Lost::Refused(code) = lost {
            tracing::error!(bridge = %self.name(), code = code.0, "the remote refused the bridge's CONNECT (check client_id, username and password)");
        }
        self.drop_remote(now, &lost.to_string());
    }

    fn flush_remote(&mut self) -> io::Result<()> {
        let Some(remote) = &mut self.remote else {
            self.core.remote_out.clear();
            return Ok(());
        };
        if !remote.established {
            return Ok(());
        }
        let out = &mut self.core.remote_out;
        match &mut remote.tls {
            None => {
                while !out.is_empty() {
                    match remote.stream.write(out) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => out.advance(n),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Some(tls) => {
                if !out.is_empty() {
                    let n = tls.writer().write(out)?;
                    out.advance(n);
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut remote.stream) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }
}

/// One read from a plain socket into `buf`.
fn read_chunk(stream: &mut TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut chunk = [0u8; READ_CHUNK];
    let n = stream.read(&mut chunk)?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// One read of ciphertext into rustls, and the plaintext it yields into `buf`. `Ok(0)` at the
/// end of the stream; a TLS error is an `InvalidData` error (its alert sent when possible).
fn read_tls(
    tls: &mut ClientConnection,
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> io::Result<usize> {
    let n = tls.read_tls(stream)?;
    if let Err(e) = tls.process_new_packets() {
        let _ = tls.write_tls(stream);
        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
    }
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match tls.reader().read(&mut chunk) {
            Ok(0) => return Ok(0), // close_notify
            Ok(m) => buf.extend_from_slice(&chunk[..m]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if n == 0 {
        return Ok(0);
    }
    Ok(n)
}
