//! Behaviour seen from independent clients: rumqttc, Debian's mosquitto_pub/mosquitto_sub
//! (3.1.1 and 5.0), paho-mqtt (Python, 5.0) and MQTT.js (node, 5.0). `.ci/run` installs them.

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
    mosquitto_v(tool, port, "mqttv311", args)
}

fn mosquitto_v(tool: &str, port: &str, version: &str, args: &[&str]) -> std::process::Output {
    let port: u16 = port.parse().unwrap();
    let out = mosquitto_tool(tool, port, &[&["-V", version][..], args].concat());
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

/// MQTT 5.0 with Debian's mosquitto clients: a persistent session (Session Expiry Interval
/// 300) collects on reconnect what was published while it was away, with the publisher's user
/// property, content type and remaining expiry; PUBACK 0x10 to a publish nobody wants is not
/// an error for mosquitto_pub; a retained message reaches a later subscriber.
#[test]
fn v5_mosquitto_clients_end_to_end() {
    let broker = start();
    let port = broker.local_addr().port().to_string();
    let v5 = |tool: &str, args: &[&str]| mosquitto_v(tool, &port, "mqttv5", args);
    v5(
        "mosquitto_sub",
        &[
            "-c", "-x", "300", "-i", "m5sub", "-q", "1", "-t", "m5/#", "-E",
        ],
    );
    for (t, m) in [("m5/a", "alpha"), ("m5/b", "beta")] {
        v5(
            "mosquitto_pub",
            &[
                "-t",
                t,
                "-m",
                m,
                "-q",
                "1",
                "-i",
                "m5pub",
                "-D",
                "publish",
                "user-property",
                "k",
                "v",
                "-D",
                "publish",
                "content-type",
                "text/plain",
                "-D",
                "publish",
                "message-expiry-interval",
                "120",
            ],
        );
    }
    let out = v5(
        "mosquitto_sub",
        &[
            "-c",
            "-x",
            "300",
            "-i",
            "m5sub",
            "-q",
            "1",
            "-t",
            "m5/#",
            "-C",
            "2",
            "-W",
            "10",
            "-F",
            "%t %p %P %C %E",
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for (line, want) in lines
        .iter()
        .zip(["m5/a alpha k:v text/plain", "m5/b beta k:v text/plain"])
    {
        assert!(
            line.starts_with(want),
            "{line:?} should start with {want:?}"
        );
        let expiry: u32 = line
            .rsplit(' ')
            .next()
            .and_then(|e| e.parse().ok())
            .unwrap_or(0);
        assert!((1..=120).contains(&expiry), "remaining expiry in {line:?}");
    }
    v5(
        "mosquitto_pub",
        &["-t", "nobody/listens", "-m", "x", "-q", "1"],
    );
    v5(
        "mosquitto_pub",
        &["-t", "m5/kept", "-m", "retained!", "-r", "-q", "1"],
    );
    let out = v5("mosquitto_sub", &["-t", "m5/kept", "-C", "1", "-W", "5"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "retained!\n");
}

/// Runs one of the scripts in `tests/clients/` against a broker: it exits 0 when all its
/// checks passed. Bounded by `timeout` (each of the script's own waits is bounded too).
fn run_client_script(interpreter: &str, script: &str, install: &str) {
    run_client_script_with(interpreter, script, install, |_| {});
}

/// [`run_client_script`] against a broker configured by `configure`.
fn run_client_script_with(
    interpreter: &str,
    script: &str,
    install: &str,
    configure: impl FnOnce(&mut vireo_server::Config),
) {
    let broker = start_with(configure);
    let port = broker.local_addr().port().to_string();
    let path = format!("{}/tests/clients/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("timeout")
        .args(["120", interpreter, &path, &port])
        .output()
        .unwrap_or_else(|e| panic!("{interpreter} not runnable ({e}): {install}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{script} failed ({install} if a module is missing):\n{stdout}\n{stderr}"
    );
}

/// MQTT 5.0 with paho-mqtt (`MQTTv5`): assigned client id, properties passed through at QoS
/// 0/1/2 with a subscription identifier, request/response, No Local and Retain As Published,
/// a shared subscription, topic aliases, and a persistent session with Session Expiry.
#[test]
fn v5_paho_mqtt_client() {
    // Debian's python3-paho-mqtt lives in the system interpreter.
    let python = if std::path::Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    };
    run_client_script(python, "paho_v5.py", "apt-get install python3-paho-mqtt");
}

/// MQTT 5.0 with MQTT.js (`protocolVersion: 5`): properties at QoS 0/1/2 with a subscription
/// identifier, a shared subscription, client-side automatic topic aliases, broker → client
/// topic aliases (on for this broker), PUBACK 0x10.
#[test]
fn v5_mqttjs_client() {
    run_client_script_with(
        "node",
        "mqttjs_v5.js",
        "npm install --prefix crates/vireo-server/tests/clients",
        |c| c.outbound_topic_alias_maximum = 4,
    );
}
