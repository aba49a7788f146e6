//! What the clients read: every event of the broker model applied in order, every byte it
//! wrote decoded and checked as the client it reaches would check it.

use vireo_codec::{Packet, Publish, QoS, QosPid, decode};

use super::super::broker::Event;
use super::super::client::{DState, Delivery, OwnStage};
use super::Harness;

impl Harness {
    pub(super) fn apply(&mut self) {
        let now = self.world.now;
        for event in std::mem::take(&mut self.world.events) {
            match event {
                Event::Wire(key, bytes) => self.receive(key, &bytes),
                Event::Closing(key, reason) => {
                    self.stats.closes += 1;
                    *self.stats.closed.entry(format!("{reason:?}")).or_default() += 1;
                    self.oracle.closing(key, now);
                }
                Event::SocketClosed(key) => {
                    let cc = &mut self.conns[key];
                    assert!(
                        cc.rx.is_empty(),
                        "the broker closed in the middle of a packet"
                    );
                    cc.closed = true;
                }
                Event::Disconnect(key, d) => self.oracle.disconnect(key, &d),
                Event::Accepted {
                    key,
                    client_id,
                    sid,
                    present,
                } => {
                    // The client learns this from CONNACK; taken from the decision so that a
                    // CONNACK lost with a close does not leave the client's model stale.
                    self.conns[key].sid = Some(sid);
                    self.owners.insert(sid, self.conns[key].client);
                    self.stats.accepted += 1;
                    self.stats.resumed += u64::from(present);
                    self.oracle.accepted(key, &client_id, present, now);
                }
                Event::Subscribed {
                    sid,
                    filter,
                    options,
                    granted,
                } => self.oracle.subscribed(sid, &filter, options, granted),
                Event::Unsubscribed { sid, filter } => self.oracle.unsubscribed(sid, &filter),
                Event::Routed(msg) => self.oracle.routed(&msg.payload, msg.qos),
                Event::Will(msg) => {
                    self.stats.wills += 1;
                    self.oracle.will_published(&msg.payload, now);
                }
                Event::Offered {
                    sid,
                    msg,
                    qos,
                    retained,
                } => {
                    self.stats.offers += 1;
                    self.stats.retained_offers += u64::from(retained);
                    self.oracle.offered(sid, &msg, qos, retained);
                }
            }
        }
    }

    /// Bytes the broker wrote to `key`, read as its client reads them.
    fn receive(&mut self, key: usize, bytes: &[u8]) {
        assert!(!self.conns[key].closed, "bytes written after the close");
        self.conns[key].rx.extend_from_slice(bytes);
        loop {
            let cc = &mut self.conns[key];
            let before = cc.rx.len();
            match decode(&mut cc.rx, cc.version, usize::MAX) {
                Ok(Some(packet)) => {
                    let len = before - cc.rx.len();
                    self.on_packet(key, packet, len);
                }
                Ok(None) => return,
                Err(e) => panic!("the broker sent bytes that do not decode: {e}"),
            }
        }
    }

    fn on_packet(&mut self, key: usize, packet: Packet, len: usize) {
        let cc = &mut self.conns[key];
        let name = packet.name();
        assert!(!cc.disconnected, "{name} after DISCONNECT [MQTT-3.14.4-1]");
        match cc.connack {
            None => assert!(
                matches!(packet, Packet::ConnAck(_)),
                "{name} before CONNACK [MQTT-3.2.0-1]"
            ),
            Some((_, 0)) => assert!(!matches!(packet, Packet::ConnAck(_)), "a second CONNACK"),
            Some((_, code)) => panic!("{name} after CONNACK {code:#04x} (5.0 [MQTT-3.2.2-7])"),
        }
        let c = cc.client;
        let v5 = cc.version.is_v5();
        match packet {
            Packet::ConnAck(a) => {
                assert!(
                    a.code.0 == 0 || !a.session_present,
                    "a refusing CONNACK with Session Present (5.0 [MQTT-3.2.2-6])"
                );
                cc.connack = Some((a.session_present, a.code.0));
                self.stats.refused += u64::from(a.code.0 != 0);
            }
            Packet::Publish(p) => self.on_publish(key, p, len),
            Packet::PubAck(a) => {
                let state = self.clients[c].state(cc.sid);
                state
                    .own
                    .retain(|o| !(o.pid == a.packet_id && o.publish.qos.qos() == QoS::AtLeastOnce));
            }
            Packet::PubRec(a) => {
                let state = self.clients[c].state(cc.sid);
                let failed = v5 && a.reason.is_error();
                if let Some(i) = state
                    .own
                    .iter()
                    .position(|o| o.pid == a.packet_id && o.publish.qos.qos() == QoS::ExactlyOnce)
                {
                    if failed {
                        state.own.remove(i);
                    } else {
                        state.own[i].stage = OwnStage::Released;
                    }
                }
            }
            Packet::PubComp(a) => {
                let state = self.clients[c].state(cc.sid);
                state
                    .own
                    .retain(|o| !(o.pid == a.packet_id && o.stage == OwnStage::Released));
            }
            Packet::PubRel(a) => {
                let state = self.clients[c].state(cc.sid);
                match state.delivery(a.packet_id) {
                    // Its PUBCOMP went already, but may not have arrived (cut off by a close):
                    // a client answers every PUBREL [MQTT-4.3.3-11]; the delivery is over.
                    Some(d) if d.state == DState::Qos2Done => {
                        state.forget_delivery(a.packet_id);
                        state.stray_rels.push(a.packet_id);
                    }
                    Some(d) => {
                        // PUBREL answers the client's PUBREC (5.0 [MQTT-4.3.3-4]).
                        assert!(
                            matches!(d.state, DState::Qos2Recd | DState::Qos2Released),
                            "PUBREL {} for a delivery in state {:?} [MQTT-4.3.3-4]",
                            a.packet_id,
                            d.state
                        );
                        d.state = DState::Qos2Released;
                    }
                    // Completed on the client's side already (its PUBCOMP did not reach the
                    // broker), or the answer to a PUBREC for an unknown id: PUBCOMP again.
                    None => state.stray_rels.push(a.packet_id),
                }
            }
            Packet::SubAck(s) => {
                let i = cc
                    .pending_subs
                    .iter()
                    .position(|&(p, _)| p == s.packet_id.get())
                    .unwrap_or_else(|| panic!("SUBACK {} for no SUBSCRIBE", s.packet_id));
                let (_, n) = cc.pending_subs.remove(i);
                assert_eq!(
                    s.codes.len(),
                    n,
                    "one SUBACK code per filter [MQTT-3.8.4-6]"
                );
            }
            Packet::UnsubAck(s) => {
                let i = cc
                    .pending_unsubs
                    .iter()
                    .position(|&(p, _)| p == s.packet_id.get())
                    .unwrap_or_else(|| panic!("UNSUBACK {} for no UNSUBSCRIBE", s.packet_id));
                let (_, n) = cc.pending_unsubs.remove(i);
                assert_eq!(s.codes.len(), if v5 { n } else { 0 }, "UNSUBACK codes");
            }
            Packet::PingResp => {
                assert!(cc.pings > 0, "PINGRESP for no PINGREQ");
                cc.pings -= 1;
            }
            Packet::Disconnect(_) => {
                assert!(v5, "a DISCONNECT to a 3.1.1 client");
                self.stats.server_disconnects += 1;
                cc.disconnected = true;
            }
            other => panic!("the broker sent {}", other.name()),
        }
    }

