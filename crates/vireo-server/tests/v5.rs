//! MQTT 5.0 from a client socket: CONNECT/CONNACK negotiation, sessions and their expiry,
//! Wills and their delay, flow control, packet size, topic aliases, properties, subscription
//! options and identifiers, shared subscriptions, reason codes and server DISCONNECTs.
//!
//! Every wait has a deadline; the few tests about time (keep alive, Will Delay, expiry) wait
//! for the event itself, bounded, and assert on when it came.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use vireo_codec::{
    Ack, Bytes, Disconnect, Packet, Properties, Property, QoS, QosPid, ReasonCode, Unsubscribe,
};

// ---------------------------------------------------------------- CONNECT and CONNACK

/// [MQTT-3.2.2-16] [MQTT-3.1.3-6] [MQTT-3.1.3-7] an empty client id gets a unique Assigned
/// Client Identifier, under which the session can be resumed.
#[test]
fn v5_mqtt_3_2_2_16_assigned_client_identifier() {
    let broker = start();
    let addr = broker.local_addr();
    let assigned = |ack: &vireo_codec::ConnAck| {
        ack.properties
            .find(|p| match p {
                Property::AssignedClientIdentifier(id) => Some(id),
                _ => None,
            })
            .expect("[MQTT-3.2.2-16] Assigned Client Identifier")
    };
    let (first, a) =
        Client::connect_v5_with(addr, Client::v5("", &[Property::SessionExpiryInterval(60)]));
    let (_second, b) = Client::connect_v5_with(addr, Client::v5("", &[]));
    let (id_a, id_b) = (assigned(&a), assigned(&b));
    assert_ne!(id_a, id_b, "[MQTT-3.1.3-6] unique");
    first.disconnect();
    let mut again = Client::v5(&id_a, &[Property::SessionExpiryInterval(60)]);
    again.clean_start = false;
    let (_c, ack) = Client::connect_v5_with(addr, again);
    assert!(
        ack.session_present,
        "[MQTT-3.1.3-7] resumed under the assigned id"
    );
}

/// [MQTT-3.1.2-4] Clean Start 1 discards the session; [MQTT-3.1.2-6] Clean Start 0 with no
/// session starts one with Session Present 0; [MQTT-3.1.2-5] [MQTT-3.1.2-23] Clean Start 0
/// resumes a session that has not expired, with what was queued for it.
#[test]
fn v5_mqtt_3_1_2_23_session_expiry_keeps_the_session() {
    let broker = start();
    let addr = broker.local_addr();
    let persistent = |clean: bool| {
        let mut c = Client::v5("keeper", &[Property::SessionExpiryInterval(60)]);
        c.clean_start = clean;
        Client::connect_v5_with(addr, c)
    };
    let (mut c, ack) = persistent(false);
    assert!(!ack.session_present, "[MQTT-3.1.2-6]");
    assert_eq!(
        c.subscribe_opts(1, &[("keep/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    c.drop_connection();
    let mut p = Client::connect_v5(addr, "pub", &[]);
    p.send_publish("keep/1", b"queued", QosPid::AtLeastOnce(pid(1)), false, &[]);
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    let (mut c, ack) = persistent(false);
    assert!(ack.session_present, "[MQTT-3.1.2-5]");
    assert_eq!(&c.recv_publish_ack().payload[..], b"queued");
    c.disconnect();
    let (_c, ack) = persistent(true);
    assert!(
        !ack.session_present,
        "[MQTT-3.1.2-4] Clean Start discards it"
    );
}

/// Session Expiry Interval 0 (the default) ends the session with the connection.
#[test]
fn v5_mqtt_3_1_2_23_expiry_zero_ends_the_session() {
    let broker = start();
    let addr = broker.local_addr();
    let c = Client::connect_v5(addr, "brief", &[]);
    c.disconnect();
    let mut again = Client::v5("brief", &[]);
    again.clean_start = false;
    let (_c, ack) = Client::connect_v5_with(addr, again);
    assert!(!ack.session_present);
}

/// [MQTT-4.1.0-2] a disconnected session is deleted when its expiry runs out; the Will,
/// delayed past that, goes out when the session ends [MQTT-3.1.2-8].
#[test]
fn v5_mqtt_4_1_0_2_session_expires_and_its_delayed_will_fires() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "gone/#");
    let mut connect = Client::v5("mortal", &[Property::SessionExpiryInterval(1)]);
    connect.will = Some(will_with_properties(
        "gone/mortal",
        "bye",
        &[Property::WillDelayInterval(100)],
    ));
    let (c, _) = Client::connect_v5_with(addr, connect);
    let closed = Instant::now();
    c.drop_connection();
    let p = w.recv_publish_ack();
    assert_eq!(&p.payload[..], b"bye");
    assert!(
        closed.elapsed() >= Duration::from_millis(900),
        "not before the session ended"
    );
    let mut again = Client::v5("mortal", &[Property::SessionExpiryInterval(1)]);
    again.clean_start = false;
    let (_c, ack) = Client::connect_v5_with(addr, again);
    assert!(!ack.session_present, "[MQTT-4.1.0-2] expired");
}

/// [MQTT-3.1.3-9] a session resumed within the Will Delay Interval cancels the Will; one not
/// resumed gets it after the delay [MQTT-3.1.2-8].
#[test]
fn v5_mqtt_3_1_3_9_will_delay() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "will/#");
    let connect = |id: &str| {
        let mut c = Client::v5(id, &[Property::SessionExpiryInterval(60)]);
        c.clean_start = false;
        c.will = Some(will_with_properties(
            &format!("will/{id}"),
            id,
            &[Property::WillDelayInterval(1)],
        ));
        c
    };
    let (a, _) = Client::connect_v5_with(addr, connect("back"));
    a.drop_connection();
    let (_a, ack) = Client::connect_v5_with(addr, connect("back"));
    assert!(ack.session_present);
    let (b, _) = Client::connect_v5_with(addr, connect("away"));
    let dropped = Instant::now();
    b.drop_connection();
    let p = w.recv_publish_ack();
    assert_eq!(
        p.topic.as_str(),
        "will/away",
        "only the session not resumed"
    );
    assert!(
        dropped.elapsed() >= Duration::from_millis(900),
        "after the delay"
    );
    w.expect_nothing();
}

