# paho-mqtt over WebSocket (transport="websockets", path /mqtt) against Vireo, MQTT 3.1.1 and
# 5.0: subscribe, publish QoS 1 to itself, check what comes back. Usage: paho_ws.py PORT.
# Exits 0 when every check passed; every wait is bounded.
import sys
import threading

import paho.mqtt.client as mqtt

PORT = int(sys.argv[1])
WAIT = 5


def run(version, name):
    connected, subscribed, got = threading.Event(), threading.Event(), []
    arrived = threading.Event()
    c = mqtt.Client(client_id=f"paho-ws-{name}", transport="websockets", protocol=version)
    c.ws_set_options(path="/mqtt")
    c.on_connect = lambda *a: connected.set()
    c.on_subscribe = lambda *a: subscribed.set()

    def on_message(client, userdata, msg):
        got.append((msg.topic, msg.payload, msg.qos))
        arrived.set()

    c.on_message = on_message
    c.connect("127.0.0.1", PORT, keepalive=30)
    c.loop_start()
    try:
        assert connected.wait(WAIT), f"{name}: no CONNACK"
        c.subscribe("paho/ws/#", qos=1)
        assert subscribed.wait(WAIT), f"{name}: no SUBACK"
        payload = bytes(range(256)) * 400  # 100 KiB: many WebSocket frames' worth of TCP
        info = c.publish(f"paho/ws/{name}", payload, qos=1)
        info.wait_for_publish(WAIT)
        assert info.is_published(), f"{name}: no PUBACK"
        assert arrived.wait(WAIT), f"{name}: message not delivered"
        assert got == [(f"paho/ws/{name}", payload, 1)], f"{name}: got {got[:1]!r}"
    finally:
        c.disconnect()
        c.loop_stop()


run(mqtt.MQTTv311, "v311")
run(mqtt.MQTTv5, "v5")
print("ok")
