//! MQTT 3.1.1 CONNECT / CONNACK / PINGREQ / DISCONNECT behaviour from a raw socket.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use vireo_codec::{Connect, Packet, ProtocolVersion, QoS};

/// [MQTT-3.1.4-4] a valid CONNECT gets exactly `20 02 00 00`; [MQTT-2.2.2-1] first byte 0x20;
/// [MQTT-7.1.1-1] over plain TCP.
#[test]
fn v311_mqtt_3_1_4_4_connack_bytes() {
    let broker = start();
    let mut c = Client::open(broker.local_addr());
    // The CONNECT example from the seeds: client id "528986875", user, password, keep alive 120.
    c.send_raw(&[
        0x10, 0x25, 0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04, 0xC2, 0x00, 0x78, 0x00, 0x09, 0x35,
        0x32, 0x38, 0x39, 0x38, 0x36, 0x38, 0x37, 0x35, 0x00, 0x06, 0x32, 0x34, 0x38, 0x34, 0x39,
        0x33, 0x00, 0x06, 0x6B, 0x66, 0x62, 0x73, 0x6B, 0x64,
    ]);
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
    assert_eq!(got, [0x20, 0x02, 0x00, 0x00], "[MQTT-3.1.4-4]");
}

/// [MQTT-3.1.0-1] the first packet must be CONNECT.
#[test]
fn v311_mqtt_3_1_0_1_first_packet_not_connect_closes() {
    let broker = start();
    let mut c = Client::open(broker.local_addr());
    c.send_raw(&[0xC0, 0x00]);
    assert!(c.closed_silently(), "[MQTT-3.1.0-1]");
}

/// [MQTT-3.1.0-2] a second CONNECT is a protocol violation.
#[test]
fn v311_mqtt_3_1_0_2_second_connect_closes() {
    let broker = start();
    let mut c = Client::connect(broker.local_addr(), "twice");
    c.send(&Packet::Connect(Box::new(Connect::new("twice"))));
    assert!(c.closed_silently(), "[MQTT-3.1.0-2]");
}

/// [MQTT-3.1.2-1] an unknown protocol name closes without CONNACK.
#[test]
fn v311_mqtt_3_1_2_1_bad_protocol_name_closes() {
    let broker = start();
    let mut c = Client::open(broker.local_addr());
    c.send_raw(&[
        0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'X', 4, 2, 0, 60, 0, 1, b'a',
    ]);
    assert!(c.closed_silently(), "[MQTT-3.1.2-1]");
}

/// [MQTT-3.1.2-2] unsupported level: CONNACK 0x01 then close; [MQTT-3.2.2-4] SP=0;
/// [MQTT-3.1.4-5] what follows the refused CONNECT is ignored.
#[test]
fn v311_mqtt_3_1_2_2_unsupported_level_connack_01() {
    let broker = start();
    let mut c = Client::open(broker.local_addr());
    let mut bytes = vec![
        0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 7, 2, 0, 60, 0, 1, b'a',
    ];
    // A retained PUBLISH pipelined behind it must not be stored [MQTT-3.1.4-5].
    bytes.extend_from_slice(&[0x31, 0x05, 0x00, 0x01, b'z', b'h', b'i']);
    c.send_raw(&bytes);
    let mut got = [0u8; 4];
    std::io::Read::read_exact(&mut c.stream, &mut got).unwrap();
    assert_eq!(got, [0x20, 0x02, 0x00, 0x01], "[MQTT-3.1.2-2]");
    assert!(
        c.closed_within(WAIT, false),
        "[MQTT-3.2.2-5] closed after refusal"
    );
    let mut s = Client::connect(broker.local_addr(), "watcher");
    s.subscribe(&[("z", QoS::AtMostOnce)]);
    s.expect_nothing();
}

/// [MQTT-3.1.2-3] reserved connect flag set: close, no CONNACK.
#[test]
fn v311_mqtt_3_1_2_3_reserved_flag_closes() {
    let broker = start();
    let mut c = Client::open(broker.local_addr());
    c.send_raw(&[
        0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x03, 0, 60, 0, 1, b'a',
    ]);
    assert!(c.closed_silently(), "[MQTT-3.1.2-3]");
}

