#!/usr/bin/env python3
"""Restart time with a large store: N QoS 1 messages queued for an offline persistent
session and R retained messages, then a SIGTERM and a start on the same data_dir; reports
how long the new broker took to listen, and until the queued messages reached their client.
Also the broker's resident memory before and after the queue built up, and after the
restart: with `queue_memory_bytes` (default 1 MiB) the queue past it is on disk only, so
RSS stays flat; `--queue-memory-bytes 0` leaves the default, a large value keeps it all in
memory for comparison. `--drain` then takes every queued message (acknowledging each) and
checks that all arrived.

    python3 benches/compare/restart.py [--vireo target/release/vireo] [--queued 1000000]
        [--retained 100000] [--queue-memory-bytes N] [--drain]

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


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drain(sub: socket.socket, first: bytes, want: int, limit: float) -> int:
    """Reads QoS 1 PUBLISHes (the stream starting with `first`), acknowledging each, until
    `want` came or none for 5 s."""
    buf = bytearray(first)
    got = 0
    deadline = time.monotonic() + limit
    sub.settimeout(5)
    while got < want and time.monotonic() < deadline:
        try:
            data = sub.recv(1 << 20)
        except socket.timeout:
            break
        if not data:
            break
        buf += data
        acks = bytearray()
        pos = 0
        while True:
            if len(buf) - pos < 2:
                break
            length, mult, i = 0, 1, pos + 1
            while i < len(buf) and buf[i] & 0x80:
                length += (buf[i] & 0x7F) * mult
                mult *= 128
                i += 1
            if i >= len(buf):
                break
            length += buf[i] * mult
            body = i + 1
            if len(buf) < body + length:
                break
            if buf[pos] & 0xF0 == 0x30 and (buf[pos] >> 1) & 3:
                tlen = struct.unpack_from(">H", buf, body)[0]
                acks += b"\x40\x02" + bytes(buf[body + 2 + tlen:body + 4 + tlen])
                got += 1
            pos = body + length
        del buf[:pos]
        if acks:
            sub.sendall(acks)
    return got


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
    p.add_argument("--queue-memory-bytes", type=int, default=0)
    p.add_argument("--drain", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        port = compare.free_port()
        conf = tmp / "vireo.toml"
        conf.write_text(f'bind = "127.0.0.1:{port}"\npersistence = "async"\n'
                        f'data_dir = "{tmp}/data"\nmax_queued_messages = {args.queued * 2}\n'
                        f'max_queued_bytes = {args.queued * 200}\n'
                        f'max_retained_messages = {args.retained * 2}\n'
                        + (f'queue_memory_bytes = {args.queue_memory_bytes}\n'
                           if args.queue_memory_bytes else ''))
        proc, _ = start(args.vireo, conf, tmp / "first.log")
        compare.wait_listening(proc, port, 30)
        sub = connect(port, "restart-sub", False)
        sub.sendall(packet(0x82, struct.pack(">H", 1) + string("q/#") + bytes([1])))
        assert sub.recv(5)[0] == 0x90
        sub.sendall(b"\xe0\x00")
        sub.close()
        before = rss_mb(proc.pid)
        t = time.monotonic()
        publish_many(port, "restart-pub", ("q/x" for _ in range(args.queued)), 1, False)
        publish_many(port, "restart-ret", (f"r/{i}" for i in range(args.retained)), 0, True)
        print(f"queued {args.queued:,} and retained {args.retained:,} in "
              f"{time.monotonic() - t:.1f} s", file=sys.stderr)
        queued_rss = rss_mb(proc.pid)
        proc.terminate()
        proc.wait(timeout=args.limit)
        size = sum(f.stat().st_size for f in (tmp / "data").iterdir())
        proc, t0 = start(args.vireo, conf, tmp / "second.log")
        compare.wait_listening(proc, port, args.limit)
        listening = time.monotonic() - t0
        restarted_rss = rss_mb(proc.pid)
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
        print(f"broker RSS: {before:.0f} MB before queueing, {queued_rss:.0f} MB with "
              f"{args.queued:,} queued (+{queued_rss - before:.0f} MB), {restarted_rss:.0f} MB "
              f"after the restart")
        if args.drain:
            t = time.monotonic()
            got = drain(sub, first, args.queued, args.limit)
            print(f"drained {got:,} of {args.queued:,} queued messages in "
                  f"{time.monotonic() - t:.1f} s, broker RSS then {rss_mb(proc.pid):.0f} MB")
            if got != args.queued:
                print("MISSING MESSAGES", file=sys.stderr)
                return 1
        sub.close()
        proc.terminate()
        proc.wait(timeout=args.limit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
