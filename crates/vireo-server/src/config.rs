//! Broker configuration: every limit a client could otherwise push past, with defaults sized
//! for a high-connection deployment. Loaded from TOML (`--config FILE`); every field optional.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use vireo_broker::SessionLimits;
use vireo_broker::protocol::Limits;
use vireo_broker::protocol::quota::RateLimits;
use vireo_codec::QoS;

/// Most worker threads: a session id keeps its worker index in 8 bits.
const MAX_WORKERS: usize = 256;
/// Longest session expiry accepted (10 years), so deadlines stay within `Instant`'s range.
const MAX_SESSION_EXPIRY_SECS: u64 = 315_360_000;

/// Listeners one broker may have.
pub const MAX_LISTENERS: usize = 16;

/// What a listener speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    /// MQTT over plain TCP.
    #[default]
    Tcp,
    /// MQTT over TLS 1.2 / 1.3.
    Tls,
    /// MQTT over WebSocket (binary frames, subprotocol `mqtt`).
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl ListenerProtocol {
    /// Whether it runs over TLS.
    pub fn is_tls(self) -> bool {
        matches!(self, ListenerProtocol::Tls | ListenerProtocol::Wss)
    }

    /// Whether it runs over WebSocket.
    pub fn is_ws(self) -> bool {
        matches!(self, ListenerProtocol::Ws | ListenerProtocol::Wss)
    }
}

/// How log lines are written (to standard error).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One line of text per event; coloured only when standard error is a terminal.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What the broker keeps on disk (`persistence`).
///
/// The `vireo` binary, and a configuration file that does not say, keep their state
/// ([`Persistence::Async`]), as a user of a production broker expects; [`Config::default`],
/// which embedders and tests build on, keeps nothing, so that two brokers in one directory
/// never share a `data_dir` by accident.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Persistence {
    /// Nothing: a restart starts empty.
    #[default]
    Off,
    /// Retained messages and persistent sessions (expiry, subscriptions, queued and
    /// in-flight QoS 1/2 messages, inbound QoS 2 ids), written to `data_dir` as they change
    /// (a burst of changes in one write, every few milliseconds) and synced to disk at least
    /// every `sync_interval_ms`: a crash of the machine loses at most that interval, a
    /// kill -9 of the broker alone what the last few milliseconds held.
    Async,
    /// As `async`, and every acknowledgement that confirms state waits until that state is
    /// on disk (`fdatasync`ed): a publisher's PUBACK / PUBREC until the message is in every
    /// durable session it went to (and in the retained store), a persistent session's
    /// CONNACK until its record is. Nothing acknowledged is lost, even to a crash of the
    /// machine. The store writes and syncs as soon as changes arrive; what arrives during a
    /// sync waits for the next one (group commit).
    Sync,
}

