//! What a run does: the scenario, the broker, the MQTT options and the measurement options.
//! [`Config::validate`] checks it once so the hot path trusts it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use vireo_codec::{ProtocolVersion, QoS};

use crate::payload::STAMP_LEN;

/// Which traffic shape to generate.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Scenario {
    /// `publishers` publish to `bench/<i>`; `subscribers` each subscribe to `bench/#`.
    FanIn {
        /// Publishing clients.
        publishers: u32,
        /// Subscribing clients, each receiving every publisher.
        subscribers: u32,
    },
    /// `publishers` publish to one topic, `bench/fan-out`, that every subscriber subscribes to.
    FanOut {
        /// Publishing clients.
        publishers: u32,
        /// Subscribing clients, each receiving every publisher.
        subscribers: u32,
    },
    /// `pairs` publishers, each to `bench/p2p/<i>` with its own subscriber.
    P2p {
        /// Publisher/subscriber pairs.
        pairs: u32,
    },
    /// Opens `connections` idle clients, `connect_rate` per second (unlimited when `None`), and
    /// holds them with keepalive for the run's duration.
    Connections {
        /// Clients to open.
        connections: u32,
        /// New connections per second over the whole run.
        connect_rate: Option<f64>,
    },
}

impl Scenario {
    /// The subcommand name.
    pub fn name(&self) -> &'static str {
        match self {
            Scenario::FanIn { .. } => "fan-in",
            Scenario::FanOut { .. } => "fan-out",
            Scenario::P2p { .. } => "p2p",
            Scenario::Connections { .. } => "connections",
        }
    }

    /// Publishing clients.
    pub fn publishers(&self) -> u32 {
        match *self {
            Scenario::FanIn { publishers, .. } | Scenario::FanOut { publishers, .. } => publishers,
            Scenario::P2p { pairs } => pairs,
            Scenario::Connections { .. } => 0,
        }
    }

    /// Subscribing clients.
    pub fn subscribers(&self) -> u32 {
        match *self {
            Scenario::FanIn { subscribers, .. } | Scenario::FanOut { subscribers, .. } => {
                subscribers
            }
            Scenario::P2p { pairs } => pairs,
            Scenario::Connections { .. } => 0,
        }
    }

    /// How many subscribers receive each publisher's messages.
    pub fn receivers_per_publisher(&self) -> u64 {
        match *self {
            Scenario::FanIn { subscribers, .. } | Scenario::FanOut { subscribers, .. } => {
                u64::from(subscribers)
            }
            Scenario::P2p { .. } => 1,
            Scenario::Connections { .. } => 0,
        }
    }
}

/// Everything a run needs. Build one with [`Config::new`] and adjust fields.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The traffic shape.
    pub scenario: Scenario,
    /// Broker host name or address.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// QoS of the publishes.
    #[serde(serialize_with = "ser_qos")]
    pub qos: QoS,
    /// QoS the subscribers request.
    #[serde(serialize_with = "ser_qos")]
    pub sub_qos: QoS,
    /// Payload bytes per message, at least [`STAMP_LEN`].
    pub payload: usize,
    /// Messages per second per publisher (open loop); `None` publishes as fast as possible.
    pub rate: Option<f64>,
    /// How long to publish (or, for `connections`, to hold).
    pub duration: Option<Duration>,
    /// Messages per publisher; the run stops at whichever of `duration` and `count` comes first.
    pub count: Option<u64>,
    /// Generator threads, each running one event loop over its share of the clients.
    pub threads: usize,
    /// Client ids are `<prefix>-<role>-<index>`.
    pub client_id_prefix: String,
    /// CONNECT's Clean Session flag.
    pub clean_session: bool,
    /// Keep alive in seconds (0: off).
    pub keepalive: u16,
    /// CONNECT user name.
    pub username: Option<String>,
    /// CONNECT password.
    #[serde(skip)]
    pub password: Option<String>,
    /// Local addresses to bind client sockets to, round-robin (empty: let the kernel choose).
    /// Several 127.x.y.z addresses lift the ~28k ephemeral-port limit of one source address.
    pub source_ips: Vec<IpAddr>,
    /// 3.1.1 (default) or 3.1.
    #[serde(serialize_with = "ser_version")]
    pub mqtt_version: ProtocolVersion,
    /// QoS 1/2 messages a publisher may have unacknowledged; when full it waits.
    pub inflight: u16,
    /// Upper bound on the wait for deliveries after publishing stops.
    pub drain_timeout: Duration,
    /// The drain also ends once nothing has arrived for this long.
    pub drain_quiet: Duration,
    /// Time allowed from TCP connect to CONNACK (and SUBACK) per client.
    pub connect_timeout: Duration,
    /// Handshakes (TCP connect to CONNACK/SUBACK) in flight at once, over all threads; `None`:
    /// 256 per thread.
    pub handshakes: Option<usize>,
    /// Broker process whose RSS is sampled before and after connecting (`connections`).
    pub broker_pid: Option<u32>,
    /// First topic level of every topic.
    pub topic_prefix: String,
    /// v5: Topic Alias Maximum every client sends in CONNECT (0: none, so the broker sends no
    /// aliases).
    pub topic_alias_maximum: u16,
    /// TLS to the broker (`None`: plain TCP).
    pub tls: Option<TlsConfig>,
    /// MQTT over WebSocket (`None`: MQTT straight on TCP or TLS); with [`Config::tls`], wss.
    pub ws: Option<WsConfig>,
}

