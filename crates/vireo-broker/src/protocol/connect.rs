//! CONNECT: whether to accept it, and what the connection has negotiated (spec 3.1, 3.2).

use std::time::Duration;

use vireo_codec::{ConnAck, Connect, Properties, Property, ProtocolVersion, ReasonCode};

use super::Limits;
use super::auth;
use super::publish::payload_format_valid;

/// Longest client id MQTT 3.1 allows (3.1.1 lets servers accept more).
const V31_MAX_CLIENT_ID: usize = 23;

/// What a CONNECT settled for the life of its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// Keep alive in force, in seconds (0: off) [MQTT-3.1.2-22].
    pub keep_alive: u16,
    /// Set when the broker lowered the client's keep alive: sent as Server Keep Alive, and the
    /// client must use it (spec 3.2.2.3.14; the broker enforces it [MQTT-3.2.2-22]).
    pub server_keep_alive: Option<u16>,
    /// Session Expiry Interval in seconds: 0 ends the session with the connection, `u32::MAX`
    /// never. 3.1.1: 0 for clean sessions; persistent ones take the broker's setting.
    pub session_expiry: u32,
    /// Set when the broker lowered the client's Session Expiry Interval (sent in CONNACK).
    pub server_session_expiry: Option<u32>,
    /// The client's Receive Maximum: unacknowledged QoS 1/2 PUBLISHes it accepts (0: not given,
    /// 3.1.1).
    pub receive_maximum: u16,
    /// The client's Maximum Packet Size (0: no limit) [MQTT-3.1.2-24].
    pub maximum_packet_size: u32,
    /// The client's Topic Alias Maximum: aliases the broker may use towards it.
    pub topic_alias_maximum: u16,
    /// Whether reason strings and user properties may be sent on acks [MQTT-3.1.2-29].
    pub problem_information: bool,
    /// Will Delay Interval in seconds [MQTT-3.1.3-9].
    pub will_delay: u32,
}

/// Checks a CONNECT against the protocol and the broker's limits. `persistent_expiry` is the
/// session expiry a 3.1.1 persistent session gets (the broker's `session_expiry_secs`, with 0
/// meaning never). `Err` carries the CONNACK refusal code, in the client's version.
pub fn check(
    connect: &Connect,
    limits: &Limits,
    persistent_expiry: u32,
) -> Result<Negotiated, ReasonCode> {
    let v5 = connect.protocol.is_v5();
    let id_rejected = if v5 {
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    } else {
        ReasonCode::V3_IDENTIFIER_REJECTED
    };
    match connect.protocol {
        // MQTT 3.1: a client id of 1 to 23 characters, as Mosquitto enforces.
        ProtocolVersion::V31
            if connect.client_id.is_empty() || connect.client_id.len() > V31_MAX_CLIENT_ID =>
        {
            return Err(id_rejected);
        }
        // [MQTT-3.1.3-7] [MQTT-3.1.3-8]: an empty id needs a clean session.
        ProtocolVersion::V311 if connect.client_id.is_empty() && !connect.clean_start => {
            return Err(id_rejected);
        }
        _ => {}
    }
    if !v5 {
        return Ok(Negotiated {
            keep_alive: connect.keep_alive,
            server_keep_alive: None,
            session_expiry: if connect.clean_start {
                0
            } else {
                persistent_expiry
            },
            server_session_expiry: None,
            receive_maximum: 0,
            maximum_packet_size: 0,
            topic_alias_maximum: 0,
            problem_information: true,
            will_delay: 0,
        });
    }
    auth::check_connect(connect)?;
    if let Some(will) = &connect.will {
        // [MQTT-3.2.2-12]: a Will above the maximum QoS is refused with 0x9B.
        if will.qos > limits.maximum_qos {
            return Err(ReasonCode::QOS_NOT_SUPPORTED);
        }
        // [MQTT-3.2.2-13]: a retained Will without retain support: 0x9A.
        if will.retain && !limits.retain_available {
            return Err(ReasonCode::RETAIN_NOT_SUPPORTED);
        }
        // A Will whose Payload Format Indicator says UTF-8 must be UTF-8 (spec 3.1.3.2.3).
        if !payload_format_valid(&will.properties, &will.payload) {
            return Err(ReasonCode::PAYLOAD_FORMAT_INVALID);
        }
    }
    let mut n = Negotiated {
        keep_alive: connect.keep_alive,
        server_keep_alive: None,
        session_expiry: 0,
        server_session_expiry: None,
        receive_maximum: u16::MAX,
        maximum_packet_size: 0,
        topic_alias_maximum: 0,
        problem_information: true,
        will_delay: 0,
    };
    for p in connect.properties.iter() {
        match p {
            Property::SessionExpiryInterval(s) => n.session_expiry = s,
            // The codec refuses 0 for both (a protocol error, spec 3.1.2.11.3).
            Property::ReceiveMaximum(r) => n.receive_maximum = r,
            Property::MaximumPacketSize(m) => n.maximum_packet_size = m,
            Property::TopicAliasMaximum(t) => n.topic_alias_maximum = t,
            Property::RequestProblemInformation(r) => n.problem_information = r != 0,
            _ => {}
        }
    }
    if n.session_expiry > limits.max_session_expiry {
        n.session_expiry = limits.max_session_expiry;
        n.server_session_expiry = Some(n.session_expiry);
    }
    if let Some(will) = &connect.will {
        n.will_delay = will
            .properties
            .find(|p| match p {
                Property::WillDelayInterval(d) => Some(d),
                _ => None,
            })
            .unwrap_or(0);
    }
    let max = limits.max_keep_alive;
    if max > 0 && (connect.keep_alive == 0 || connect.keep_alive > max) {
        n.keep_alive = max;
        n.server_keep_alive = Some(max);
    }
    Ok(n)
}

