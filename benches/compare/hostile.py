#!/usr/bin/env python3
"""A quiet client's QoS 1 round trip under hostile load, Vireo beside Mosquitto in one run.

For each attack, and for no attack at all, a fresh broker is started on a free loopback
port; the attack runs in its own process; meanwhile the probe (`vireo-loadtest p2p --pairs 1
--qos 1 --rate R`) measures the round trip of a well-behaved client, publisher to
subscriber. The figure is the probe's p99 under attack against its p99 in the quiet run of
the same broker (the security issue's target: within 2x for Vireo), with what it lost and
the broker's peak RSS.

Attacks (each bounded in time and in sockets; every socket on loopback):
  cpu-burn       no network at all: one process spinning on a core, the control that shows
                 what an attacker's own CPU use costs the probe on this machine
  conn-flood     connections opened as fast as possible from one address (127.0.0.66)
  slowloris      400 PUBLISHes declaring 1,000,000 bytes and sending 600 KB, plus 200
                 CONNECTs trickled a byte a second
  never-reads    20 clients flooding PINGREQ and never reading a reply
  fanout-flood   10,000 silent subscribers to one topic, and a publisher flooding it
  malformed      connect, send a packet with an oversized remaining length, a topic of
                 30,000 levels or of 65,535 bytes; again, as fast as possible
  subscribe-100k SUBSCRIBEs of 100,000 filters each, over and over
  retained-flood retained PUBLISHes to fresh topics as fast as possible

Vireo runs with what a hostile network calls for: per-address connection limits, a
per-client publish rate (max_publish_rate = 100 a second; the probe publishes 50) and
packet_timeout_secs at its default. Mosquitto runs on its defaults (it has no per-address or
per-client rate limits).
Broker, attacker and probe share the machine's cores: read the ratios, not the absolute
figures, and compare brokers within one run.

Usage: hostile.py --vireo PATH --loadtest PATH [--mosquitto PATH] [--duration S]
       [--attacks a,b,...] [--rate R] [--out DIR]
"""

import argparse
import json
import multiprocessing
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ATTACKS = ["quiet", "cpu-burn", "conn-flood", "slowloris", "never-reads", "fanout-flood", "malformed",
           "subscribe-100k", "retained-flood"]


# ---------------------------------------------------------------------------------------
# MQTT 3.1.1 bytes
# ---------------------------------------------------------------------------------------

def vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_str(s: bytes) -> bytes:
    return struct.pack(">H", len(s)) + s


def connect(client_id: str, keep_alive: int = 60) -> bytes:
    body = mqtt_str(b"MQTT") + bytes([4, 0x02]) + struct.pack(">H", keep_alive) \
        + mqtt_str(client_id.encode())
    return b"\x10" + vbi(len(body)) + body


def publish(topic: bytes, payload: bytes, retain: bool = False) -> bytes:
    body = mqtt_str(topic) + payload
    return bytes([0x30 | (1 if retain else 0)]) + vbi(len(body)) + body


def subscribe(filters: list[bytes], packet_id: int = 1) -> bytes:
    body = struct.pack(">H", packet_id) + b"".join(mqtt_str(f) + b"\x00" for f in filters)
    return b"\x82" + vbi(len(body)) + body


PINGREQ = b"\xc0\x00"


# ---------------------------------------------------------------------------------------
# Attacks: each runs in its own process, says when it is under way (its sockets set up), and
# goes on until told to stop or its hard deadline (time.monotonic()) passes
# ---------------------------------------------------------------------------------------

READY = None  # multiprocessing.Event: set by the attack once under way
STOP = None  # multiprocessing.Event: set by the runner when the probe is done


def going(deadline: float) -> bool:
    return time.monotonic() < deadline and not STOP.is_set()

def open_socket(port: int, source: str | None = None, blocking: bool = True,
                timeout: float = 5.0) -> socket.socket:
    s = socket.socket()
    if source:
        s.bind((source, 0))
    s.settimeout(timeout)
    s.connect(("127.0.0.1", port))
    if not blocking:
        s.setblocking(False)
    return s


def close_all(socks):
    for s in socks:
        try:
            s.close()
        except OSError:
            pass


def attack_cpu_burn(port: int, deadline: float):
    READY.set()
    n = 0
    while going(deadline):
        for _ in range(100_000):
            n += 1


def attack_conn_flood(port: int, deadline: float):
    held = []
    n = 0
    READY.set()
    while going(deadline):
        try:
            s = open_socket(port, "127.0.0.66", timeout=1.0)
            s.sendall(connect(f"flood-{n}"))
            held.append(s)
        except OSError:
            pass
        n += 1
        if len(held) > 2000:
            close_all(held[:1000])
            del held[:1000]
    close_all(held)


