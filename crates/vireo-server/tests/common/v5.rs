//! MQTT 5.0 helpers for the 5.0 socket tests (`v5`, `v5_connect`, `v5_messages`): subscription
//! options, property and identifier lists, Wills, persistent sessions, ready-made subscribers,
//! and the reason-code tables of the spec.

use std::net::SocketAddr;

use vireo_codec::{
    Bytes, Connect, LastWill, Properties, Property, Publish, QoS, SubscriptionOptions,
};

use super::{Client, topic};

/// Connect Reason Codes of Table 3-1 [MQTT-3.2.2-8].
pub const CONNACK_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];

/// Disconnect Reason Codes of Table 3-10 a server may send [MQTT-3.14.2-1] (0x04 is the
/// client's only).
pub const SERVER_DISCONNECT_CODES: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95, 0x96,
    0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];

/// Property identifier of Reason String: Vireo sends none of its own.
pub const REASON_STRING: u8 = 0x1F;
/// Property identifier of User Property: Vireo sends none of its own.
pub const USER_PROPERTY: u8 = 0x26;

/// Subscription options with this maximum QoS, every other option at its default.
pub fn opts(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions::qos(qos)
}

/// The identifiers of these properties, in order.
pub fn prop_ids(p: &Properties) -> Vec<u8> {
    p.iter().map(|p| p.id()).collect()
}

/// The Subscription Identifiers a delivery carries, sorted.
pub fn sub_ids(p: &Publish) -> Vec<u32> {
    let mut ids: Vec<u32> = p
        .properties
        .iter()
        .filter_map(|p| match p {
            Property::SubscriptionIdentifier(id) => Some(id),
            _ => None,
        })
        .collect();
    ids.sort_unstable();
    ids
}

/// A Will on `topic_name` with this payload, QoS and Will Retain, and no Will properties.
pub fn will(topic_name: &str, payload: &str, qos: QoS, retain: bool) -> LastWill {
    LastWill {
        topic: topic(topic_name),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
        qos,
        retain,
        properties: Properties::new(),
    }
}

/// A QoS 1, non-retained Will on `topic_name` with these Will properties, in order.
pub fn will_with_properties(topic_name: &str, payload: &str, props: &[Property]) -> LastWill {
    let mut w = will(topic_name, payload, QoS::AtLeastOnce, false);
    for p in props {
        w.properties.push(p.clone());
    }
    w
}

/// A persistent 5.0 CONNECT for `id`: Session Expiry Interval 60 s, and this Clean Start.
pub fn persistent(id: &str, clean_start: bool) -> Connect {
    let mut c = Client::v5(id, &[Property::SessionExpiryInterval(60)]);
    c.clean_start = clean_start;
    c
}

/// Connects `id` with [`persistent`] and Clean Start 0, asserting acceptance; returns the
/// client and Session Present.
pub fn connect_persistent(addr: SocketAddr, id: &str) -> (Client, bool) {
    let (c, ack) = Client::connect_v5_with(addr, persistent(id, false));
    assert_eq!(ack.code.0, 0, "CONNACK {ack:?}");
    (c, ack.session_present)
}

/// A 5.0 subscriber on `filter` at `qos`; asserts it was granted.
pub fn subscriber(addr: SocketAddr, id: &str, filter: &str, qos: QoS) -> Client {
    let mut c = Client::connect_v5(addr, id, &[]);
    assert_eq!(
        c.subscribe_opts(1, &[(filter, opts(qos))], None),
        [qos as u8]
    );
    c
}

/// A 5.0 subscriber on `filter` at QoS 1.
pub fn watcher(addr: SocketAddr, id: &str, filter: &str) -> Client {
    subscriber(addr, id, filter, QoS::AtLeastOnce)
}
