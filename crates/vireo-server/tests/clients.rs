//! Behaviour seen from independent clients: rumqttc, and Debian's mosquitto_pub/mosquitto_sub.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use rumqttc::{Client as RumqttClient, Event, MqttOptions, Packet as RPacket, QoS as RQoS};

fn rumqtt(addr: std::net::SocketAddr, id: &str) -> (RumqttClient, rumqttc::Connection) {
    let mut opts = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(10));
    RumqttClient::new(opts, 64)
}

/// [MQTT-7.0.0-2] a stock 3.1.1 client does QoS 0/1/2 pub/sub with no extra settings.
#[test]
fn v311_mqtt_7_0_0_2_rumqttc_pubsub_all_qos() {
    let broker = start();
    let (sub, mut sub_conn) = rumqtt(broker.local_addr(), "rumq-sub");
    let (publ, mut pub_conn) = rumqtt(broker.local_addr(), "rumq-pub");
    sub.subscribe("r/#", RQoS::ExactlyOnce).unwrap();
    // Drive the subscriber until its SUBACK arrives.
    for event in sub_conn.iter() {
        if let Ok(Event::Incoming(RPacket::SubAck(_))) = event {
            break;
        }
        event.expect("subscriber connection");
    }
    let publisher = std::thread::spawn(move || {
        for (i, qos) in [RQoS::AtMostOnce, RQoS::AtLeastOnce, RQoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            publ.publish(format!("r/{i}"), qos, false, vec![i as u8; 10])
                .unwrap();
        }
        // Run the publisher's event loop until all three are acknowledged (QoS 0 needs none).
        let mut acks = 0;
        for event in pub_conn.iter() {
            if let Event::Incoming(RPacket::PubAck(_) | RPacket::PubComp(_)) =
                event.expect("publisher connection")
            {
                acks += 1;
            }
            if acks == 2 {
                break;
            }
        }
    });
    let mut got = Vec::new();
    while got.len() < 3 {
        match sub_conn.recv_timeout(WAIT) {
            Ok(Ok(Event::Incoming(RPacket::Publish(p)))) => got.push((p.topic, p.qos)),
            Ok(Ok(_)) => {}
            other => panic!("subscriber: {other:?}"),
        }
    }
    publisher.join().unwrap();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        got,
        vec![
            ("r/0".to_string(), RQoS::AtMostOnce),
            ("r/1".to_string(), RQoS::AtLeastOnce),
            ("r/2".to_string(), RQoS::ExactlyOnce),
        ]
    );
}

fn mosquitto(tool: &str, port: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new(tool)
        .args(["-h", "127.0.0.1", "-p", port, "-V", "mqttv311"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{tool} not runnable ({e}): apt-get install mosquitto-clients"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// End to end with Debian's mosquitto clients: a persistent QoS 1 wildcard subscription made
/// by mosquitto_sub (`-E` exits once the SUBACK arrives, so there is no race), messages
/// published by mosquitto_pub while it is away, then collected on reconnect; and a retained
/// message picked up by a later subscriber. [MQTT-3.1.2-5] [MQTT-3.3.1-6]
#[test]
fn mosquitto_clients_end_to_end() {
    let broker = start();
    let port = broker.local_addr().port().to_string();
    mosquitto(
        "mosquitto_sub",
        &port,
        &["-c", "-i", "msub", "-q", "1", "-t", "m/#", "-E"],
    );
    for (t, m) in [("m/a", "alpha"), ("m/b", "beta")] {
        mosquitto(
            "mosquitto_pub",
            &port,
            &["-t", t, "-m", m, "-q", "1", "-i", "mpub"],
        );
    }
    let out = mosquitto(
        "mosquitto_sub",
        &port,
        &[
            "-c", "-i", "msub", "-q", "1", "-t", "m/#", "-C", "2", "-W", "10", "-v",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "m/a alpha\nm/b beta\n"
    );

    mosquitto(
        "mosquitto_pub",
        &port,
        &["-t", "m/kept", "-m", "retained!", "-r", "-i", "mret"],
    );
    let out = mosquitto(
        "mosquitto_sub",
        &port,
        &["-t", "m/kept", "-C", "1", "-W", "5", "-i", "mlate"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "retained!\n");
}