/// [MQTT-3.1.2-13] [MQTT-3.1.2-15] [MQTT-3.1.2-22] [MQTT-3.1.2-14] inconsistent flags close.
#[test]
fn v311_mqtt_3_1_2_13_inconsistent_flags_close() {
    let broker = start();
    for flags in [0x0A, 0x22, 0x42, 0x1E] {
        let mut c = Client::open(broker.local_addr());
        c.send_raw(&[
            0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60, 0, 1, b'a',
        ]);
        assert!(c.closed_silently(), "flags {flags:#04x} [MQTT-3.1.2-13]");
    }
}

/// [MQTT-3.1.4-1] malformed CONNECTs close with zero bytes sent; [MQTT-3.2.2-6].
#[test]
fn v311_mqtt_3_1_4_1_malformed_connect_closes_silently() {
    let broker = start();
    let cases: [&[u8]; 3] = [
        // Remaining length shorter than the fields.
        &[0x10, 0x08, 0, 4, b'M', b'Q', b'T', b'T', 4, 2],
        // No payload at all (no client id) [MQTT-3.1.3-3].
        &[0x10, 0x0A, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60],
        // Client id with an encoded surrogate [MQTT-1.5.3-1].
        &[
            0x10, 0x0F, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 3, 0xED, 0xA0, 0x80,
        ],
    ];
    for bytes in cases {
        let mut c = Client::open(broker.local_addr());
        c.send_raw(bytes);
        assert!(
            c.closed_silently(),
            "[MQTT-3.1.4-1] [MQTT-3.2.2-6] {bytes:02x?}"
        );
    }
}

/// [MQTT-3.1.3-5] 1..23 alphanumeric ids are accepted.
#[test]
fn v311_mqtt_3_1_3_5_alphanumeric_ids_accepted() {
    let broker = start();
    Client::connect(broker.local_addr(), "a");
    Client::connect(broker.local_addr(), "abcdefghijklmnopqrstuvw");
}

/// [MQTT-3.1.3-6] empty id with clean session: both clients get unique generated ids.
#[test]
fn v311_mqtt_3_1_3_6_empty_client_id_generated() {
    let broker = start();
    let mut a = Client::connect(broker.local_addr(), "");
    let mut b = Client::connect(broker.local_addr(), "");
    a.subscribe(&[("e/a", QoS::AtMostOnce)]);
    b.subscribe(&[("e/b", QoS::AtMostOnce)]);
    a.publish("e/b", b"to-b", QoS::AtMostOnce, false, 0);
    assert_eq!(&b.recv_publish().payload[..], b"to-b", "neither was kicked");
    b.publish("e/a", b"to-a", QoS::AtMostOnce, false, 0);
    assert_eq!(&a.recv_publish().payload[..], b"to-a");
}

/// [MQTT-3.1.3-8] empty id with CleanSession=0: CONNACK 0x02 then close.
#[test]
fn v311_mqtt_3_1_3_8_empty_id_persistent_rejected() {
    let broker = start();
    let mut connect = Connect::new("");
    connect.clean_start = false;
    let (mut c, ack) = Client::connect_with(broker.local_addr(), connect);
    match ack {
        Packet::ConnAck(a) => {
            assert_eq!(a.code.0, 0x02, "[MQTT-3.1.3-8]");
            assert!(!a.session_present, "[MQTT-3.2.2-4]");
        }
        other => panic!("{other:?}"),
    }
    assert!(c.closed_within(WAIT, false), "[MQTT-3.2.2-5]");
}

/// [MQTT-3.1.4-2] a second connection with the same id closes the first.
#[test]
fn v311_mqtt_3_1_4_2_takeover_closes_old_connection() {
    let broker = start();
    let mut a = Client::connect(broker.local_addr(), "dup");
    let mut b = Client::connect(broker.local_addr(), "dup");
    assert!(
        a.closed_within(WAIT, false),
        "[MQTT-3.1.4-2] old connection closed"
    );
    b.subscribe(&[("x", QoS::AtMostOnce)]);
    b.publish("x", b"ok", QoS::AtMostOnce, false, 0);
    assert_eq!(&b.recv_publish().payload[..], b"ok", "new connection works");
}