    fn on_publish(&mut self, key: usize, mut p: Publish, len: usize) {
        let cc = &mut self.conns[key];
        let c = cc.client;
        let cfg = &self.clients[c].cfg;
        let sid = cc
            .sid
            .unwrap_or_else(|| panic!("PUBLISH to a connection with no session"));
        if cfg.maximum_packet_size > 0 {
            assert!(
                len <= cfg.maximum_packet_size as usize,
                "a {len}-byte PUBLISH to a client that allows {} [MQTT-3.1.2-24]",
                cfg.maximum_packet_size
            );
        }
        if cc.version.is_v5() {
            let tam = cfg.topic_alias_maximum;
            cc.aliases
                .resolve(&mut p, tam)
                .unwrap_or_else(|v| panic!("topic alias {v:?} towards a client allowing {tam}"));
        }
        let qos = p.qos.qos();
        self.stats.publishes[qos as usize] += 1;
        self.oracle
            .received(sid, &p.payload, qos, p.dup, self.world.now);
        let window = self.window(c);
        let state = self.clients[c].state(Some(sid));
        // A PUBLISH with the id of a delivery the client has not completed is a re-send, with
        // DUP [MQTT-3.3.1-1], at the same QoS; the broker reuses no id in flight
        // (3.1.1 [MQTT-2.3.1-4]). Only an id the client ended early may come back as a new message.
        let new = match (p.qos, p.qos.packet_id().and_then(|id| state.delivery(id))) {
            (QosPid::AtMostOnce, _) => false,
            (_, None) => true,
            (_, Some(d)) if d.state == DState::Qos2Done && !p.dup => {
                let id = d.pid;
                state.forget_delivery(id);
                true
            }
            (QosPid::AtLeastOnce(id), Some(d)) => {
                assert!(
                    d.state == DState::Qos1 && p.dup,
                    "QoS 1 PUBLISH {id} (DUP {}) for a delivery in state {:?}",
                    p.dup,
                    d.state
                );
                false
            }
            (QosPid::ExactlyOnce(id), Some(d)) => {
                assert!(
                    matches!(d.state, DState::Qos2 | DState::Qos2Recd | DState::Qos2Done) && p.dup,
                    "QoS 2 PUBLISH {id} (DUP {}) for a delivery in state {:?}",
                    p.dup,
                    d.state
                );
                // Not handed to the application again; PUBREC is owed again.
                d.state = DState::Qos2;
                false
            }
        };
        if new && let Some(id) = p.qos.packet_id() {
            let qos2 = qos == QoS::ExactlyOnce;
            state.deliveries.push(Delivery {
                pid: id,
                state: if qos2 { DState::Qos2 } else { DState::Qos1 },
            });
            if qos2 {
                self.oracle.delivered_qos2(sid, &p.payload);
                self.stats.qos2_delivered += 1;
            }
        }
        let state = self.clients[c].state(Some(sid));
        let unacked = state.deliveries.iter().filter(|d| d.state.counts()).count();
        assert!(
            unacked <= window,
            "{unacked} QoS 1/2 deliveries unacknowledged, window {window} [MQTT-3.3.4-9]"
        );
    }
}
