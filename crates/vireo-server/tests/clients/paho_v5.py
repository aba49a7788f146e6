#!/usr/bin/env python3
"""MQTT 5.0 against Vireo with paho-mqtt (Debian's python3-paho-mqtt), as a user would write it.

Usage: paho_v5.py PORT. Exits 0 when every check passed; prints what failed otherwise. Every
wait is bounded (WAIT seconds); the script never sleeps to synchronise.
"""

import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

PORT = int(sys.argv[1])
WAIT = 5.0
# One condition for every client, so a wait on several clients' messages wakes on any.
EVENTS = threading.Condition()


class Peer:
    """A paho client with its received messages and acks collected under a condition."""

    def __init__(self, client_id, clean_start=True, expiry=None):
        self.c = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)
        self.cond = EVENTS
        self.messages = []
        self.connack = None
        self.subacks = {}
        self.pubacks = {}
        self.disconnect_rc = None
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_disconnect = self._on_disconnect
        props = Properties(PacketTypes.CONNECT)
        if expiry is not None:
            props.SessionExpiryInterval = expiry
        self.c.connect("127.0.0.1", PORT, keepalive=30, clean_start=clean_start, properties=props)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")

    def _on_connect(self, c, u, flags, rc, props):
        with self.cond:
            self.connack = (flags, rc, props)
            self.cond.notify_all()

    def _on_message(self, c, u, msg):
        with self.cond:
            self.messages.append(msg)
            self.cond.notify_all()

    def _on_subscribe(self, c, u, mid, codes, props):
        with self.cond:
            self.subacks[mid] = [int(rc.value) for rc in codes]
            self.cond.notify_all()

    def _on_publish(self, c, u, mid):
        with self.cond:
            self.pubacks[mid] = True
            self.cond.notify_all()

    def _on_disconnect(self, c, u, rc, props=None):
        with self.cond:
            self.disconnect_rc = rc
            self.cond.notify_all()

    def wait(self, pred, what):
        with self.cond:
            if not self.cond.wait_for(pred, timeout=WAIT):
                raise AssertionError(f"timed out waiting for {what}")

    def subscribe(self, topic, qos=1, props=None, **opts):
        rc, mid = self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **opts), properties=props)
        assert rc == mqtt.MQTT_ERR_SUCCESS, rc
        self.wait(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid]

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            self.wait(lambda: info.mid in self.pubacks, f"ack of {topic}")

    def take(self, n, what):
        self.wait(lambda: len(self.messages) >= n, f"{n} message(s): {what}")
        got, self.messages = self.messages[:n], self.messages[n:]
        return got

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main():
    # CONNACK: assigned client id for an empty one, limits advertised.
    anon = Peer("")
    _, rc, props = anon.connack
    check(rc == 0, f"CONNACK {rc}")
    check(getattr(props, "AssignedClientIdentifier", ""), "Assigned Client Identifier")
    check(getattr(props, "TopicAliasMaximum", 0) > 0, "Topic Alias Maximum advertised")
    anon.close()

    sub = Peer("paho-sub")
    pub = Peer("paho-pub")
    # Properties pass through, QoS 0/1/2, with a subscription identifier.
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = 42
    check(sub.subscribe("p/#", qos=2, props=sp) == [2], "SUBACK granted QoS 2")
    for qos in (0, 1, 2):
        pp = Properties(PacketTypes.PUBLISH)
        pp.ResponseTopic = "reply/to"
        pp.CorrelationData = b"\x00\xffid"
        pp.ContentType = "text/plain"
        pp.UserProperty = [("k", "1"), ("j", "2"), ("k", "3")]
        pp.MessageExpiryInterval = 60
        pp.PayloadFormatIndicator = 1
        pub.publish(f"p/{qos}", f"hello {qos}", qos=qos, props=pp)
        (m,) = sub.take(1, f"QoS {qos} message")
        check(m.qos == qos and m.payload == f"hello {qos}".encode(), f"payload/QoS {m}")
        p = m.properties
        check(p.ResponseTopic == "reply/to", "Response Topic")
        check(p.CorrelationData == b"\x00\xffid", "Correlation Data")
        check(p.ContentType == "text/plain", "Content Type")
        check(p.UserProperty == [("k", "1"), ("j", "2"), ("k", "3")], f"User Properties {p.UserProperty}")
        check(0 < p.MessageExpiryInterval <= 60, "Message Expiry Interval")
        check(p.SubscriptionIdentifier == [42], f"Subscription Identifier {p.SubscriptionIdentifier}")

    # Request/response: the responder answers on the Response Topic with the Correlation Data.
    responder = Peer("paho-responder")
    responder.subscribe("svc/echo", qos=1)
    requester = Peer("paho-requester")
    requester.subscribe("reply/paho", qos=1)
    rq = Properties(PacketTypes.PUBLISH)
    rq.ResponseTopic = "reply/paho"
    rq.CorrelationData = b"req-1"
    requester.publish("svc/echo", "ping", qos=1, props=rq)
    (req,) = responder.take(1, "request")
    rs = Properties(PacketTypes.PUBLISH)
    rs.CorrelationData = req.properties.CorrelationData
    responder.publish(req.properties.ResponseTopic, b"pong", qos=1, props=rs)
    (resp,) = requester.take(1, "response")
    check(resp.payload == b"pong" and resp.properties.CorrelationData == b"req-1", "response")

    # No Local and Retain As Published.
    me = Peer("paho-me")
    me.subscribe("nl/t", qos=1, noLocal=True, retainAsPublished=True)
    me.publish("nl/t", "mine", qos=1, retain=True)
    pub.publish("nl/t", "theirs", qos=1, retain=True)
    (m,) = me.take(1, "the other client's message")
    check(m.payload == b"theirs" and m.retain, "No Local / Retain As Published")
    pub.publish("nl/t", b"", qos=1, retain=True)  # clear the retained message
    me.take(1, "the clearing message")

    # Shared subscription: each message to one member.
    a, b = Peer("paho-a"), Peer("paho-b")
    a.subscribe("$share/workers/jobs/#", qos=1)
    b.subscribe("$share/workers/jobs/#", qos=1)
    for i in range(10):
        pub.publish(f"jobs/{i}", str(i), qos=1)
    a.wait(lambda: len(a.messages) + len(b.messages) >= 10, "10 shared messages")
    got = sorted(int(m.payload) for m in a.messages + b.messages)
    check(got == list(range(10)), f"each job once: {got}")
    check(a.messages and b.messages, "both members served")

    # Topic alias from the client.
    ap = Properties(PacketTypes.PUBLISH)
    ap.TopicAlias = 1
    pub.publish("p/alias", "first", qos=1, props=ap)
    pub.publish("", "second", qos=1, props=ap)
    ms = sub.take(2, "aliased messages")
    check([m.topic for m in ms] == ["p/alias", "p/alias"], f"alias topics {[m.topic for m in ms]}")

    # Session expiry: a persistent session gets what was published while it was away.
    away = Peer("paho-away", clean_start=False, expiry=300)
    away.subscribe("away/t", qos=1)
    away.close()
    pub.publish("away/t", "while away", qos=1)
    back = Peer("paho-away", clean_start=False, expiry=300)
    check(back.connack[0]["session present"], "session present")
    (m,) = back.take(1, "queued message")
    check(m.payload == b"while away", "queued payload")
    back.close()

    for p in (sub, pub, responder, requester, me, a, b):
        p.close()
    print("paho v5: all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"paho v5 check failed: {e}")
        sys.exit(1)
