#!/usr/bin/env python3
"""Cost per message: instructions per delivered message, and where the time goes.

For each broker, two fixed workloads (by default fan-in QoS 0: 50 publishers -> 1 subscriber
on bench/#; `--scenario` picks fan-in QoS 1 or fan-out 1 -> 100 instead; 64-byte payloads,
`--count N1` and `--count N2` messages per publisher) each run on a fresh
broker; the broker's instructions (all threads) are counted with `perf stat -e instructions`
when the CPU counters work, otherwise by running the broker under `valgrind --tool=callgrind`.
The difference in instructions divided by the difference in delivered messages is the cost of
one more message, free of start-up, connection set-up and shutdown.

Then one unthrottled run of the same scenario at full speed is sampled with `perf record -e cpu-clock`
(kernel included) for the broker's top functions by CPU time.

Standard library only; uses the broker helpers of compare.py.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (the helpers: configs, spawn/stop, ports, /proc)

SCENARIOS = {
    "fanin-q0": (("fan-in", "--publishers", "50", "--subscribers", "1", "--qos", "0"),
                 "fan-in 50→1, QoS 0"),
    "fanin-q1": (("fan-in", "--publishers", "50", "--subscribers", "1", "--qos", "1"),
                 "fan-in 50→1, QoS 1"),
    "fanout-q0": (("fan-out", "--publishers", "1", "--subscribers", "100", "--qos", "0"),
                  "fan-out 1→100, QoS 0"),
}


def hardware_counters() -> bool:
    """Whether `perf stat -e instructions` counts anything here (VMs often lack the PMU)."""
    try:
        out = subprocess.run(["perf", "stat", "-x,", "-e", "instructions", "true"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "not supported" not in out.stderr \
        and re.search(r"^\d+,", out.stderr, re.M) is not None


def start_broker(broker: compare.Broker, tmp: Path, log: Path, wrapper: list[str],
                 listen_timeout: float, vireo_set: list[str] = ()) -> tuple[subprocess.Popen, int]:
    """Start `broker` (under `wrapper`, e.g. valgrind) on a free port; wait until it listens.
    `vireo_set` lines (`key = value`) are added to Vireo's configuration, each replacing a
    line that set the same key."""
    port = compare.free_port()
    config = broker.write_config(port, tmp)
    if broker.key == "vireo" and vireo_set:
        keys = {line.split("=", 1)[0].strip() for line in vireo_set}
        kept = [line for line in config.read_text().splitlines()
                if line.split("=", 1)[0].strip() not in keys]
        config.write_text("\n".join(vireo_set + kept) + "\n")
    if broker.key == "mosquitto":
        # Stay root: callgrind reopens its output file at exit, after Mosquitto would have
        # dropped to the `mosquitto` user.
        config.write_text(config.read_text() + "user root\n")
    proc = compare.spawn(wrapper + broker.command(config), log, new_session=True)
    compare.wait_listening(proc, port, timeout=listen_timeout)
    return proc, port


def load(args: argparse.Namespace, port: int, pid: int, out: Path, extra: list[str]) -> dict:
    """One vireo-loadtest run of the scenario; its JSON report."""
    cmd = [args.loadtest, *SCENARIOS[args.scenario][0], "--port", str(port), "--payload", "64", "--quiet",
           "--broker-pid", str(pid), "--json", str(out), "--drain-timeout", "60",
           "--connect-timeout", "60", *args.loadtest_arg, *extra]
    subprocess.run(cmd, stdout=subprocess.DEVNULL, check=False, timeout=900)
    return json.loads(out.read_text())


def callgrind_total(path: Path) -> int:
    """Total instructions (Ir) of a callgrind output file: its `totals:` (or `summary:`)."""
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def callgrind_top(path: Path, n: int) -> list[str]:
    """The top `n` functions by self instructions (callgrind_annotate's lines, summed per
    function: inlined code is listed once per source file)."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no",
                          "--threshold=100", str(path)],
                         capture_output=True, text=True, check=True).stdout
    total, per_fn, in_table = 0, {}, False
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if m and "PROGRAM TOTALS" in line:
            total = int(m.group(1).replace(",", ""))
        elif line.rstrip().endswith("file:function"):
            in_table = True
        elif in_table and m:
            fn = short_symbol(m.group(2))
            per_fn[fn] = per_fn.get(fn, 0) + int(m.group(1).replace(",", ""))
    top = sorted(per_fn.items(), key=lambda kv: -kv[1])[:n]
    return [f"{100 * c / total:6.2f}%  {fn}" for fn, c in top]


