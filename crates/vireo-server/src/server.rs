//! Starting and stopping the broker: listeners, workers, shared state.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use mio::net::TcpListener;
use mio::{Poll, Waker};
use parking_lot::RwLock;
use socket2::{Domain, Protocol, Socket, Type};
use vireo_broker::protocol::acl::AclFile;
use vireo_broker::{RetainedStore, SubscriptionIndex};

use crate::auth::{self, Checkers};
use crate::passwd::PasswordFile;
use crate::per_ip::PerIp;
use crate::shared::{Mailbox, Shared, Stats};
use crate::tls;
use crate::worker::{WAKER, Worker};
use crate::{Config, ConfigError};

/// Pending connections the kernel queues per listener.
const LISTEN_BACKLOG: i32 = 4096;

/// The broker. [`Server::start`] returns a handle that stops it.
#[derive(Debug)]
pub struct Server;

/// A running broker. Dropping it stops the broker and waits for its workers.
#[derive(Debug)]
pub struct ServerHandle {
    shared: Arc<SharedRef>,
    local_addr: SocketAddr,
    listener_addrs: Vec<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    threads: Vec<JoinHandle<()>>,
    /// Stopped after the workers, so that it writes what they changed last.
    store: Option<crate::store::StoreThread>,
}

/// Keeps `Shared` private while letting the handle own it.
struct SharedRef(Arc<Shared>);

