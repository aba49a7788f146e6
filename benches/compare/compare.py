#!/usr/bin/env python3
"""Side-by-side comparison of Vireo, Mosquitto and (optionally) rumqttd.

Every scenario run starts a fresh broker on a free loopback port, drives it with
`vireo-loadtest`, reads the broker's CPU time and peak RSS from /proc, and stops it.
Brokers are interleaved (A B A B ...) and the median of the repeats is reported. With --tls
every run is over TLS instead (a certificate for 127.0.0.1 made with openssl); with --ws, MQTT
over WebSocket (both: WebSocket over TLS).

Standard library only. See benches/compare/README.md for the details.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import itertools
import platform
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAYLOAD = 64
BUILD_HINT = "cargo build --release -p vireo-server -p vireo-loadtest"

# Scenarios whose latency plots (--plot) are kept for Vireo and Mosquitto (over TLS too).
PLOT_SCENARIOS = {"fanin-q0", "p2p-q1-10k", "fanout-500"}
# What --tls appends to scenario names (files, table, --scenarios) and titles.
TLS_SUFFIX, TLS_TITLE = "-tls", ", TLS"
# --persistence MODE: where the brokers keep their state (a folder of the run's temporary
# one), and Vireo's mode; None: in memory.
PERSIST: "tuple[str, Path] | None" = None
# What --ws appends (before --tls's: "fanout-q0-ws-tls").
WS_SUFFIX, WS_TITLE = "-ws", ", WebSocket"


# --------------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One vireo-loadtest invocation, minus the broker-specific arguments."""

    number: str  # "1" .. "8"; used by --scenarios
    name: str  # short id, used in file names and by --scenarios
    title: str  # human description for the table
    args: tuple[str, ...]  # subcommand and its scenario arguments
    connections: int = 0  # > 0 for the idle-connections scenario

    @property
    def is_connections(self) -> bool:
        return self.connections > 0


def build_scenarios(conn_counts: list[int]) -> list[Scenario]:
    """The fixed scenario list; scenario 7 has one entry per connection count."""
    scenarios = [
        Scenario("1", "fanin-q0", "fan-in 50→1, QoS 0",
                 ("fan-in", "--publishers", "50", "--subscribers", "1", "--qos", "0")),
        Scenario("2", "fanin-q1", "fan-in 50→1, QoS 1",
                 ("fan-in", "--publishers", "50", "--subscribers", "1", "--qos", "1")),
        Scenario("3", "fanout-q0", "fan-out 1→100, QoS 0",
                 ("fan-out", "--publishers", "1", "--subscribers", "100", "--qos", "0")),
        Scenario("4", "p2p-q0", "p2p ×50, QoS 0",
                 ("p2p", "--pairs", "50", "--qos", "0")),
        Scenario("5", "p2p-q1-10k", "p2p ×50, QoS 1, 10k msg/s",
                 ("p2p", "--pairs", "50", "--qos", "1", "--rate", "200")),
        Scenario("6", "fanout-500", "fan-out 1→100 at 500 msg/s, QoS 0",
                 ("fan-out", "--publishers", "1", "--subscribers", "100", "--qos", "0",
                  "--rate", "500")),
    ]
    # The CONNECT path: 10,000 handshakes, 100 in flight at once; the rate and the CONNACK
    # latency are the figures.
    scenarios.append(Scenario(
        "8", "connect-10k", "10,000 connects, 100 in flight",
        ("connections", "--connections", "10000", "--handshakes", "100"), connections=10000))
    for count in conn_counts:
        scenarios.append(Scenario(
            "7", f"conn-{count}", f"{count:,} idle connections",
            ("connections", "--connections", str(count)), connections=count))
    return scenarios


def over_tls(scenarios: list[Scenario]) -> list[Scenario]:
    """The same scenarios run over TLS: `-tls` names and ', TLS' titles, same numbers."""
    return over(scenarios, TLS_SUFFIX, TLS_TITLE)


def over_ws(scenarios: list[Scenario]) -> list[Scenario]:
    """The same scenarios run over WebSocket: `-ws` names and ', WebSocket' titles."""
    return over(scenarios, WS_SUFFIX, WS_TITLE)


def over(scenarios: list[Scenario], suffix: str, title: str) -> list[Scenario]:
    return [dataclasses.replace(s, name=s.name + suffix, title=s.title + title)
            for s in scenarios]


def transport_suffix(args: argparse.Namespace) -> str:
    """What --ws, --tls and --persistence append to scenario names: '', '-ws', '-tls',
    '-ws-tls', then '-async' or '-sync'."""
    persist = f"-{args.persistence}" if args.persistence else ""
    return (WS_SUFFIX if args.ws else "") + (TLS_SUFFIX if args.tls else "") + persist


def base_name(name: str) -> str:
    """A scenario's name without the --ws/--tls suffixes."""
    for persist in ("-async", "-sync"):
        name = name.removesuffix(persist)
    return name.removesuffix(TLS_SUFFIX).removesuffix(WS_SUFFIX)