def short_symbol(text: str) -> str:
    """'/long/path/file.rs:crate::fn [/path/bin]' -> 'crate::fn'."""
    m = re.match(r"^(.*?):(.*?)(?: \[(.*)\])?$", text)
    return m.group(2) if m else text


def count_instructions(args, broker: compare.Broker, tmp: Path, count: int,
                       method: str) -> dict:
    """One --count workload on a fresh broker; instructions the broker executed (all threads).

    method "perf": `perf stat -e instructions -p PID` around the workload (hardware counter,
    from before the clients connect until after the drain). method "callgrind": the whole
    broker process under valgrind, start-up and shutdown included.
    """
    stem = f"{broker.key}.{count}"
    cg_dir = args.out / "callgrind"
    cg_dir.mkdir(parents=True, exist_ok=True)
    cg_file = cg_dir / f"{stem}.out"
    wrapper = ([] if method == "perf" else
               ["valgrind", "--tool=callgrind", f"--callgrind-out-file={cg_file}"])
    proc, port = start_broker(broker, tmp, args.out / f"{stem}.{method}.log", wrapper,
                              listen_timeout=120, vireo_set=args.vireo_set)
    stat_file = args.out / f"{stem}.perf-stat.csv"
    try:
        stat = None
        if method == "perf":
            stat = subprocess.Popen(["perf", "stat", "-x,", "-e", "instructions", "-o",
                                     str(stat_file), "-p", str(proc.pid)])
        report = load(args, port, proc.pid, args.out / f"{stem}.json", ["--count", str(count)])
        if stat is not None:
            stat.send_signal(signal.SIGINT)
            stat.wait()
    finally:
        compare.stop(proc, grace=120)
    if method == "perf":
        line = next(l for l in stat_file.read_text().splitlines() if ",instructions" in l)
        instructions, source = int(line.split(",")[0]), str(stat_file)
    else:
        instructions, source = callgrind_total(cg_file), str(cg_file)
    m = report["messages"]
    print(f"  {broker.label} --count {count}: {m['delivered']} delivered, lost {m['lost']}, "
          f"{instructions:,} instructions", file=sys.stderr)
    return {"count": count, "published": m["published"], "delivered": m["delivered"],
            "lost": m["lost"], "instructions": instructions, "source": source}


def instructions_per_message(args, broker: compare.Broker, tmp: Path, method: str) -> dict:
    """ΔInstructions / Δdelivered between the two --count workloads: the marginal cost."""
    runs = [count_instructions(args, broker, tmp, c, method) for c in args.counts]
    small, big = runs[0], runs[-1]
    per_msg = ((big["instructions"] - small["instructions"])
               / (big["delivered"] - small["delivered"]))
    result = {"method": method, "runs": runs, "instructions_per_message": per_msg, "top": []}
    if method == "callgrind":
        result["top"] = callgrind_top(Path(big["source"]), args.top)
    return result