/// How clients speak MQTT over WebSocket (RFC 6455): an upgrade request for `path` offering
/// the `mqtt` subprotocol, then one masked binary frame per write; the connect latency
/// includes the upgrade.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WsConfig {
    /// The HTTP path upgraded (`/mqtt` for Vireo and most brokers).
    pub path: String,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            path: "/mqtt".into(),
        }
    }
}

/// How clients speak TLS, and how they check the broker's certificate. Either way: rustls
/// (ring), TLS 1.3 or 1.2, and a full handshake per connection (no session resumption), so that
/// `connections` measures what a fleet of new clients costs the broker.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verify", rename_all = "kebab-case")]
pub enum TlsConfig {
    /// The broker's certificate must chain to a CA certificate of this PEM file and name
    /// [`Config::host`] (an IP address among its IP SANs).
    CaFile {
        /// The PEM file.
        cafile: PathBuf,
    },
    /// Whatever certificate the broker shows is accepted (its handshake signature is still
    /// checked): for measuring a broker whose CA is not at hand, never for trust.
    Insecure,
}

fn ser_qos<S: serde::Serializer>(q: &QoS, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u8(*q as u8)
}

fn ser_version<S: serde::Serializer>(v: &ProtocolVersion, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match v {
        ProtocolVersion::V31 => "3.1",
        ProtocolVersion::V311 => "3.1.1",
        ProtocolVersion::V5 => "5",
    })
}

/// Why a configuration cannot run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// No publisher, subscriber or connection.
    #[error("the scenario needs at least one publisher and one subscriber (or connection)")]
    NoClients,
    /// `--payload` below the stamp size.
    #[error(
        "--payload {0} is below the minimum of {STAMP_LEN} bytes (publisher id, sequence, timestamp)"
    )]
    PayloadTooSmall(usize),
    /// `--payload` above what MQTT can carry.
    #[error("--payload {0} exceeds the MQTT maximum packet size")]
    PayloadTooLarge(usize),
    /// A rate that is not a positive number.
    #[error("rates must be positive numbers")]
    BadRate,
    /// `--inflight 0`.
    #[error("--inflight must be at least 1")]
    ZeroInflight,
    /// `--threads 0`.
    #[error("--threads must be at least 1")]
    ZeroThreads,
    /// `connections` without a hold time.
    #[error("the connections scenario needs --duration (how long to hold the connections)")]
    NoHoldDuration,
    /// A source address is not IPv4 loopback-compatible with the broker address family.
    #[error("source address {0} is not of the broker's address family")]
    SourceFamily(IpAddr),
    /// The topic prefix is not a valid topic level.
    #[error("--topic-prefix {0:?} must be a non-empty topic name without wildcards")]
    TopicPrefix(String),
    /// The CA file cannot be used.
    #[error("--cafile {path}: {reason}")]
    TlsCaFile {
        /// The file as given.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// The WebSocket path cannot go into an upgrade request.
    #[error("--ws-path {0:?} must be an absolute path (e.g. /mqtt)")]
    WsPath(String),
    /// The host is neither an IP address nor a DNS name a certificate can name.
    #[error("--host {0:?} cannot be checked against a certificate")]
    TlsServerName(String),
    /// The host does not resolve.
    #[error("cannot resolve {host}:{port}")]
    Resolve {
        /// Host as given.
        host: String,
        /// Port as given.
        port: u16,
    },
}