impl Persistence {
    /// The binary's and a configuration file's default.
    fn for_files() -> Self {
        Self::Async
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// Address to bind (every worker binds it with SO_REUSEPORT).
    pub address: SocketAddr,
    /// `tcp` (the default), `tls`, `ws` or `wss`.
    #[serde(default)]
    pub protocol: ListenerProtocol,
    /// The HTTP path a WebSocket listener upgrades (`ws`, `wss`); `/mqtt` when unset.
    pub path: Option<String>,
    /// PEM certificate chain (TLS), the server's certificate first.
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key (TLS).
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates client certificates are verified against (TLS; mTLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse the handshake of a client without a certificate `tls_client_ca` verifies.
    #[serde(default)]
    pub require_certificate: bool,
    /// The client certificate's Common Name is the user name, and no password is asked
    /// (needs `require_certificate`).
    #[serde(default)]
    pub use_identity_as_username: bool,
    /// Overrides the top-level `allow_anonymous` for this listener.
    pub allow_anonymous: Option<bool>,
}

impl ListenerConfig {
    /// The path a WebSocket listener serves.
    pub fn ws_path(&self) -> &str {
        self.path.as_deref().unwrap_or("/mqtt")
    }

    /// A plain WebSocket listener on `address`, serving `/mqtt`.
    pub fn ws(address: SocketAddr) -> Self {
        Self {
            protocol: ListenerProtocol::Ws,
            ..Self::tcp(address)
        }
    }

    /// A plain TCP listener on `address`.
    pub fn tcp(address: SocketAddr) -> Self {
        Self {
            address,
            protocol: ListenerProtocol::Tcp,
            path: None,
            tls_certificate: None,
            tls_key: None,
            tls_client_ca: None,
            require_certificate: false,
            use_identity_as_username: false,
            allow_anonymous: None,
        }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the MQTT listener binds (every worker binds it with SO_REUSEPORT), when no
    /// `[[listener]]` is given.
    pub bind: SocketAddr,
    /// Listeners (`[[listener]]` tables); when given, they replace `bind`.
    #[serde(rename = "listener")]
    pub listeners: Vec<ListenerConfig>,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Pin each worker to a core.
    pub pin_workers: bool,
    /// Open connections across all workers; more are accepted and closed at once.
    pub max_connections: usize,
    /// Open connections one source IP address may hold; 0: no limit. More are closed at once.
    pub max_connections_per_ip: u32,
    /// New connections one source IP address may open per second (a bucket of one second's
    /// worth); 0: no limit. More are closed at once.
    pub max_connection_rate_per_ip: u32,
    /// Sessions stored across all workers, online and offline; a CONNECT that would create
    /// one more is refused with CONNACK 0x03 (server unavailable). Without it, clients could
    /// leave persistent sessions behind without bound, each with its subscriptions and queue.
    pub max_sessions: usize,
    /// Largest packet accepted, in bytes (fixed header included).
    pub max_packet_size: usize,
    /// Bytes queued for one connection's socket before QoS 0 deliveries to it are dropped and
    /// QoS 1/2 deliveries wait in its session queue: the slow-consumer bound.
    pub max_output_bytes: usize,
    /// Outbound QoS 1/2 messages in flight per client.
    pub max_inflight: usize,
    /// QoS 1/2 messages queued per session (offline or behind the window).
    pub max_queued_messages: usize,
    /// Bytes of those queued messages per session.
    pub max_queued_bytes: usize,
    /// When a session queue is full, drop the oldest message instead of the newest.
    pub queue_drop_oldest: bool,
    /// Bytes of a persistent session's queue kept in memory (with `persistence` on): the
    /// rest is on disk only, read back as the queue drains, so `max_queued_bytes` and
    /// `max_queued_messages` can be far above the machine's memory.
    pub queue_memory_bytes: usize,
    /// Subscriptions per client.
    pub max_subscriptions: usize,
    /// Topic name / filter length in bytes.
    pub max_topic_length: usize,
    /// Topic name / filter levels.
    pub max_topic_levels: usize,
    /// Whether filters with `+` or `#` are accepted; when false they get SUBACK 0x80
    /// [MQTT-3.8.3-2].
    pub wildcard_subscriptions: bool,
    /// Highest QoS granted to a subscription.
    pub max_qos: u8,
    /// Retained messages kept, at most.
    pub max_retained_messages: usize,
    /// Bytes (topic + payload) of retained messages kept, at most.
    pub max_retained_bytes: usize,
    /// Seconds a new connection may take to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Seconds an offline persistent session is kept; 0 keeps it forever (3.1.1 default).
    pub session_expiry_secs: u64,
    /// Subscription index shards per kind (rounded to a power of two).
    pub index_shards: usize,
    /// Longest keep alive granted, in seconds; 0: whatever the client asks. A 5.0 client
    /// asking for more (or for none) is told this as Server Keep Alive; 3.1.1 clients are
    /// held to it too.
    pub max_keepalive: u16,
    /// Topic aliases a 5.0 client may set up per connection (0: none).
    pub topic_alias_maximum: u16,
    /// Topic aliases Vireo sets up towards a 5.0 client per connection, at most (0: none);
    /// a client gets the lower of this and its own Topic Alias Maximum. An aliased QoS 0
    /// PUBLISH is encoded per connection instead of once per message: see
    /// `docs/benchmarks.md` for what that costs.
    pub outbound_topic_alias_maximum: u16,
    /// Inbound QoS 2 PUBLISHes a client may have awaiting PUBREL: advertised to 5.0 clients
    /// as Receive Maximum, enforced for every version (5.0: DISCONNECT 0x93).
    pub receive_maximum: u16,
    /// Whether retained messages are kept; when false, 5.0 CONNACK says so, and a retained
    /// PUBLISH from a 5.0 client gets DISCONNECT 0x9A (3.1.1: published, not kept).
    pub retain_available: bool,
    /// Whether `$share/{group}/{filter}` subscriptions are served (5.0; 3.1.1 clients may use
    /// them too, as with Mosquitto).
    pub shared_subscriptions: bool,
    /// Longest session expiry interval a 5.0 client is granted, in seconds; 0: no cap.
    pub max_session_expiry_secs: u64,
    /// Password file (`user:argon2id-hash` lines, written by `vireo passwd`); when set, a
    /// CONNECT naming a user must give that user's password (CONNACK 0x04 / 0x86 otherwise).
    pub password_file: Option<PathBuf>,
    /// Whether a CONNECT without a user name is accepted. Default: yes without a password
    /// file, no with one (Mosquitto 2.0 decides the same way once credentials are set up).
    pub allow_anonymous: Option<bool>,
    /// Threads that check passwords off the event loop; 0: one per worker.
    pub auth_threads: usize,
    /// Who may publish and subscribe to what (Mosquitto's ACL format; see
    /// `vireo_broker::protocol::acl`). Unset: every client may use every topic.
    pub acl_file: Option<PathBuf>,
    /// Seconds a packet may take to arrive once its first byte has: a connection holding an
    /// unfinished packet longer is closed whatever its keep alive (slowloris).
    pub packet_timeout_secs: u64,
    /// Bytes all connections together may hold in unfinished packets; past it the oldest
    /// unfinished packets' connections are closed (5.0: DISCONNECT 0x97).
    pub max_unfinished_bytes: usize,
    /// PUBLISH packets one connection may send per second (a burst of one second's worth);
    /// 0: no limit. Past it the connection is not read until it is back under (throttled,
    /// never disconnected: nothing it sent is lost).
    pub max_publish_rate: u32,
    /// Bytes one connection may send per second, all packets together, throttled the same
    /// way; 0: no limit.
    pub max_inbound_bytes_rate: u64,
    /// `text` (the default) or `json`, one object per line.
    pub log_format: LogFormat,
    /// Seconds between two publications of the `$SYS/broker/...` topics; 0: none.
    pub sys_interval: u64,
    /// Where the Prometheus endpoint (`/metrics`) listens; unset: no endpoint.
    pub metrics_bind: Option<SocketAddr>,
    /// Bridges to other brokers (`[[bridge]]` tables).
    #[serde(rename = "bridge")]
    pub bridges: Vec<crate::bridge::BridgeConfig>,
    /// `async` (a file's default) or `off`: see [`Persistence`].
    #[serde(default = "Persistence::for_files")]
    pub persistence: Persistence,
    /// The directory of the durable store (created if missing; one broker at a time).
    pub data_dir: PathBuf,
    /// Longest time, in milliseconds, between a change reaching the store and its
    /// `fdatasync` in `async` mode.
    pub sync_interval_ms: u64,
    /// `async`: how long a QoS 1 message queued for a durable session may stay in memory
    /// only, at most, before it is written (0: written at once). One delivered and
    /// acknowledged within it is never written; a kill -9 can lose what it holds.
    pub write_delay_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            listeners: Vec::new(),
            workers: 0,
            pin_workers: true,
            max_connections: 1_000_000,
            max_connections_per_ip: 0,
            max_connection_rate_per_ip: 0,
            max_sessions: 1_000_000,
            max_packet_size: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 16 * 1024 * 1024,
            queue_drop_oldest: false,
            queue_memory_bytes: 1024 * 1024,
            max_subscriptions: 1024,
            max_topic_length: 65_535,
            max_topic_levels: 128,
            wildcard_subscriptions: true,
            max_qos: 2,
            max_retained_messages: 1_000_000,
            max_retained_bytes: 1024 * 1024 * 1024,
            connect_timeout_secs: 10,
            session_expiry_secs: 0,
            index_shards: 64,
            max_keepalive: 0,
            topic_alias_maximum: 10,
            outbound_topic_alias_maximum: 0,
            receive_maximum: 1024,
            retain_available: true,
            shared_subscriptions: true,
            max_session_expiry_secs: 0,
            password_file: None,
            allow_anonymous: None,
            auth_threads: 0,
            acl_file: None,
            packet_timeout_secs: 10,
            max_unfinished_bytes: 64 * 1024 * 1024,
            max_publish_rate: 0,
            max_inbound_bytes_rate: 0,
            log_format: LogFormat::Text,
            sys_interval: 10,
            metrics_bind: None,
            bridges: Vec::new(),
            persistence: Persistence::Off,
            data_dir: PathBuf::from("vireo-data"),
            sync_interval_ms: 1000,
            write_delay_ms: 300,
        }
    }
}

/// A configuration file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid configuration in {path}: {source}")]
    Parse {
        /// The file.
        path: String,
        /// Why.
        source: toml::de::Error,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(&'static str),
    /// A `[[bridge]]` table is wrong (the message names the bridge and the key).
    #[error("invalid configuration: {0}")]
    Bridge(String),
}

impl Config {
    /// The password policy for clients of listener `listener` (its `allow_anonymous`, if
    /// it sets one, over the top-level one).
    pub fn listener_policy(&self, listener: usize) -> vireo_broker::protocol::auth::PasswordPolicy {
        let mut policy = self.password_policy();
        if let Some(allow) = self.listeners.get(listener).and_then(|l| l.allow_anonymous) {
            policy.allow_anonymous = allow;
        }
        policy
    }

    /// Who may connect with which credentials.
    pub fn password_policy(&self) -> vireo_broker::protocol::auth::PasswordPolicy {
        let passwords = self.password_file.is_some();
        vireo_broker::protocol::auth::PasswordPolicy {
            passwords,
            allow_anonymous: self.allow_anonymous.unwrap_or(!passwords),
        }
    }

    /// Reads a TOML file; fields it leaves out keep their defaults.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        let config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: display,
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges that serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.len() > MAX_LISTENERS {
            return Err(ConfigError::Invalid("at most 16 [[listener]] tables"));
        }
        for l in &self.listeners {
            let tls_files = l.tls_certificate.is_some() || l.tls_key.is_some();
            let tls = l.protocol.is_tls();
            if tls && (l.tls_certificate.is_none() || l.tls_key.is_none()) {
                return Err(ConfigError::Invalid(
                    "a tls or wss listener needs tls_certificate and tls_key",
                ));
            }
            if tls && l.require_certificate && l.tls_client_ca.is_none() {
                return Err(ConfigError::Invalid(
                    "require_certificate needs tls_client_ca",
                ));
            }
            if tls && l.use_identity_as_username && !l.require_certificate {
                return Err(ConfigError::Invalid(
                    "use_identity_as_username needs require_certificate = true",
                ));
            }
            if !tls
                && (tls_files
                    || l.tls_client_ca.is_some()
                    || l.require_certificate
                    || l.use_identity_as_username)
            {
                return Err(ConfigError::Invalid(
                    "tls_certificate / tls_key on a listener without TLS (set protocol = \"tls\" or \"wss\")",
                ));
            }
            if let Some(path) = &l.path {
                if !l.protocol.is_ws() {
                    return Err(ConfigError::Invalid(
                        "path is for ws and wss listeners only",
                    ));
                }
                if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c == '?') {
                    return Err(ConfigError::Invalid(
                        "a listener path starts with / and has no spaces or query",
                    ));
                }
            }
        }
        if self.max_qos > 2 {
            return Err(ConfigError::Invalid("max_qos must be 0, 1 or 2"));
        }
        if self.max_packet_size < 16 || self.max_packet_size > 268_435_460 {
            return Err(ConfigError::Invalid(
                "max_packet_size must be between 16 and 268435460 bytes",
            ));
        }
        if self.max_sessions == 0 {
            return Err(ConfigError::Invalid("max_sessions must be at least 1"));
        }
        if self.max_inflight == 0 || self.max_inflight > 65_535 {
            return Err(ConfigError::Invalid("max_inflight must be 1..=65535"));
        }
        if self.workers > MAX_WORKERS {
            // A session id keeps its worker in 8 bits.
            return Err(ConfigError::Invalid("workers must be at most 256"));
        }
        if self.sync_interval_ms == 0 || self.sync_interval_ms > 60_000 {
            return Err(ConfigError::Invalid(
                "sync_interval_ms must be between 1 and 60000",
            ));
        }
        if self.write_delay_ms > self.sync_interval_ms {
            return Err(ConfigError::Invalid(
                "write_delay_ms must be at most sync_interval_ms",
            ));
        }
        if self.sys_interval > 86_400 {
            return Err(ConfigError::Invalid(
                "sys_interval must be at most 86400 seconds",
            ));
        }
        if self.packet_timeout_secs == 0 || self.packet_timeout_secs > 3_600 {
            return Err(ConfigError::Invalid("packet_timeout_secs must be 1..=3600"));
        }
        if self.connect_timeout_secs > 3_600 {
            return Err(ConfigError::Invalid(
                "connect_timeout_secs must be at most 3600",
            ));
        }
        if self.session_expiry_secs > MAX_SESSION_EXPIRY_SECS {
            return Err(ConfigError::Invalid(
                "session_expiry_secs must be at most 315360000 (10 years)",
            ));
        }
        if self.receive_maximum == 0 {
            return Err(ConfigError::Invalid("receive_maximum must be 1..=65535"));
        }
        if self.max_session_expiry_secs > u64::from(u32::MAX) {
            return Err(ConfigError::Invalid(
                "max_session_expiry_secs must be at most 4294967295",
            ));
        }
        if self.bridges.len() > crate::bridge::config::MAX_BRIDGES {
            return Err(ConfigError::Invalid("at most 64 [[bridge]] tables"));
        }
        for (i, b) in self.bridges.iter().enumerate() {
            b.validate().map_err(ConfigError::Bridge)?;
            if self.bridges[..i].iter().any(|o| o.name == b.name) {
                return Err(ConfigError::Bridge(format!(
                    "bridge {:?}: two bridges have this name",
                    b.name
                )));
            }
        }
        Ok(())
    }