def select_scenarios(all_scenarios: list[Scenario], selection: str | None,
                     suffix: str = "") -> list[Scenario]:
    """Filter by a comma list of numbers ("1,5") or names ("fanin-q0,conn-10000"; under
    --tls "fanin-q0-tls" too, under --ws "fanin-q0-ws")."""
    if not selection:
        return all_scenarios
    wanted = {s.strip() for s in selection.split(",") if s.strip()}
    if suffix:
        wanted = {w if w.isdigit() else base_name(w) + suffix for w in wanted}
    chosen = [s for s in all_scenarios if s.number in wanted or s.name in wanted]
    known = {s.number for s in all_scenarios} | {s.name for s in all_scenarios}
    unknown = wanted - known
    if unknown:
        sys.exit(f"unknown scenario(s): {', '.join(sorted(unknown))}; "
                 f"known: {', '.join(s.number + '=' + s.name for s in all_scenarios)}")
    return chosen


# --------------------------------------------------------------------------------------------
# Brokers
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Broker:
    """A broker under test: how to configure it and how to start it."""

    key: str  # "vireo", "mosquitto", "rumqttd"
    label: str  # for the table
    binary: str

    def write_config(self, port: int, directory: Path, tls: TlsFiles | None = None,
                     ws: bool = False) -> Path:
        """Write this broker's configuration for `port` (a TLS listener with `tls`, a
        WebSocket one with `ws`, wss with both); return the file."""
        # rumqttd's config loader picks the format from the extension: it must be `.toml`.
        suffix = "conf" if self.key == "mosquitto" else "toml"
        path = directory / f"{self.key}-{port}.{suffix}"
        path.write_text(CONFIG_WRITERS[self.key](port, tls, ws))
        return path

    def command(self, config: Path) -> list[str]:
        if self.key == "vireo":
            return [self.binary, "--config", str(config), "--log-level", "warn"]
        if self.key == "mosquitto":
            return [self.binary, "-c", str(config)]
        return [self.binary, "--config", str(config)]


@dataclasses.dataclass(frozen=True)
class TlsFiles:
    """--tls: the CA the load generator trusts, and the server certificate and key it signed."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path, key_type: str) -> TlsFiles:
    """A CA and a certificate for IP 127.0.0.1 that it signs, made with openssl in `directory`.

    Two certificates, not one self-signed: rustls (webpki) refuses a CA certificate as the
    server's own, and `openssl req -x509` makes a CA. `key_type` is "rsa" (RSA-2048, as
    tls_idle_memory.py) or "ec" (P-256); the same kind signs the handshakes.
    """
    newkey = (["-newkey", "rsa:2048"] if key_type == "rsa" else
              ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    ca_key, csr, ext = directory / "ca.key", directory / "cert.csr", directory / "cert.ext"
    ext.write_text("subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\n"
                   "extendedKeyUsage = serverAuth\n")
    for cmd in (
        ["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", ca_key, "-out", files.ca,
         "-days", "2", "-subj", "/CN=vireo-compare CA"],
        ["openssl", "req", *newkey, "-nodes", "-keyout", files.key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", ca_key,
         "-CAcreateserial", "-out", files.cert, "-days", "2", "-extfile", ext],
    ):
        out = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if out.returncode != 0:
            sys.exit(f"openssl failed: {' '.join(map(str, cmd))}\n{out.stderr.strip()}")
    # Mosquitto started as root may read them after dropping to its own user.
    directory.chmod(0o755)
    for f in (files.ca, files.cert, files.key):
        f.chmod(0o644)
    return files


def vireo_config(port: int, tls: TlsFiles | None = None, ws: bool = False) -> str:
    """Vireo: defaults, except the queue bounds, raised so nothing is dropped by configuration,
    and the QoS 1/2 window at its largest (65535, what 16-bit packet ids allow), the closest
    Vireo has to Mosquitto's `max_inflight_messages 0` (no maximum).

    `max_output_bytes` stays at its default: past it Vireo pushes back on publishers (QoS 1/2)
    or drops QoS 0 copies, which is the intended design; any such drop shows up as loss.
    """
    lines = [
        # In memory, as Mosquitto runs by default (`persistence false`); the persistent
        # variants set it themselves.
        'persistence = "off"',
        "max_connections = 1000000",
        "max_inflight = 65535",
        "max_queued_messages = 10000000",
        "max_queued_bytes = 4294967296",
    ]
    if PERSIST is not None:
        mode, folder = PERSIST
        lines[0] = f'persistence = "{mode}"'
        lines.insert(1, f'data_dir = "{folder}/vireo-{port}"')
    if tls is None and not ws:
        lines.insert(0, f'bind = "127.0.0.1:{port}"')
    else:  # a [[listener]] replaces `bind`; tables come after the top-level keys
        protocol = {(False, True): "tls", (True, False): "ws", (True, True): "wss"}[
            (ws, tls is not None)]
        lines += ["[[listener]]", f'address = "127.0.0.1:{port}"', f'protocol = "{protocol}"']
        if tls is not None:
            lines += [f'tls_certificate = "{tls.cert}"', f'tls_key = "{tls.key}"']
    return "\n".join(lines + [""])


def mosquitto_config(port: int, tls: TlsFiles | None = None, ws: bool = False) -> str:
    """Mosquitto 2.0: anonymous, in memory, unlimited queues (see mosquitto.conf(5)); with
    `tls`, the listener's certificate and key (its TLS defaults otherwise: 1.3 and 1.2); with
    `ws`, a websockets listener (libwebsockets; it serves any path and the `mqtt`
    subprotocol)."""
    listener = [f"listener {port} 127.0.0.1"]
    if ws:
        listener.append("protocol websockets")
    if tls is not None:
        listener += [f"certfile {tls.cert}", f"keyfile {tls.key}"]
    return "\n".join([
        *listener,
        "max_connections -1",  # per listener: unlimited
        "allow_anonymous true",
        *(["persistence false"] if PERSIST is None else mosquitto_persistence(port)),
        "max_queued_messages 0",  # 0 = no maximum; in 2.0 it also bounds QoS 0 to online clients
        "max_queued_bytes 0",  # 0 = no maximum
        "max_inflight_messages 0",  # outgoing QoS 1/2 in flight per client: 0 = no maximum
        "set_tcp_nodelay true",  # Vireo sets TCP_NODELAY on every client socket
        "sys_interval 0",  # no $SYS publishing
        "log_dest stderr",
        "log_type error",
        *unused_mqtt_listener(port, ws),
        "",
    ])


def unused_mqtt_listener(port: int, ws: bool) -> list[str]:
    """Mosquitto 2.0.11 exits with "Unable to start any listening sockets" when its only
    listener is a websockets one (it counts MQTT sockets alone): under --ws a plain MQTT
    listener that nothing uses, on another free port, last (per-listener settings apply to
    the listener above them)."""
    if not ws:
        return []
    unused = free_port() if port else 0
    while port and unused == port:
        unused = free_port()
    return [f"listener {unused} 127.0.0.1"]


def rumqttd_config(port: int, tls: TlsFiles | None = None, ws: bool = False) -> str:
    """rumqttd (0.19+ layout): one v4 listener, generous limits, no connection delay. Plain
    TCP only: rumqttd is left out under --tls and --ws."""
    return "\n".join([
        "id = 0",
        "[router]",
        "id = 0",
        "max_connections = 1000000",
        "max_outgoing_packet_count = 200",
        "max_segment_size = 104857600",
        "max_segment_count = 10",
        "[v4.1]",
        'name = "v4-1"',
        f'listen = "127.0.0.1:{port}"',
        "next_connection_delay_ms = 0",
        "[v4.1.connections]",
        "connection_timeout_ms = 60000",
        "max_payload_size = 20480",
        "max_inflight_count = 1024",
        "dynamic_filters = true",
        "",
    ])


CONFIG_WRITERS = {"vireo": vireo_config, "mosquitto": mosquitto_config,
                  "rumqttd": rumqttd_config}


# --------------------------------------------------------------------------------------------
# Processes, ports and /proc
# --------------------------------------------------------------------------------------------

# Every process this script starts, so the finally-block (and signals) can stop them all.
_children: list[subprocess.Popen] = []


def raise_nofile_limit() -> None:
    """preexec_fn: give the child an open-files soft limit equal to the hard limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(cmd: list[str], log: Path, *, new_session: bool) -> subprocess.Popen:
    """Start a child with stdout+stderr to `log`, registered for clean-up."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, preexec_fn=raise_nofile_limit,
                                start_new_session=new_session)
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen, grace: float = 5.0) -> int | None:
    """SIGTERM, then SIGKILL after `grace` seconds; return the exit status."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        except ProcessLookupError:
            pass
    if proc in _children:
        _children.remove(proc)
    return proc.returncode


