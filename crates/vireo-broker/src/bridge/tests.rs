//! The bridge's protocol on virtual time: packets in, the bytes it writes decoded back.
#![allow(clippy::unwrap_used)]

use super::*;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn spec(version: ProtocolVersion) -> BridgeSpec {
    BridgeSpec {
        name: "edge".into(),
        remote_version: version,
        try_private: true,
        client_id: "host.edge".into(),
        clean_session: false,
        keep_alive: 10,
        username: Some("bridge".into()),
        password: Some(Bytes::from_static(b"s3cret")),
        rules: vec![
            TopicRule::new(
                "up/#",
                Direction::Out,
                QoS::ExactlyOnce,
                "site/",
                "fleet/s1/",
            )
            .unwrap(),
            TopicRule::new(
                "down/#",
                Direction::In,
                QoS::ExactlyOnce,
                "site/",
                "fleet/s1/",
            )
            .unwrap(),
            TopicRule::new("chat/#", Direction::Both, QoS::AtLeastOnce, "", "").unwrap(),
        ],
        max_inflight: 10,
        connect_timeout: SECS(5),
        reconnect_min: SECS(1),
        reconnect_max: SECS(8),
        maximum_packet_size: 1 << 20,
        max_topic_length: 65_535,
        max_topic_levels: 128,
    }
}

