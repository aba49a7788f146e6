#!/usr/bin/env python3
"""Restart time with a large store: N QoS 1 messages queued for an offline persistent
session and R retained messages, then a SIGTERM and a start on the same data_dir; reports
how long the new broker took to listen, and until the queued messages reached their client.

    python3 benches/compare/restart.py [--vireo target/release/vireo] [--queued 1000000]
        [--retained 100000]

Everything on loopback, bounded in count and time (the script gives up after --limit s).
"""

from __future__ import annotations

import argparse
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def remaining_length(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + remaining_length(len(body)) + body


def string(s: str) -> bytes:
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect(port: int, client_id: str, clean: bool) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    flags = 0x02 if clean else 0x00
    s.sendall(packet(0x10, string("MQTT") + bytes([4, flags]) + struct.pack(">H", 600)
                     + string(client_id)))
    ack = s.recv(4)
    assert ack[:2] == b"\x20\x02" and ack[3] == 0, ack
    return s


def drain(s: socket.socket, stop: threading.Event) -> None:
    s.settimeout(0.2)
    while not stop.is_set():
        try:
            if not s.recv(1 << 16):
                return
        except socket.timeout:
            continue
        except OSError:
            return


def publish_many(port: int, client_id: str, topics, qos: int, retain: bool) -> None:
    """Publishes one message per topic, acks read and dropped on a thread; returns once the
    broker has read them all (a PINGREQ answered after them)."""
    s = connect(port, client_id, True)
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    chunk = bytearray()
    for i, t in enumerate(topics):
        pid = struct.pack(">H", i % 65535 + 1) if qos else b""
        chunk += packet(first, string(t) + pid + b"payload-%08d" % i)
        if len(chunk) > 1 << 20:
            s.sendall(chunk)
            chunk.clear()
    s.sendall(chunk + b"\xc0\x00")  # PINGREQ last
    # Acks and the PINGRESP come back in order: read until the PINGRESP (0xd0 0x00) ends the
    # stream of 4-byte PUBACKs.
    s.settimeout(120)
    tail = b""
    while True:
        data = s.recv(1 << 16)
        if not data:
            raise SystemExit("broker closed the publisher")
        tail = (tail + data)[-8:]
        if qos == 0 and tail.endswith(b"\xd0\x00"):
            break
        if qos and b"\xd0\x00" in tail and (len(tail) < 2 or tail.endswith(b"\xd0\x00")):
            break
    s.sendall(b"\xe0\x00")
    s.close()


def start(vireo: str, conf: Path, log: Path) -> tuple[subprocess.Popen, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([vireo, "--config", str(conf)], stderr=open(log, "w"),
                            stdout=subprocess.DEVNULL)
    return proc, t0


def wait_port(port: int, limit: float) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.01)
    raise SystemExit("the broker did not listen in time")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--vireo", default="target/release/vireo")
    p.add_argument("--queued", type=int, default=1_000_000)
    p.add_argument("--retained", type=int, default=100_000)
    p.add_argument("--limit", type=float, default=300)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        conf = tmp / "vireo.toml"
        conf.write_text(f'bind = "127.0.0.1:{port}"\npersistence = "async"\n'
                        f'data_dir = "{tmp}/data"\nmax_queued_messages = {args.queued * 2}\n'
                        f'max_queued_bytes = {args.queued * 200}\n'
                        f'max_retained_messages = {args.retained * 2}\n')
        proc, _ = start(args.vireo, conf, tmp / "first.log")
        wait_port(port, 30)
        sub = connect(port, "restart-sub", False)
        sub.sendall(packet(0x82, struct.pack(">H", 1) + string("q/#") + bytes([1])))
        assert sub.recv(5)[0] == 0x90
        sub.sendall(b"\xe0\x00")
        sub.close()
        t = time.monotonic()
        publish_many(port, "restart-pub", ("q/x" for _ in range(args.queued)), 1, False)
        publish_many(port, "restart-ret", (f"r/{i}" for i in range(args.retained)), 0, True)
        print(f"queued {args.queued:,} and retained {args.retained:,} in "
              f"{time.monotonic() - t:.1f} s", file=sys.stderr)
        proc.terminate()
        proc.wait(timeout=args.limit)
        size = sum(f.stat().st_size for f in (tmp / "data").iterdir())
        proc, t0 = start(args.vireo, conf, tmp / "second.log")
        wait_port(port, args.limit)
        listening = time.monotonic() - t0
        sub = connect(port, "restart-sub", False)
        sub.settimeout(args.limit)
        first = sub.recv(1)
        served = time.monotonic() - t0
        opened = [line for line in (tmp / "second.log").read_text().splitlines()
                  if "store opened" in line]
        print(f"store on disk: {size / 1e6:.0f} MB")
        print(f"restart: listening after {listening:.2f} s, first queued message after "
              f"{served:.2f} s ({'PUBLISH' if first and first[0] & 0xf0 == 0x30 else first})")
        print(opened[0] if opened else "(no 'store opened' line)")
        sub.close()
        proc.terminate()
        proc.wait(timeout=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