/// MQTT 3.1 (`MQIsdp`, level 3) clients are served.
#[test]
fn v31_connect_accepted_and_pubsub_works() {
    let broker = start();
    let mut connect = Connect::new("old-client");
    connect.protocol = ProtocolVersion::V31;
    let (mut c, ack) = Client::connect_with(broker.local_addr(), connect);
    assert!(
        matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 0),
        "{ack:?}"
    );
    c.subscribe(&[("v31", QoS::AtLeastOnce)]);
    c.publish("v31", b"hi", QoS::AtLeastOnce, false, 3);
    assert_eq!(&c.recv_publish_ack().payload[..], b"hi");
}

/// MQTT 3.1 limits client ids to 23 bytes: a longer one gets CONNACK 0x02 [MQTT-3.1.3-9].
#[test]
fn v31_long_client_id_rejected() {
    let broker = start();
    let mut connect = Connect::new("x".repeat(24));
    connect.protocol = ProtocolVersion::V31;
    let (_, ack) = Client::connect_with(broker.local_addr(), connect);
    assert!(
        matches!(ack, Packet::ConnAck(ref a) if a.code.0 == 2),
        "[MQTT-3.1.3-9] {ack:?}"
    );
}

/// [MQTT-3.12.4-1] PINGREQ gets PINGRESP `D0 00`.
#[test]
fn v311_mqtt_3_12_4_1_pingresp() {
    let broker = start();
    let mut c = Client::connect(broker.local_addr(), "pinger");
    c.send_raw(&[0xC0, 0x00]);
    assert_eq!(c.recv(), Some(Packet::PingResp), "[MQTT-3.12.4-1]");
}

/// [MQTT-2.2.2-2] a PINGREQ with reserved flag bits set closes the connection.
#[test]
fn v311_mqtt_2_2_2_2_bad_flags_close() {
    let broker = start();
    let mut c = Client::connect(broker.local_addr(), "flags");
    c.send_raw(&[0xC1, 0x00]);
    assert!(c.closed_silently(), "[MQTT-2.2.2-2]");
}

/// [MQTT-3.14.1-1] DISCONNECT with reserved bits closes (and is not a clean DISCONNECT).
#[test]
fn v311_mqtt_3_14_1_1_bad_disconnect_flags() {
    let broker = start();
    let mut w = Client::connect(broker.local_addr(), "watch");
    w.subscribe(&[("will/bad", QoS::AtMostOnce)]);
    let mut c = Client::connect_will(
        broker.local_addr(),
        "baddisc",
        "will/bad",
        "gone",
        QoS::AtMostOnce,
        false,
    );
    c.send_raw(&[0xE1, 0x00]);
    assert!(c.closed_silently(), "[MQTT-3.14.1-1]");
    assert_eq!(
        &w.recv_publish().payload[..],
        b"gone",
        "Will still published"
    );
}

/// [MQTT-4.8.0-1] a server-to-client packet (CONNACK) from a client closes the connection.
#[test]
fn v311_mqtt_4_8_0_1_server_packet_from_client_closes() {
    let broker = start();
    let mut c = Client::connect(broker.local_addr(), "wrongway");
    c.send_raw(&[0x20, 0x02, 0x00, 0x00]);
    assert!(c.closed_silently(), "[MQTT-4.8.0-1]");
}

/// [MQTT-3.1.2-24] keep alive 1 s: closed after ~1.5 s of silence, not before 1 s.
#[test]
fn v311_mqtt_3_1_2_24_keep_alive_expiry_closes_connection() {
    let broker = start();
    let mut connect = Connect::new("sleepy");
    connect.keep_alive = 1;
    let (mut c, _) = Client::connect_with(broker.local_addr(), connect);
    let start = Instant::now();
    assert!(
        c.closed_within(Duration::from_secs(4), false),
        "[MQTT-3.1.2-24] dropped"
    );
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(1000),
        "not before the keep alive: {elapsed:?}"
    );
}