impl Negotiated {
    /// How long the connection may stay silent: 1.5 × keep alive (5.0 [MQTT-3.1.2-22]).
    pub fn keep_alive_timeout(&self) -> Option<Duration> {
        super::lifecycle::timeout(self.keep_alive)
    }

    /// Whether a packet of `len` bytes may be sent to the client [MQTT-3.1.2-24].
    pub fn fits(&self, len: usize) -> bool {
        self.maximum_packet_size == 0 || len <= self.maximum_packet_size as usize
    }
}

/// The properties of the CONNACK that accepts a 5.0 client: the broker's limits where they
/// differ from the protocol's defaults [MQTT-3.2.2-9 .. 3.2.2-22], the identifier it assigned
/// to a client that sent none [MQTT-3.1.3-7], and what it changed of the client's requests.
pub fn connack_properties(
    limits: &Limits,
    n: &Negotiated,
    assigned_client_id: Option<&str>,
) -> Properties {
    let mut p = Properties::new();
    if let Some(expiry) = n.server_session_expiry {
        p.push(Property::SessionExpiryInterval(expiry));
    }
    if limits.receive_maximum < u16::MAX {
        p.push(Property::ReceiveMaximum(limits.receive_maximum));
    }
    if limits.maximum_qos < vireo_codec::QoS::ExactlyOnce {
        p.push(Property::MaximumQoS(limits.maximum_qos as u8));
    }
    if !limits.retain_available {
        p.push(Property::RetainAvailable(0));
    }
    p.push(Property::MaximumPacketSize(limits.maximum_packet_size));
    if let Some(id) = assigned_client_id {
        p.push(Property::AssignedClientIdentifier(id.into()));
    }
    if limits.topic_alias_maximum > 0 {
        p.push(Property::TopicAliasMaximum(limits.topic_alias_maximum));
    }
    if !limits.wildcard_available {
        p.push(Property::WildcardSubscriptionAvailable(0));
    }
    if !limits.shared_available {
        p.push(Property::SharedSubscriptionAvailable(0));
    }
    if let Some(keep_alive) = n.server_keep_alive {
        p.push(Property::ServerKeepAlive(keep_alive));
    }
    p
}

/// The Session Present flag of an accepting CONNACK: whether a stored session was resumed
/// [MQTT-3.2.2-2] [MQTT-3.2.2-3]. MQTT 3.1 has no such flag (the byte is reserved), so a 3.1
/// client always gets 0, as Mosquitto sends.
pub fn session_present_flag(version: ProtocolVersion, resumed: bool) -> bool {
    resumed && version != ProtocolVersion::V31
}

/// The CONNACK that accepts a connection.
pub fn accepted(
    version: ProtocolVersion,
    session_present: bool,
    limits: &Limits,
    n: &Negotiated,
    assigned_client_id: Option<&str>,
) -> ConnAck {
    let mut ack = ConnAck::new(session_present, ReasonCode::SUCCESS);
    if version.is_v5() {
        ack.properties = connack_properties(limits, n, assigned_client_id);
    }
    ack
}

/// The reason code that refuses a client id, in the client's version.
pub fn identifier_rejected(version: ProtocolVersion) -> ReasonCode {
    if version.is_v5() {
        ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
    } else {
        ReasonCode::V3_IDENTIFIER_REJECTED
    }
}

