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
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};
use rustls::ClientConnection;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vireo_broker::bridge::{Action, Bridge, BridgeSpec, Lost};
use vireo_broker::protocol::Limits;
use vireo_codec::{DecodeError, ProtocolVersion};

pub use config::{BridgeConfig, BridgeTopic, BridgeTransport, DirectionName};

use crate::conn::INTERNAL;
use crate::shared::{Adoption, Shared, WorkerMsg};

const LOCAL: Token = Token(0);
const REMOTE: Token = Token(1);
const WAKE: Token = Token(2);
/// How long after the local connection broke it is made again.
const LOCAL_RETRY: Duration = Duration::from_secs(1);
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
    pub local_connects: AtomicU64,
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
            local_connects: AtomicU64::new(0),
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

/// The local connection while it is open.
struct LocalConn {
    stream: TcpStream,
    rbuf: BytesMut,
}

/// The remote connection while it is open.
struct RemoteConn {
    stream: TcpStream,
    tls: Option<ClientConnection>,
    rbuf: BytesMut,
    addr: SocketAddr,
    /// The host's other addresses, tried in turn if this one does not connect.
    rest: Vec<SocketAddr>,
    /// With other addresses left: when this one has had its share of `connect_timeout` and
    /// the next is tried (an address that drops packets never fails on its own).
    give_up_at: Option<Instant>,
    /// The TCP connect completed.
    established: bool,
    /// Reading stopped because the state machine holds a window's worth for the broker: read
    /// again once it has room (no readiness event will come for bytes already waiting).
    paused: bool,
    /// Bytes of an oversized packet still to be skipped as they come.
    skip: usize,
}

/// A name lookup running on its own thread, so a slow resolver never stalls the bridge's
/// loop (nor the broker's shutdown, which waits for it).
type Lookup = crossbeam_channel::Receiver<io::Result<Vec<SocketAddr>>>;