/// [MQTT-3.14.4-3] DISCONNECT 0x00 discards the Will; 0x04 publishes it; Will properties are
/// forwarded in order [MQTT-3.1.3-10].
#[test]
fn v5_mqtt_3_14_4_3_disconnect_reason_decides_the_will() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "dw/#");
    let user = |k: &str, v: &str| Property::UserProperty(k.into(), v.into());
    for (id, reason) in [("quiet", 0x00), ("loud", 0x04)] {
        let mut connect = Client::v5(id, &[]);
        let props = [user("a", "1"), user("b", "2"), user("a", "3")];
        connect.will = Some(will_with_properties(&format!("dw/{id}"), id, &props));
        let (mut c, _) = Client::connect_v5_with(addr, connect);
        c.send(&Packet::Disconnect(Disconnect::new(ReasonCode(reason))));
        assert!(c.closed_within(WAIT, false));
    }
    let p = w.recv_publish_ack();
    assert_eq!(p.topic.as_str(), "dw/loud");
    let users: Vec<_> = p
        .properties
        .iter()
        .filter_map(|p| match p {
            Property::UserProperty(k, v) => Some(format!("{k}={v}")),
            _ => None,
        })
        .collect();
    assert_eq!(users, ["a=1", "b=2", "a=3"], "[MQTT-3.1.3-10]");
    w.expect_nothing();
}

/// A DISCONNECT may not set a Session Expiry Interval when CONNECT's was 0: DISCONNECT 0x82.
#[test]
fn v5_disconnect_cannot_revive_a_zero_expiry() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "z", &[]);
    let mut d = Disconnect::new(ReasonCode::SUCCESS);
    d.properties.push(Property::SessionExpiryInterval(30));
    c.send(&Packet::Disconnect(d));
    assert_eq!(c.expect_disconnect(), 0x82);
}

/// [MQTT-3.1.4-3] a second connection with the same client id closes the first with
/// DISCONNECT 0x8E, and nothing after it [MQTT-3.14.4-1].
#[test]
fn v5_mqtt_3_1_4_3_takeover_sends_0x8e() {
    let broker = start();
    let addr = broker.local_addr();
    let mut first = Client::connect_v5(addr, "twin", &[]);
    let _second = Client::connect_v5(addr, "twin", &[]);
    assert_eq!(first.expect_disconnect(), 0x8E);
}

/// [MQTT-3.1.2-22] silence past 1.5 x keep alive: DISCONNECT 0x8D, then the close.
#[test]
fn v5_mqtt_3_1_2_22_keep_alive_timeout_sends_0x8d() {
    let broker = start();
    let mut connect = Client::v5("sleepy", &[]);
    connect.keep_alive = 1;
    let (mut c, _) = Client::connect_v5_with(broker.local_addr(), connect);
    let start = Instant::now();
    assert_eq!(c.expect_disconnect(), 0x8D);
    assert!(
        start.elapsed() >= Duration::from_millis(1400),
        "not before 1.5 x keep alive"
    );
}

/// [MQTT-3.2.2-22] the broker's maximum keep alive is sent as Server Keep Alive and enforced.
#[test]
fn v5_mqtt_3_2_2_22_server_keep_alive() {
    let broker = start_with(|c| c.max_keepalive = 1);
    let mut connect = Client::v5("k", &[]);
    connect.keep_alive = 600;
    let (mut c, ack) = Client::connect_v5_with(broker.local_addr(), connect);
    let ka = ack.properties.find(|p| match p {
        Property::ServerKeepAlive(k) => Some(k),
        _ => None,
    });
    assert_eq!(ka, Some(1));
    assert_eq!(
        c.expect_disconnect(),
        0x8D,
        "the server's keep alive is enforced"
    );
}

/// [MQTT-3.2.2-9] Maximum QoS advertised; [MQTT-3.2.2-10] SUBSCRIBE above it still granted
/// (at the maximum); [MQTT-3.2.2-12] a Will above it refused with 0x9B; a PUBLISH above it
/// gets DISCONNECT 0x9B [MQTT-3.2.2-11].
#[test]
fn v5_mqtt_3_2_2_9_maximum_qos() {
    let broker = start_with(|c| c.max_qos = 1);
    let addr = broker.local_addr();
    let (mut c, ack) = Client::connect_v5_with(addr, Client::v5("q", &[]));
    assert!(
        ack.properties.iter().any(|p| p == Property::MaximumQoS(1)),
        "[MQTT-3.2.2-9]"
    );
    assert_eq!(
        c.subscribe_opts(1, &[("t", opts(QoS::ExactlyOnce))], None),
        [1]
    );
    let mut connect = Client::v5("wq", &[]);
    connect.will = Some(will("w", "x", QoS::ExactlyOnce, false));
    let (mut refused, ack) = Client::connect_v5_with(addr, connect);
    assert_eq!(ack.code.0, 0x9B, "[MQTT-3.2.2-12]");
    assert!(refused.closed_within(WAIT, false));
    c.send_publish("t", b"x", QosPid::ExactlyOnce(pid(1)), false, &[]);
    assert_eq!(c.expect_disconnect(), 0x9B);
}

