//! The command line: one subcommand per scenario, shared options flattened into each.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use vireo_codec::{ProtocolVersion, QoS};
use vireo_loadtest::config::{TlsConfig, WsConfig};
use vireo_loadtest::{Config, Scenario};

/// Load generator for MQTT 3.1.1 brokers: throughput, latency and message accounting.
#[derive(Debug, Parser)]
#[command(name = "vireo-loadtest", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// P publishers on bench/<i>, S subscribers on bench/#.
    FanIn {
        /// Publishing clients.
        #[arg(long, default_value_t = 10)]
        publishers: u32,
        /// Subscribing clients (each receives everything).
        #[arg(long, default_value_t = 1)]
        subscribers: u32,
        #[command(flatten)]
        common: Common,
    },
    /// P publishers on one topic, S subscribers of that topic.
    FanOut {
        /// Publishing clients.
        #[arg(long, default_value_t = 1)]
        publishers: u32,
        /// Subscribing clients (each receives everything).
        #[arg(long, default_value_t = 10)]
        subscribers: u32,
        #[command(flatten)]
        common: Common,
    },
    /// N pairs: each publisher on its own topic with its own subscriber.
    P2p {
        /// Publisher/subscriber pairs.
        #[arg(long, default_value_t = 10)]
        pairs: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Open C connections at a target rate and hold them with keepalive for --duration.
    Connections {
        /// Connections to open.
        #[arg(long, default_value_t = 1000)]
        connections: u32,
        /// New connections per second (default: as fast as the broker accepts).
        #[arg(long)]
        connect_rate: Option<f64>,
        #[command(flatten)]
        common: Common,
    },
    /// A minimal relay broker on loopback, to measure the generator's own ceiling.
    #[command(hide = true)]
    Sink {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1")]
        host: IpAddr,
        /// Port to listen on.
        #[arg(long, default_value_t = 1883)]
        port: u16,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MqttVersion {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "3.1")]
    V31,
    #[value(name = "5")]
    V5,
}