struct Runner {
    core: Bridge,
    poll: Poll,
    waker: Arc<Waker>,
    local: Option<LocalConn>,
    /// When the local connection is made again after it broke.
    local_retry_at: Option<Instant>,
    remote: Option<RemoteConn>,
    lookup: Option<Lookup>,
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
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        let max_packet = shared.config.max_packet_size;
        let mut runner = Self {
            core: Bridge::new(p.spec, Instant::now()),
            poll,
            waker,
            local: None,
            local_retry_at: None,
            remote: None,
            lookup: None,
            host: p.host,
            port: p.port,
            tls: p.tls,
            status,
            shared,
            max_packet,
        };
        runner.open_local()?;
        Ok(runner)
    }

    fn name(&self) -> &str {
        &self.core.spec().name
    }

    /// Makes the local connection and hands the broker's end to the worker that owns the
    /// bridge's client id.
    fn open_local(&mut self) -> io::Result<()> {
        let (ours, theirs) = local_pair()?;
        ours.set_nonblocking(true)?;
        theirs.set_nonblocking(true)?;
        let peer = ours.local_addr()?;
        let mut stream = TcpStream::from_std(ours);
        self.poll.registry().register(
            &mut stream,
            LOCAL,
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let connect = self.core.local_connect();
        let home = crate::worker::home_of_client(&connect.client_id, self.shared.mailboxes.len());
        self.shared.mailboxes[home].send(WorkerMsg::Adopt(Box::new(Adoption {
            stream: TcpStream::from_std(theirs),
            peer,
            listener: INTERNAL,
            layers: None,
            connect: Box::new(connect),
            rest: BytesMut::new(),
            assigned: false,
            refused: None,
        })));
        self.local = Some(LocalConn {
            stream,
            rbuf: BytesMut::new(),
        });
        self.local_retry_at = None;
        self.status.local_connects.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// The local connection broke (the broker closed it, or it failed): made again after
    /// [`LOCAL_RETRY`], a new local session (see `Bridge::local_lost`).
    fn lose_local(&mut self, now: Instant, why: &str) {
        if let Some(mut local) = self.local.take() {
            let _ = self.poll.registry().deregister(&mut local.stream);
        }
        self.core.local_lost();
        self.local_retry_at = Some(now + LOCAL_RETRY);
        if !self.shared.shutdown.load(Ordering::Relaxed) {
            tracing::warn!(bridge = %self.name(), reason = why, retry_in_ms = LOCAL_RETRY.as_millis() as u64, "bridge's local connection lost");
        }
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
            if self.local_retry_at.is_some_and(|at| now >= at)
                && let Err(e) = self.open_local()
            {
                tracing::error!(bridge = %self.name(), error = %e, "cannot make the bridge's local connection");
                self.local_retry_at = Some(now + LOCAL_RETRY);
            }
            self.take_lookup(now);
            if self
                .remote
                .as_ref()
                .is_some_and(|r| !r.established && r.give_up_at.is_some_and(|t| now >= t))
            {
                self.connect_failed(now, "no answer within its share of connect_timeout");
            }
            while let Some(action) = self.core.tick(now) {
                match action {
                    Action::Connect => self.open_remote(now),
                    Action::Close(why) => self.drop_remote(now, &why.to_string()),
                }
            }
            self.flush_both(now);
            // Room made by the flush: take what a paused side has waiting.
            if self.remote.as_ref().is_some_and(|r| r.paused) && self.core.wants_remote_input() {
                self.read_remote(now);
            }
            self.flush_both(now);
            self.publish_status();
            let mut deadline = self.core.next_deadline();
            if let Some(at) = self.local_retry_at {
                deadline = deadline.min(at);
            }
            if let Some(at) = self.remote.as_ref().and_then(|r| r.give_up_at) {
                deadline = deadline.min(at);
            }
            let wait = deadline
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
                            self.lose_local(now, &e);
                        }
                    }
                    REMOTE => self.on_remote_event(event, now),
                    _ => {} // WAKE: a lookup finished, taken at the top of the loop
                }
            }
        }
        self.status.connected.store(false, Ordering::Relaxed);
    }

    fn flush_both(&mut self, now: Instant) {
        if let Err(e) = self.flush_local() {
            self.lose_local(now, &e.to_string());
        }
        if let Err(e) = self.flush_remote() {
            self.drop_remote(now, &e.to_string());
        }
    }

    fn publish_status(&self) {
        let s = self.core.stats();
        let st = &self.status;
        st.connected.store(self.core.is_up(), Ordering::Relaxed);
        st.forwarded_out.store(s.forwarded_out, Ordering::Relaxed);
        st.forwarded_in.store(s.forwarded_in, Ordering::Relaxed);
        st.dropped.store(s.dropped, Ordering::Relaxed);
    }

    /// Reads and handles what the broker sent, until the socket is drained. Always read (see
    /// `BUFFER_LIMIT`): what the remote is not taking is dropped at QoS 0, windowed at QoS 1/2.
    fn read_local(&mut self, now: Instant) -> Result<(), String> {
        let Some(local) = &mut self.local else {
            return Ok(());
        };
        loop {
            loop {
                match vireo_codec::decode(&mut local.rbuf, ProtocolVersion::V5, self.max_packet) {
                    Ok(Some(packet)) => {
                        self.core.on_local(packet, now).map_err(|e| e.to_string())?;
                    }
                    Ok(None) => break,
                    Err(e) => return Err(format!("undecodable packet from the broker: {e}")),
                }
            }
            match read_chunk(&mut local.stream, &mut local.rbuf) {
                Ok(0) => return Err("closed by the broker".into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn flush_local(&mut self) -> io::Result<()> {
        let Some(local) = &mut self.local else {
            self.core.local_out.clear();
            return Ok(());
        };
        write_all_nonblocking(&mut local.stream, &mut self.core.local_out)
    }

    /// Starts a connection attempt: an address literal at once, a name after its lookup.
    fn open_remote(&mut self, now: Instant) {
        self.status.connects.fetch_add(1, Ordering::Relaxed);
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return self.connect_any(now, vec![SocketAddr::new(ip, self.port)]);
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let (host, port, waker) = (self.host.clone(), self.port, Arc::clone(&self.waker));
        let spawned = std::thread::Builder::new()
            .name("vireo-bridge-dns".into())
            .spawn(move || {
                let found = (host.as_str(), port)
                    .to_socket_addrs()
                    .map(|a| a.collect::<Vec<_>>());
                let _ = tx.send(found);
                let _ = waker.wake();
            });
        match spawned {
            Ok(_) => self.lookup = Some(rx),
            Err(e) => self.drop_remote(now, &format!("cannot start the name lookup: {e}")),
        }
    }

    /// A finished lookup: connect to what it found.
    fn take_lookup(&mut self, now: Instant) {
        let Some(found) = self.lookup.as_ref().and_then(|rx| rx.try_recv().ok()) else {
            return;
        };
        self.lookup = None;
        match found {
            Ok(addrs) if !addrs.is_empty() => self.connect_any(now, addrs),
            Ok(_) => {
                let why = format!("{} resolves to no address", self.host);
                self.drop_remote(now, &why);
            }
            Err(e) => {
                let why = format!("cannot resolve {}: {e}", self.host);
                self.drop_remote(now, &why);
            }
        }
    }

    /// Connects to the first of `addrs` that takes a connect, keeping the rest to try if it
    /// does not complete.
    fn connect_any(&mut self, now: Instant, mut addrs: Vec<SocketAddr>) {
        addrs.reverse();
        let mut last = String::new();
        while let Some(addr) = addrs.pop() {
            match self.connect_to(addr) {
                Ok(mut remote) => {
                    tracing::info!(bridge = %self.name(), %addr, "bridge connecting");
                    addrs.reverse();
                    if !addrs.is_empty() {
                        let share = self.core.spec().connect_timeout / (addrs.len() as u32 + 1);
                        remote.give_up_at = Some(now + share);
                    }
                    remote.rest = addrs;
                    self.remote = Some(remote);
                    return;
                }
                Err(e) => last = format!("connect to {addr}: {e}"),
            }
        }
        self.drop_remote(now, &last);
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
            addr,
            rest: Vec::new(),
            give_up_at: None,
            established: false,
            paused: false,
            skip: 0,
        })
    }

    /// A connect that did not complete: the next address, or give up this attempt.
    fn connect_failed(&mut self, now: Instant, why: &str) {
        let Some(mut remote) = self.remote.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut remote.stream);
        if remote.rest.is_empty() {
            return self.drop_remote(now, &format!("connect to {}: {why}", remote.addr));
        }
        tracing::info!(bridge = %self.name(), addr = %remote.addr, reason = why, "bridge trying the next address");
        self.connect_any(now, remote.rest);
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
        self.lookup = None;
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
                return self.connect_failed(now, &e.to_string());
            }
            match remote.stream.peer_addr() {
                Ok(_) => {
                    remote.established = true;
                    remote.give_up_at = None;
                }
                Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                    if event.is_error() || event.is_write_closed() {
                        return self.connect_failed(now, "connect failed");
                    }
                    return;
                }
                Err(e) => return self.connect_failed(now, &e.to_string()),
            }
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_remote(now);
        }
        if let Err(e) = self.flush_remote() {
            self.drop_remote(now, &e.to_string());
        }
    }

    /// Reads and handles what the remote sent, until the socket is drained or the state
    /// machine holds a window's worth (then `paused`).
    fn read_remote(&mut self, now: Instant) {
        let version = self.core.spec().remote_version;
        let Some(remote) = &mut self.remote else {
            return;
        };
        remote.paused = false;
        loop {
            loop {
                if remote.skip > 0 {
                    let n = remote.skip.min(remote.rbuf.len());
                    remote.rbuf.advance(n);
                    remote.skip -= n;
                    if remote.skip > 0 {
                        break;
                    }
                }
                if !self.core.wants_remote_input() {
                    remote.paused = true;
                    return;
                }
                match vireo_codec::decode(&mut remote.rbuf, version, self.max_packet) {
                    Ok(Some(packet)) => {
                        if let Err(lost) = self.core.on_remote(packet, now) {
                            return self.lose(now, &lost);
                        }
                    }
                    Ok(None) => break,
                    Err(DecodeError::PacketTooLarge { .. }) => {
                        match self.core.remote_oversized(&remote.rbuf, now) {
                            Ok(Some(n)) => remote.skip = n,
                            Ok(None) => break,
                            Err(lost) => return self.lose(now, &lost),
                        }
                    }
                    Err(e) => {
                        let why = format!("undecodable packet from the remote: {e}");
                        return self.drop_remote(now, &why);
                    }
                }
            }
            let read = match &mut remote.tls {
                Some(tls) => read_tls(tls, &mut remote.stream, &mut remote.rbuf),
                None => read_chunk(&mut remote.stream, &mut remote.rbuf),
            };
            match read {
                Ok(0) => return self.drop_remote(now, "closed by the remote"),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return self.drop_remote(now, &e.to_string()),
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
            // Nothing to write to yet: the CONNECT waits there while the name is looked up.
            return Ok(());
        };
        if !remote.established {
            return Ok(());
        }
        let out = &mut self.core.remote_out;
        let Some(tls) = &mut remote.tls else {
            return write_all_nonblocking(&mut remote.stream, out);
        };
        // rustls takes plaintext up to its buffer limit: feed it, write its records out,
        // and go on until everything is written or the socket is full.
        loop {
            let mut progressed = false;
            if !out.is_empty() {
                let n = tls.writer().write(out)?;
                out.advance(n);
                progressed = n > 0;
            }
            while tls.wants_write() {
                match tls.write_tls(&mut remote.stream) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => progressed = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if out.is_empty() || !progressed {
                return Ok(()); // done, or the handshake must finish before more is taken
            }
        }
    }
}

/// Writes `out` to a non-blocking socket until it is empty or the socket is full.
fn write_all_nonblocking(stream: &mut TcpStream, out: &mut BytesMut) -> io::Result<()> {
    while !out.is_empty() {
        match stream.write(out) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    let mut got = 0;
    loop {
        match tls.reader().read(&mut chunk) {
            // close_notify: what came with it is decoded first; the next read reports the end.
            Ok(0) => return Ok(got),
            Ok(m) => {
                buf.extend_from_slice(&chunk[..m]);
                got += m;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    if n == 0 {
        return Ok(got); // the end of the stream, after what it carried
    }
    Ok(n)
}
