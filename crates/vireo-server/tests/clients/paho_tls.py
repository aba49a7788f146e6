#!/usr/bin/env python3
"""paho-mqtt over TLS against Vireo: for 3.1.1 and 5.0, connect with the test CA, subscribe
at QoS 1, publish at QoS 1 and get the message back.

Usage: paho_tls.py PORT CA_FILE. Exits 0 when every check passed. Every wait is bounded.
"""

import sys
import threading

import paho.mqtt.client as mqtt

PORT = int(sys.argv[1])
CA = sys.argv[2]
WAIT = 5.0


def round_trip(protocol, name):
    got = threading.Event()
    subscribed = threading.Event()
    connected = threading.Event()
    received = []
    c = mqtt.Client(client_id=f"paho-tls-{name}", protocol=protocol)
    c.tls_set(ca_certs=CA)
    c.on_connect = lambda *a: connected.set()
    c.on_subscribe = lambda *a: subscribed.set()

    def on_message(_c, _u, msg):
        received.append(msg.payload)
        got.set()

    c.on_message = on_message
    c.connect("127.0.0.1", PORT)
    c.loop_start()
    try:
        if not connected.wait(WAIT):
            return f"{name}: no CONNACK over TLS"
        c.subscribe("tls/echo", qos=1)
        if not subscribed.wait(WAIT):
            return f"{name}: no SUBACK"
        info = c.publish("tls/echo", b"over tls " + name.encode(), qos=1)
        info.wait_for_publish(WAIT)
        if not info.is_published():
            return f"{name}: no PUBACK"
        if not got.wait(WAIT):
            return f"{name}: the message did not come back"
        if received != [b"over tls " + name.encode()]:
            return f"{name}: got {received!r}"
    finally:
        c.disconnect()
        c.loop_stop()
    return None


failures = [f for f in (round_trip(mqtt.MQTTv311, "v311"), round_trip(mqtt.MQTTv5, "v5")) if f]
for f in failures:
    print(f)
sys.exit(1 if failures else 0)