impl std::fmt::Debug for SharedRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The password file cannot be used.
    #[error(transparent)]
    Passwords(#[from] crate::passwd::PasswdError),
    /// The ACL file cannot be read or understood.
    #[error("acl_file {path}: {reason}")]
    Acl {
        /// The file.
        path: String,
        /// What is wrong with it (a line number, when it is its content).
        reason: String,
    },
    /// A TLS listener's certificate or key cannot be used.
    #[error("tls listener {address}: {reason}")]
    Tls {
        /// The listener's address.
        address: SocketAddr,
        /// What is wrong (the file and the error).
        reason: String,
    },
    /// A bridge's configuration or TLS files cannot be used.
    #[error("{0}")]
    Bridge(String),
    /// The durable store (`data_dir`) cannot be used.
    #[error("data_dir: {0}")]
    Store(#[from] vireo_broker::store::OpenError),
    /// Binding, polling or spawning failed.
    #[error("cannot start: {0}")]
    Io(#[from] io::Error),
}

/// One listener as each worker holds it: its socket, and the TLS configuration of a TLS one.
pub(crate) struct WorkerListener {
    pub socket: TcpListener,
    pub tls: Option<tls::TlsListener>,
    /// The WebSocket settings of a `ws` or `wss` listener.
    pub ws: Option<crate::ws::WsListener>,
}

impl Server {
    /// Checks a configuration as `start` would use it, without binding or starting anything:
    /// its values, every TLS listener's certificate, key and client CA, the password file and
    /// the ACL file. What it found, a line each, for `vireo --check-config`.
    pub fn check(config: &Config) -> Result<Vec<String>, StartError> {
        config.validate()?;
        let mut found = Vec::new();
        for l in config.listeners() {
            listener_tls(&l)?;
            found.push(format!("listener {} ({:?})", l.address, l.protocol));
        }
        if let Some(path) = &config.password_file {
            let passwords = PasswordFile::load(path)?;
            found.push(format!("{}: {} users", path.display(), passwords.len()));
        }
        if let Some(path) = &config.acl_file {
            let acl = load_acl(path)?;
            found.push(format!("{}: {} rules", path.display(), acl.len()));
        }
        for b in &config.bridges {
            crate::bridge::prepare(b, &config.protocol_limits()).map_err(StartError::Bridge)?;
            found.push(format!(
                "bridge {} to {} ({} topics)",
                b.name,
                b.address,
                b.topics.len()
            ));
        }
        Ok(found)
    }

    /// Binds one SO_REUSEPORT socket per worker for each listener (`config.listeners()`; port
    /// 0 picks a free port shared by all workers), spawns the workers and returns at once.
    pub fn start(config: Config) -> Result<ServerHandle, StartError> {
        config.validate()?;
        let bridges = config
            .bridges
            .iter()
            .map(|b| crate::bridge::prepare(b, &config.protocol_limits()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(StartError::Bridge)?;
        let bridge_status: Vec<_> = config
            .bridges
            .iter()
            .map(|b| Arc::new(crate::bridge::BridgeStatus::new(&b.name)))
            .collect();
        let acl = match &config.acl_file {
            Some(path) => {
                let acl = load_acl(path)?;
                log_acl(path, &acl);
                Some(acl)
            }
            None => None,
        };
        let mut retained =
            RetainedStore::new(config.max_retained_messages, config.max_retained_bytes);
        let mut stored_sessions: Vec<Vec<crate::store::StoredSession>> = Vec::new();
        let store_stats = Arc::new(crate::store::StoreStats::default());
        let (persist, store_thread) = match config.persistence {
            crate::config::Persistence::Off => (None, None),
            crate::config::Persistence::Async | crate::config::Persistence::Sync => {
                let (mut log, recovered) =
                    crate::store::open(&config.data_dir, config.queue_memory_bytes)?;
                let mut refused = 0;
                for msg in recovered.retained {
                    let key = vireo_broker::store::records::retained_key(&msg.topic);
                    if retained.set(msg) == vireo_broker::RetainOutcome::Refused {
                        // Over a lowered max_retained_*: not kept, on disk either, or a later
                        // clear of its topic (which finds nothing) would leave it there.
                        log.delete(&key);
                        refused += 1;
                    }
                }
                if refused > 0 {
                    tracing::warn!(
                        refused,
                        "stored retained messages over max_retained_messages / max_retained_bytes were dropped"
                    );
                    if let Err(e) = log.commit(true) {
                        tracing::warn!(error = %e, "the store could not drop them");
                    }
                }
                // Each to the worker that owns its client id.
                let workers = config.worker_count();
                stored_sessions = (0..workers).map(|_| Vec::new()).collect();
                for s in recovered.sessions {
                    let home = crate::worker::home_of_client(&s.client_id, workers);
                    stored_sessions[home].push(s);
                }
                let interval = std::time::Duration::from_millis(config.sync_interval_ms);
                let sync = config.persistence == crate::config::Persistence::Sync;
                let (persist, thread) =
                    crate::store::spawn(log, interval, sync, workers, Arc::clone(&store_stats))?;
                (Some(persist), Some(thread))
            }
        };
        let workers = config.worker_count();
        let mut per_worker: Vec<Vec<WorkerListener>> = (0..workers).map(|_| Vec::new()).collect();
        let mut addrs = Vec::new();
        let mut tls_listeners = Vec::new();
        for l in config.listeners() {
            let tls = match listener_tls(&l)? {
                Some(config) => {
                    let listener = tls::TlsListener {
                        config: Arc::new(RwLock::new(config)),
                        identity_as_username: l.use_identity_as_username,
                    };
                    tls_listeners.push((l.clone(), Arc::clone(&listener.config)));
                    Some(listener)
                }
                None => None,
            };
            let ws = l.protocol.is_ws().then(|| crate::ws::WsListener {
                path: Arc::from(l.ws_path()),
                // A frame may carry several packets [MQTT-6.0.0-2]: room for a largest one,
                // or 64 KiB of small ones.
                max_message: config.max_packet_size.max(64 * 1024),
            });
            let mut addr = l.address;
            ensure_not_listening(addr)?;
            for listeners in &mut per_worker {
                let socket = bind_reuseport(addr)?;
                addr = socket.local_addr()?;
                listeners.push(WorkerListener {
                    socket,
                    tls: tls.clone(),
                    ws: ws.clone(),
                });
            }
            tracing::info!(%addr, protocol = ?l.protocol, "listener");
            addrs.push(addr);
        }
        let addr = addrs[0];
        let checker_threads = match config.auth_threads {
            0 => workers,
            n => n,
        };
        let (checkers, checks) = match &config.password_file {
            Some(path) => {
                let passwords = PasswordFile::load(path)?;
                tracing::info!(path = %path.display(), users = passwords.len(), "password file loaded");
                let (c, rx) = Checkers::new(passwords, checker_threads);
                (Some(c), Some(rx))
            }
            None => (None, None),
        };
        let mut polls = Vec::with_capacity(workers);
        let mut mailboxes = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let poll = Poll::new()?;
            let waker = Waker::new(poll.registry(), WAKER)?;
            let (tx, rx) = crossbeam_channel::unbounded();
            mailboxes.push(Mailbox::new(tx, waker));
            receivers.push(rx);
            polls.push(poll);
        }
        let shared = Arc::new(Shared {
            index: SubscriptionIndex::new(config.index_shards),
            shared_subs: vireo_broker::SharedSubscriptions::new(),
            limits: config.protocol_limits(),
            retained: RwLock::new(retained),
            store_stats: persist.as_ref().map(|_| Arc::clone(&store_stats)),
            persist,
            mailboxes,
            in_transit_limit: in_transit_limit(&config, workers),
            stats: Arc::new(Stats::default()),
            shutdown: std::sync::atomic::AtomicBool::new(false),
            stopped_wills: std::sync::atomic::AtomicUsize::new(0),
            password_policy: (0..addrs.len())
                .map(|i| config.listener_policy(i))
                .collect(),
            checkers,
            live: crate::shared::LiveLimits::new(&config),
            per_ip: PerIp::new(
                config.max_connections_per_ip,
                config.max_connection_rate_per_ip,
            ),
            rate_limits: RwLock::new(config.rate_limits()),
            rate_limits_ever: std::sync::atomic::AtomicBool::new(config.rate_limits().any()),
            tls_listeners,
            acl: RwLock::new(acl),
            acl_generation: AtomicU64::new(0),
            bridges: bridge_status.clone(),
            config,
        });
        if let Some(p) = &shared.persist {
            // A queue read back from disk goes to the worker that asked.
            let weak = Arc::downgrade(&shared);
            let _ = p.durable().deliver.set(Box::new(move |w, reply| {
                if let Some(m) = weak.upgrade().as_ref().and_then(|s| s.mailboxes.get(w)) {
                    m.send(crate::shared::WorkerMsg::Loaded(reply));
                }
            }));
            // `sync`: a worker holding acknowledgements hears of each sync at once.
            let weak = Arc::downgrade(&shared);
            let _ = p.durable().wake.set(Box::new(move || {
                if let Some(shared) = weak.upgrade() {
                    shared.mailboxes.iter().for_each(|m| m.wake_if_sleeping());
                }
            }));
        }
        let mut threads = Vec::with_capacity(workers + checker_threads);
        if let Some(rx) = &checks {
            threads.extend(auth::spawn(&shared, rx, checker_threads)?);
        }
        let cores = if shared.config.pin_workers {
            core_affinity::get_core_ids().unwrap_or_default()
        } else {
            Vec::new()
        };
        let parts = polls.into_iter().zip(per_worker).zip(receivers);
        for (id, ((poll, listener), rx)) in parts.enumerate() {
            let mut worker = Worker::new(id, Arc::clone(&shared), poll, listener, rx)?;
            if let Some(sessions) = stored_sessions.get_mut(id) {
                worker.restore_sessions(std::mem::take(sessions));
            }
            let core = (!cores.is_empty()).then(|| cores[id % cores.len()]);
            let thread = std::thread::Builder::new()
                .name(format!("vireo-worker-{id}"))
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    worker.run();
                })?;
            threads.push(thread);
        }
        // After the workers: a bridge hands its local connection to one of them.
        for (prepared, status) in bridges.into_iter().zip(bridge_status) {
            threads.push(crate::bridge::spawn(prepared, status, Arc::clone(&shared))?);
        }
        let metrics_addr = match shared.config.metrics_bind {
            Some(bind) => {
                let (server, bound) = crate::metrics::bind(bind)?;
                let shared = Arc::clone(&shared);
                threads.push(
                    std::thread::Builder::new()
                        .name("vireo-metrics".into())
                        .spawn(move || crate::metrics::serve(server, shared))?,
                );
                tracing::info!(addr = %bound, "metrics at http://{bound}/metrics");
                if !bound.ip().is_loopback() {
                    tracing::warn!(addr = %bound, "metrics served beyond loopback: anyone who reaches it reads the broker's counters");
                }
                Some(bound)
            }
            None => None,
        };
        tracing::info!(%addr, workers, "listening");
        let restricted = shared.acl.read().as_ref().is_some_and(|a| !a.is_empty());
        let exposed = addrs
            .iter()
            .zip(&shared.password_policy)
            .find_map(|(a, p)| (!a.ip().is_loopback() && p.allow_anonymous).then_some(*a));
        if let Some(addr) = exposed
            && !restricted
        {
            tracing::warn!(
                %addr,
                "anonymous clients are accepted on a non-loopback address: anyone who can reach \
                 it may read and write every topic (set password_file, or allow_anonymous = false)"
            );
        }
        Ok(ServerHandle {
            shared: Arc::new(SharedRef(shared)),
            local_addr: addr,
            listener_addrs: addrs,
            metrics_addr,
            threads,
            store: store_thread,
        })
    }
}

impl ServerHandle {
    /// The address the listeners are bound to (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Every listener's address, in the configuration's order (real ports for port 0).
    pub fn listener_addrs(&self) -> &[SocketAddr] {
        &self.listener_addrs
    }

    /// Where the Prometheus endpoint listens, when `metrics_bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Live counters.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.shared.0.stats)
    }

    /// Takes the limits of `config` (as SIGHUP re-reads the file): the per-address limits
    /// and the per-client publish rate and bandwidth, for the connections that come from now
    /// on; `max_connections`, `max_sessions`, `connect_timeout_secs` (for new connections),
    /// `packet_timeout_secs` and `max_output_bytes` (for every connection). Every other
    /// setting takes effect at the next start. Call it with a configuration that passed
    /// `Config::validate`.
    pub fn reload_limits(&self, config: &Config) {
        let shared = &self.shared.0;
        shared.live.set(config);
        shared.per_ip.set_limits(
            config.max_connections_per_ip,
            config.max_connection_rate_per_ip,
        );
        let rates = config.rate_limits();
        *shared.rate_limits.write() = rates;
        if rates.any() {
            shared.rate_limits_ever.store(true, Ordering::Relaxed);
        }
        tracing::info!(
            max_connections_per_ip = config.max_connections_per_ip,
            max_connection_rate_per_ip = config.max_connection_rate_per_ip,
            max_publish_rate = config.max_publish_rate,
            max_inbound_bytes_rate = config.max_inbound_bytes_rate,
            max_connections = config.max_connections,
            max_sessions = config.max_sessions,
            connect_timeout_secs = config.connect_timeout_secs,
            packet_timeout_secs = config.packet_timeout_secs,
            max_output_bytes = config.max_output_bytes,
            "limits reloaded (other settings take effect at the next start)"
        );
    }

    /// Reads the password file, the ACL file and the TLS listeners' certificates and keys
    /// again (what SIGHUP does), without dropping a connection: new CONNECTs (and TLS
    /// handshakes) meet the new files; connected clients keep what they were granted. A
    /// file that cannot be read or parsed leaves the one in use in place, and its error is
    /// logged and returned (every file is tried either way).
    pub fn reload(&self) -> Result<(), String> {
        let shared = &self.shared.0;
        let mut errors = Vec::new();
        if let (Some(path), Some(checkers)) = (&shared.config.password_file, &shared.checkers) {
            match PasswordFile::load(path) {
                Ok(passwords) => {
                    let users = passwords.len();
                    // Swapped before it is logged: once the log says so, it is in force.
                    *checkers.passwords.write() = Arc::new(passwords);
                    tracing::info!(path = %path.display(), users, "password file reloaded");
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        for (l, current) in &shared.tls_listeners {
            match listener_tls(l) {
                Ok(Some(config)) => {
                    *current.write() = config;
                    tracing::info!(address = %l.address, "TLS certificate reloaded");
                }
                Ok(None) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if let Some(path) = &shared.config.acl_file {
            match load_acl(path) {
                Ok(acl) => {
                    *shared.acl.write() = Some(Arc::clone(&acl));
                    // Connections pick the new file up at their next PUBLISH or SUBSCRIBE.
                    shared.acl_generation.fetch_add(1, Ordering::Release);
                    log_acl(path, &acl);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        for e in &errors {
            tracing::error!("reload: {e}; keeping the file in use");
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("; "))
        }
    }

    /// Stops every worker (see `Worker::stop`: the Wills still to come are published and
    /// what is queued is delivered for up to 2 s before the connections close) and waits.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let shared = &self.shared.0;
        shared.shutdown.store(true, Ordering::SeqCst);
        for mailbox in &shared.mailboxes {
            mailbox.wake();
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        if let Some(store) = self.store.take() {
            store.stop();
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.stop();
    }
}

/// QoS 1/2 deliveries allowed in transit to one worker (see `Mailbox::reliable`). A session
/// is backlogged once a window (`max_inflight`) is queued; the rest of its queue must absorb
/// what every other worker may still send it, so each gets an equal share of half of it,
/// within bounds that keep hand-off batches worth their wake-ups.
fn in_transit_limit(config: &Config, workers: usize) -> usize {
    let room = config
        .max_queued_messages
        .saturating_sub(config.max_inflight);
    (room / (2 * workers.max(1))).clamp(16, 8192)
}

/// Fails if some socket already listens on `addr`. SO_REUSEPORT, which gives each worker its
/// own listener, would otherwise let a second broker started on the same port (by mistake,
/// same user) share it and silently take part of the clients. A socket bound without
/// SO_REUSEPORT cannot share an address with a listener, so binding one tells (and is then
/// dropped); SO_REUSEADDR keeps connections in TIME_WAIT from a previous run out of the way.
fn ensure_not_listening(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(()); // a fresh port, picked by the first listener
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                e.kind(),
                format!("{addr} is already in use (is another broker running?)"),
            )
        } else {
            e
        }
    })
}

fn bind_reuseport(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nonblocking(true)?;
    // Accepted sockets inherit it on Linux, so no connection needs a call of its own (on other
    // systems the worker sets it per connection).
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}

/// The rustls configuration of a TLS listener, from its files; `None` for a plain one.
fn listener_tls(
    l: &crate::ListenerConfig,
) -> Result<Option<Arc<rustls::ServerConfig>>, StartError> {
    let (Some(cert), Some(key)) = (&l.tls_certificate, &l.tls_key) else {
        return Ok(None);
    };
    tls::server_config(cert, key, l.tls_client_ca.as_deref(), l.require_certificate)
        .map(Some)
        .map_err(|reason| StartError::Tls {
            address: l.address,
            reason,
        })
}

/// Reads and parses the ACL file.
fn load_acl(path: &std::path::Path) -> Result<Arc<AclFile>, StartError> {
    let fail = |reason: String| StartError::Acl {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    Ok(Arc::new(
        AclFile::parse(&text).map_err(|e| fail(e.to_string()))?,
    ))
}

/// Logs what an ACL file in force holds.
fn log_acl(path: &std::path::Path, acl: &AclFile) {
    if acl.is_empty() {
        // Deny-by-default starts with the first rule: a file of comments denies nothing.
        tracing::warn!(path = %path.display(), "the ACL file has no rules: every topic is open to every client");
    } else {
        tracing::info!(path = %path.display(), rules = acl.len(), "ACL in force");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Accepted connections have Nagle off without a call of their own (Linux copies the
    /// listener's TCP_NODELAY); small acks and PUBLISHes must not wait for ACKs.
    #[cfg(target_os = "linux")]
    #[test]
    fn accepted_sockets_inherit_nodelay() {
        let listener = bind_reuseport("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "no connection accepted"
                    );
                    std::thread::yield_now();
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        assert!(stream.nodelay().unwrap());
    }
}