/// Whether a client id is kept for the broker's own bridges (see `bridge`): a client may
/// not take one, or it could take a bridge's session over.
pub fn reserved_client_id(id: &str) -> bool {
    id.starts_with(crate::bridge::LOCAL_CLIENT_PREFIX)
}

/// The reason code that refuses a CONNECT because the broker is full, in the client's version.
pub fn server_unavailable(version: ProtocolVersion) -> ReasonCode {
    if version.is_v5() {
        ReasonCode::QUOTA_EXCEEDED
    } else {
        ReasonCode::V3_SERVER_UNAVAILABLE
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vireo_codec::{Bytes, LastWill, QoS, TopicName};

    fn v5(id: &str) -> Connect {
        let mut c = Connect::new(id);
        c.protocol = ProtocolVersion::V5;
        c
    }

    /// MQTT 3.1 needs a client id of 1..23 characters (CONNACK 0x02), 3.1.1 an empty id only
    /// with a clean session [MQTT-3.1.3-8].
    #[test]
    fn v311_mqtt_3_1_3_8_client_id_rules() {
        let limits = Limits::default();
        let mut c = Connect::new("");
        c.protocol = ProtocolVersion::V31;
        assert_eq!(check(&c, &limits, 0), Err(ReasonCode(0x02)));
        c.client_id = "x".repeat(24).into();
        assert_eq!(check(&c, &limits, 0), Err(ReasonCode(0x02)));
        c.client_id = "x".repeat(23).into();
        assert!(check(&c, &limits, 0).is_ok());
        let mut c = Connect::new("");
        c.clean_start = false;
        assert_eq!(check(&c, &limits, 0), Err(ReasonCode(0x02)));
        c.clean_start = true;
        assert_eq!(check(&c, &limits, 0).unwrap().session_expiry, 0);
    }

    /// v5: session expiry, receive maximum, packet size and alias maximum come from the
    /// CONNECT properties; the server keep alive lowers the client's, and is what the broker
    /// enforces [MQTT-3.2.2-22].
    #[test]
    fn v5_mqtt_3_2_2_22_negotiation() {
        let limits = Limits {
            max_keep_alive: 30,
            max_session_expiry: 100,
            ..Limits::default()
        };
        let mut c = v5("a");
        c.keep_alive = 60;
        c.properties.push(Property::SessionExpiryInterval(500));
        c.properties.push(Property::ReceiveMaximum(7));
        c.properties.push(Property::MaximumPacketSize(1000));
        c.properties.push(Property::TopicAliasMaximum(3));
        c.properties.push(Property::RequestProblemInformation(0));
        let n = check(&c, &limits, 0).unwrap();
        assert_eq!(n.keep_alive, 30);
        assert_eq!(n.server_keep_alive, Some(30));
        assert_eq!(n.session_expiry, 100);
        assert_eq!(n.server_session_expiry, Some(100));
        assert_eq!(n.receive_maximum, 7);
        assert!(n.fits(1000) && !n.fits(1001));
        assert_eq!(n.topic_alias_maximum, 3);
        assert!(!n.problem_information);
        let props = connack_properties(&limits, &n, Some("gen"));
        let ids: Vec<u8> = props.iter().map(|p| p.id()).collect();
        assert!(ids.contains(&0x11) && ids.contains(&0x13) && ids.contains(&0x12));
        assert!(ids.contains(&0x27) && ids.contains(&0x21) && ids.contains(&0x22));
    }

    /// v5: an authentication method the broker does not know gets 0x8C [MQTT-4.12.0-1]; a
    /// Will the broker cannot honour gets 0x9B / 0x9A [MQTT-3.2.2-12] [MQTT-3.2.2-13].
    #[test]
    fn v5_mqtt_3_2_2_12_refusals() {
        let mut c = v5("a");
        c.properties
            .push(Property::AuthenticationMethod("SCRAM-SHA-1".into()));
        assert_eq!(
            check(&c, &Limits::default(), 0),
            Err(ReasonCode::BAD_AUTHENTICATION_METHOD)
        );
        let mut c = v5("a");
        c.will = Some(LastWill {
            topic: TopicName::try_from("w").unwrap(),
            payload: Bytes::from_static(b"x"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: Properties::new(),
        });
        let low_qos = Limits {
            maximum_qos: QoS::AtLeastOnce,
            ..Limits::default()
        };
        assert_eq!(check(&c, &low_qos, 0), Err(ReasonCode::QOS_NOT_SUPPORTED));
        let no_retain = Limits {
            retain_available: false,
            ..Limits::default()
        };
        assert_eq!(
            check(&c, &no_retain, 0),
            Err(ReasonCode::RETAIN_NOT_SUPPORTED)
        );
    }
}