    /// What the protocol core enforces and advertises to 5.0 clients.
    pub fn protocol_limits(&self) -> Limits {
        Limits {
            receive_maximum: self.receive_maximum,
            maximum_qos: self.max_qos(),
            retain_available: self.retain_available,
            maximum_packet_size: u32::try_from(self.max_packet_size).unwrap_or(u32::MAX),
            topic_alias_maximum: self.topic_alias_maximum,
            outbound_topic_alias_maximum: self.outbound_topic_alias_maximum,
            wildcard_available: self.wildcard_subscriptions,
            shared_available: self.shared_subscriptions,
            max_keep_alive: self.max_keepalive,
            max_session_expiry: match self.max_session_expiry_secs {
                0 => u32::MAX,
                n => u32::try_from(n).unwrap_or(u32::MAX),
            },
            max_topic_length: self.max_topic_length,
            max_topic_levels: self.max_topic_levels,
            max_subscriptions: self.max_subscriptions,
        }
    }

    /// The session expiry a 3.1.1 persistent session gets (`u32::MAX`: never).
    pub fn persistent_session_expiry(&self) -> u32 {
        match self.session_expiry_secs {
            0 => u32::MAX,
            n => u32::try_from(n).unwrap_or(u32::MAX),
        }
    }

    /// Worker count with 0 resolved to the number of cores (at most 256).
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers.min(MAX_WORKERS)
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS))
        }
    }

    /// The granted-QoS ceiling.
    pub fn max_qos(&self) -> QoS {
        QoS::try_from(self.max_qos).unwrap_or(QoS::ExactlyOnce)
    }

    /// A worker's share of `max_unfinished_bytes`, never below one packet of the largest
    /// size allowed (a read buffer's capacity may be up to twice its length).
    pub fn unfinished_budget_per_worker(&self) -> usize {
        (self.max_unfinished_bytes / self.worker_count().max(1)).max(2 * self.max_packet_size)
    }

    /// The listeners to open: the `[[listener]]` tables, or one TCP listener on `bind`.
    pub fn listeners(&self) -> Vec<ListenerConfig> {
        if self.listeners.is_empty() {
            vec![ListenerConfig::tcp(self.bind)]
        } else {
            self.listeners.clone()
        }
    }

    /// What each client may send per second.
    pub fn rate_limits(&self) -> RateLimits {
        RateLimits {
            publishes_per_sec: self.max_publish_rate,
            bytes_per_sec: self.max_inbound_bytes_rate,
        }
    }

    /// How long an unfinished packet may wait for the rest of its bytes.
    pub fn packet_timeout(&self) -> Duration {
        Duration::from_secs(self.packet_timeout_secs)
    }

    /// Seconds a new connection has to send CONNECT.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs.max(1))
    }

    /// Per-session limits.
    pub fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            max_inflight: self.max_inflight,
            max_queued_messages: self.max_queued_messages,
            max_queued_bytes: self.max_queued_bytes,
            drop_oldest: self.queue_drop_oldest,
            max_incoming_qos2: usize::from(self.receive_maximum),
            queue_memory_bytes: self.queue_memory_bytes,
            defer_writes: self.persistence == Persistence::Async && self.write_delay_ms > 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_listener(toml: &str) -> Result<(), ConfigError> {
        let config: Config = toml::from_str(toml).expect("parses");
        config.validate()
    }

    #[test]
    fn websocket_listeners_validate() {
        let ws = "[[listener]]\naddress = \"127.0.0.1:8080\"\nprotocol = \"ws\"\n";
        assert!(with_listener(ws).is_ok());
        assert!(with_listener(&format!("{ws}path = \"/broker\"\n")).is_ok());
        // A path is a path, and only WebSocket listeners have one.
        assert!(with_listener(&format!("{ws}path = \"mqtt\"\n")).is_err());
        assert!(with_listener(&format!("{ws}path = \"/a b\"\n")).is_err());
        assert!(
            with_listener("[[listener]]\naddress = \"127.0.0.1:1883\"\npath = \"/mqtt\"\n")
                .is_err()
        );
        // wss needs what tls needs; ws takes no TLS keys.
        let wss = "[[listener]]\naddress = \"127.0.0.1:8081\"\nprotocol = \"wss\"\n";
        assert!(with_listener(wss).is_err());
        assert!(
            with_listener(&format!(
                "{wss}tls_certificate = \"c.pem\"\ntls_key = \"k.pem\"\n"
            ))
            .is_ok()
        );
        assert!(with_listener(&format!("{ws}tls_certificate = \"c.pem\"\n")).is_err());
        let config: Config = toml::from_str(ws).expect("parses");
        assert_eq!(config.listeners[0].ws_path(), "/mqtt");
    }
}
