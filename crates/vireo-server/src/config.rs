//! Broker configuration: every limit a client could otherwise push past, with defaults sized
//! for a high-connection deployment. Loaded from TOML (`--config FILE`); every field optional.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use vireo_broker::SessionLimits;
use vireo_codec::QoS;

/// Most worker threads: a session id keeps its worker index in 8 bits.
const MAX_WORKERS: usize = 256;
/// Longest session expiry accepted (10 years), so deadlines stay within `Instant`'s range.
const MAX_SESSION_EXPIRY_SECS: u64 = 315_360_000;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the MQTT listener binds (every worker binds it with SO_REUSEPORT).
    pub bind: SocketAddr,
    /// Worker threads; 0 means one per core.
    pub workers: usize,
    /// Pin each worker to a core.
    pub pin_workers: bool,
    /// Open connections across all workers; more are accepted and closed at once.
    pub max_connections: usize,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([0, 0, 0, 0], 1883)),
            workers: 0,
            pin_workers: true,
            max_connections: 1_000_000,
            max_sessions: 1_000_000,
            max_packet_size: 1024 * 1024,
            max_output_bytes: 1024 * 1024,
            max_inflight: 1024,
            max_queued_messages: 10_000,
            max_queued_bytes: 16 * 1024 * 1024,
            queue_drop_oldest: false,
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
}

impl Config {
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
        Ok(())
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

    /// CONNECT timeout.
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
            max_incoming_qos2: self.max_inflight,
        }
    }
}