/// [MQTT-3.2.2-13] with retain off: CONNACK says so, a retained Will is refused with 0x9A,
/// and a retained PUBLISH gets DISCONNECT 0x9A.
#[test]
fn v5_mqtt_3_2_2_13_retain_not_available() {
    let broker = start_with(|c| c.retain_available = false);
    let addr = broker.local_addr();
    let (mut c, ack) = Client::connect_v5_with(addr, Client::v5("r", &[]));
    assert!(
        ack.properties
            .iter()
            .any(|p| p == Property::RetainAvailable(0))
    );
    let mut connect = Client::v5("wr", &[]);
    connect.will = Some(will("w", "x", QoS::AtLeastOnce, true));
    let (_refused, ack) = Client::connect_v5_with(addr, connect);
    assert_eq!(ack.code.0, 0x9A, "[MQTT-3.2.2-13]");
    c.send_publish("t", b"x", QosPid::AtMostOnce, true, &[]);
    assert_eq!(c.expect_disconnect(), 0x9A);
}

/// [MQTT-4.12.0-1] an authentication method the broker does not support: CONNACK 0x8C and
/// close; [MQTT-4.12.0-6] no AUTH and no method in a plain CONNACK; an AUTH packet without
/// a method is a protocol error.
#[test]
fn v5_mqtt_4_12_0_1_unknown_authentication_method() {
    let broker = start();
    let addr = broker.local_addr();
    let connect = Client::v5(
        "a",
        &[Property::AuthenticationMethod("SCRAM-SHA-256".into())],
    );
    let (mut c, ack) = Client::connect_v5_with(addr, connect);
    assert_eq!(ack.code.0, 0x8C);
    assert!(c.closed_within(WAIT, false), "[MQTT-4.12.0-1] closed");
    let (mut plain, ack) = Client::connect_v5_with(addr, Client::v5("b", &[]));
    assert!(
        !prop_ids(&ack.properties).contains(&0x15),
        "[MQTT-4.12.0-6]"
    );
    plain.send_raw(&[0xF0, 0x00]);
    assert_eq!(plain.expect_disconnect(), 0x82);
}

/// [MQTT-3.1.0-2] a second CONNECT: DISCONNECT 0x82 [MQTT-3.2.0-2] and no second CONNACK.
#[test]
fn v5_mqtt_3_1_0_2_second_connect() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "twice", &[]);
    c.send(&Packet::Connect(Box::new(Client::v5("twice", &[]))));
    assert_eq!(c.expect_disconnect(), 0x82);
}

/// [MQTT-3.1.4-1] [MQTT-3.14.0-1] a malformed CONNECT (a property given twice) is closed
/// without a DISCONNECT (none before a CONNACK).
#[test]
fn v5_mqtt_3_14_0_1_malformed_connect_gets_no_disconnect() {
    let broker = start();
    let mut c = Client::open(broker.local_addr());
    // CONNECT v5, properties: Session Expiry twice.
    c.send_raw(&[
        0x10, 0x17, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x02, 0x00, 0x3C, 0x0A, 0x11, 0x00,
        0x00, 0x00, 0x01, 0x11, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00,
    ]);
    assert!(c.closed_silently());
}

/// [MQTT-4.13.1-1] malformed packets and protocol errors after CONNACK: DISCONNECT with the
/// reason, then the close — an unknown property (0x81), a property given twice (0x82), a
/// Subscription Identifier of 0 (0x82), a Topic Alias of 0 (0x94).
#[test]
fn v5_mqtt_4_13_1_1_reason_codes_for_bad_packets() {
    let broker = start();
    let addr = broker.local_addr();
    let cases: [(&[u8], u8); 4] = [
        // PUBLISH "t", properties: unknown id 0x7F.
        (&[0x30, 0x06, 0x00, 0x01, b't', 0x02, 0x7F, 0x00], 0x81),
        // PUBLISH "t", Payload Format Indicator twice.
        (
            &[0x30, 0x08, 0x00, 0x01, b't', 0x04, 0x01, 0x00, 0x01, 0x00],
            0x82,
        ),
        // SUBSCRIBE id 1, Subscription Identifier 0, filter "t" QoS 0.
        (
            &[
                0x82, 0x08, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b't', 0x00,
            ],
            0x82,
        ),
        // PUBLISH "t", Topic Alias 0.
        (
            &[0x30, 0x07, 0x00, 0x01, b't', 0x03, 0x23, 0x00, 0x00],
            0x94,
        ),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        let mut c = Client::connect_v5(addr, &format!("bad{i}"), &[]);
        c.send_raw(bytes);
        assert_eq!(c.expect_disconnect(), *want, "case {i}: {bytes:02x?}");
    }
}

// ---------------------------------------------------------------- flow control and size