/// [MQTT-3.1.2-24] traffic within the keep alive keeps the connection open.
#[test]
fn v311_mqtt_3_1_2_24_pings_keep_connection_open() {
    let broker = start();
    let mut connect = Connect::new("lively");
    connect.keep_alive = 1;
    let (mut c, _) = Client::connect_with(broker.local_addr(), connect);
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        c.send_raw(&[0xC0, 0x00]);
        // Waiting for the PINGRESP paces the loop at one ping per round trip + 500 ms read.
        assert_eq!(c.recv(), Some(Packet::PingResp));
        assert!(c.recv_within(Duration::from_millis(500)).is_none());
    }
}

/// A connection that never sends CONNECT is closed after the configured timeout.
#[test]
fn connect_timeout_closes_silent_socket() {
    let broker = start_with(|c| c.connect_timeout_secs = 1);
    let mut c = Client::open(broker.local_addr());
    assert!(c.closed_within(Duration::from_secs(4), false));
}

/// MQTT 5.0 is served: a v5 CONNECT gets a v5 CONNACK 0x00 [MQTT-3.1.4-5] that advertises the
/// broker's limits (Maximum Packet Size, Receive Maximum, Topic Alias Maximum).
#[test]
fn v5_mqtt_3_1_4_5_connect_accepted() {
    let broker = start();
    let mut connect = Connect::new("five");
    connect.protocol = ProtocolVersion::V5;
    let (_c, ack) = Client::connect_with(broker.local_addr(), connect);
    let Packet::ConnAck(ack) = ack else {
        panic!("expected CONNACK, got {ack:?}");
    };
    assert_eq!(ack.code.0, 0x00);
    assert!(!ack.session_present);
    let ids: Vec<u8> = ack.properties.iter().map(|p| p.id()).collect();
    assert!(
        ids.contains(&0x27) && ids.contains(&0x21) && ids.contains(&0x22),
        "{ids:x?}"
    );
}

/// A second broker on a port another one listens on is refused, instead of sharing the port
/// through SO_REUSEPORT and silently taking part of the clients.
#[test]
fn a_second_broker_on_a_busy_port_fails_to_start() {
    let first = start();
    let addr = first.local_addr();
    let second = vireo_server::Server::start(vireo_server::Config {
        bind: addr,
        workers: 2,
        pin_workers: false,
        ..vireo_server::Config::default()
    });
    let err = second.expect_err("the port is taken");
    assert!(err.to_string().contains("already in use"), "{err}");
    // The first broker is unaffected.
    Client::connect(addr, "still-here");
}

/// MQTT 3.1 from the wire, as an independent conformance run sends it: an empty client id
/// gets CONNACK 0x02 (3.1 requires 1-23 characters); connect flags 0x01 and fixed-header
/// flags are accepted (3.1 had no reserved-bit rule and old devices send them), as by
/// Mosquitto; and a resumed 3.1 session is not flagged in CONNACK, whose first byte 3.1
/// reserves.
#[test]
fn v31_raw_connects_as_mosquitto_answers_them() {
    let broker = start();
    let addr = broker.local_addr();
    let answer = |bytes: &[u8]| {
        let mut r = Raw::open(addr);
        r.send_raw(bytes);
        (r.frame(), r)
    };
    let (f, mut r) = answer(&[
        0x10, 0x0E, 0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x02, 0x00, 0x0A, 0x00,
        0x00,
    ]);
    assert_eq!(f, [0x20, 0x02, 0x00, 0x02]);
    assert!(r.closed());
    // Clean session 0 (flags 0x01: only the reserved bit), client id "p".
    let body = [
        0x00, 0x06, b'M', b'Q', b'I', b's', b'd', b'p', 0x03, 0x01, 0x00, 0x0A, 0x00, 0x01, b'p',
    ];
    let (f, mut first) = answer(&[&[0x10, 0x0F][..], &body].concat());
    assert_eq!(f, [0x20, 0x02, 0x00, 0x00]);
    first.send_raw(&[0xE0, 0x00]);
    assert!(first.closed());
    // The same with fixed-header flags set: accepted, the stored session resumed, unflagged.
    let (f, _again) = answer(&[&[0x14, 0x0F][..], &body].concat());
    assert_eq!(f, [0x20, 0x02, 0x00, 0x00]);
}