def attack_slowloris(port: int, deadline: float):
    hoarders, tricklers = [], []
    chunk = b"x" * 60_000
    for i in range(400):
        if not going(deadline):
            break
        try:
            s = open_socket(port, "127.0.0.67")
            s.sendall(connect(f"hoard-{i}"))
            # A PUBLISH that declares 1,000,000 bytes.
            s.sendall(b"\x30" + vbi(1_000_000) + mqtt_str(b"hoard"))
            s.setblocking(False)
            hoarders.append([s, 0])
        except OSError:
            pass
    for i in range(200):
        try:
            tricklers.append([open_socket(port, "127.0.0.68", blocking=False), connect(f"t-{i}")])
        except OSError:
            pass
    READY.set()
    while going(deadline):
        for h in hoarders:
            if h[1] < 600_000:
                try:
                    h[1] += h[0].send(chunk)
                except OSError:
                    pass
        for t in tricklers:
            if t[1]:
                try:
                    t[0].send(t[1][:1])
                    t[1] = t[1][1:]
                except OSError:
                    pass
        time.sleep(1.0)
    close_all(h[0] for h in hoarders)
    close_all(t[0] for t in tricklers)


def attack_never_reads(port: int, deadline: float):
    socks = []
    for i in range(20):
        try:
            s = open_socket(port, "127.0.0.69")
            s.sendall(connect(f"deaf-{i}"))
            s.setblocking(False)
            socks.append(s)
        except OSError:
            pass
    burst = PINGREQ * 8192
    READY.set()
    while going(deadline):
        wrote = 0
        for s in socks:
            try:
                wrote += s.send(burst)
            except OSError:
                pass
        if wrote == 0:
            time.sleep(0.01)  # every socket is full: the broker stopped reading them
    close_all(socks)


def attack_fanout_flood(port: int, deadline: float):
    subs = []
    for i in range(10_000):
        if not going(deadline):
            break
        try:
            s = open_socket(port, f"127.0.1.{2 + i % 200}")
            s.sendall(connect(f"silent-{i}") + subscribe([b"flood"]))
            subs.append(s)
        except OSError:
            pass
    batch = publish(b"flood", b"x" * 256) * 64
    try:
        pub = open_socket(port, "127.0.0.70")
        # Blocking without a timeout: a timed-out sendall may have sent part of a packet,
        # and the stream would go on from the middle of one.
        pub.settimeout(None)
        pub.sendall(connect("flooder"))
        READY.set()
        while going(deadline):
            pub.sendall(batch)
        pub.close()
    except OSError:
        pass
    close_all(subs)


def attack_malformed(port: int, deadline: float):
    bad = [
        b"\x30\xff\xff\xff\xff\x01",                         # remaining length past 4 bytes
        b"\x30" + vbi(268_435_455),                          # the largest declared length
        publish(b"/".join([b"a"] * 30_000), b"deep"),        # 30,000 levels
        publish(b"t" * 65_535, b"long"),                     # the longest topic
    ]
    n = 0
    READY.set()
    while going(deadline):
        try:
            s = open_socket(port, "127.0.0.71", timeout=1.0)
            s.sendall(connect(f"bad-{n}") + bad[n % len(bad)])
            s.close()
        except OSError:
            pass
        n += 1


def attack_subscribe_100k(port: int, deadline: float):
    packet = subscribe([f"f/{i}".encode() for i in range(100_000)])
    n = 0
    READY.set()
    while going(deadline):
        try:
            s = open_socket(port, "127.0.0.72", timeout=2.0)
            s.sendall(connect(f"many-{n}") + packet)
            s.close()
        except OSError:
            pass
        n += 1


def attack_retained_flood(port: int, deadline: float):
    try:
        s = open_socket(port, "127.0.0.73")
        s.settimeout(None)  # as in attack_fanout_flood
        s.sendall(connect("retainer"))
        n = 0
        READY.set()
        while going(deadline):
            batch = b"".join(publish(f"r/{n + i}".encode(), b"v" * 64, retain=True)
                             for i in range(256))
            n += 256
            s.sendall(batch)
        s.close()
    except OSError:
        pass


def run_attack(name: str, port: int, seconds: float, ready, stop_event):
    global READY, STOP
    READY, STOP = ready, stop_event
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    globals()["attack_" + name.replace("-", "_")](port, time.monotonic() + seconds)


# ---------------------------------------------------------------------------------------
# Brokers and the probe
# ---------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"broker exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"broker not listening on {port}")


def rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def start_broker(kind: str, binary: str, port: int, workdir: Path,
                 unpinned: bool = False) -> subprocess.Popen:
    if kind == "vireo":
        conf = workdir / f"vireo-{port}.toml"
        conf.write_text(f'bind = "127.0.0.1:{port}"\n'
                        'persistence = "off"\n'
                        "max_connections_per_ip = 1000\n"
                        "max_connection_rate_per_ip = 200\n"
                        "max_publish_rate = 100\n"
                        + ("pin_workers = false\n" if unpinned else ""))
        cmd = [binary, "--config", str(conf), "--log-level", "warn"]
    else:
        conf = workdir / f"mosquitto-{port}.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        cmd = [binary, "-c", str(conf)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    wait_listening(port, proc)
    return proc