/// [MQTT-3.3.4-9] [MQTT-4.9.0-2] never more unacknowledged QoS 1 PUBLISHes than the client's
/// Receive Maximum; each PUBACK lets one more through; [MQTT-4.9.0-3] [MQTT-3.3.4-10] other
/// packets are answered meanwhile.
#[test]
fn v5_mqtt_3_3_4_9_receive_maximum_bounds_inflight() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "slow", &[Property::ReceiveMaximum(2)]);
    assert_eq!(
        c.subscribe_opts(1, &[("rm", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut p = Client::connect_v5(addr, "fast", &[]);
    for i in 0..5u16 {
        p.send_publish(
            "rm",
            &[i as u8],
            QosPid::AtLeastOnce(pid(i + 1)),
            false,
            &[],
        );
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    }
    let first = c.recv_publish();
    let second = c.recv_publish();
    c.expect_nothing();
    c.send_raw(&[0xC0, 0x00]);
    assert_eq!(c.recv(), Some(Packet::PingResp), "[MQTT-3.3.4-10]");
    for held in [first, second] {
        c.send(&Packet::PubAck(Ack::new(held.qos.packet_id().unwrap())));
        let next = c.recv_publish();
        assert!(matches!(next.qos, QosPid::AtLeastOnce(_)));
    }
    c.expect_nothing();
}

/// Inbound flow control: a client with more QoS 2 PUBLISHes awaiting PUBREL than the
/// broker's Receive Maximum gets DISCONNECT 0x93.
#[test]
fn v5_receive_maximum_exceeded_sends_0x93() {
    let broker = start_with(|c| c.receive_maximum = 2);
    let (mut c, ack) = Client::connect_v5_with(broker.local_addr(), Client::v5("eager", &[]));
    assert!(
        ack.properties
            .iter()
            .any(|p| p == Property::ReceiveMaximum(2))
    );
    for i in 1..=3 {
        c.send_publish("q2", b"x", QosPid::ExactlyOnce(pid(i)), false, &[]);
    }
    assert_eq!(c.expect_disconnect(), 0x93);
}

/// [MQTT-3.1.2-24] [MQTT-3.1.2-25] a PUBLISH larger than the client's Maximum Packet Size is
/// not sent (and a QoS 1 one counts as delivered): the next small message arrives.
#[test]
fn v5_mqtt_3_1_2_24_maximum_packet_size() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "small", &[Property::MaximumPacketSize(100)]);
    assert_eq!(
        c.subscribe_opts(1, &[("mps", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut p = Client::connect_v5(addr, "big", &[]);
    for (i, (len, qos)) in [(500, 0u8), (500, 1), (10, 1)].into_iter().enumerate() {
        let id = pid(i as u16 + 1);
        let q = if qos == 0 {
            QosPid::AtMostOnce
        } else {
            QosPid::AtLeastOnce(id)
        };
        p.send_publish("mps", &vec![b'x'; len], q, false, &[]);
        if qos == 1 {
            assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
        }
    }
    let got = c.recv_publish_ack();
    assert_eq!(got.payload.len(), 10, "only the one that fits");
    c.expect_nothing();
    let dropped = broker.stats().dropped_too_large.load(Ordering::Relaxed);
    assert_eq!(
        dropped, 2,
        "both oversized deliveries counted [MQTT-3.1.2-25]"
    );
}

// ---------------------------------------------------------------- PUBLISH

/// [MQTT-3.3.2-12] every alias up to the announced maximum is accepted and names its topic on
/// later PUBLISHes with an empty topic; [MQTT-3.3.2-8] alias 0 and aliases above the maximum
/// get DISCONNECT 0x94.
#[test]
fn v5_mqtt_3_3_2_12_inbound_topic_aliases() {
    let broker = start_with(|c| c.topic_alias_maximum = 3);
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "alias/#");
    let mut p = Client::connect_v5(addr, "aliaser", &[]);
    p.send_publish(
        "alias/x",
        b"1",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(3)],
    );
    p.send_publish(
        "",
        b"2",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(3)],
    );
    for want in [b"1", b"2"] {
        let got = w.recv_publish();
        assert_eq!(got.topic.as_str(), "alias/x");
        assert_eq!(&got.payload[..], want);
        assert!(
            !prop_ids(&got.properties).contains(&0x23),
            "the alias is per hop"
        );
    }
    p.send_publish(
        "alias/y",
        b"3",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(4)],
    );
    assert_eq!(p.expect_disconnect(), 0x94);
    w.expect_nothing();
}

/// [MQTT-3.3.2-7] aliases do not carry over to a new connection; [MQTT-4.7.3-1] an empty topic
/// without a known alias is a protocol error.
#[test]
fn v5_mqtt_3_3_2_7_aliases_are_per_connection() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "a", &[Property::SessionExpiryInterval(60)]);
    p.send_publish(
        "t",
        b"1",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(1)],
    );
    p.disconnect();
    let mut again = Client::v5("a", &[Property::SessionExpiryInterval(60)]);
    again.clean_start = false;
    let (mut p, _) = Client::connect_v5_with(addr, again);
    p.send_publish(
        "",
        b"2",
        QosPid::AtMostOnce,
        false,
        &[Property::TopicAlias(1)],
    );
    assert_eq!(p.expect_disconnect(), 0x82);
}

/// [MQTT-3.3.2-4] [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18]
/// [MQTT-3.3.2-20] Payload Format Indicator, Response Topic, Correlation Data, Content Type
/// and User Properties reach 5.0 subscribers unchanged and in order; 3.1.1 subscribers get
/// the message without them.
#[test]
fn v5_mqtt_3_3_2_18_properties_forwarded_unchanged() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "props");
    let mut old = Client::connect(addr, "old");
    old.subscribe(&[("props", QoS::AtLeastOnce)]);
    let sent = [
        Property::PayloadFormatIndicator(1),
        Property::UserProperty("k".into(), "1".into()),
        Property::ResponseTopic("reply/here".into()),
        Property::CorrelationData(Bytes::from_static(&[0x00, 0xFF, 0x10])),
        Property::UserProperty("j".into(), "2".into()),
        Property::ContentType("text/plain".into()),
        Property::UserProperty("k".into(), "3".into()),
    ];
    for qos in [QosPid::AtMostOnce, QosPid::AtLeastOnce(pid(7))] {
        let mut p = Client::connect_v5(addr, "p", &[]);
        p.send_publish("props", b"hello", qos, false, &sent);
        if qos != QosPid::AtMostOnce {
            assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
        }
        let got = w.recv_publish_ack();
        let got: Vec<Property> = got.properties.iter().collect();
        assert_eq!(got, sent);
        assert_eq!(&old.recv_publish_ack().payload[..], b"hello");
    }
}

