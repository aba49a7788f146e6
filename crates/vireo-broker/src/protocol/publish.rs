//! PUBLISH from a client: validity, Topic Alias, payload format and expiry, and the ack
//! (spec 3.3, 3.4, 3.5).

use std::time::{Duration, Instant};

use vireo_codec::{Properties, Property, ProtocolVersion, Publish, QoS, ReasonCode, TopicName};

use super::{Limits, Violation};
use crate::{Message, SessionId};

/// Property ids the broker consumes instead of forwarding: Topic Alias and Message Expiry
/// Interval are per hop (the subscriber gets what is left of the interval), and a Will's
/// Will Delay Interval is not a PUBLISH property.
const PER_HOP: [u8; 3] = [0x02, 0x18, 0x23];

/// The topics a client named by alias on this connection (client → server). Mappings never
/// outlive the connection [MQTT-3.3.2-7].
#[derive(Debug, Default)]
pub struct InboundAliases {
    topics: Vec<Option<TopicName>>,
}

impl InboundAliases {
    /// Resolves the PUBLISH's Topic Alias: an alias with a topic sets the mapping, an alias
    /// with an empty topic uses it [MQTT-3.3.2-12]. Alias 0 or above the maximum the broker
    /// announced is DISCONNECT 0x94 [MQTT-3.3.2-8]; an empty topic with no known alias is a
    /// protocol error [MQTT-4.7.3-1].
    pub fn resolve(&mut self, p: &mut Publish, maximum: u16) -> Result<(), Violation> {
        let alias = p.properties.find(|prop| match prop {
            Property::TopicAlias(a) => Some(a),
            _ => None,
        });
        let Some(alias) = alias else {
            return if p.topic.is_empty() {
                Err(Violation::PROTOCOL)
            } else {
                Ok(())
            };
        };
        if alias == 0 || alias > maximum {
            return Err(Violation(ReasonCode::TOPIC_ALIAS_INVALID));
        }
        let slot = usize::from(alias) - 1;
        if p.topic.is_empty() {
            match self.topics.get(slot).and_then(Option::as_ref) {
                Some(topic) => p.topic = topic.clone(),
                None => return Err(Violation::PROTOCOL),
            }
        } else {
            if self.topics.len() <= slot {
                self.topics.resize(slot + 1, None);
            }
            // Detached: the mapping outlives the read buffer the topic was cut from.
            self.topics[slot] = Some(p.topic.detached());
        }
        Ok(())
    }
}

/// The topic aliases the broker sets up towards one client (server → client), at most the
/// lower of the client's Topic Alias Maximum and the broker's `outbound_topic_alias_maximum`
/// [MQTT-3.3.2-11]; never outliving the connection [MQTT-3.3.2-7].
///
/// A topic gets the next free alias the first time it is sent and keeps it for the whole
/// connection; once every alias is taken, other topics go out in full. No alias is ever
/// re-pointed: re-pointing would cost a full topic every time, which is what sending it
/// without an alias already costs, and a stable table makes a long-lived subscriber's
/// steady topics cheap.
#[derive(Debug)]
pub struct OutboundAliases {
    maximum: u16,
    topics: foldhash::HashMap<Box<str>, u16>,
}

/// How one PUBLISH names its topic to a client that takes aliases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutAlias {
    /// Full topic, no alias (none left, or aliases are off).
    Full,
    /// Full topic and this new alias: call [`OutboundAliases::record`] once the PUBLISH is
    /// known to go out, so a PUBLISH that is dropped never leaves the client an alias it did
    /// not learn.
    Set(u16),
    /// Empty topic and this alias, which the client already knows.
    Use(u16),
}

impl OutboundAliases {
    /// Aliases towards a client that allows `client_maximum`, capped by the broker's
    /// `broker_maximum`; `None` when either is 0.
    pub fn new(client_maximum: u16, broker_maximum: u16) -> Option<Self> {
        let maximum = client_maximum.min(broker_maximum);
        (maximum > 0).then(|| Self {
            maximum,
            topics: foldhash::HashMap::default(),
        })
    }

    /// How the next PUBLISH on `topic` names it.
    pub fn lookup(&self, topic: &str) -> OutAlias {
        match self.topics.get(topic) {
            Some(&alias) => OutAlias::Use(alias),
            None => match u16::try_from(self.topics.len()) {
                Ok(n) if n < self.maximum => OutAlias::Set(n + 1),
                _ => OutAlias::Full,
            },
        }
    }

    /// Records that `alias` now names `topic` for the client (after an [`OutAlias::Set`]).
    pub fn record(&mut self, topic: &str, alias: u16) {
        debug_assert_eq!(self.lookup(topic), OutAlias::Set(alias));
        self.topics.insert(topic.into(), alias);
    }
}

