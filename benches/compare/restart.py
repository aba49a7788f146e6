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
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (free_port, wait_listening)
from hostile import mqtt_str, vbi  # noqa: E402  (the raw packet encoding)


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + vbi(len(body)) + body


def string(s: str) -> bytes:
    return mqtt_str(s.encode())


def connect(port: int, client_id: str, clean: bool) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    flags = 0x02 if clean else 0x00
    s.sendall(packet(0x10, string("MQTT") + bytes([4, flags]) + struct.pack(">H", 600)
                     + string(client_id)))
    ack = s.recv(4)
    assert ack[:2] == b"\x20\x02" and ack[3] == 0, ack
    return s


def publish_many(port: int, client_id: str, topics, qos: int, retain: bool) -> None:
    """Publishes one message per topic; returns once the broker has answered them all (a
    PINGREQ answered after them)."""
    s = connect(port, client_id, True)
    first = 0x30 | (qos << 1) | (1 if retain else 0)
    chunk = bytearray()
    sent = 0
    for sent, t in enumerate(topics, 1):
        pid = struct.pack(">H", (sent - 1) % 65535 + 1) if qos else b""
        chunk += packet(first, string(t) + pid + b"payload-%08d" % sent)
        if len(chunk) > 1 << 20:
            s.sendall(chunk)
            chunk.clear()
    s.sendall(chunk + b"\xc0\x00")  # PINGREQ last
    # Every PUBACK (4 bytes) and then the PINGRESP (2): the broker answers in order.
    s.settimeout(120)
    left = 4 * sent * (1 if qos else 0) + 2
    while left > 0:
        data = s.recv(1 << 16)
        if not data:
            raise SystemExit("broker closed the publisher")
        left -= len(data)
    s.sendall(b"\xe0\x00")
    s.close()


def start(vireo: str, conf: Path, log: Path) -> tuple[subprocess.Popen, float]:
    t0 = time.monotonic()
    proc = subprocess.Popen([vireo, "--config", str(conf)], stderr=open(log, "w"),
                            stdout=subprocess.DEVNULL)
    return proc, t0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--vireo", default="target/release/vireo")
    p.add_argument("--queued", type=int, default=1_000_000)
    p.add_argument("--retained", type=int, default=100_000)
    p.add_argument("--limit", type=float, default=300)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = compare.free_port()
        conf = tmp / "vireo.toml"
        conf.write_text(f'bind = "127.0.0.1:{port}"\npersistence = "async"\n'
                        f'data_dir = "{tmp}/data"\nmax_queued_messages = {args.queued * 2}\n'
                        f'max_queued_bytes = {args.queued * 200}\n'
                        f'max_retained_messages = {args.retained * 2}\n')
        proc, _ = start(args.vireo, conf, tmp / "first.log")
        compare.wait_listening(proc, port, 30)
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
        compare.wait_listening(proc, port, args.limit)
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