/// Options every scenario takes.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("tls_trust").args(["cafile", "insecure"])))]
pub struct Common {
    /// Broker host.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Broker port.
    #[arg(long, default_value_t = 1883)]
    pub port: u16,
    /// Speak TLS (rustls; TLS 1.3 or 1.2; a full handshake per connection, no resumption).
    /// Needs --cafile or --insecure.
    #[arg(long, requires = "tls_trust")]
    pub tls: bool,
    /// PEM file of the CA certificates the broker's certificate must chain to; the name checked
    /// is --host (an IP address must be among the certificate's IP SANs).
    #[arg(long, requires = "tls", value_name = "PATH")]
    pub cafile: Option<PathBuf>,
    /// INSECURE: accept any certificate from the broker (its handshake signature is still
    /// checked). For measuring a broker whose CA is not at hand; never for trust.
    #[arg(long, requires = "tls")]
    pub insecure: bool,
    /// Speak MQTT over WebSocket: an upgrade request offering the `mqtt` subprotocol, then one
    /// masked binary frame per write. With --tls: WebSocket over TLS (wss). The connect latency
    /// includes the upgrade.
    #[arg(long)]
    pub ws: bool,
    /// --ws: the HTTP path to upgrade [default: /mqtt].
    #[arg(long, requires = "ws", value_name = "PATH")]
    pub ws_path: Option<String>,
    /// QoS of the publishes (0, 1, 2).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,
    /// QoS the subscribers request (default: --qos).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=2))]
    pub sub_qos: Option<u8>,
    /// Payload bytes (at least 24: publisher id, sequence, timestamp).
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Messages per second per publisher, open loop (default: unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds to publish (default 10 unless --count is given).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Messages per publisher.
    #[arg(long)]
    pub count: Option<u64>,
    /// Generator threads (default: number of cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Client ids are <prefix>-<role>-<index>.
    #[arg(long)]
    pub client_id_prefix: Option<String>,
    /// CONNECT's Clean Session flag.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub clean_session: bool,
    /// Keep alive in seconds (0 turns it off).
    #[arg(long, default_value_t = 60)]
    pub keepalive: u16,
    /// CONNECT user name.
    #[arg(long)]
    pub username: Option<String>,
    /// CONNECT password.
    #[arg(long)]
    pub password: Option<String>,
    /// Local address to bind clients to; repeat for round-robin (e.g. 127.0.0.2).
    #[arg(long = "source-ip")]
    pub source_ips: Vec<IpAddr>,
    /// MQTT version (`--protocol` is the same option).
    #[arg(long, alias = "protocol", value_enum, default_value = "3.1.1")]
    pub mqtt_version: MqttVersion,
    /// v5: Topic Alias Maximum every client announces, so that the broker may name topics
    /// by alias towards it (0: none).
    #[arg(long, default_value_t = 0)]
    pub topic_alias_maximum: u16,
    /// QoS 1/2 messages a publisher may have unacknowledged.
    #[arg(long, default_value_t = 64)]
    pub inflight: u16,
    /// Handshakes (TCP connect to CONNACK) in flight at once, over all threads (default: 256
    /// per thread).
    #[arg(long)]
    pub handshakes: Option<usize>,
    /// Longest wait for deliveries after publishing stops, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// The drain also ends once nothing has arrived for this long, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub drain_quiet: f64,
    /// Per-client time allowed for CONNACK/SUBACK, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// Broker process id: its RSS is sampled before and after connecting.
    #[arg(long)]
    pub broker_pid: Option<u32>,
    /// First topic level.
    #[arg(long, default_value = "bench")]
    pub topic_prefix: String,
    /// Write every figure as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the latency distribution in HdrHistogram's .hgrm format.
    #[arg(long)]
    pub hgrm: Option<PathBuf>,
    /// Write an SVG with the latency percentile curve and throughput over time.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

fn qos(q: u8) -> QoS {
    QoS::try_from(q).unwrap_or(QoS::AtMostOnce)
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

impl Common {
    /// The run configuration these options describe.
    pub fn config(&self, scenario: Scenario) -> Config {
        let mut c = Config::new(scenario);
        c.host.clone_from(&self.host);
        c.port = self.port;
        c.tls = match (&self.cafile, self.tls) {
            (_, false) => None,
            (Some(cafile), true) => Some(TlsConfig::CaFile {
                cafile: cafile.clone(),
            }),
            // clap makes --tls come with --cafile or --insecure.
            (None, true) => Some(TlsConfig::Insecure),
        };
        c.ws = self.ws.then(|| WsConfig {
            path: self
                .ws_path
                .clone()
                .unwrap_or_else(|| WsConfig::default().path),
        });
        c.qos = qos(self.qos);
        c.sub_qos = qos(self.sub_qos.unwrap_or(self.qos));
        c.payload = self.payload;
        c.rate = self.rate;
        c.count = self.count;
        c.duration = match (self.duration, self.count) {
            (Some(d), _) => Some(secs(d)),
            (None, Some(_)) => None,
            (None, None) => c.duration,
        };
        if let Some(t) = self.threads {
            c.threads = t;
        }
        if let Some(p) = &self.client_id_prefix {
            c.client_id_prefix.clone_from(p);
        }
        c.clean_session = self.clean_session;
        c.keepalive = self.keepalive;
        c.username.clone_from(&self.username);
        c.password.clone_from(&self.password);
        c.source_ips.clone_from(&self.source_ips);
        c.mqtt_version = match self.mqtt_version {
            MqttVersion::V311 => ProtocolVersion::V311,
            MqttVersion::V31 => ProtocolVersion::V31,
            MqttVersion::V5 => ProtocolVersion::V5,
        };
        c.inflight = self.inflight;
        c.topic_alias_maximum = self.topic_alias_maximum;
        c.handshakes = self.handshakes;
        c.drain_timeout = secs(self.drain_timeout);
        c.drain_quiet = secs(self.drain_quiet);
        c.connect_timeout = secs(self.connect_timeout);
        c.broker_pid = self.broker_pid;
        c.topic_prefix.clone_from(&self.topic_prefix);
        c
    }
}