/// Whether a payload whose Payload Format Indicator says UTF-8 is UTF-8 (spec 3.3.2.3.2). A
/// payload without the indicator, or marked as bytes, always is.
pub fn payload_format_valid(properties: &Properties, payload: &[u8]) -> bool {
    if properties.is_empty() {
        return true;
    }
    let utf8 = properties.find(|p| match p {
        Property::PayloadFormatIndicator(1) => Some(()),
        _ => None,
    });
    utf8.is_none() || std::str::from_utf8(payload).is_ok()
}

/// Whether a topic name is within the broker's `max_topic_length` and `max_topic_levels`.
/// Levels can exceed the limit only if the topic is at least that long, so ordinary topics
/// skip the count.
#[inline]
pub fn topic_within_limits(topic: &str, limits: &Limits) -> bool {
    topic.len() <= limits.max_topic_length
        && (topic.len() < limits.max_topic_levels
            || topic.bytes().filter(|&b| b == b'/').count() < limits.max_topic_levels)
}

/// Checks an inbound PUBLISH (its alias already resolved) against what the broker allows.
/// `Err(Violation)` closes the connection (5.0 with DISCONNECT of that reason).
pub fn check(p: &Publish, version: ProtocolVersion, limits: &Limits) -> Result<(), Violation> {
    if !version.is_v5() {
        return Ok(());
    }
    // [MQTT-3.2.2-11] a QoS above Maximum QoS: DISCONNECT 0x9B.
    if p.qos.qos() > limits.maximum_qos {
        return Err(Violation(ReasonCode::QOS_NOT_SUPPORTED));
    }
    // [MQTT-3.2.2-14] RETAIN=1 when retain is not available: DISCONNECT 0x9A.
    if p.retain && !limits.retain_available {
        return Err(Violation(ReasonCode::RETAIN_NOT_SUPPORTED));
    }
    if !p.properties.is_empty() {
        let mut bad = None;
        p.properties.scan(|id, value| {
            match id {
                // A client never sends a Subscription Identifier [MQTT-3.3.4-6].
                0x0B => bad = Some(Violation::PROTOCOL),
                // A Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
                // (`value` is the whole encoding: id, length, string.)
                0x08 if value
                    .get(3..)
                    .is_some_and(|t| t.iter().any(|&b| b == b'+' || b == b'#')) =>
                {
                    bad = Some(Violation::PROTOCOL)
                }
                _ => {}
            }
        });
        if let Some(v) = bad {
            return Err(v);
        }
    }
    Ok(())
}

/// The reason code a 5.0 PUBACK / PUBREC carries for a PUBLISH the broker takes: 0x10 when
/// no subscriber matched (as Mosquitto does), else success.
pub fn ack_reason(version: ProtocolVersion, matched: bool) -> ReasonCode {
    if version.is_v5() && !matched {
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    } else {
        ReasonCode::SUCCESS
    }
}

/// The message a PUBLISH (or a Will) becomes: the properties to forward, less the per-hop
/// ones, and the Message Expiry Interval as a deadline from `now`. Inline, with the work on
/// properties out of line: a message without properties (every 3.1.1 one) is built in place.
#[inline]
pub fn message(
    topic: TopicName,
    payload: vireo_codec::Bytes,
    qos: QoS,
    retain: bool,
    properties: Properties,
    origin: SessionId,
    now: Instant,
) -> Message {
    let mut msg = Message {
        topic,
        payload,
        qos,
        retain,
        properties,
        expires: None,
        origin,
        received: now,
    };
    if !msg.properties.is_empty() {
        consume_per_hop(&mut msg, now);
    }
    msg
}

