#!/usr/bin/env python3
"""Broker memory per idle TLS connection, Vireo beside Mosquitto in the same run.

Makes a self-signed certificate for 127.0.0.1 (openssl), starts each broker with one TLS
listener on a free loopback port, opens N TLS connections that each send CONNECT and get
CONNACK, waits for the broker to settle, and reports the growth of the broker's RSS per
connection. Usage: tls_idle_memory.py [--vireo PATH] [--mosquitto PATH] [--connections N]
(N at most ~9,000 per run on a 20,000-file limit: each connection is two file descriptors in
this process and the broker's). Bounded: every socket has a 10 s timeout.
"""

import argparse
import os
import resource
import socket
import ssl
import subprocess
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def wait_listening(port, proc, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("broker did not listen")


def measure(cmd, port, cafile, n):
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        time.sleep(0.5)
        base = rss_kib(proc.pid)
        ctx = ssl.create_default_context(cafile=cafile)
        conns = []
        for i in range(n):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            cid = f"idle-{i}".encode()
            body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
            s.sendall(bytes([0x10, len(body)]) + body)
            if s.recv(4)[:2] != b"\x20\x02":
                raise RuntimeError("no CONNACK")
            conns.append(s)
        time.sleep(1.5)  # let the broker release per-connect buffers (its sweep is 100 ms)
        after = rss_kib(proc.pid)
        for s in conns:
            s.close()
        return base, after
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vireo", default="target/release/vireo")
    p.add_argument("--mosquitto", default="mosquitto")
    p.add_argument("--connections", type=int, default=2000)
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
             "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
             "-addext", "subjectAltName=IP:127.0.0.1"],
            check=True, capture_output=True)
        os.chmod(key, 0o644)  # Mosquitto may drop privileges before reading it
        vport, mport = free_port(), free_port()
        vconf, mconf = os.path.join(d, "vireo.toml"), os.path.join(d, "mosquitto.conf")
        with open(vconf, "w") as f:
            f.write('persistence = "off"\n'
                    f'[[listener]]\naddress = "127.0.0.1:{vport}"\nprotocol = "tls"\n'
                    f'tls_certificate = "{cert}"\ntls_key = "{key}"\n')
        with open(mconf, "w") as f:
            f.write(f"listener {mport} 127.0.0.1\nallow_anonymous true\n"
                    f"certfile {cert}\nkeyfile {key}\n")
        for name, cmd, port in [
            ("Vireo", [args.vireo, "--config", vconf], vport),
            ("Mosquitto", [args.mosquitto, "-c", mconf], mport),
        ]:
            base, after = measure(cmd, port, cert, args.connections)
            per = (after - base) * 1024 / args.connections
            print(f"{name}: RSS {base} KiB -> {after} KiB with {args.connections} idle TLS "
                  f"connections: {per:.0f} B per connection")


if __name__ == "__main__":
    main()