fn id(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

fn drain(buf: &mut BytesMut, version: ProtocolVersion) -> Vec<Packet> {
    let mut out = Vec::new();
    while let Some(p) = vireo_codec::decode(buf, version, usize::MAX).unwrap() {
        out.push(p);
    }
    assert!(buf.is_empty(), "a partial packet was written");
    out
}

struct H {
    b: Bridge,
    t0: Instant,
    v: ProtocolVersion,
}

impl H {
    fn new(v: ProtocolVersion) -> Self {
        let t0 = Instant::now();
        Self {
            b: Bridge::new(spec(v), t0),
            t0,
            v,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + SECS(secs)
    }

    fn remote(&mut self) -> Vec<Packet> {
        drain(&mut self.b.remote_out, self.v)
    }

    fn local(&mut self) -> Vec<Packet> {
        drain(&mut self.b.local_out, ProtocolVersion::V5)
    }

    /// Both connections up, their subscriptions drained.
    fn up(v: ProtocolVersion) -> Self {
        let mut h = Self::new(v);
        h.local_ready();
        assert_eq!(h.b.tick(h.t0), Some(Action::Connect));
        h.b.remote_out.clear(); // the CONNECT
        h.connack(false, h.t0);
        h.local();
        h.remote();
        h
    }

    /// The local CONNACK and SUBACK: the bridge may now connect to the remote.
    fn local_ready(&mut self) {
        self.b
            .on_local(Packet::ConnAck(ConnAck::default()), self.t0)
            .unwrap();
        let ack = vireo_codec::SubAck::new(PacketId::MIN, vec![ReasonCode::GRANTED_QOS_2; 2]);
        self.b.on_local(Packet::SubAck(ack), self.t0).unwrap();
    }

    fn connack(&mut self, session_present: bool, now: Instant) {
        let ack = ConnAck::new(session_present, ReasonCode::SUCCESS);
        self.b.on_remote(Packet::ConnAck(ack), now).unwrap();
    }

    fn local_publish(&mut self, topic: &str, qos: QosPid, now: Instant) {
        let mut p = Publish::new(TopicName::new(topic).unwrap(), &b"m"[..]);
        p.qos = qos;
        self.b.on_local(Packet::Publish(p), now).unwrap();
    }

    fn remote_publish(&mut self, topic: &str, qos: QosPid, dup: bool, now: Instant) {
        let mut p = Publish::new(TopicName::new(topic).unwrap(), &b"m"[..]);
        p.qos = qos;
        p.dup = dup;
        self.b.on_remote(Packet::Publish(p), now).unwrap();
    }
}

fn publish(p: &Packet) -> &Publish {
    match p {
        Packet::Publish(p) => p,
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

#[test]
fn connects_with_its_credentials_and_subscribes_on_both_sides() {
    let mut h = H::new(ProtocolVersion::V5);
    h.b.on_local(Packet::ConnAck(ConnAck::default()), h.t0)
        .unwrap();
    let local = h.local();
    let Packet::Subscribe(s) = &local[0] else {
        panic!("{local:?}")
    };
    let filters: Vec<_> = s.filters.iter().map(|(f, o)| (&**f, *o)).collect();
    let opts = |qos| SubscriptionOptions {
        qos,
        no_local: true,
        retain_as_published: true,
        retain_handling: 0,
    };
    assert_eq!(
        filters,
        [
            ("site/up/#", opts(QoS::ExactlyOnce)),
            ("chat/#", opts(QoS::AtLeastOnce))
        ]
    );

    assert_eq!(
        h.b.tick(h.t0),
        None,
        "the remote waits for the local SUBACK"
    );
    h.local_ready();
    h.local();
    assert_eq!(h.b.tick(h.t0), Some(Action::Connect));
    let Packet::Connect(c) = &h.remote()[0] else {
        panic!()
    };
    assert_eq!(&*c.client_id, "host.edge");
    assert!(!c.clean_start);
    assert_eq!(c.keep_alive, 10);
    assert_eq!(c.username.as_deref(), Some("bridge"));
    assert_eq!(c.password.as_deref(), Some(&b"s3cret"[..]));
    h.connack(false, h.t0);
    let Packet::Subscribe(s) = &h.remote()[0] else {
        panic!()
    };
    let filters: Vec<_> = s.filters.iter().map(|(f, o)| (&**f, *o)).collect();
    assert_eq!(
        filters,
        [
            ("fleet/s1/down/#", opts(QoS::ExactlyOnce)),
            ("chat/#", opts(QoS::AtLeastOnce))
        ]
    );
    assert!(h.b.is_up());
}

#[test]
fn a_311_bridge_sets_the_protocol_level_top_bit_unless_told_not_to() {
    for (try_private, level) in [(true, 0x84), (false, 0x04)] {
        let mut s = spec(ProtocolVersion::V311);
        s.try_private = try_private;
        let t0 = Instant::now();
        let mut b = Bridge::new(s, t0);
        b.on_local(Packet::ConnAck(ConnAck::default()), t0).unwrap();
        let ack = vireo_codec::SubAck::new(PacketId::MIN, vec![ReasonCode::GRANTED_QOS_2; 2]);
        b.on_local(Packet::SubAck(ack), t0).unwrap();
        assert_eq!(b.tick(t0), Some(Action::Connect));
        // 0x10, remaining length, 0x00 0x04 "MQTT", level.
        assert_eq!(&b.remote_out[2..8], b"\x00\x04MQTT");
        assert_eq!(b.remote_out[8], level);
    }
}

#[test]
fn the_password_never_shows_in_debug_output() {
    let text = format!(
        "{:?}",
        Bridge::new(spec(ProtocolVersion::V5), Instant::now())
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("<redacted>"));
}

#[test]
fn qos1_out_is_acknowledged_locally_only_once_the_remote_has_it() {
    let mut h = H::up(ProtocolVersion::V5);
    h.local_publish("site/up/t", QosPid::AtLeastOnce(id(5)), h.t0);
    let sent = h.remote();
    let p = publish(&sent[0]);
    assert_eq!(&*p.topic, "fleet/s1/up/t");
    assert_eq!(p.qos(), QoS::AtLeastOnce);
    assert!(h.local().is_empty(), "acknowledged before the remote did");
    let rid = p.qos.packet_id().unwrap();
    h.b.on_remote(Packet::PubAck(Ack::new(rid)), h.t0).unwrap();
    assert_eq!(h.local(), [Packet::PubAck(Ack::new(id(5)))]);
    assert_eq!(h.b.stats().forwarded_out, 1);
}

#[test]
fn qos1_published_while_the_remote_is_away_goes_when_it_returns() {
    let mut h = H::up(ProtocolVersion::V5);
    h.b.remote_lost(h.t0, 1.0);
    for n in 1..=3 {
        h.local_publish("chat/room", QosPid::AtLeastOnce(id(n)), h.t0);
    }
    h.local_publish("chat/room", QosPid::AtMostOnce, h.t0);
    assert!(h.remote().is_empty() && h.local().is_empty());
    assert_eq!(h.b.stats().dropped, 1, "QoS 0 is not kept");
    // Backoff: the first retry waits reconnect_min.
    assert_eq!(h.b.next_deadline(), h.at(1));
    assert_eq!(h.b.tick(h.at(0)), None);
    assert_eq!(h.b.tick(h.at(1)), Some(Action::Connect));
    h.remote();
    h.connack(false, h.at(1));
    let sent = h.remote();
    assert!(matches!(sent[0], Packet::Subscribe(_)));
    assert_eq!(sent.len(), 4);
    assert!(
        sent[1..]
            .iter()
            .all(|p| publish(p).qos() == QoS::AtLeastOnce)
    );
}

/// [MQTT-7.0.0-1] the bridge meets the client's rules: [MQTT-4.4.0-1] unacknowledged PUBLISH
/// and PUBREL re-sent with their ids, [MQTT-3.3.1-1] the PUBLISH with DUP.
#[test]
fn unacknowledged_messages_are_sent_again_with_dup_to_a_kept_session() {
    let mut h = H::up(ProtocolVersion::V5);
    h.local_publish("chat/a", QosPid::AtLeastOnce(id(1)), h.t0);
    h.local_publish("site/up/b", QosPid::ExactlyOnce(id(2)), h.t0);
    let sent = h.remote();
    let (r1, r2) = (
        publish(&sent[0]).qos.packet_id().unwrap(),
        publish(&sent[1]).qos.packet_id().unwrap(),
    );
    // QoS 2 reached PUBREC (PUBREL sent) before the connection broke.
    h.b.on_remote(Packet::PubRec(Ack::new(r2)), h.t0).unwrap();
    assert_eq!(h.remote(), [Packet::PubRel(Ack::new(r2))]);
    assert_eq!(h.local(), [], "acknowledged locally only at PUBCOMP");
    h.b.remote_lost(h.t0, 1.0);
    h.b.tick(h.at(1));
    h.remote();
    h.connack(true, h.at(1));
    let again = h.remote();
    assert!(matches!(again[0], Packet::Subscribe(_)));
    let p = publish(&again[1]);
    assert!(p.dup, "[MQTT-4.4.0-1] re-sent with DUP");
    assert_eq!(p.qos.packet_id(), Some(r1));
    assert_eq!(again[2], Packet::PubRel(Ack::new(r2)));
    h.b.on_remote(Packet::PubComp(Ack::new(r2)), h.at(1))
        .unwrap();
    assert_eq!(h.local(), [Packet::PubRec(Ack::new(id(2)))]);
}

/// A kept session whose Receive Maximum shrank gets its re-sends as the new window allows
/// [MQTT-4.9.0-2], still with their ids.
#[test]
fn resends_to_a_kept_session_respect_a_lowered_receive_maximum() {
    let mut h = H::up(ProtocolVersion::V5);
    for n in 1..=5 {
        h.local_publish("chat/a", QosPid::AtLeastOnce(id(n)), h.t0);
    }
    let ids: Vec<_> = h
        .remote()
        .iter()
        .map(|p| publish(p).qos.packet_id().unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    h.b.remote_lost(h.t0, 1.0);
    h.b.tick(h.at(1));
    h.remote();
    let mut ack = ConnAck::new(true, ReasonCode::SUCCESS);
    ack.properties.push(Property::ReceiveMaximum(2));
    h.b.on_remote(Packet::ConnAck(ack), h.at(1)).unwrap();
    let again: Vec<_> = h.remote().into_iter().skip(1).collect(); // after the SUBSCRIBE
    let resent: Vec<_> = again
        .iter()
        .map(|p| publish(p).qos.packet_id().unwrap())
        .collect();
    assert_eq!(resent, ids[..2], "only the window's worth, oldest first");
    h.b.on_remote(Packet::PubAck(Ack::new(ids[0])), h.at(1))
        .unwrap();
    let next = h.remote();
    assert_eq!(next.len(), 1);
    assert!(publish(&next[0]).dup);
    assert_eq!(publish(&next[0]).qos.packet_id(), Some(ids[2]));
    assert_eq!(h.local(), [Packet::PubAck(Ack::new(id(1)))]);
}

/// A QoS 2 message the remote sent PUBREC for, then lost with its session (a restart without
/// persistence), is sent again as new: it was not yet acknowledged locally.
#[test]
fn qos2_released_to_a_remote_that_loses_its_session_is_sent_again() {
    let mut h = H::up(ProtocolVersion::V5);
    h.local_publish("site/up/x", QosPid::ExactlyOnce(id(4)), h.t0);
    let rid = publish(&h.remote()[0]).qos.packet_id().unwrap();
    h.b.on_remote(Packet::PubRec(Ack::new(rid)), h.t0).unwrap();
    h.remote();
    h.b.remote_lost(h.t0, 1.0);
    h.b.tick(h.at(1));
    h.remote();
    h.connack(false, h.at(1));
    let again = h.remote();
    let p = publish(&again[1]);
    assert_eq!(&*p.topic, "fleet/s1/up/x");
    assert!(!p.dup, "a new session: a new message");
    let rid = p.qos.packet_id().unwrap();
    assert_eq!(h.local(), []);
    h.b.on_remote(Packet::PubRec(Ack::new(rid)), h.at(1))
        .unwrap();
    h.b.on_remote(Packet::PubComp(Ack::new(rid)), h.at(1))
        .unwrap();
    assert_eq!(h.local(), [Packet::PubRec(Ack::new(id(4)))]);
}

#[test]
fn a_new_remote_session_gets_unacknowledged_messages_as_new_ones() {
    let mut h = H::up(ProtocolVersion::V5);
    h.local_publish("chat/a", QosPid::AtLeastOnce(id(1)), h.t0);
    h.remote();
    h.b.remote_lost(h.t0, 1.0);
    h.b.tick(h.at(1));
    h.remote();
    h.connack(false, h.at(1));
    let again = h.remote();
    let p = publish(&again[1]);
    assert!(!p.dup);
    assert_eq!(&*p.topic, "chat/a");
    h.b.on_remote(
        Packet::PubAck(Ack::new(p.qos.packet_id().unwrap())),
        h.at(1),
    )
    .unwrap();
    assert_eq!(h.local(), [Packet::PubAck(Ack::new(id(1)))]);
}

#[test]
fn qos2_out_completes_on_both_sides() {
    let mut h = H::up(ProtocolVersion::V5);
    h.local_publish("site/up/x", QosPid::ExactlyOnce(id(9)), h.t0);
    let rid = publish(&h.remote()[0]).qos.packet_id().unwrap();
    h.b.on_remote(Packet::PubRec(Ack::new(rid)), h.t0).unwrap();
    assert_eq!(h.remote(), [Packet::PubRel(Ack::new(rid))]);
    assert_eq!(h.local(), []);
    h.b.on_remote(Packet::PubComp(Ack::new(rid)), h.t0).unwrap();
    assert!(h.b.out_inflight.is_empty());
    assert_eq!(h.local(), [Packet::PubRec(Ack::new(id(9)))]);
    h.b.on_local(Packet::PubRel(Ack::new(id(9))), h.t0).unwrap();
    assert_eq!(h.local(), [Packet::PubComp(Ack::new(id(9)))]);
}

/// [MQTT-2.3.1-2] ids not in use; 5.0 [MQTT-4.9.0-2] no more in flight than its Receive
/// Maximum.
#[test]
fn the_remotes_receive_maximum_bounds_what_is_in_flight() {
    let mut h = H::new(ProtocolVersion::V5);
    h.local_ready();
    h.b.tick(h.t0);
    let mut ack = ConnAck::new(false, ReasonCode::SUCCESS);
    ack.properties.push(Property::ReceiveMaximum(2));
    h.b.on_remote(Packet::ConnAck(ack), h.t0).unwrap();
    h.remote();
    for n in 1..=3 {
        h.local_publish("chat/a", QosPid::AtLeastOnce(id(n)), h.t0);
    }
    let sent = h.remote();
    assert_eq!(sent.len(), 2);
    let first = publish(&sent[0]).qos.packet_id().unwrap();
    h.b.on_remote(Packet::PubAck(Ack::new(first)), h.t0)
        .unwrap();
    assert_eq!(
        h.remote().len(),
        1,
        "the third goes once one is acknowledged"
    );
}

#[test]
fn what_the_remotes_connack_forbids_is_not_sent() {
    let mut h = H::new(ProtocolVersion::V5);
    h.local_ready();
    h.b.tick(h.t0);
    let mut ack = ConnAck::new(false, ReasonCode::SUCCESS);
    ack.properties.push(Property::MaximumQoS(0));
    ack.properties.push(Property::RetainAvailable(0));
    ack.properties.push(Property::MaximumPacketSize(64));
    h.b.on_remote(Packet::ConnAck(ack), h.t0).unwrap();
    h.remote();
    h.local();
    let mut p = Publish::new(TopicName::new("chat/a").unwrap(), &b"m"[..]);
    p.qos = QosPid::AtLeastOnce(id(1));
    p.retain = true;
    h.b.on_local(Packet::Publish(p), h.t0).unwrap();
    let sent = h.remote();
    let p = publish(&sent[0]);
    assert_eq!((p.qos(), p.retain), (QoS::AtMostOnce, false));
    assert_eq!(h.local(), [Packet::PubAck(Ack::new(id(1)))]);
    // Larger than its Maximum Packet Size: dropped, and acknowledged locally.
    let mut big = Publish::new(TopicName::new("chat/a").unwrap(), vec![0u8; 100]);
    big.qos = QosPid::AtLeastOnce(id(2));
    h.b.on_local(Packet::Publish(big), h.t0).unwrap();
    assert!(h.remote().is_empty());
    assert_eq!(h.local(), [Packet::PubAck(Ack::new(id(2)))]);
    assert_eq!(h.b.stats().dropped, 1);
}

#[test]
fn qos1_in_is_acknowledged_to_the_remote_once_the_broker_has_it() {
    let mut h = H::up(ProtocolVersion::V311);
    h.remote_publish("fleet/s1/down/cmd", QosPid::AtLeastOnce(id(3)), false, h.t0);
    let local = h.local();
    let p = publish(&local[0]);
    assert_eq!(&*p.topic, "site/down/cmd");
    assert!(h.remote().is_empty());
    let lid = p.qos.packet_id().unwrap();
    h.b.on_local(Packet::PubAck(Ack::new(lid)), h.t0).unwrap();
    assert_eq!(h.remote(), [Packet::PubAck(Ack::new(id(3)))]);
    assert_eq!(h.b.stats().forwarded_in, 1);
}

#[test]
fn qos2_in_is_delivered_once_though_the_remote_sends_it_again() {
    let mut h = H::up(ProtocolVersion::V5);
    h.remote_publish("fleet/s1/down/x", QosPid::ExactlyOnce(id(7)), false, h.t0);
    // Re-sent before the broker answered: not published twice.
    h.remote_publish("fleet/s1/down/x", QosPid::ExactlyOnce(id(7)), true, h.t0);
    let local = h.local();
    assert_eq!(local.len(), 1);
    let lid = publish(&local[0]).qos.packet_id().unwrap();
    h.b.on_local(Packet::PubRec(Ack::new(lid)), h.t0).unwrap();
    assert_eq!(h.local(), [Packet::PubRel(Ack::new(lid))]);
    assert_eq!(h.remote(), [Packet::PubRec(Ack::new(id(7)))]);
    // Re-sent after PUBREC [MQTT-4.3.3-9]: PUBREC again, nothing delivered.
    h.remote_publish("fleet/s1/down/x", QosPid::ExactlyOnce(id(7)), true, h.t0);
    assert_eq!(h.remote(), [Packet::PubRec(Ack::new(id(7)))]);
    assert!(h.local().is_empty());
    h.b.on_remote(Packet::PubRel(Ack::new(id(7))), h.t0)
        .unwrap();
    assert_eq!(h.remote(), [Packet::PubComp(Ack::new(id(7)))]);
    h.b.on_local(Packet::PubComp(Ack::new(lid)), h.t0).unwrap();
    assert!(h.b.in_inflight.is_empty());
}

#[test]
fn qos2_in_stored_while_the_remote_was_away_is_acknowledged_when_resent() {
    let mut h = H::up(ProtocolVersion::V5);
    h.remote_publish("fleet/s1/down/x", QosPid::ExactlyOnce(id(4)), false, h.t0);
    let lid = publish(&h.local()[0]).qos.packet_id().unwrap();
    h.b.remote_lost(h.t0, 1.0);
    h.b.on_local(Packet::PubRec(Ack::new(lid)), h.t0).unwrap();
    h.b.tick(h.at(1));
    h.remote();
    h.connack(true, h.at(1));
    h.remote();
    h.local();
    h.remote_publish("fleet/s1/down/x", QosPid::ExactlyOnce(id(4)), true, h.at(1));
    assert_eq!(h.remote(), [Packet::PubRec(Ack::new(id(4)))]);
    assert!(h.local().is_empty(), "delivered twice");
}

/// [MQTT-7.0.0-1] as a client: [MQTT-3.1.2-23] never silent longer than the keep alive.
#[test]
fn keep_alive_pings_and_gives_up_on_a_silent_remote() {
    let mut h = H::up(ProtocolVersion::V5);
    assert_eq!(h.b.next_deadline(), h.at(10));
    assert_eq!(h.b.tick(h.at(9)), None);
    assert_eq!(h.b.tick(h.at(10)), None);
    assert_eq!(h.remote(), [Packet::PingReq]);
    h.b.on_remote(Packet::PingResp, h.at(11)).unwrap();
    // Sending alone does not keep it alive: the remote must be heard from too.
    h.local_publish("chat/a", QosPid::AtMostOnce, h.at(15));
    assert_eq!(h.b.tick(h.at(20)), None);
    assert!(!h.remote().contains(&Packet::PingReq));
    assert_eq!(
        h.b.tick(h.at(21)),
        None,
        "10 s after it was last heard from"
    );
    assert_eq!(h.remote(), [Packet::PingReq]);
    assert_eq!(h.b.tick(h.at(30)), None);
    assert_eq!(
        h.b.tick(h.at(31)),
        Some(Action::Close(Lost::KeepAliveTimeout))
    );
}

#[test]
fn a_late_or_refused_connack_backs_off_exponentially() {
    let mut h = H::new(ProtocolVersion::V5);
    h.local_ready();
    assert_eq!(h.b.tick(h.t0), Some(Action::Connect));
    assert_eq!(h.b.tick(h.at(4)), None);
    assert_eq!(h.b.tick(h.at(5)), Some(Action::Close(Lost::ConnackTimeout)));
    assert_eq!(h.b.remote_lost(h.at(5), 1.0), SECS(1));
    assert_eq!(h.b.tick(h.at(6)), Some(Action::Connect));
    let refused = ConnAck::new(false, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(
        h.b.on_remote(Packet::ConnAck(refused), h.at(6)),
        Err(Lost::Refused(ReasonCode::NOT_AUTHORIZED))
    );
    assert_eq!(h.b.remote_lost(h.at(6), 1.0), SECS(2));
    h.b.tick(h.at(8));
    h.connack(false, h.at(8));
    assert_eq!(h.b.remote_lost(h.at(9), 1.0), SECS(1), "success resets it");
}

#[test]
fn a_remote_breaking_the_protocol_is_dropped() {
    let mut h = H::up(ProtocolVersion::V5);
    let mut p = Publish::new(TopicName::new("chat/a").unwrap(), &b"m"[..]);
    p.properties.push(Property::TopicAlias(1));
    assert!(matches!(
        h.b.on_remote(Packet::Publish(p), h.t0),
        Err(Lost::Protocol(_))
    ));
    let mut fresh = H::new(ProtocolVersion::V5);
    fresh.local_ready();
    fresh.b.tick(fresh.t0);
    assert!(fresh.b.on_remote(Packet::PingResp, fresh.t0).is_err());
}

#[test]
fn both_ways_rules_do_not_echo() {
    // What the remote sends in on a `both` rule is published locally by the bridge; the local
    // subscription has No Local, so the broker does not hand it back. That half is the
    // broker's (tested from sockets); here: the bridge asks for No Local on both sides.
    let mut h = H::new(ProtocolVersion::V5);
    h.local_ready();
    h.b.tick(h.t0);
    h.connack(false, h.t0);
    let subs = [h.local(), h.remote()[1..].to_vec()];
    for packets in subs {
        let Packet::Subscribe(s) = &packets[0] else {
            panic!("{packets:?}")
        };
        assert!(
            s.filters
                .iter()
                .all(|(_, o)| o.no_local && o.retain_as_published)
        );
    }
}

/// A remote QoS 1 PUBLISH sent again (DUP) while the first copy is still on its way into
/// the broker is not published twice, nor acknowledged twice.
#[test]
fn qos1_in_resent_while_the_first_is_on_its_way_is_taken_once() {
    let mut h = H::up(ProtocolVersion::V311);
    h.remote_publish("fleet/s1/down/c", QosPid::AtLeastOnce(id(3)), false, h.t0);
    h.remote_publish("fleet/s1/down/c", QosPid::AtLeastOnce(id(3)), true, h.t0);
    let local = h.local();
    assert_eq!(local.len(), 1);
    let lid = publish(&local[0]).qos.packet_id().unwrap();
    h.b.on_local(Packet::PubAck(Ack::new(lid)), h.t0).unwrap();
    assert_eq!(h.remote(), [Packet::PubAck(Ack::new(id(3)))]);
    // Once acknowledged, the id is free for the remote to use again.
    h.remote_publish("fleet/s1/down/d", QosPid::AtLeastOnce(id(3)), false, h.t0);
    assert_eq!(h.local().len(), 1);
}

/// Both connections up, the local one with these CONNACK properties.
fn up_with_local(props: Vec<Property>, s: BridgeSpec) -> H {
    let t0 = Instant::now();
    let v = s.remote_version;
    let mut h = H {
        b: Bridge::new(s, t0),
        t0,
        v,
    };
    let mut ack = ConnAck::default();
    for p in props {
        ack.properties.push(p);
    }
    h.b.on_local(Packet::ConnAck(ack), t0).unwrap();
    let sub = vireo_codec::SubAck::new(PacketId::MIN, vec![ReasonCode::GRANTED_QOS_2; 2]);
    h.b.on_local(Packet::SubAck(sub), t0).unwrap();
    assert_eq!(h.b.tick(t0), Some(Action::Connect));
    h.b.remote_out.clear();
    h.connack(false, t0);
    h.local();
    h.remote();
    h
}

/// What the local broker would refuse, and close the bridge for, is fitted or dropped:
/// QoS lowered to its Maximum QoS [MQTT-3.2.2-11], retain cleared when it has none
/// [MQTT-3.2.2-14], too large for its Maximum Packet Size, topics over its limits, and a
/// payload that is not the UTF-8 its format indicator claims. Dropped ones are acknowledged
/// to the remote, which would only send them again.
#[test]
fn remote_messages_are_fitted_to_the_local_brokers_limits() {
    let mut s = spec(ProtocolVersion::V5);
    s.max_topic_levels = 4;
    let mut h = up_with_local(
        vec![
            Property::MaximumQoS(1),
            Property::RetainAvailable(0),
            Property::MaximumPacketSize(64),
        ],
        s,
    );
    let mut p = Publish::new(TopicName::new("fleet/s1/down/x").unwrap(), &b"m"[..]);
    p.qos = QosPid::ExactlyOnce(id(1));
    p.retain = true;
    h.b.on_remote(Packet::Publish(p), h.t0).unwrap();
    let local = h.local();
    let got = publish(&local[0]);
    assert_eq!((got.qos(), got.retain), (QoS::AtLeastOnce, false));
    let lid = got.qos.packet_id().unwrap();
    h.b.on_local(Packet::PubAck(Ack::new(lid)), h.t0).unwrap();
    assert_eq!(h.remote(), [Packet::PubRec(Ack::new(id(1)))]);

    let mut big = Publish::new(TopicName::new("fleet/s1/down/x").unwrap(), vec![b'x'; 100]);
    big.qos = QosPid::AtLeastOnce(id(2));
    h.b.on_remote(Packet::Publish(big), h.t0).unwrap();
    let mut deep = Publish::new(TopicName::new("fleet/s1/down/a/b/c").unwrap(), &b"m"[..]);
    deep.qos = QosPid::AtLeastOnce(id(3));
    h.b.on_remote(Packet::Publish(deep), h.t0).unwrap();
    let mut bad = Publish::new(
        TopicName::new("fleet/s1/down/x").unwrap(),
        &[0xC3, 0x28][..],
    );
    bad.qos = QosPid::AtLeastOnce(id(4));
    bad.properties.push(Property::PayloadFormatIndicator(1));
    h.b.on_remote(Packet::Publish(bad), h.t0).unwrap();
    assert_eq!(h.local(), [], "none of them reaches the broker");
    assert_eq!(
        h.remote(),
        [2, 3, 4].map(|n| Packet::PubAck(Ack::new(id(n))))
    );
    assert_eq!(h.b.stats().dropped, 3);
}

/// A broker with `max_keepalive` gives the bridge a Server Keep Alive: it pings when quiet.
#[test]
fn the_local_server_keep_alive_is_kept() {
    let mut h = up_with_local(
        vec![Property::ServerKeepAlive(5)],
        spec(ProtocolVersion::V5),
    );
    assert!(h.b.next_deadline() <= h.at(5));
    assert_eq!(h.b.tick(h.at(4)), None);
    assert_eq!(h.local(), []);
    h.b.tick(h.at(5));
    assert_eq!(h.local(), [Packet::PingReq]);
    h.b.on_local(Packet::PingResp, h.at(5)).unwrap();
    assert!(h.b.next_deadline() <= h.at(10));
}

/// [MQTT-3.2.2-21] a 5.0 remote's Server Keep Alive replaces ours.
#[test]
fn v5_the_remotes_server_keep_alive_replaces_ours() {
    let mut h = H::new(ProtocolVersion::V5);
    h.local_ready();
    h.b.tick(h.t0);
    h.remote();
    let mut ack = ConnAck::new(false, ReasonCode::SUCCESS);
    ack.properties.push(Property::ServerKeepAlive(3));
    h.b.on_remote(Packet::ConnAck(ack), h.t0).unwrap();
    h.remote();
    assert_eq!(h.b.next_deadline(), h.at(3));
    h.b.tick(h.at(3));
    assert_eq!(h.remote(), [Packet::PingReq]);
    assert_eq!(
        h.b.tick(h.at(6)),
        Some(Action::Close(Lost::KeepAliveTimeout))
    );
}

/// The local connection made again: what the broker had not acknowledged is published to
/// the new session, and nothing is acknowledged to the old one.
#[test]
fn a_new_local_connection_gets_what_the_old_one_did_not_take() {
    let mut h = H::up(ProtocolVersion::V5);
    h.remote_publish("fleet/s1/down/x", QosPid::AtLeastOnce(id(5)), false, h.t0);
    assert_eq!(h.local().len(), 1);
    h.local_publish("chat/a", QosPid::AtLeastOnce(id(8)), h.t0);
    let rid = publish(&h.remote()[0]).qos.packet_id().unwrap();
    h.b.local_lost();
    assert!(h.b.wants_remote_input());
    h.b.on_remote(Packet::PubAck(Ack::new(rid)), h.t0).unwrap();
    h.local_ready();
    let local = h.local();
    assert!(matches!(local[0], Packet::Subscribe(_)));
    let again = publish(&local[1]);
    assert_eq!(&*again.topic, "site/down/x");
    assert_eq!(
        local.len(),
        2,
        "no PUBACK for the old session's message: {local:?}"
    );
    h.b.on_local(
        Packet::PubAck(Ack::new(again.qos.packet_id().unwrap())),
        h.t0,
    )
    .unwrap();
    assert_eq!(h.remote(), [Packet::PubAck(Ack::new(id(5)))]);
}

/// A 3.1.1 remote was never told our packet size limit: a larger PUBLISH is skipped and
/// acknowledged instead of closing the connection (the remote would only send it again).
/// A 5.0 remote broke the Maximum Packet Size it was sent [MQTT-3.1.2-24].
#[test]
fn an_oversized_remote_publish_is_skipped_and_acknowledged() {
    let mut h = H::up(ProtocolVersion::V311);
    let mut p = Publish::new(TopicName::new("fleet/s1/down/x").unwrap(), vec![0u8; 2000]);
    p.qos = QosPid::AtLeastOnce(id(9));
    let mut buf = BytesMut::new();
    Packet::Publish(p)
        .encode(ProtocolVersion::V311, &mut buf)
        .unwrap();
    assert!(matches!(
        vireo_codec::decode(&mut buf.clone(), ProtocolVersion::V311, 1000),
        Err(vireo_codec::DecodeError::PacketTooLarge { .. })
    ));
    assert_eq!(h.b.remote_oversized(&buf[..10], h.t0), Ok(None));
    assert_eq!(h.b.remote_oversized(&buf[..40], h.t0), Ok(Some(buf.len())));
    assert_eq!(h.remote(), [Packet::PubAck(Ack::new(id(9)))]);
    assert_eq!(h.b.stats().dropped, 1);

    let mut v5 = H::up(ProtocolVersion::V5);
    assert!(v5.b.remote_oversized(&buf, v5.t0).is_err());
    // QoS 3 is malformed, not skipped [MQTT-3.3.1-4].
    let mut bad = buf.to_vec();
    bad[0] |= 0x06;
    assert!(h.b.remote_oversized(&bad, h.t0).is_err());
}

/// The bridge tells the broker its packet size limit, so a message that grew on its way out
/// (an alias resolved) is dropped by the broker [MQTT-3.1.2-25], not sent to a bridge that
/// would have to close on it.
#[test]
fn v5_the_local_connect_carries_the_maximum_packet_size() {
    let h = H::new(ProtocolVersion::V5);
    let c = h.b.local_connect();
    let max = c.properties.find(|p| match p {
        Property::MaximumPacketSize(n) => Some(n),
        _ => None,
    });
    assert_eq!(max, Some(1 << 20));
}

/// QoS 0 has no window: past `BUFFER_LIMIT` waiting for the remote, QoS 0 for it is dropped
/// (the local side is always read, so back-pressure cannot loop); the remote's socket is
/// left unread while as much waits for the broker, and a PINGRESP possibly waiting there
/// does not count as missing meanwhile.
#[test]
fn buffered_bytes_bound_what_the_bridge_holds() {
    let mut h = H::up(ProtocolVersion::V5);
    for _ in 0..20 {
        let p = Publish::new(TopicName::new("chat/a").unwrap(), vec![0u8; 32 * 1024]);
        h.b.on_local(Packet::Publish(p), h.t0).unwrap();
    }
    assert!(h.b.remote_out.len() >= BUFFER_LIMIT);
    assert!(h.b.remote_out.len() < BUFFER_LIMIT + 40 * 1024);
    assert!(h.b.stats().dropped >= 10);
    h.remote();
    while h.b.wants_remote_input() {
        let mut p = Publish::new(TopicName::new("chat/a").unwrap(), vec![0u8; 32 * 1024]);
        p.qos = QosPid::AtLeastOnce(id(1 + h.b.in_inflight.len() as u16));
        h.b.on_remote(Packet::Publish(p), h.t0).unwrap();
    }
    assert!(h.b.local_out.len() >= BUFFER_LIMIT);
    // Paused: the keep alive does not give up on a remote it is not reading.
    assert_eq!(h.b.tick(h.at(10)), None);
    assert_eq!(h.remote(), [Packet::PingReq]);
    assert_eq!(h.b.tick(h.at(25)), None);
    h.local();
    assert_eq!(
        h.b.tick(h.at(25)),
        Some(Action::Close(Lost::KeepAliveTimeout))
    );
}

/// [MQTT-2.3.1-2] with every packet id taken the message waits (no spin), and goes once one
/// is free.
#[test]
fn a_message_waits_when_every_packet_id_is_in_use() {
    let mut s = spec(ProtocolVersion::V5);
    s.max_inflight = u16::MAX;
    let t0 = Instant::now();
    let mut h = H {
        b: Bridge::new(s, t0),
        t0,
        v: ProtocolVersion::V5,
    };
    h.local_ready();
    h.b.tick(t0);
    h.connack(false, t0); // its SUBSCRIBE holds one id until the SUBACK
    h.b.remote_out.clear();
    for n in 1..=u16::MAX {
        h.local_publish("chat/a", QosPid::AtLeastOnce(id(n)), t0);
        h.b.remote_out.clear();
    }
    assert_eq!(h.b.out_inflight.len(), usize::from(u16::MAX) - 1);
    assert_eq!(h.b.out_queue.len(), 1);
    // Ids 2.. went to the messages (1 is the SUBSCRIBE's).
    h.b.on_remote(Packet::PubAck(Ack::new(id(2))), t0).unwrap();
    assert_eq!(h.b.out_queue.len(), 0);
    assert_eq!(h.remote().len(), 1);
}