/// Takes the per-hop properties out of `msg.properties`, turning its Message Expiry Interval
/// into `msg.expires`.
#[inline(never)]
fn consume_per_hop(msg: &mut Message, now: Instant) {
    let mut per_hop = false;
    let mut expires = None;
    msg.properties.scan(|id, value| {
        if PER_HOP.contains(&id) {
            per_hop = true;
            // `value` is the whole encoding: the id, then the four bytes.
            if id == 0x02
                && let Some(Ok(secs)) = value.get(1..5).map(<[u8; 4]>::try_from)
            {
                let secs = u32::from_be_bytes(secs);
                expires = now.checked_add(Duration::from_secs(u64::from(secs)));
            }
        }
    });
    msg.expires = expires;
    if per_hop {
        msg.properties = msg.properties.without(|id| PER_HOP.contains(&id));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use vireo_codec::Bytes;

    fn publish(topic: &str, props: &[Property]) -> Publish {
        let name = if topic.is_empty() {
            TopicName::empty()
        } else {
            TopicName::new(topic.to_owned()).unwrap()
        };
        let mut p = Publish::new(name, "x");
        for prop in props {
            p.properties.push(prop.clone());
        }
        p
    }

    /// v5 [MQTT-3.3.2-8] alias 0 and aliases above the maximum are refused (0x94);
    /// [MQTT-3.3.2-12] every alias up to the maximum is accepted and then names its topic.
    #[test]
    fn v5_mqtt_3_3_2_12_topic_alias_resolution() {
        let mut aliases = InboundAliases::default();
        let mut p = publish("a/b", &[Property::TopicAlias(3)]);
        assert_eq!(aliases.resolve(&mut p, 3), Ok(()));
        let mut p = publish("", &[Property::TopicAlias(3)]);
        assert_eq!(aliases.resolve(&mut p, 3), Ok(()));
        assert_eq!(p.topic.as_str(), "a/b");
        let mut p = publish("", &[Property::TopicAlias(2)]);
        assert_eq!(aliases.resolve(&mut p, 3), Err(Violation::PROTOCOL));
        let mut p = publish("x", &[Property::TopicAlias(4)]);
        assert_eq!(
            aliases.resolve(&mut p, 3),
            Err(Violation(ReasonCode::TOPIC_ALIAS_INVALID))
        );
        let mut p = publish("", &[]);
        assert_eq!(aliases.resolve(&mut p, 3), Err(Violation::PROTOCOL));
    }

    /// v5 [MQTT-3.3.2-11] never more aliases than the client allows, nor than the broker's
    /// own cap; [MQTT-3.3.2-8] never alias 0; an alias once set is used with an empty topic; a dropped
    /// PUBLISH (`Set` not recorded) leaves the alias free.
    #[test]
    fn v5_mqtt_3_3_2_11_outbound_aliases() {
        assert!(OutboundAliases::new(0, 10).is_none());
        assert!(OutboundAliases::new(10, 0).is_none());
        let mut a = OutboundAliases::new(2, 10).unwrap();
        assert_eq!(a.lookup("x"), OutAlias::Set(1));
        assert_eq!(a.lookup("x"), OutAlias::Set(1), "not recorded: still free");
        a.record("x", 1);
        assert_eq!(a.lookup("x"), OutAlias::Use(1));
        assert_eq!(a.lookup("y"), OutAlias::Set(2));
        a.record("y", 2);
        assert_eq!(a.lookup("z"), OutAlias::Full, "client's maximum reached");
        assert_eq!(a.lookup("y"), OutAlias::Use(2));
        let mut b = OutboundAliases::new(10, 1).unwrap();
        b.record("x", 1);
        assert_eq!(b.lookup("y"), OutAlias::Full, "broker's cap reached");
    }

    /// The forwarded message drops Topic Alias and turns Message Expiry Interval into a
    /// deadline; every other property stays, in order [MQTT-3.3.2-18].
    #[test]
    fn v5_mqtt_3_3_2_18_forwarded_properties() {
        let now = Instant::now();
        let mut props = Properties::new();
        props.push(Property::UserProperty("k".into(), "1".into()));
        props.push(Property::TopicAlias(1));
        props.push(Property::MessageExpiryInterval(10));
        props.push(Property::UserProperty("j".into(), "2".into()));
        let t = TopicName::new("t".to_owned()).unwrap();
        let m = message(
            t,
            Bytes::new(),
            QoS::AtMostOnce,
            false,
            props,
            SessionId(1),
            now,
        );
        let ids: Vec<u8> = m.properties.iter().map(|p| p.id()).collect();
        assert_eq!(ids, [0x26, 0x26]);
        assert_eq!(m.remaining_expiry(now), Some(10));
        assert_eq!(
            m.remaining_expiry(now + Duration::from_millis(4500)),
            Some(6)
        );
        assert!(m.expired(now + Duration::from_secs(10)));
    }

    #[test]
    fn v5_payload_format_and_client_subscription_id() {
        let mut props = Properties::new();
        props.push(Property::PayloadFormatIndicator(1));
        assert!(payload_format_valid(&props, b"ok"));
        assert!(!payload_format_valid(&props, &[0xC3, 0x28]));
        assert!(payload_format_valid(&Properties::new(), &[0xFF]));
        let p = publish("t", &[Property::SubscriptionIdentifier(1)]);
        assert_eq!(
            check(&p, ProtocolVersion::V5, &Limits::default()),
            Err(Violation::PROTOCOL)
        );
        let p = publish("t", &[Property::ResponseTopic("r/#".into())]);
        assert_eq!(
            check(&p, ProtocolVersion::V5, &Limits::default()),
            Err(Violation::PROTOCOL)
        );
    }
}