/// Default per-client time to get from TCP connect to CONNACK and SUBACK.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

impl Config {
    /// A configuration with the command line's defaults for `scenario`.
    pub fn new(scenario: Scenario) -> Self {
        Self {
            scenario,
            host: "127.0.0.1".into(),
            port: 1883,
            qos: QoS::AtMostOnce,
            sub_qos: QoS::AtMostOnce,
            payload: 64,
            rate: None,
            duration: Some(Duration::from_secs(10)),
            count: None,
            threads: std::thread::available_parallelism().map_or(1, usize::from),
            client_id_prefix: format!("vlt{}", std::process::id()),
            clean_session: true,
            keepalive: 60,
            username: None,
            password: None,
            source_ips: Vec::new(),
            mqtt_version: ProtocolVersion::V311,
            inflight: 64,
            drain_timeout: Duration::from_secs(5),
            drain_quiet: Duration::from_secs(1),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            handshakes: None,
            broker_pid: None,
            topic_prefix: "bench".into(),
            topic_alias_maximum: 0,
            tls: None,
            ws: None,
        }
    }

    /// Checks the configuration and resolves the broker address.
    pub fn validate(&self) -> Result<SocketAddr, ConfigError> {
        let is_conn = matches!(self.scenario, Scenario::Connections { .. });
        let enough = match self.scenario {
            Scenario::Connections { connections, .. } => connections > 0,
            ref s => s.publishers() > 0 && s.subscribers() > 0,
        };
        if !enough {
            return Err(ConfigError::NoClients);
        }
        if self.payload < STAMP_LEN {
            return Err(ConfigError::PayloadTooSmall(self.payload));
        }
        if self.payload > 256 * 1024 * 1024 - 1024 {
            return Err(ConfigError::PayloadTooLarge(self.payload));
        }
        let rates = [self.rate, self.connect_rate()];
        if rates.iter().flatten().any(|r| !(r.is_finite() && *r > 0.0)) {
            return Err(ConfigError::BadRate);
        }
        if self.inflight == 0 {
            return Err(ConfigError::ZeroInflight);
        }
        if self.threads == 0 {
            return Err(ConfigError::ZeroThreads);
        }
        if is_conn && self.duration.is_none() {
            return Err(ConfigError::NoHoldDuration);
        }
        if vireo_codec::validate_topic_name(&self.topic_prefix).is_err() {
            return Err(ConfigError::TopicPrefix(self.topic_prefix.clone()));
        }
        let resolve = || ConfigError::Resolve {
            host: self.host.clone(),
            port: self.port,
        };
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(|_| resolve())?
            .next()
            .ok_or_else(resolve)?;
        if let Some(ip) = self
            .source_ips
            .iter()
            .find(|ip| ip.is_ipv4() != addr.is_ipv4())
        {
            return Err(ConfigError::SourceFamily(*ip));
        }
        Ok(addr)
    }

    fn connect_rate(&self) -> Option<f64> {
        match self.scenario {
            Scenario::Connections { connect_rate, .. } => connect_rate,
            _ => None,
        }
    }

    /// The lower of publish and subscribe QoS: what the end-to-end path guarantees.
    pub fn effective_qos(&self) -> QoS {
        self.qos.min(self.sub_qos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Config::new(Scenario::FanIn {
            publishers: 2,
            subscribers: 1,
        });
        assert!(c.validate().is_ok());
    }

    #[test]
    fn rejects_small_payload_and_empty_scenarios() {
        let mut c = Config::new(Scenario::P2p { pairs: 1 });
        c.payload = STAMP_LEN - 1;
        assert_eq!(
            c.validate(),
            Err(ConfigError::PayloadTooSmall(STAMP_LEN - 1))
        );
        let c = Config::new(Scenario::FanOut {
            publishers: 0,
            subscribers: 3,
        });
        assert_eq!(c.validate(), Err(ConfigError::NoClients));
        let mut c = Config::new(Scenario::Connections {
            connections: 1,
            connect_rate: Some(-1.0),
        });
        assert_eq!(c.validate(), Err(ConfigError::BadRate));
        c.scenario = Scenario::Connections {
            connections: 1,
            connect_rate: None,
        };
        c.duration = None;
        assert_eq!(c.validate(), Err(ConfigError::NoHoldDuration));
    }
}