def stop(proc: subprocess.Popen):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def one_run(args, kind: str, binary: str, attack: str, workdir: Path) -> dict:
    port = free_port()
    broker = start_broker(kind, binary, port, workdir, args.unpinned)
    attacker = None
    stop_event = multiprocessing.Event()
    try:
        if attack != "quiet":
            ready = multiprocessing.Event()
            attacker = multiprocessing.Process(
                target=run_attack,
                args=(attack, port, args.duration + args.warmup + 60, ready, stop_event))
            attacker.start()
            if not ready.wait(timeout=60):
                print(f"{attack}: not under way after 60 s; probing anyway", file=sys.stderr)
            time.sleep(args.warmup)  # the attack at full strength before the probe starts
        out = workdir / f"{kind}-{attack}.json"
        probe = subprocess.Popen(
            [args.loadtest, "p2p", "--pairs", "1", "--qos", "1", "--rate", str(args.rate),
             "--duration", str(args.duration), "--threads", "1", "--port", str(port),
             "--client-id-prefix", f"probe-{attack}", "--connect-timeout", "30",
             "--json", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0
        while probe.poll() is None:
            peak = max(peak, rss_kib(broker.pid))
            time.sleep(0.2)
        result = {"broker": kind, "attack": attack, "rss_peak_mib": peak / 1024,
                  "alive": broker.poll() is None}
        if out.exists():
            report = json.loads(out.read_text())
            m, lat = report["messages"], report["latency"]
            result.update(p50_us=lat["p50_us"], p99_us=lat["p99_us"], max_us=lat["max_us"],
                          expected=m["expected"], delivered=m["unique"], lost=m["lost"],
                          failures=len(report["failures"]))
        else:
            result.update(p99_us=None, failures=1)
        return result
    finally:
        stop_event.set()
        if attacker is not None:
            attacker.join(timeout=args.duration + 30)
            if attacker.is_alive():
                attacker.kill()
        stop(broker)


def fmt_us(v):
    if v is None:
        return "—"
    return f"{v / 1000:.2f} ms" if v >= 1000 else f"{v:.0f} µs"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--vireo", required=True)
    p.add_argument("--loadtest", required=True)
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    p.add_argument("--no-mosquitto", action="store_true")
    p.add_argument("--duration", type=float, default=10.0, help="probe seconds per run")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="attack seconds, once under way, before the probe starts")
    p.add_argument("--rate", type=int, default=50,
                   help="probe round trips per second (under Vireo's max_publish_rate)")
    p.add_argument("--attacks", default=",".join(ATTACKS[1:]))
    p.add_argument("--unpinned", action="store_true",
                   help="Vireo with pin_workers = false (the scheduler may move its workers)")
    p.add_argument("--out", help="directory for the JSON reports (default: a temp dir)")
    args = p.parse_args()
    resource.setrlimit(resource.RLIMIT_NOFILE, (resource.getrlimit(resource.RLIMIT_NOFILE)[1],) * 2)
    attacks = ["quiet"] + [a for a in args.attacks.split(",") if a and a != "quiet"]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        sys.exit(f"unknown attacks: {', '.join(sorted(unknown))}; known: {', '.join(ATTACKS)}")
    brokers = [("vireo", args.vireo)]
    if not args.no_mosquitto and os.path.exists(args.mosquitto):
        brokers.append(("mosquitto", args.mosquitto))
    workdir = Path(args.out or tempfile.mkdtemp(prefix="vireo-hostile-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = {}
    # Interleaved: each attack against every broker before the next attack.
    for attack in attacks:
        for kind, binary in brokers:
            r = one_run(args, kind, binary, attack, workdir)
            results[(kind, attack)] = r
            print(f"{kind:9} {attack:15} p99 {fmt_us(r.get('p99_us')):>9}  lost {r.get('lost')}"
                  f"  rss {r['rss_peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
    cols = ["attack"]
    for kind, _ in brokers:
        cols += [f"{kind} p50", f"{kind} p99", "× quiet", "lost", "peak RSS"]
    print("| " + " | ".join(cols) + " |")
    print("|" + " --- |" * len(cols))
    for attack in attacks:
        row = [attack]
        for kind, _ in brokers:
            r = results[(kind, attack)]
            q = results[(kind, "quiet")].get("p99_us")
            ratio = (f"{r['p99_us'] / q:.2f}×" if r.get("p99_us") and q else "—")
            lost = r.get("lost")
            row += [fmt_us(r.get("p50_us")), fmt_us(r.get("p99_us")), ratio,
                    "—" if lost is None else f"{lost}/{r.get('expected')}",
                    f"{r['rss_peak_mib']:.0f} MiB" + ("" if r["alive"] else " (died)")]
        print("| " + " | ".join(row) + " |")
    (workdir / "hostile.json").write_text(json.dumps(
        [dict(v) for v in results.values()], indent=2))
    print(f"\nreports in {workdir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