def perf_profile(args, broker: compare.Broker, tmp: Path) -> dict:
    """Sample the broker (all threads, kernel included) during a full-speed fan-in run."""
    proc, port = start_broker(broker, tmp, args.out / f"{broker.key}.perf.broker.log", [],
                              listen_timeout=10, vireo_set=args.vireo_set)
    data = args.out / f"perf.{broker.key}.data"
    try:
        # Start sampling once clients are connected: the generator needs ~0.1 s for set-up.
        recorder = subprocess.Popen(
            ["perf", "record", "-e", "cpu-clock", "-F", "999", "-p", str(proc.pid),
             "-o", str(data), "--", "sleep", str(args.perf_seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        generator = threading.Thread(target=load, args=(
            args, port, proc.pid, args.out / f"{broker.key}.perf.json",
            ["--duration", str(args.perf_seconds + 1)]))
        generator.start()
        recorder.wait()
        generator.join()
    finally:
        compare.stop(proc)
    out = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                          "--sort", "dso,symbol", "--percent-limit", "0.5"],
                         capture_output=True, text=True).stdout
    rows = [re.sub(r"(\s+-)+$", "", l.rstrip()) for l in out.splitlines()
            if re.match(r"^\s+[\d.]+%", l)]
    by_dso = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                             "--sort", "dso"], capture_output=True, text=True).stdout
    dsos = {m.group(2): float(m.group(1)) for m in
            re.finditer(r"^\s+([\d.]+)%\s+(\S+)", by_dso, re.M)}
    return {"top": rows[:args.top], "by_dso": dsos, "perf_data": str(data)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--vireo", default=str(compare.REPO / "target/release/vireo"))
    p.add_argument("--loadtest", default=str(compare.REPO / "target/release/vireo-loadtest"))
    p.add_argument("--mosquitto", default="/usr/sbin/mosquitto")
    p.add_argument("--brokers", default="vireo,mosquitto")
    p.add_argument("--counts", default="200,1000",
                   help="two --count values (messages per publisher, 50 publishers)")
    p.add_argument("--method", choices=("auto", "perf", "callgrind"), default="auto",
                   help="instruction counting: perf stat if the CPU counters work, else callgrind")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), default="fanin-q0")
    p.add_argument("--perf-seconds", type=int, default=5)
    p.add_argument("--no-perf", action="store_true",
                   help="skip the full-speed perf record (instruction counts only)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--loadtest-arg", action="append", default=[],
                   help="one more vireo-loadtest argument (repeat), e.g. --loadtest-arg=--protocol=5")
    p.add_argument("--vireo-set", action="append", default=[],
                   help="one more line of Vireo's configuration (repeat), e.g. "
                        "'outbound_topic_alias_maximum = 10'")
    p.add_argument("--out", type=Path, default=Path("/tmp/vireo-cost"))
    args = p.parse_args()
    args.counts = [int(c) for c in args.counts.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    brokers = {"vireo": compare.Broker("vireo", "Vireo", args.vireo),
               "mosquitto": compare.Broker("mosquitto", "Mosquitto", args.mosquitto)}
    method = args.method
    if method == "auto":
        method = "perf" if hardware_counters() else "callgrind"
    results = {"method": method}
    try:
        with tempfile.TemporaryDirectory(prefix="vireo-cost-") as tmp:
            for key in args.brokers.split(","):
                broker = brokers[key]
                print(f"{broker.label}: instructions ({method})", file=sys.stderr)
                results[key] = instructions_per_message(args, broker, Path(tmp), method)
                if not args.no_perf:
                    print(f"{broker.label}: perf record", file=sys.stderr)
                    results[key]["perf"] = perf_profile(args, broker, Path(tmp))
    finally:
        compare.stop_all()
    (args.out / "cost.json").write_text(json.dumps(results, indent=2))
    for key in args.brokers.split(","):
        r = results[key]
        print(f"\n## {brokers[key].label}: {r['instructions_per_message']:,.0f} instructions "
              f"per delivered message ({SCENARIOS[args.scenario][1]}, 64 B; {r['method']})")
        if r["top"]:
            print("\ncallgrind, self instructions, top functions:")
            print("\n".join(r["top"]))
        if "perf" not in r:
            continue
        print("\nperf record -e cpu-clock (full speed), top symbols:")
        print("\n".join(r["perf"]["top"]))
        print("CPU time by object: " + ", ".join(
            f"{dso} {pct:.1f} %" for dso, pct in r["perf"]["by_dso"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