/// [MQTT-3.3.2-6] the subscriber gets what is left of the Message Expiry Interval;
/// [MQTT-3.3.2-5] a message that expired while queued for an offline session is not sent.
#[test]
fn v5_mqtt_3_3_2_5_message_expiry() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "exp/live");
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish(
        "exp/live",
        b"x",
        QosPid::AtMostOnce,
        false,
        &[Property::MessageExpiryInterval(60)],
    );
    let got = w.recv_publish();
    let left = got.properties.find(|p| match p {
        Property::MessageExpiryInterval(s) => Some(s),
        _ => None,
    });
    assert!(matches!(left, Some(59..=60)), "{left:?}");

    let persistent = || {
        let mut c = Client::v5("offline", &[Property::SessionExpiryInterval(60)]);
        c.clean_start = false;
        Client::connect_v5_with(addr, c).0
    };
    let mut s = persistent();
    assert_eq!(
        s.subscribe_opts(1, &[("exp/q", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    s.disconnect();
    let short = [Property::MessageExpiryInterval(1)];
    p.send_publish(
        "exp/q",
        b"stale",
        QosPid::AtLeastOnce(pid(1)),
        false,
        &short,
    );
    p.send_publish("exp/q", b"fresh", QosPid::AtLeastOnce(pid(2)), false, &[]);
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    // No event marks an expiry: let the first message's interval run out while the
    // session is offline.
    std::thread::sleep(Duration::from_millis(1100));
    let mut s = persistent();
    assert_eq!(&s.recv_publish_ack().payload[..], b"fresh");
    s.expect_nothing();
}

/// [MQTT-3.3.2-5] a retained message whose Message Expiry Interval has passed is not sent to
/// a new subscriber; one still alive is, with what is left of its interval [MQTT-3.3.2-6].
#[test]
fn v5_mqtt_3_3_2_5_retained_message_expiry() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (topic, secs) in [("rexp/short", 1), ("rexp/long", 600)] {
        let expiry = [Property::MessageExpiryInterval(secs)];
        p.send_publish(topic, b"r", QosPid::AtLeastOnce(pid(1)), true, &expiry);
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    }
    // No event marks an expiry: let the short interval run out.
    std::thread::sleep(Duration::from_millis(1100));
    for round in 0..2 {
        let mut s = Client::connect_v5(addr, &format!("s{round}"), &[]);
        assert_eq!(
            s.subscribe_opts(1, &[("rexp/#", opts(QoS::AtLeastOnce))], None),
            [1]
        );
        let got = s.recv_publish_ack();
        assert_eq!(&got.topic[..], "rexp/long", "[MQTT-3.3.2-5] round {round}");
        let left = got.properties.find(|p| match p {
            Property::MessageExpiryInterval(s) => Some(s),
            _ => None,
        });
        assert!(matches!(left, Some(590..=599)), "[MQTT-3.3.2-6] {left:?}");
        s.expect_nothing();
    }
}

/// Payload Format Indicator 1 with a payload that is not UTF-8: PUBACK 0x99 and not routed;
/// at QoS 0, DISCONNECT 0x99.
#[test]
fn v5_payload_format_invalid() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "pf");
    let mut p = Client::connect_v5(addr, "p", &[]);
    let utf8 = [Property::PayloadFormatIndicator(1)];
    p.send_publish(
        "pf",
        &[0xC3, 0x28],
        QosPid::AtLeastOnce(pid(1)),
        false,
        &utf8,
    );
    match p.recv() {
        Some(Packet::PubAck(a)) => assert_eq!(a.reason.0, 0x99),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    w.expect_nothing();
    p.send_publish("pf", &[0xFF], QosPid::AtMostOnce, false, &utf8);
    assert_eq!(p.expect_disconnect(), 0x99);
}

/// [MQTT-3.4.2-1] PUBACK 0x10 when no subscriber matched, 0x00 when one did; PUBREC alike
/// [MQTT-3.5.2-1].
#[test]
fn v5_mqtt_3_4_2_1_no_matching_subscribers() {
    let broker = start();
    let addr = broker.local_addr();
    let _w = watcher(addr, "w", "some/one");
    let mut p = Client::connect_v5(addr, "p", &[]);
    let reason = |p: &mut Client| match p.recv() {
        Some(Packet::PubAck(a) | Packet::PubRec(a)) => a.reason.0,
        other => panic!("expected an ack, got {other:?}"),
    };
    p.send_publish("no/one", b"x", QosPid::AtLeastOnce(pid(1)), false, &[]);
    assert_eq!(reason(&mut p), 0x10);
    p.send_publish("some/one", b"x", QosPid::AtLeastOnce(pid(2)), false, &[]);
    assert_eq!(reason(&mut p), 0x00);
    p.send_publish("no/one", b"x", QosPid::ExactlyOnce(pid(3)), false, &[]);
    assert_eq!(reason(&mut p), 0x10);
}

/// [MQTT-3.7.2-1] PUBREL for an id the broker does not hold: PUBCOMP 0x92; for a held one,
/// 0x00 [MQTT-4.3.3-11].
#[test]
fn v5_mqtt_3_7_2_1_pubcomp_for_unknown_id() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "c", &[]);
    c.send(&Packet::PubRel(Ack::new(pid(9))));
    match c.recv() {
        Some(Packet::PubComp(a)) => assert_eq!((a.packet_id, a.reason.0), (pid(9), 0x92)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    c.send_publish("q2", b"x", QosPid::ExactlyOnce(pid(4)), false, &[]);
    assert!(matches!(c.recv(), Some(Packet::PubRec(_))));
    c.send(&Packet::PubRel(Ack::new(pid(4))));
    match c.recv() {
        Some(Packet::PubComp(a)) => assert_eq!(a.reason.0, 0x00),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

/// The wrong acknowledgement for a delivery's QoS (PUBREC for QoS 1): DISCONNECT 0x82, as
/// Mosquitto closes.
#[test]
fn v5_wrong_ack_for_qos_closes() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = watcher(addr, "c", "wrong");
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("wrong", b"x", QosPid::AtLeastOnce(pid(1)), false, &[]);
    let got = c.recv_publish();
    c.send(&Packet::PubRec(Ack::new(got.qos.packet_id().unwrap())));
    assert_eq!(c.expect_disconnect(), 0x82);
}

/// [MQTT-4.4.0-2] a PUBACK with a failure reason still acknowledges: not re-sent on resume.
#[test]
fn v5_mqtt_4_4_0_2_failed_puback_is_an_ack() {
    let broker = start();
    let addr = broker.local_addr();
    let persistent = || {
        let mut c = Client::v5("refuser", &[Property::SessionExpiryInterval(60)]);
        c.clean_start = false;
        Client::connect_v5_with(addr, c).0
    };
    let mut c = persistent();
    assert_eq!(
        c.subscribe_opts(1, &[("f", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("f", b"x", QosPid::AtLeastOnce(pid(1)), false, &[]);
    let got = c.recv_publish();
    let mut nack = Ack::new(got.qos.packet_id().unwrap());
    nack.reason = ReasonCode::UNSPECIFIED_ERROR;
    c.send(&Packet::PubAck(nack));
    c.disconnect();
    let mut c = persistent();
    c.expect_nothing();
}

// ---------------------------------------------------------------- subscriptions

/// [MQTT-3.8.3-3] No Local: a client's own messages are not sent back to it; others get them.
#[test]
fn v5_mqtt_3_8_3_3_no_local() {
    let broker = start();
    let addr = broker.local_addr();
    let mut me = Client::connect_v5(addr, "me", &[]);
    let mut nl = opts(QoS::AtLeastOnce);
    nl.no_local = true;
    assert_eq!(me.subscribe_opts(1, &[("nl", nl)], None), [1]);
    let mut other = watcher(addr, "other", "nl");
    me.send_publish("nl", b"mine", QosPid::AtLeastOnce(pid(5)), false, &[]);
    assert!(matches!(me.recv(), Some(Packet::PubAck(_))));
    assert_eq!(&other.recv_publish_ack().payload[..], b"mine");
    me.expect_nothing();
    other.send_publish("nl", b"theirs", QosPid::AtMostOnce, false, &[]);
    assert_eq!(&me.recv_publish().payload[..], b"theirs");
}

/// [MQTT-3.8.3-3] with overlapping subscriptions: a No Local one adds nothing to the
/// session's own messages, which go at the QoS of those without it [MQTT-3.3.4-2]; others'
/// messages at the highest.
#[test]
fn v5_mqtt_3_8_3_3_no_local_overlapping_a_plain_subscription() {
    let broker = start();
    let addr = broker.local_addr();
    let mut me = Client::connect_v5(addr, "me", &[]);
    let mut nl = opts(QoS::ExactlyOnce);
    nl.no_local = true;
    assert_eq!(
        me.subscribe_opts(1, &[("ov/#", nl), ("ov/a", opts(QoS::AtMostOnce))], None),
        [2, 0]
    );
    me.send_publish("ov/a", b"mine", QosPid::AtLeastOnce(pid(5)), false, &[]);
    let mut own = None;
    for _ in 0..2 {
        match me.recv() {
            Some(Packet::PubAck(_)) => {}
            Some(Packet::Publish(p)) => own = Some(p),
            other => panic!("expected PUBACK and PUBLISH, got {other:?}"),
        }
    }
    let own = own.expect("its own message, through the plain subscription");
    assert_eq!(
        own.qos(),
        QoS::AtMostOnce,
        "at the plain subscription's QoS"
    );
    let mut other = Client::connect_v5(addr, "other", &[]);
    other.send_publish("ov/a", b"theirs", QosPid::AtLeastOnce(pid(6)), false, &[]);
    let theirs = me.recv_publish_ack();
    assert_eq!(
        theirs.qos(),
        QoS::AtLeastOnce,
        "min(published, highest granted)"
    );
}

/// [MQTT-3.3.1-12] Retain As Published 0: live deliveries have RETAIN 0; [MQTT-3.3.1-13] 1:
/// RETAIN as the publisher set it.
#[test]
fn v5_mqtt_3_3_1_13_retain_as_published() {
    let broker = start();
    let addr = broker.local_addr();
    let mut plain = Client::connect_v5(addr, "plain", &[]);
    assert_eq!(
        plain.subscribe_opts(1, &[("rap/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut rap = Client::connect_v5(addr, "rap", &[]);
    let mut o = opts(QoS::AtLeastOnce);
    o.retain_as_published = true;
    assert_eq!(rap.subscribe_opts(1, &[("rap/#", o)], None), [1]);
    let mut p = Client::connect_v5(addr, "p", &[]);
    for (i, qos) in [QosPid::AtMostOnce, QosPid::AtLeastOnce(pid(3))]
        .into_iter()
        .enumerate()
    {
        p.send_publish(&format!("rap/{i}"), b"r", qos, true, &[]);
        assert!(!plain.recv_publish_ack().retain, "[MQTT-3.3.1-12]");
        assert!(rap.recv_publish_ack().retain, "[MQTT-3.3.1-13]");
    }
    p.send_publish("rap/x", b"n", QosPid::AtMostOnce, false, &[]);
    assert!(!rap.recv_publish().retain);
}

/// [MQTT-3.3.1-9] [MQTT-3.3.1-10] [MQTT-3.3.1-11] Retain Handling 0 sends retained messages
/// on every SUBSCRIBE, 1 only for a new subscription, 2 never.
#[test]
fn v5_mqtt_3_3_1_10_retain_handling() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("rh/a", b"kept", QosPid::AtLeastOnce(pid(1)), true, &[]);
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    let mut c = Client::connect_v5(addr, "c", &[]);
    for (handling, first, again) in [(0u8, true, true), (1, true, false), (2, false, false)] {
        let mut o = opts(QoS::AtMostOnce);
        o.retain_handling = handling;
        let filter = format!("rh/{}", ["+", "#", "a"][handling as usize]);
        for expected in [first, again] {
            assert_eq!(c.subscribe_opts(1, &[(&filter, o)], None), [0]);
            if expected {
                let got = c.recv_publish();
                assert!(got.retain, "[MQTT-3.3.1-9] RETAIN 1 on subscribe");
                assert_eq!(&got.payload[..], b"kept");
            } else {
                c.expect_nothing();
            }
        }
        c.unsubscribe(2, &[&filter]);
    }
}

/// [MQTT-3.3.4-3] [MQTT-3.3.4-4] subscription identifiers go out with the message: one
/// copy to a session with overlapping subscriptions carries every matching identifier.
#[test]
fn v5_mqtt_3_3_4_4_subscription_identifiers() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "ids", &[]);
    assert_eq!(
        c.subscribe_opts(1, &[("si/#", opts(QoS::AtLeastOnce))], Some(1)),
        [1]
    );
    assert_eq!(
        c.subscribe_opts(2, &[("si/b", opts(QoS::AtMostOnce))], Some(2)),
        [0]
    );
    assert_eq!(
        c.subscribe_opts(3, &[("si/+", opts(QoS::AtMostOnce))], None),
        [0]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    for qos in [QosPid::AtMostOnce, QosPid::AtLeastOnce(pid(1))] {
        p.send_publish("si/a", b"a", qos, false, &[]);
        assert_eq!(sub_ids(&c.recv_publish_ack()), [1]);
        p.send_publish("si/b", b"b", qos, false, &[]);
        assert_eq!(sub_ids(&c.recv_publish_ack()), [1, 2], "[MQTT-3.3.4-4]");
        if qos != QosPid::AtMostOnce {
            assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
            assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
        }
    }
    c.expect_nothing();
}

/// [MQTT-3.9.3-2] SUBACK codes from the 5.0 table, in order [MQTT-3.9.3-1]: 0x8F for an
/// invalid filter; [MQTT-3.11.3-1] UNSUBACK codes 0x00 / 0x11 in order.
#[test]
fn v5_mqtt_3_11_3_1_suback_and_unsuback_codes() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "codes", &[]);
    let codes = c.subscribe_opts(
        1,
        &[
            ("x", opts(QoS::ExactlyOnce)),
            ("y/#/z", opts(QoS::AtMostOnce)),
            ("$share/g+/t", opts(QoS::AtMostOnce)),
            ("w", opts(QoS::AtLeastOnce)),
        ],
        None,
    );
    assert_eq!(codes, [2, 0x8F, 0x8F, 1]);
    c.send(&Packet::Unsubscribe(Unsubscribe {
        packet_id: pid(9),
        properties: Properties::new(),
        filters: vec!["x".into(), "missing".into(), "w".into()],
    }));
    match c.recv() {
        Some(Packet::UnsubAck(a)) => {
            assert_eq!(a.packet_id, pid(9));
            let codes: Vec<u8> = a.codes.iter().map(|c| c.0).collect();
            assert_eq!(codes, [0x00, 0x11, 0x00]);
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

/// [MQTT-3.8.4-3] a SUBSCRIBE repeating a filter replaces the subscription, options and
/// identifier included.
#[test]
fn v5_mqtt_3_8_4_3_resubscribe_replaces() {
    let broker = start();
    let addr = broker.local_addr();
    let mut c = Client::connect_v5(addr, "re", &[]);
    assert_eq!(
        c.subscribe_opts(1, &[("re", opts(QoS::AtMostOnce))], Some(5)),
        [0]
    );
    assert_eq!(
        c.subscribe_opts(2, &[("re", opts(QoS::AtLeastOnce))], Some(6)),
        [1]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish("re", b"x", QosPid::AtLeastOnce(pid(1)), false, &[]);
    let got = c.recv_publish_ack();
    assert!(matches!(got.qos, QosPid::AtLeastOnce(_)));
    assert_eq!(sub_ids(&got), [6]);
    c.expect_nothing();
}

// ---------------------------------------------------------------- shared subscriptions

/// [MQTT-4.8.2-1] [MQTT-4.8.2-2] shared subscriptions: each message to one member of the
/// group, in turn; every group gets its copy; [MQTT-4.8.2-3] at the receiver's granted QoS;
/// no retained messages on subscribe.
#[test]
fn v5_mqtt_4_8_2_3_shared_subscription_round_robin() {
    let broker = start();
    let addr = broker.local_addr();
    let mut p = Client::connect_v5(addr, "p", &[]);
    p.send_publish(
        "work/old",
        b"retained",
        QosPid::AtLeastOnce(pid(1)),
        true,
        &[],
    );
    assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    let mut a = Client::connect_v5(addr, "a", &[]);
    let mut b = Client::connect_v5(addr, "b", &[]);
    let mut other = Client::connect_v5(addr, "other", &[]);
    assert_eq!(
        a.subscribe_opts(1, &[("$share/g/work/+", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    assert_eq!(
        b.subscribe_opts(1, &[("$share/g/work/+", opts(QoS::AtMostOnce))], None),
        [0]
    );
    assert_eq!(
        other.subscribe_opts(1, &[("$share/h/work/#", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    a.expect_nothing();
    for i in 0..4u16 {
        p.send_publish(
            "work/x",
            &[i as u8],
            QosPid::AtLeastOnce(pid(i + 2)),
            false,
            &[],
        );
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    }
    let from_a: Vec<_> = (0..2).map(|_| a.recv_publish_ack()).collect();
    let from_b: Vec<_> = (0..2).map(|_| b.recv_publish_ack()).collect();
    assert!(
        from_a
            .iter()
            .all(|m| matches!(m.qos, QosPid::AtLeastOnce(_)))
    );
    assert!(
        from_b.iter().all(|m| m.qos == QosPid::AtMostOnce),
        "[MQTT-4.8.2-3]"
    );
    let mut all: Vec<u8> = from_a.iter().chain(&from_b).map(|m| m.payload[0]).collect();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3], "each message once within the group");
    for i in 0..4 {
        assert_eq!(
            other.recv_publish_ack().payload[0],
            i,
            "the other group gets all"
        );
    }
    a.expect_nothing();
    b.expect_nothing();
}

/// Members that are offline are skipped while one is online; an unsubscribed member gets
/// nothing more.
#[test]
fn v5_shared_subscription_skips_offline_members() {
    let broker = start();
    let addr = broker.local_addr();
    let persistent = |id: &str| {
        let mut c = Client::v5(id, &[Property::SessionExpiryInterval(60)]);
        c.clean_start = false;
        Client::connect_v5_with(addr, c).0
    };
    let mut gone = persistent("gone");
    assert_eq!(
        gone.subscribe_opts(1, &[("$share/g/s", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    gone.disconnect();
    let mut here = persistent("here");
    assert_eq!(
        here.subscribe_opts(1, &[("$share/g/s", opts(QoS::AtLeastOnce))], None),
        [1]
    );
    let mut p = Client::connect_v5(addr, "p", &[]);
    for i in 0..4u16 {
        p.send_publish("s", &[i as u8], QosPid::AtLeastOnce(pid(i + 1)), false, &[]);
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    }
    for i in 0..4 {
        assert_eq!(here.recv_publish_ack().payload[0], i);
    }
    let mut gone = persistent("gone");
    gone.expect_nothing();
}

/// Spec 4.8.2: a QoS 1 message owed to a shared-group member whose session ends (sent and
/// unacknowledged, or queued) goes to another member instead of being lost with it.
#[test]
fn v5_shared_subscription_owed_messages_go_to_another_member() {
    let broker = start();
    let addr = broker.local_addr();
    let mut leaver = Client::connect_v5(addr, "leaver", &[]); // expiry 0: ends at the close
    let mut stayer = Client::connect_v5(addr, "stayer", &[]);
    for c in [&mut leaver, &mut stayer] {
        assert_eq!(
            c.subscribe_opts(1, &[("$share/g/owed", opts(QoS::AtLeastOnce))], None),
            [1]
        );
    }
    let mut p = Client::connect_v5(addr, "p", &[]);
    for i in 1..=2u16 {
        p.send_publish("owed", &[i as u8], QosPid::AtLeastOnce(pid(i)), false, &[]);
        assert!(matches!(p.recv(), Some(Packet::PubAck(_))));
    }
    // One each, round-robin; the leaver never acknowledges its one.
    let kept = leaver.recv_publish().payload[0];
    let first = stayer.recv_publish_ack().payload[0];
    assert_ne!(kept, first, "round-robin: one message each");
    leaver.drop_connection();
    let handed = stayer.recv_publish_ack();
    assert_eq!(
        handed.payload[0], kept,
        "the leaver's unacknowledged message came over"
    );
    stayer.expect_nothing();
}

/// [MQTT-3.8.3-4] No Local on a shared subscription is a protocol error: DISCONNECT 0x82.
#[test]
fn v5_mqtt_3_8_3_4_no_local_on_shared_subscription() {
    let broker = start();
    let mut c = Client::connect_v5(broker.local_addr(), "nl", &[]);
    let mut o = opts(QoS::AtMostOnce);
    o.no_local = true;
    c.send(&Packet::Subscribe(vireo_codec::Subscribe {
        packet_id: pid(1),
        properties: Properties::new(),
        filters: vec![("$share/g/t".into(), o)],
    }));
    assert_eq!(c.expect_disconnect(), 0x82);
}

/// With shared subscriptions switched off, `$share/` filters get 0x9E and CONNACK says so.
#[test]
fn v5_shared_subscriptions_off() {
    let broker = start_with(|c| c.shared_subscriptions = false);
    let (mut c, ack) = Client::connect_v5_with(broker.local_addr(), Client::v5("c", &[]));
    assert!(
        ack.properties
            .iter()
            .any(|p| p == Property::SharedSubscriptionAvailable(0))
    );
    let codes = c.subscribe_opts(1, &[("$share/g/t", opts(QoS::AtMostOnce))], None);
    assert_eq!(codes, [0x9E]);
}

/// A broker shutting down publishes the Wills still to come, delayed ones too, since the
/// sessions end with it [MQTT-3.1.2-8]; subscribers get them before their DISCONNECT 0x8B
/// Server shutting down. Several Will holders, so that some sit on the watcher's worker and
/// some on the other.
#[test]
fn v5_mqtt_3_1_2_8_shutdown_publishes_wills_then_disconnects() {
    let broker = start();
    let addr = broker.local_addr();
    let mut w = watcher(addr, "w", "bye/#");
    let mut holders = Vec::new();
    for i in 0..6 {
        let mut connect = Client::v5(&format!("h{i}"), &[Property::SessionExpiryInterval(3600)]);
        // Half of them with a Will Delay that would outlast the test.
        let delay: &[Property] = if i % 2 == 0 {
            &[Property::WillDelayInterval(3600)]
        } else {
            &[]
        };
        connect.will = Some(will_with_properties(&format!("bye/h{i}"), "gone", delay));
        holders.push(Client::connect_v5_with(addr, connect).0);
    }
    // One whose connection already went: its delayed Will waits in the session.
    let mut away = Client::v5("away", &[Property::SessionExpiryInterval(3600)]);
    away.will = Some(will_with_properties(
        "bye/away",
        "gone",
        &[Property::WillDelayInterval(3600)],
    ));
    Client::connect_v5_with(addr, away).0.drop_connection();
    let stopping = std::thread::spawn(move || broker.shutdown());
    let mut got: Vec<String> = (0..7)
        .map(|_| w.recv_publish_ack().topic.to_string())
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            "bye/away", "bye/h0", "bye/h1", "bye/h2", "bye/h3", "bye/h4", "bye/h5"
        ]
    );
    assert_eq!(w.expect_disconnect(), 0x8B);
    for mut h in holders {
        assert_eq!(h.expect_disconnect(), 0x8B);
    }
    stopping.join().unwrap();
}
