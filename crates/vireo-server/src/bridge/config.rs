//! `[[bridge]]` tables: what each bridge connects to and which topics it forwards.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use vireo_broker::bridge::{BridgeSpec, Direction, TopicRule};
use vireo_broker::protocol::Limits;
use vireo_codec::{Bytes, ProtocolVersion, QoS};

/// Bridges one broker may have (each is a thread).
pub const MAX_BRIDGES: usize = 64;

/// How the bridge reaches its remote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BridgeTransport {
    /// Plain TCP.
    #[default]
    Tcp,
    /// TLS 1.2 / 1.3 (rustls), the remote's certificate verified.
    Tls,
}

/// A `[[bridge.topic]]`: Mosquitto's `topic pattern direction qos local-prefix remote-prefix`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeTopic {
    /// Topic filter, below the prefixes; may be empty (the prefixes are then whole topics).
    pub pattern: String,
    /// `out` (the default, as in Mosquitto), `in` or `both`.
    #[serde(default = "default_direction")]
    pub direction: DirectionName,
    /// Highest QoS forwarded; 1 unless set (Mosquitto's default is 0, which loses what is
    /// published while the remote is away).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Prepended to the pattern locally; swapped for `remote_prefix` on the way out.
    #[serde(default)]
    pub local_prefix: String,
    /// Prepended to the pattern remotely.
    #[serde(default)]
    pub remote_prefix: String,
}

/// `direction` as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectionName {
    /// Local to remote.
    Out,
    /// Remote to local.
    In,
    /// Both.
    Both,
}

fn default_direction() -> DirectionName {
    DirectionName::Out
}

fn default_qos() -> u8 {
    1
}

/// A `[[bridge]]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// Its name: letters, digits, `-`, `_`, `.`; unique.
    pub name: String,
    /// The remote broker, `host:port`.
    pub address: String,
    /// `tcp` (the default) or `tls`.
    #[serde(default)]
    pub protocol: BridgeTransport,
    /// `"5"` (the default) or `"3.1.1"`.
    #[serde(default = "default_version")]
    pub protocol_version: String,
    /// 3.1.1 only: tell the remote it is a bridge (the protocol level's top bit, which
    /// Mosquitto understands), so it does not send back what the bridge published.
    #[serde(default = "yes")]
    pub try_private: bool,
    /// The client id at the remote; `<hostname>.<name>` when unset.
    pub client_id: Option<String>,
    /// Start a new session at the remote on every connect (false: keep one, so what was in
    /// flight is resumed).
    #[serde(default)]
    pub clean_session: bool,
    /// Keep alive towards the remote, seconds (0: none).
    #[serde(default = "default_keep_alive")]
    pub keep_alive_secs: u16,
    /// User name at the remote.
    pub username: Option<String>,
    /// Password at the remote. Keep the file readable by the broker only.
    pub password: Option<String>,
    /// QoS 1/2 messages in flight per direction (and the bridge's Receive Maximum).
    #[serde(default = "default_inflight")]
    pub max_inflight: u16,
    /// Seconds the remote has to answer CONNECT (TCP and TLS connect included).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Reconnect delay after the first failure, milliseconds; doubled per failure in a row.
    #[serde(default = "default_reconnect_min")]
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay, milliseconds.
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max_ms: u64,
    /// PEM CA certificates the remote's certificate is checked against (TLS); the system's
    /// roots when unset.
    pub tls_ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for a remote that asks for one (TLS).
    pub tls_certificate: Option<PathBuf>,
    /// PEM private key of `tls_certificate`.
    pub tls_key: Option<PathBuf>,
    /// The name the remote's certificate must carry; the host of `address` when unset.
    pub tls_server_name: Option<String>,
    /// What crosses (`[[bridge.topic]]`), at least one.
    #[serde(rename = "topic")]
    pub topics: Vec<BridgeTopic>,
}

impl fmt::Debug for BridgeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BridgeConfig")
            .field("name", &self.name)
            .field("address", &self.address)
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