def stop_all() -> None:
    """Stop every child still running (used on exit and on signals)."""
    for proc in list(_children):
        stop(proc, grace=2.0)


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether any socket listens on `port` (from /proc/net/tcp{,6}; state 0A is LISTEN)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    return False


def wait_listening(proc: subprocess.Popen, port: int, timeout: float = 10.0) -> None:
    """Wait until the broker listens on `port`; raise if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"broker exited with status {proc.returncode} before listening")
        if listening(port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"broker not listening on port {port} after {timeout:.0f} s")


def listen_overflows() -> int | None:
    """The kernel's TcpExt ListenOverflows counter (system-wide): SYNs dropped because an
    accept queue was full. Each costs the client a SYN retransmission (about 1 s)."""
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for names, values in zip(lines[::2], lines[1::2]):
        if names.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table["ListenOverflows"]) if "ListenOverflows" in table else None
    return None


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # fields from 3 (state) on
    utime, stime = int(fields[11]), int(fields[12])  # stat fields 14 and 15
    return (utime + stime) / CLK_TCK


def storage_write_bytes(pid: int) -> int | None:
    """Bytes the process caused to be written to storage so far (/proc/PID/io)."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def status_kib(pid: int, key: str) -> int | None:
    """A `kB` field of /proc/PID/status, e.g. VmHWM (peak RSS) or VmRSS."""
    return kib_field(f"/proc/{pid}/status", key)


def kib_field(path: str, key: str) -> int | None:
    """The number after `key:` in a /proc file of `Key:   123 kB` lines."""
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class RunResult:
    """Everything recorded for one scenario run against one broker."""

    scenario: str
    broker: str
    repeat: int
    port: int
    ok: bool = False
    reason: str = ""
    loadtest_rc: int | None = None
    json_file: str | None = None
    plot_file: str | None = None
    delivered_per_sec: float | None = None
    published: int | None = None
    delivered: int | None = None
    lost: int | None = None
    p50_us: float | None = None
    p99_us: float | None = None
    p999_us: float | None = None
    co_corrected: bool | None = None
    broker_cpu_s: float | None = None
    per_broker_cpu_s: float | None = None
    broker_peak_rss_kib: int | None = None
    gen_cpu_percent: float | None = None
    gen_threads: int | None = None
    gen_bound: bool = False
    connected: int | None = None
    connect_rate: float | None = None
    rss_per_conn_bytes: float | None = None
    broker_exit: int | None = None
    listen_overflows: int | None = None
    # --persistence: bytes the broker had written to storage while the run lasted
    # (/proc/PID/io write_bytes), per delivered message.
    disk_bytes_per_msg: float | None = None


_source_counter = itertools.count()
_source_octet = random.randrange(16, 250)


def fresh_source_ips(connections: int) -> list[str]:
    """Loopback addresses this harness has not used yet, one per 10,000 connections.

    Idle-connection runs leave thousands of client sockets in TIME_WAIT for 60 s. Reusing the
    same source address makes the next run's connect() search the ephemeral ports past them
    (slow, and it fails when they run out); a fresh 127.x.y.z has all its ~28k ports free.
    """
    count = max(1, -(-connections // 10000))
    ips = []
    for _ in range(count):
        n = next(_source_counter)
        ips.append(f"127.{_source_octet}.{n // 250 % 250}.{n % 250 + 1}")
    return ips


def mosquitto_persistence(port: int) -> list[str]:
    """--persistence: Mosquitto's snapshot persistence, in a folder of its own per run, at its
    default autosave interval (1800 s): it writes the snapshot at exit, so a crash loses what
    changed since the last one (Mosquitto has no per-message durability)."""
    assert PERSIST is not None
    folder = PERSIST[1] / f"mosquitto-{port}"
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o777)  # Mosquitto may drop privileges before writing it
    return ["persistence true", f"persistence_location {folder}/"]


def loadtest_command(args: argparse.Namespace, scenario: Scenario, port: int, pid: int,
                     json_file: Path, plot_file: Path | None) -> list[str]:
    """The vireo-loadtest command line for one run."""
    cmd = [args.loadtest, *scenario.args, "--host", "127.0.0.1", "--port", str(port),
           "--payload", str(PAYLOAD), "--broker-pid", str(pid), "--json", str(json_file),
           "--quiet"]
    cmd += ["--duration", str(args.conn_hold if scenario.is_connections else args.duration)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.protocol != "3.1.1":
        cmd += ["--protocol", args.protocol]
    if args.tls_files is not None:
        cmd += ["--tls", "--cafile", str(args.tls_files.ca)]
    if args.ws:
        cmd += ["--ws"]
    if args.persistence:
        cmd += ["--clean-session", "false"]  # persistent sessions: what gets stored
    if args.drain_timeout is not None:
        cmd += ["--drain-timeout", str(args.drain_timeout)]
    if plot_file is not None:
        cmd += ["--plot", str(plot_file)]
    if scenario.is_connections and args.source_ips == "auto":
        for ip in fresh_source_ips(scenario.connections):
            cmd += ["--source-ip", ip]
    return cmd


def read_report(result: RunResult, report: dict, scenario: Scenario) -> None:
    """Copy the figures we tabulate from a vireo-loadtest JSON report."""
    msgs, lat = report["messages"], report["latency"]
    gen, conns = report["generator"], report["connections"]
    result.published, result.delivered, result.lost = \
        msgs["published"], msgs["delivered"], msgs["lost"]
    result.delivered_per_sec = report["throughput"]["delivered_per_sec"]
    if scenario.is_connections:
        lat = report["connect_latency"]
    result.p50_us, result.p99_us, result.p999_us = lat["p50_us"], lat["p99_us"], lat["p99_9_us"]
    result.co_corrected = lat.get("co_corrected")
    result.gen_cpu_percent, result.gen_threads = gen["cpu_percent"], gen["threads"]
    per_thread = (gen["cpu_percent"] or 0) / max(gen["threads"] or 1, 1)
    result.gen_bound = bool(gen.get("saturated")) or per_thread >= 90.0
    result.connected, result.connect_rate = conns["connected"], conns["connect_rate"]
    result.rss_per_conn_bytes = conns.get("broker_bytes_per_connection")
    failures = report.get("failures") or []
    if failures:
        result.reason = "; ".join(describe_failure(f) for f in failures)


def describe_failure(failure) -> str:
    """A report failure such as {'kind': 'loss', 'lost': 3} as 'loss: lost 3'."""
    if not isinstance(failure, dict):
        return str(failure)
    rest = ", ".join(f"{k} {v}" for k, v in failure.items() if k != "kind")
    return f"{failure.get('kind', 'failure')}: {rest}" if rest else str(failure.get("kind"))


def run_once(args: argparse.Namespace, broker: Broker, scenario: Scenario, repeat: int,
             workdir: Path) -> RunResult:
    """Start `broker` fresh, run `scenario` against it, measure, stop it."""
    port = free_port()
    result = RunResult(scenario.name, broker.key, repeat, port)
    stem = f"{scenario.name}.{broker.key}.{repeat}"
    json_file = args.out / "raw" / f"{stem}.json"
    plot_file = None
    base = base_name(scenario.name)
    if base in PLOT_SCENARIOS and broker.key in ("vireo", "mosquitto"):
        plot_file = args.out / "plots" / f"{stem}.svg"
    config = broker.write_config(port, workdir, args.tls_files, args.ws)
    proc = spawn(broker.command(config), args.out / "logs" / f"{stem}.broker.log",
                 new_session=True)
    try:
        wait_listening(proc, port)
        cpu_before = cpu_seconds(proc.pid)
        disk_before = storage_write_bytes(proc.pid)
        disk_written = None
        overflows_before = listen_overflows()
        cmd = loadtest_command(args, scenario, port, proc.pid, json_file, plot_file)
        log = args.out / "logs" / f"{stem}.loadtest.txt"
        gen = spawn(cmd, log, new_session=False)
        timeout = ((args.conn_hold if scenario.is_connections else args.duration)
                   + (args.drain_timeout or 5) + 120)
        try:
            result.loadtest_rc = gen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(gen)
            result.reason = f"vireo-loadtest still running after {timeout:.0f} s"
        finally:
            if gen in _children:
                _children.remove(gen)
        overflows_after = listen_overflows()
        if overflows_before is not None and overflows_after is not None:
            result.listen_overflows = overflows_after - overflows_before
        alive = proc.poll() is None
        if alive:
            result.broker_cpu_s = cpu_seconds(proc.pid) - cpu_before
            result.broker_peak_rss_kib = status_kib(proc.pid, "VmHWM")
            disk_after = storage_write_bytes(proc.pid)
            disk_written = (None if disk_before is None or disk_after is None
                            else disk_after - disk_before)
        if json_file.exists():
            result.json_file = str(json_file.relative_to(args.out))
            read_report(result, json.loads(json_file.read_text()), scenario)
        if plot_file is not None and plot_file.exists():
            result.plot_file = str(plot_file.relative_to(args.out))
        count = result.connected if scenario.is_connections else result.delivered
        if count and result.broker_cpu_s:
            result.per_broker_cpu_s = count / result.broker_cpu_s
        if args.persistence and alive and disk_written is not None and result.delivered:
            result.disk_bytes_per_msg = disk_written / result.delivered
        if not alive:
            result.reason = (f"broker exited with status {proc.returncode} during the run; "
                             + result.reason).rstrip("; ")
        elif result.loadtest_rc not in (0, None) and not result.reason:
            result.reason = last_line(log) or f"vireo-loadtest exit status {result.loadtest_rc}"
        result.ok = alive and result.loadtest_rc == 0
    except RuntimeError as err:
        result.reason = str(err)
    finally:
        result.broker_exit = stop(proc)
        if PERSIST is not None:  # this run's state: the next run starts empty
            shutil.rmtree(PERSIST[1] / f"{broker.key}-{port}", ignore_errors=True)
        if listening(port):
            print(f"  warning: port {port} still has a listener after stopping {broker.label}",
                  file=sys.stderr)
    return result


def last_line(path: Path) -> str:
    """The last non-empty line of a text file (a loadtest's error message)."""
    try:
        lines = [l for l in path.read_text(errors="replace").splitlines() if l.strip()]
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


# --------------------------------------------------------------------------------------------
# Aggregation and formatting
# --------------------------------------------------------------------------------------------

METRICS = ("delivered_per_sec", "per_broker_cpu_s", "p50_us", "p99_us", "p999_us",
           "broker_peak_rss_kib", "gen_cpu_percent", "connect_rate", "rss_per_conn_bytes",
           "lost", "connected", "listen_overflows", "disk_bytes_per_msg")


def median_of(runs: list[RunResult]) -> dict:
    """Median of each metric over the runs that produced figures, plus the failures."""
    summary: dict = {"runs": len(runs), "failed": sum(not r.ok for r in runs),
                     "reasons": sorted({r.reason for r in runs if r.reason}),
                     "gen_bound": sum(r.gen_bound for r in runs)}
    for metric in METRICS:
        values = [getattr(r, metric) for r in runs if getattr(r, metric) is not None]
        summary[metric] = statistics.median(values) if values else None
    return summary


def fmt_rate(value: float | None, unit: str = "/s") -> str:
    if value is None:
        return "–"
    for limit, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.2f} {suffix}{unit}"
    return f"{value:.0f}{unit}"


def fmt_count(value: float) -> str:
    return fmt_rate(value, "").strip()


def fmt_us(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 1e6:
        return f"{value / 1e6:.2f} s"
    if value >= 1e3:
        return f"{value / 1e3:.2f} ms"
    return f"{value:.0f} µs"


def fmt_kib(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1024:.1f} MiB" if value >= 1024 else f"{value:.0f} KiB"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1024:.1f} KiB" if value >= 1024 else f"{value:.0f} B"


def fmt_ratio(num: float | None, den: float | None) -> str:
    if not num or not den:
        return "–"
    return f"{num / den:.2f}×"


def status_cell(s: dict) -> str:
    """PASS, or FAIL k/N with the reasons; notes on loss and a busy generator."""
    if s["failed"]:
        text = f"FAIL {s['failed']}/{s['runs']}: " + " | ".join(s["reasons"])[:160]
    else:
        text = "PASS"
    if not s["failed"] and s.get("lost"):
        text += f", undelivered {fmt_count(s['lost'])}"
    if s.get("disk_bytes_per_msg") is not None:
        text += f", disk {s['disk_bytes_per_msg']:.0f} B/msg"
    if s.get("listen_overflows"):
        text += f", accept queue overflowed {s['listen_overflows']:.0f}×"
    if s["gen_bound"]:
        text += f", generator-bound {s['gen_bound']}/{s['runs']}"
    return text


HEADER = ["#", "scenario", "broker", "result", "delivered/s (conn/s)", "per broker CPU-s",
          "p50", "p99", "p99.9", "peak RSS", "RSS/conn", "gen CPU (1 core = 100 %)"]


def table_rows(scenarios: list[Scenario], brokers: list[Broker],
               summaries: dict[tuple[str, str], dict]) -> list[list[str]]:
    """One row per scenario and broker, then ratio rows against Vireo."""
    rows = []
    for sc in scenarios:
        for br in brokers:
            s = summaries.get((sc.name, br.key))
            if s is None:
                continue
            rate = s["connect_rate"] if sc.is_connections else s["delivered_per_sec"]
            unit = " conn/s" if sc.is_connections else "/s"
            rows.append([
                sc.number, sc.title, br.label, status_cell(s), fmt_rate(rate, unit),
                fmt_rate(s["per_broker_cpu_s"], ""), fmt_us(s["p50_us"]), fmt_us(s["p99_us"]),
                fmt_us(s["p999_us"]), fmt_kib(s["broker_peak_rss_kib"]),
                fmt_bytes(s["rss_per_conn_bytes"]) if sc.is_connections else "",
                "–" if s["gen_cpu_percent"] is None else f"{s['gen_cpu_percent']:.0f} %",
            ])
        vireo = summaries.get((sc.name, "vireo"))
        for other in brokers:
            theirs = summaries.get((sc.name, other.key))
            if other.key == "vireo" or vireo is None or theirs is None:
                continue
            rate_key = "connect_rate" if sc.is_connections else "delivered_per_sec"
            rows.append([
                sc.number, sc.title, f"Vireo / {other.label}", "ratio",
                fmt_ratio(vireo[rate_key], theirs[rate_key]),
                fmt_ratio(vireo["per_broker_cpu_s"], theirs["per_broker_cpu_s"]), "",
                fmt_ratio(vireo["p99_us"], theirs["p99_us"]), "",
                fmt_ratio(vireo["broker_peak_rss_kib"], theirs["broker_peak_rss_kib"]),
                fmt_ratio(vireo["rss_per_conn_bytes"], theirs["rss_per_conn_bytes"])
                if sc.is_connections else "", "",
            ])
    return rows


def text_table(rows: list[list[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(HEADER, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def markdown_table(rows: list[list[str]]) -> str:
    """The same table in GitHub markdown."""
    lines = ["| " + " | ".join(HEADER) + " |",
             "| " + " | ".join("---:" if i >= 4 else "---" for i in range(len(HEADER))) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Environment
# --------------------------------------------------------------------------------------------


def command_output(cmd: list[str], cwd: Path | None = None) -> str:
    """First line of a command's output, or '' if it cannot run."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10, cwd=cwd)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else ""


def machine_info(args: argparse.Namespace, brokers: list[Broker]) -> dict:
    """The machine and the versions, for results.md."""
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = kib_field("/proc/meminfo", "MemTotal")
    if args.commit:
        commit, dirty = args.commit, ""
    else:
        commit = command_output(["git", "rev-parse", "--short", "HEAD"], cwd=REPO)
        dirty = command_output(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=REPO)
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kib / 1024 / 1024, 1) if mem_kib else None,
        "kernel": platform.release(),
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "rustc": command_output(["rustc", "--version"]),
        "vireo_commit": commit + (" (working tree modified)" if dirty else ""),
        "loadtest": command_output([args.loadtest, "--version"]),
        "binaries": {path: datetime.datetime.fromtimestamp(os.stat(path).st_mtime)
                     .isoformat(timespec="seconds") for path in (args.vireo, args.loadtest)},
    }
    for br in brokers:
        if br.key == "mosquitto":
            info["mosquitto"] = command_output([br.binary, "-h"])
        elif br.key == "vireo":
            info["vireo"] = command_output([br.binary, "--version"])
        else:
            info[br.key] = command_output([br.binary, "--version"])
    return info


def find_tools(args: argparse.Namespace) -> list[Broker]:
    """Check every needed program, naming how to get what is missing; install nothing."""
    missing = []
    for name, path in (("vireo", args.vireo), ("vireo-loadtest", args.loadtest)):
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            missing.append(f"{name} not found at {path}: build it with `{BUILD_HINT}` "
                           f"(or pass --{'vireo' if name == 'vireo' else 'loadtest'} PATH)")
    mosquitto = args.mosquitto or shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None)
    if not mosquitto:
        missing.append("mosquitto not found: install Debian's broker with "
                       "`apt-get install mosquitto` (or pass --mosquitto PATH)")
    if missing:
        sys.exit("missing:\n  " + "\n  ".join(missing))
    brokers = [Broker("vireo", "Vireo", args.vireo), Broker("mosquitto", "Mosquitto", mosquitto)]
    rumqttd = None if args.no_rumqttd else (args.rumqttd or shutil.which("rumqttd"))
    if rumqttd and args.protocol == "5":
        print("note: rumqttd is configured with a 3.1.1 listener only, so it is left out "
              "under --protocol 5", file=sys.stderr)
    elif rumqttd and args.persistence:
        print("note: rumqttd keeps nothing on disk, so it is left out under --persistence",
              file=sys.stderr)
    elif rumqttd and (args.tls or args.ws):
        print("note: rumqttd is configured with a plain TCP listener only, so it is left out "
              "under --tls and --ws", file=sys.stderr)
    elif rumqttd:
        brokers.append(Broker("rumqttd", "rumqttd", rumqttd))
    elif not args.no_rumqttd:
        print("note: rumqttd not on PATH, so it is left out; `cargo install rumqttd` adds it",
              file=sys.stderr)
    only = {b.strip() for b in (args.brokers or "").split(",") if b.strip()}
    if only:
        brokers = [b for b in brokers if b.key in only]
    return brokers


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Compare Vireo with Mosquitto (and rumqttd) using vireo-loadtest.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--vireo", default=str(REPO / "target/release/vireo"), help="vireo binary")
    p.add_argument("--loadtest", default=str(REPO / "target/release/vireo-loadtest"),
                   help="vireo-loadtest binary")
    p.add_argument("--commit", help="the Vireo commit the binaries were built from, for the "
                   "report (default: this checkout's HEAD, marked if the tree is modified)")
    p.add_argument("--mosquitto", help="mosquitto binary (default: from PATH or /usr/sbin)")
    p.add_argument("--rumqttd", help="rumqttd binary (default: from PATH, if there)")
    p.add_argument("--no-rumqttd", action="store_true", help="leave rumqttd out")
    p.add_argument("--brokers", help="comma list of brokers to run (vireo,mosquitto,rumqttd)")
    p.add_argument("--duration", type=float, help="seconds of publishing per run (default 10)")
    p.add_argument("--repeats", type=int, help="runs per scenario and broker (default 3)")
    p.add_argument("--conn-counts", help="connection counts for scenario 7 "
                   "(default 10000,19000)")
    p.add_argument("--conn-hold", type=float, default=3.0,
                   help="seconds the idle connections are held")
    p.add_argument("--drain-timeout", type=float,
                   help="vireo-loadtest's --drain-timeout (its default: 5 s)")
    p.add_argument("--source-ips", choices=("auto", "none"), default="auto",
                   help="connection scenarios: bind clients to fresh 127.x.y.z addresses "
                   "(auto) or let the kernel pick (none)")
    p.add_argument("--protocol", choices=("3.1.1", "5"), default="3.1.1",
                   help="MQTT version every client speaks (rumqttd's v4 listener is left "
                        "out under 5)")
    p.add_argument("--tls", action="store_true",
                   help="run every scenario over TLS: a CA and a certificate for 127.0.0.1 made "
                        "with openssl, a TLS listener on each broker, vireo-loadtest --tls "
                        "--cafile; scenario names get '-tls' (rumqttd is left out)")
    p.add_argument("--ws", action="store_true",
                   help="run every scenario over WebSocket: a ws listener on each broker "
                        "(Vireo's on /mqtt, Mosquitto's libwebsockets one), vireo-loadtest "
                        "--ws; scenario names get '-ws'; with --tls, wss and '-ws-tls' "
                        "(rumqttd is left out)")
    p.add_argument("--persistence", choices=("async", "sync"),
                   help="persistent sessions (clients connect with Clean Session 0) and a "
                        "broker that keeps them on disk: Vireo with persistence = MODE, "
                        "Mosquitto with `persistence true`; scenario names get '-MODE' "
                        "(rumqttd is left out)")
    p.add_argument("--tls-key", choices=("rsa", "ec"), default="rsa",
                   help="--tls: the certificates' key, RSA-2048 or ECDSA P-256")
    p.add_argument("--threads", type=int, help="generator threads (default: loadtest's, cores)")
    p.add_argument("--scenarios", help="comma list of scenario numbers or names (default all)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 2 s, 1 repeat, 2000 connections (unless given)")
    p.add_argument("--out", type=Path, help="output folder (default /tmp/vireo-compare-DATE)")
    args = p.parse_args()
    if args.duration is None:
        args.duration = 2.0 if args.quick else 10.0
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.conn_counts is None:
        args.conn_counts = "2000" if args.quick else "10000,19000"
    args.conn_counts = [int(c) for c in args.conn_counts.split(",") if c.strip()]
    if args.duration == int(args.duration):
        args.duration = int(args.duration)
    if args.conn_hold == int(args.conn_hold):
        args.conn_hold = int(args.conn_hold)
    args.tls_files = None  # made in the run's temporary folder under --tls
    if args.out is None:
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        args.out = Path(f"/tmp/vireo-compare-{stamp}")
    return args


def on_signal(signum, _frame):
    """Turn SIGTERM/SIGHUP into KeyboardInterrupt so the finally-block cleans up."""
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> int:
    args = parse_args()
    brokers = find_tools(args)
    all_scenarios = build_scenarios(args.conn_counts)
    if args.ws:
        all_scenarios = over_ws(all_scenarios)
    if args.tls:
        all_scenarios = over_tls(all_scenarios)
    if args.persistence:
        all_scenarios = over(all_scenarios, f"-{args.persistence}",
                             f", persistent sessions ({args.persistence})")
        # Each run's broker state, removed at the end (see the `finally`).
        global PERSIST
        PERSIST = (args.persistence, args.out / "state")
    scenarios = select_scenarios(all_scenarios, args.scenarios, transport_suffix(args))
    for sub in ("raw", "plots", "logs"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    info = machine_info(args, brokers)
    total = len(scenarios) * len(brokers) * args.repeats
    print(f"{total} runs: {len(scenarios)} scenarios × {len(brokers)} brokers "
          f"({', '.join(b.label for b in brokers)}) × {args.repeats} repeats, "
          f"{args.duration} s each; output in {args.out}", file=sys.stderr)

    results: list[RunResult] = []
    used_ports: list[int] = []
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="vireo-compare-") as tmp:
        args.tls_files = make_certificates(Path(tmp), args.tls_key) if args.tls else None

        try:
            for sc in scenarios:
                for repeat in range(1, args.repeats + 1):
                    for br in brokers:  # interleaved: A B A B ...
                        n = len(results) + 1
                        print(f"[{n}/{total}] {sc.number} {sc.name} {br.label} "
                              f"#{repeat} ...", end="", flush=True, file=sys.stderr)
                        r = run_once(args, br, sc, repeat, Path(tmp))
                        results.append(r)
                        used_ports.append(r.port)
                        print(" " + run_summary(r), file=sys.stderr)
        except KeyboardInterrupt:
            interrupted = True
            print("\ninterrupted: stopping brokers, reporting the runs so far", file=sys.stderr)
        finally:
            stop_all()
    busy = [p for p in used_ports if listening(p)]
    if busy:
        print(f"warning: ports still listening after clean-up: {busy}", file=sys.stderr)

    summaries = {}
    for sc in scenarios:
        for br in brokers:
            runs = [r for r in results if r.scenario == sc.name and r.broker == br.key]
            if runs:
                summaries[(sc.name, br.key)] = median_of(runs)
    info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    rows = table_rows(scenarios, brokers, summaries)
    print()
    print(text_table(rows))
    write_outputs(args, info, scenarios, brokers, results, summaries, rows)
    print(f"\nraw JSON, logs, plots and results.md in {args.out}")
    return 130 if interrupted else 0


def run_summary(r: RunResult) -> str:
    """One short line per run for the progress log."""
    head = "ok" if r.ok else f"FAIL ({r.reason})"
    if r.connect_rate is not None and r.scenario.startswith("conn-"):
        return f"{head}: {r.connected} connected, {fmt_rate(r.connect_rate, ' conn/s')}"
    return (f"{head}: {fmt_rate(r.delivered_per_sec)}, p99 {fmt_us(r.p99_us)}, broker CPU "
            f"{r.broker_cpu_s if r.broker_cpu_s is None else round(r.broker_cpu_s, 2)} s"
            + (", generator-bound" if r.gen_bound else ""))


def write_outputs(args, info, scenarios, brokers, results, summaries, rows) -> None:
    """results.json (every run and the medians) and results.md (the table)."""
    data = {
        "machine": info,
        "command": "python3 " + " ".join(sys.argv),
        "settings": {"duration": args.duration, "repeats": args.repeats,
                     "conn_counts": args.conn_counts, "conn_hold": args.conn_hold,
                     "payload": PAYLOAD, "protocol": args.protocol,
                     "tls": f"{args.tls_key} certificate" if args.tls else None,
                     "ws": args.ws},
        "broker_configs": {b.key: CONFIG_WRITERS[b.key](0, args.tls_files, args.ws)
                           for b in brokers},
        "runs": [dataclasses.asdict(r) for r in results],
        "medians": {f"{k[0]}/{k[1]}": v for k, v in summaries.items()},
    }
    (args.out / "results.json").write_text(json.dumps(data, indent=2))
    plots = sorted({r.plot_file for r in results if r.plot_file})
    key = "RSA-2048" if args.tls_key == "rsa" else "ECDSA P-256"
    tls_note = (f" Every connection over TLS ({key} certificate; vireo-loadtest speaks rustls "
                "and makes a full handshake per connection, no resumption)." if args.tls else "")
    if args.ws:
        tls_note += (" Every connection speaks MQTT over WebSocket (an upgrade per connection, "
                     "included in the connect latency; vireo-loadtest sends one masked binary "
                     "frame per write).")
    md = [
        "# Vireo vs Mosquitto: comparison run",
        "",
        f"Command: `python3 {' '.join(sys.argv)}`",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), {info['memory_gib']} GiB, "
        f"kernel {info['kernel']}, load average {' '.join(info['loadavg'])} at the start, "
        f"{' '.join(info['loadavg_end'])} at the end.",
        f"Versions: {info.get('vireo', '')} (commit {info['vireo_commit']}), "
        f"{info.get('mosquitto', '')}, {info['rustc']}.",
        "",
        f"Medians of {args.repeats} run(s) per scenario and broker; {args.duration} s of "
        f"publishing per run, {PAYLOAD}-byte payloads.{tls_note} Latency columns are connect "
        "latency for the connection scenarios. 'per broker CPU-s' is delivered messages (or "
        "accepted connections) per second of broker CPU time (user + system) over the whole "
        "run.",
        "",
        markdown_table(rows),
        "",
    ]
    if plots:
        md += ["Plots:", ""] + [f"- [{p}]({p})" for p in plots] + [""]
    (args.out / "results.md").write_text("\n".join(md))



if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