fn default_version() -> String {
    "5".into()
}
fn yes() -> bool {
    true
}
fn default_keep_alive() -> u16 {
    60
}
fn default_inflight() -> u16 {
    100
}
fn default_connect_timeout() -> u64 {
    10
}
fn default_reconnect_min() -> u64 {
    1_000
}
fn default_reconnect_max() -> u64 {
    60_000
}

impl BridgeConfig {
    /// The protocol spoken to the remote.
    pub fn version(&self) -> Result<ProtocolVersion, String> {
        match self.protocol_version.as_str() {
            "5" | "5.0" => Ok(ProtocolVersion::V5),
            "3.1.1" | "4" => Ok(ProtocolVersion::V311),
            other => Err(format!("protocol_version {other:?}: \"5\" or \"3.1.1\"")),
        }
    }

    /// The host part of `address` (brackets of an IPv6 literal removed) and its port.
    pub fn host_port(&self) -> Result<(&str, u16), String> {
        let bad = || format!("address {:?}: host:port", self.address);
        let (host, port) = self.address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok((host, port))
    }

    /// Checks everything that can be checked without the network; the message names the
    /// bridge and the key.
    pub fn validate(&self) -> Result<(), String> {
        let fail = |why: String| Err(format!("bridge {:?}: {why}", self.name));
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return fail("name: 1 to 64 letters, digits, '-', '_' or '.'".into());
        }
        if let Err(e) = self.host_port().and(self.version()) {
            return fail(e);
        }
        if self
            .client_id
            .as_ref()
            .is_some_and(|c| c.is_empty() || c.len() > 65_535)
        {
            return fail("client_id must not be empty".into());
        }
        if self.max_inflight == 0 {
            return fail("max_inflight must be 1..=65535".into());
        }
        if self.connect_timeout_secs == 0 || self.connect_timeout_secs > 3_600 {
            return fail("connect_timeout_secs must be 1..=3600".into());
        }
        if self.reconnect_min_ms < 10 || self.reconnect_min_ms > self.reconnect_max_ms {
            return fail(
                "reconnect_min_ms must be at least 10 and at most reconnect_max_ms".into(),
            );
        }
        if self.reconnect_max_ms > 86_400_000 {
            return fail("reconnect_max_ms must be at most a day".into());
        }
        let tls_keys = self.tls_ca_file.is_some()
            || self.tls_certificate.is_some()
            || self.tls_key.is_some()
            || self.tls_server_name.is_some();
        if self.protocol == BridgeTransport::Tcp && tls_keys {
            return fail("tls_* keys need protocol = \"tls\"".into());
        }
        if self.tls_certificate.is_some() != self.tls_key.is_some() {
            return fail("tls_certificate and tls_key go together".into());
        }
        if self.password.is_some()
            && self.username.is_none()
            && self.version() != Ok(ProtocolVersion::V5)
        {
            return fail("a 3.1.1 password needs a username".into());
        }
        if self.topics.is_empty() {
            return fail("at least one [[bridge.topic]]".into());
        }
        if let Err(e) = self.rules() {
            return fail(e);
        }
        Ok(())
    }

    fn rules(&self) -> Result<Vec<TopicRule>, String> {
        self.topics
            .iter()
            .map(|t| {
                let qos = QoS::try_from(t.qos)
                    .map_err(|_| format!("topic {:?}: qos must be 0, 1 or 2", t.pattern))?;
                let direction = match t.direction {
                    DirectionName::Out => Direction::Out,
                    DirectionName::In => Direction::In,
                    DirectionName::Both => Direction::Both,
                };
                TopicRule::new(
                    &t.pattern,
                    direction,
                    qos,
                    &t.local_prefix,
                    &t.remote_prefix,
                )
                .map_err(|e| format!("topic {:?}: {e}", t.pattern))
            })
            .collect()
    }

    /// The protocol state machine's view of it. `max_packet_size`: the broker's, which the
    /// bridge also asks of the remote.
    /// Its state machine's configuration; `limits` are the local broker's.
    pub fn spec(&self, limits: &Limits) -> Result<BridgeSpec, String> {
        self.validate()?;
        let client_id = self.client_id.clone().unwrap_or_else(|| {
            let host = rustix::system::uname();
            let host = host.nodename().to_string_lossy();
            let host = if host.is_empty() {
                "vireo".into()
            } else {
                host
            };
            format!("{host}.{}", self.name)
        });
        Ok(BridgeSpec {
            name: self.name.clone(),
            remote_version: self.version()?,
            try_private: self.try_private,
            client_id,
            clean_session: self.clean_session,
            keep_alive: self.keep_alive_secs,
            username: self.username.clone(),
            password: self.password.clone().map(Bytes::from),
            rules: self.rules()?,
            max_inflight: self.max_inflight,
            connect_timeout: Duration::from_secs(self.connect_timeout_secs),
            reconnect_min: Duration::from_millis(self.reconnect_min_ms),
            reconnect_max: Duration::from_millis(self.reconnect_max_ms),
            maximum_packet_size: limits.maximum_packet_size,
            max_topic_length: limits.max_topic_length,
            max_topic_levels: limits.max_topic_levels,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> BridgeConfig {
        #[derive(Deserialize)]
        struct One {
            bridge: BridgeConfig,
        }
        toml::from_str::<One>(text).unwrap().bridge
    }

    const MINIMAL: &str = r#"
        [bridge]
        name = "cloud"
        address = "127.0.0.1:1884"
        [[bridge.topic]]
        pattern = "sensors/#"
    "#;

    #[test]
    fn defaults_are_a_reliable_v5_bridge() {
        let b = parse(MINIMAL);
        let spec = b.spec(&Limits::default()).unwrap();
        assert_eq!(spec.remote_version, ProtocolVersion::V5);
        assert!(!spec.clean_session);
        assert_eq!(spec.keep_alive, 60);
        assert!(spec.client_id.ends_with(".cloud"), "{}", spec.client_id);
        assert_eq!(spec.rules[0].qos(), QoS::AtLeastOnce);
        assert_eq!(spec.rules[0].direction(), Direction::Out);
        assert_eq!(spec.reconnect_min, Duration::from_secs(1));
    }

    #[test]
    fn mistakes_name_the_bridge_and_the_key() {
        let cases = [
            ("address = \"nohost\"", "address"),
            ("protocol_version = \"4.0\"", "protocol_version"),
            ("tls_ca_file = \"ca.pem\"", "tls_* keys"),
            ("reconnect_min_ms = 5", "reconnect_min_ms"),
            ("max_inflight = 0", "max_inflight"),
        ];
        for (line, key) in cases {
            let key_name = line.split(' ').next().unwrap_or_default();
            let base: String = MINIMAL
                .lines()
                .filter(|l| !l.trim_start().starts_with(&format!("{key_name} ")))
                .collect::<Vec<_>>()
                .join("\n");
            let text = base.replace("[[bridge.topic]]", &format!("{line}\n[[bridge.topic]]"));
            let err = parse(&text).validate().unwrap_err();
            assert!(
                err.contains("\"cloud\"") && err.contains(key),
                "{line}: {err}"
            );
        }
        let bad_rule = MINIMAL.replace("sensors/#", "a/#/b");
        assert!(parse(&bad_rule).validate().unwrap_err().contains("a/#/b"));
    }

    #[test]
    fn the_password_is_not_in_debug_output() {
        let b = parse(&MINIMAL.replace(
            "[[bridge.topic]]",
            "username = \"u\"\npassword = \"hunter2\"\n[[bridge.topic]]",
        ));
        let text = format!("{b:?} {:?}", b.spec(&Limits::default()).unwrap());
        assert!(!text.contains("hunter2"), "{text}");
    }
}
