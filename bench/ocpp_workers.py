"""`bench/ocpp_load.py --workers N`: `certd run` with one OCPP process against N worker processes.

    .venv/bin/python bench/ocpp_load.py --workers 2 --chargers 10000
    .venv/bin/python bench/ocpp_load.py --workers 2 --chargers 1000 --hold 10   # quick look

Each phase runs the real `certd run` (the supervisor with its scheduler; with N
> 1 its `certd serve --worker K` processes on one port, SO_REUSEPORT) on the
same store and chargers as ocpp_load.py prepares them (registered, argon2id
passwords, `gsm` TLS profile by default), first with `[ocpp] workers = 1`,
then with N. Timeline per phase: ramp at --rate connections/s until every
charger is connected; --settle, then --hold seconds of heartbeats measured;
then `certd run` is restarted (SIGTERM, start, READY=1 on $NOTIFY_SOCKET) and
every charger reconnects at the same instant: the reconnect storm.

Printed per phase: failed handshakes in the ramp, handshake p50/p99, heartbeat
RTT p50/p99/max with all connected, server RSS per connection (all certd
processes), server CPU per new connection, chargers per node (the store's
`connected_node`: which worker holds them) after the ramp and after the storm,
and the storm: failed handshakes and the time until every charger is back.
The load generator runs on the same cores. Every phase is bounded in time.
"""

from __future__ import annotations

import asyncio
import base64
import ctypes
import gc
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _ocpp_load.procs import HOST, ROOT, charger_id, password_for, rsa_signatures_per_cpu_second
from _ocpp_load.report import percentile
from ocpp_load import prepare_world, sleep_until

STORM_TIMEOUT = 150.0  # a storm not absorbed by then is reported as such
WARMUP = 32  # connections opened and closed before the baseline: one-time lazy imports per process
RAMP_CAP = 150.0  # after the ramp's last start, handshakes still in flight get this long
SERVER_START_TIMEOUT = 90.0


# --------------------------------------------------------------------------- the certd processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(template: str, path: Path, workers: int, port: int) -> None:
    """ocpp_load's config as `certd run` needs it: a fixed port, the worker count, no network."""
    text = template.replace("port = 0", f"port = {port}")
    text = text.replace("[ocpp]\n", f"[ocpp]\nworkers = {workers}\n", 1)
    text += ('\n[acme]\ndirectory = "https://127.0.0.1:9/directory"\n\n[dns]\nprovider = "memory"\n'
             '\n[http]\nlisten = ["127.0.0.1:0"]\n')  # any free port, not certd's default 9402
    path.write_text(text)


def process_tree(pid: int) -> list[int]:
    """`pid` and its children (the supervisor and its workers)."""
    import psutil

    try:
        return [pid, *(child.pid for child in psutil.Process(pid).children())]
    except psutil.NoSuchProcess:
        return [pid]


def usage(pids: list[int]) -> dict[int, tuple[int, float]]:
    """pid -> (RSS KiB, CPU seconds)."""
    tick = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
        found[pid] = (rss, (int(fields[11]) + int(fields[12])) / tick)
    return found


class CertdRun:
    """`certd run` as a child; ready when it sends READY=1, as systemd would see it."""

    def __init__(self, config: Path, workdir: Path, loop: str | None) -> None:
        self.config = config
        self.workdir = workdir
        self.env = dict(os.environ)
        if loop:
            self.env["CERTD_EVENT_LOOP"] = loop
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> float:
        notify_path = self.workdir / "notify.sock"
        notify_path.unlink(missing_ok=True)
        began = time.time()
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
            notify.bind(str(notify_path))
            notify.settimeout(SERVER_START_TIMEOUT)
            log = open(self.workdir / "certd.log", "a")  # noqa: SIM115 - the child holds it
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "certd", "--config", str(self.config), "run"],
                env=dict(self.env, NOTIFY_SOCKET=str(notify_path)), stdout=log,
                stderr=subprocess.STDOUT, text=True, cwd=ROOT)
            while b"READY=1" not in notify.recv(4096).split(b"\n"):
                pass
        return time.time() - began

    def pids(self) -> list[int]:
        assert self.proc is not None
        return process_tree(self.proc.pid)

    def stop(self) -> float:
        assert self.proc is not None
        began = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return time.time() - began


def machine_cpu_seconds() -> float:
    """CPU-seconds every process on this machine has used (busy time of all CPUs, /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for(counters, index: int, target: int, cap: float) -> float:  # type: ignore[no-untyped-def]
    """Until the clients' counter `index` reaches `target` or `cap` s passed; when it ended."""
    began = time.time()
    while counters[index] < target and time.time() - began < cap:
        time.sleep(0.1)
    return time.time()


def chargers_per_node(url: str) -> dict[str, int]:
    from sqlalchemy import text

    from certd.store.db import make_engine

    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT connected_node, count(*) FROM charger "
                                     "WHERE connected_node IS NOT NULL GROUP BY connected_node")).all()
    finally:
        engine.dispose()
    return {node: count for node, count in sorted(rows)}


# --------------------------------------------------------------------------- load generator


def client_process(spec: dict, shared, counters, conn) -> None:  # type: ignore[no-untyped-def]
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024 + 512
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        conn.send(asyncio.run(_client(spec, shared, counters)))
    except BaseException as exc:  # report instead of hanging the parent
        conn.send({"error": repr(exc)})


# The parent's timeline, in a shared array (0 until set): the ramp ends when every charger is in.
GO_AT, STOP_AT, STEADY_START, STEADY_END, RESTART_AT = range(5)
# What the clients tell the parent, in a shared counter array: attempts that ended, either way.
RAMP_FINISHED, RAMP_OK, STORM_FINISHED = range(3)


def count(counters, index: int) -> None:  # type: ignore[no-untyped-def]
    with counters.get_lock():
        counters[index] += 1


async def _client(spec: dict, shared, counters) -> dict:  # type: ignore[no-untyped-def]
    """Chargers of one load-generator process; `shared` carries the parent's timeline."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ctx = ssl.create_default_context(cadata=spec["ca_pem"])
    if spec["client_ciphers"]:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(spec["client_ciphers"])
    stats = {"ramp_ok": [], "ramp_end": [], "ramp_failed": 0, "storm_ok": [], "storm_end": [],
             "storm_failed": 0,
             "rtt": [], "drops": 0, "reasons": {}}
    go, stop = asyncio.Event(), asyncio.Event()

    async def watch_parent() -> None:
        while not stop.is_set():
            if shared[GO_AT] and not go.is_set() and time.time() >= shared[GO_AT]:
                go.set()
            if shared[STOP_AT] and time.time() >= shared[STOP_AT]:
                stop.set()
            await asyncio.sleep(0.02)

    async def open_one(cid: str, phase: str):  # type: ignore[no-untyped-def]
        token = base64.b64encode(f"{cid}:{password_for(cid)}".encode()).decode()
        began = time.perf_counter()
        try:
            ws = await connect(f"wss://127.0.0.1:{spec['port']}/ocpp/{cid}", ssl=ctx,
                               server_hostname=HOST, subprotocols=["ocpp1.6"],
                               additional_headers={"Authorization": f"Basic {token}"},
                               compression=None, open_timeout=120, ping_interval=None,
                               close_timeout=2, max_queue=4)
            await ws.send(json.dumps([2, "boot", "BootNotification", {
                "chargePointVendor": "Bench", "chargePointModel": "GSM", "firmwareVersion": "1"}]))
            await ws.recv()
        except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
            stats[f"{phase}_failed"] += 1
            reason = f"{phase}: {type(exc).__name__}"
            stats["reasons"][reason] = stats["reasons"].get(reason, 0) + 1
            count(counters, RAMP_FINISHED if phase == "ramp" else STORM_FINISHED)
            return None
        stats[f"{phase}_ok"].append(time.perf_counter() - began)
        count(counters, RAMP_FINISHED if phase == "ramp" else STORM_FINISHED)
        if phase == "ramp":
            count(counters, RAMP_OK)
        stats[f"{phase}_end"].append(time.time())
        return ws

    async def heartbeats(ws, measure: bool) -> bool:  # type: ignore[no-untyped-def]
        """Until the server closes (True) or the run stops (False)."""
        next_at = time.time() + random.uniform(0, spec["heartbeat"])
        n = 0
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.time()))
                    return False
                except TimeoutError:
                    pass
                n += 1
                sent_wall, sent = time.time(), time.perf_counter()
                await ws.send(f'[2,"h{n}","Heartbeat",{{}}]')
                await ws.recv()
                if measure and 0 < shared[STEADY_START] <= sent_wall < (shared[STEADY_END] or 1e12):
                    stats["rtt"].append(time.perf_counter() - sent)
                next_at += spec["heartbeat"]
        except ConnectionClosed:
            return not stop.is_set()
        return False

    async def charger(cid: str, start_at: float) -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        ws = await open_one(cid, "ramp")
        if ws is None or not await heartbeats(ws, measure=True):
            return
        if not shared[RESTART_AT] or time.time() < shared[RESTART_AT]:
            stats["drops"] += 1  # closed before the restart: a real drop
        await go.wait()  # the restarted server is ready: everyone at once
        ws = await open_one(cid, "storm")
        if ws is not None:
            await heartbeats(ws, measure=False)
            ws.transport.abort()

    watcher = asyncio.ensure_future(watch_parent())
    tasks = [asyncio.ensure_future(charger(cid, at)) for cid, at in spec["ramp"]]
    await stop.wait()
    await asyncio.wait(tasks, timeout=20)
    watcher.cancel()
    return stats


def warm_up(port: int, ca_pem: str, ids: list[str]) -> None:
    """Connect, boot and close a few chargers, so that every worker has loaded what a first
    connection loads (OCPP schemas, TLS state) before the RSS baseline is taken."""
    from websockets.asyncio.client import connect

    async def one(cid: str) -> None:
        token = base64.b64encode(f"{cid}:{password_for(cid)}".encode()).decode()
        ctx = ssl.create_default_context(cadata=ca_pem)
        async with connect(f"wss://127.0.0.1:{port}/ocpp/{cid}", ssl=ctx, server_hostname=HOST,
                           subprotocols=["ocpp1.6"], open_timeout=60,
                           additional_headers={"Authorization": f"Basic {token}"}) as ws:
            await ws.send(json.dumps([2, "boot", "BootNotification", {
                "chargePointVendor": "Bench", "chargePointModel": "GSM"}]))
            await ws.recv()

    async def all_of_them() -> None:
        await asyncio.gather(*(one(cid) for cid in ids))

    asyncio.run(all_of_them())


# --------------------------------------------------------------------------- one phase


def run_phase(args, workers: int, template: str, workdir: Path, url: str, ca_pem: str) -> dict:  # type: ignore[no-untyped-def]
    port = free_port()
    config = workdir / f"certd-w{workers}.toml"
    write_config(template, config, workers, port)
    server = CertdRun(config, workdir, args.loop)
    started_in = server.start()
    warm_up(port, ca_pem, [charger_id(args.chargers + i) for i in range(WARMUP)])
    time.sleep(1.0)
    base = usage(server.pids())

    t0 = time.time() + 2.0
    ramp_end = t0 + args.chargers / args.rate
    ramp = [(charger_id(i), t0 + i / args.rate) for i in range(args.chargers)]
    shared = mp.get_context("fork").Array(ctypes.c_double, 5, lock=False)
    counters = mp.get_context("fork").Array(ctypes.c_int, 3)
    client_ciphers = "ECDHE-RSA-AES128-GCM-SHA256" if args.profile == "gsm" else ""
    pipes, procs = [], []
    ctx = mp.get_context("fork")
    for k in range(args.clients):
        spec = {"port": port, "ca_pem": ca_pem, "client_ciphers": client_ciphers,
                "ramp": ramp[k::args.clients], "heartbeat": args.heartbeat}
        parent_end, child_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=client_process, args=(spec, shared, counters, child_end), daemon=True)
        proc.start()
        pipes.append(parent_end)
        procs.append(proc)

    client_pids = [proc.pid for proc in procs]
    sleep_until(t0 - 0.2)
    before_ramp, clients_before, machine_before = usage(server.pids()), usage(client_pids), machine_cpu_seconds()
    sleep_until(ramp_end)
    ramp_done = wait_for(counters, RAMP_FINISHED, args.chargers, cap=RAMP_CAP)
    after_ramp, clients_after, machine_after = usage(server.pids()), usage(client_pids), machine_cpu_seconds()
    time.sleep(1.5)  # registry rows are written in batches
    split_ramp = chargers_per_node(url)
    sleep_until(ramp_done + args.settle)
    at_steady = usage(server.pids())
    shared[STEADY_START] = time.time()
    sleep_until(shared[STEADY_START] + args.hold)
    shared[STEADY_END] = time.time()
    after_steady = usage(server.pids())
    shared[RESTART_AT] = time.time() + 0.5
    sleep_until(shared[RESTART_AT])

    stopped_in = server.stop()
    restarted_in = server.start()
    go_at = time.time() + 0.2
    shared[GO_AT] = go_at
    sleep_until(go_at)
    wait_for(counters, STORM_FINISHED, counters[RAMP_OK], cap=STORM_TIMEOUT)
    time.sleep(1.5)
    split_storm = chargers_per_node(url)
    shared[STOP_AT] = time.time()
    results = []
    for pipe, proc in zip(pipes, procs):
        if pipe.poll(60):
            results.append(pipe.recv())
        proc.join(timeout=10)
    server.stop()

    errors = [r["error"] for r in results if "error" in r]
    if errors or len(results) != args.clients:
        raise SystemExit(f"client processes failed: {errors or 'no result'}")

    def merged(key: str) -> list:
        return [v for r in results for v in r[key]]

    def total(key: str) -> int:
        return sum(r[key] for r in results)

    reasons: dict[str, int] = {}
    for r in results:
        for reason, count in r["reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    connected = counters[RAMP_OK]
    rss_growth = sum(v[0] for v in at_steady.values()) - sum(v[0] for v in base.values())
    ramp_cpu = sum(v[1] for v in after_ramp.values()) - sum(v[1] for v in before_ramp.values())
    clients_cpu = sum(v[1] for v in clients_after.values()) - sum(v[1] for v in clients_before.values())
    ramp_wall = ramp_done - (t0 - 0.2)
    storm_ends = merged("storm_end")
    return {
        "workers": workers, "started_in": started_in, "stopped_in": stopped_in,
        "ramp_rate": (len(ends) - 1) / (max(ends) - t0) if len(ends := merged("ramp_end")) > 1 else 0.0,
        "ramp_finished_after": ramp_done - t0,
        "restarted_in": restarted_in, "connected": connected,
        "ramp_failed": total("ramp_failed"), "ramp_ok": merged("ramp_ok"), "rtt": merged("rtt"),
        "rss_per_conn": rss_growth / max(1, connected), "cpu_per_conn": ramp_cpu / max(1, args.chargers),
        "ramp_cpu": ramp_cpu, "clients_cpu": clients_cpu, "ramp_wall": ramp_wall,
        "machine_cpu": machine_after - machine_before,
        "rss_by_process": {pid: rss for pid, (rss, _) in at_steady.items()},
        "steady_cpu": {pid: after_steady[pid][1] - at_steady[pid][1]
                       for pid in after_steady if pid in at_steady},
        "split_ramp": split_ramp, "split_storm": split_storm, "drops": total("drops"),
        "storm_failed": total("storm_failed"), "storm_ok": merged("storm_ok"),
        "storm_time": (max(storm_ends) - go_at) if storm_ends else float("nan"),
        "storm_back": len(storm_ends), "reasons": reasons,
    }


def run_workers(args) -> None:  # type: ignore[no-untyped-def]
    if args.auth != "password" or args.unknown or args.compare or args.mixed:
        raise SystemExit("--workers: registered chargers with passwords only (no --auth, --unknown, "
                         "--compare, --mixed)")
    workdir = Path(tempfile.mkdtemp(prefix="certd-workers-bench-"))
    print(f"setting up {args.chargers} chargers in {workdir} ...", flush=True)
    template_path, ca, url = prepare_world(workdir, args.chargers + WARMUP, args, unknown=False)
    template = template_path.read_text()
    phases = []
    for workers in (1, args.workers):
        print(f"phase: [ocpp] workers = {workers} ...", flush=True)
        phase = run_phase(args, workers, template, workdir, url, ca.root_pem)
        phase["speed"] = rsa_signatures_per_cpu_second()
        phases.append(phase)
    report(args, phases)


def report(args, phases: list[dict]) -> None:  # type: ignore[no-untyped-def]
    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    def split(nodes: dict[str, int]) -> str:
        return ", ".join(f"{node}: {count}" for node, count in nodes.items()) or "none"

    def all_in(p: dict) -> float:
        """CPU-seconds per connection in the ramp, certd and its load generator together."""
        return (p["ramp_cpu"] + p["clients_cpu"]) / max(1, p["connected"])

    def ceiling(p: dict) -> float:
        return (os.cpu_count() or 1) / all_in(p) if all_in(p) else float("nan")

    rows = [
        ("chargers connected after the ramp", lambda p: f"{p['connected']} / {args.chargers}", f"{args.chargers}"),
        ("ramp: achieved rate", lambda p: f"{p['ramp_rate']:.0f}/s", f"{args.rate:.0f}/s"),
        ("ramp: failed handshakes", lambda p: str(p["ramp_failed"]), "0"),
        ("ramp: cores busy, certd / load generator / other", lambda p: " / ".join(
            f"{v / p['ramp_wall']:.2f}" for v in (p["ramp_cpu"], p["clients_cpu"],
                                                   max(0.0, p["machine_cpu"] - p["ramp_cpu"] - p["clients_cpu"]))), ""),
        ("ramp: CPU per connection, certd + load generator", lambda p: f"{all_in(p) * 1000:.2f} ms", ""),
        ("ramp: ceiling of these CPUs at that cost**", lambda p: f"{ceiling(p):.0f}/s", ""),
        ("TLS+WebSocket+Boot p50 / p99", lambda p: f"{ms(percentile(p['ramp_ok'], 50))} / "
                                                   f"{ms(percentile(p['ramp_ok'], 99))}", ""),
        ("heartbeat RTT p50 (all connected)", lambda p: ms(percentile(p["rtt"], 50)), ""),
        ("heartbeat RTT p99 (all connected)", lambda p: ms(percentile(p["rtt"], 99)), "<= 50 ms"),
        ("heartbeat RTT max (all connected)", lambda p: ms(max(p["rtt"], default=float("nan"))), ""),
        ("heartbeats measured", lambda p: str(len(p["rtt"])), ""),
        ("server RSS per connection (all processes)*", lambda p: f"{p['rss_per_conn']:.1f} KiB", "<= 64 KiB"),
        ("server CPU per new connection (all processes)", lambda p: f"{p['cpu_per_conn'] * 1000:.2f} ms", ""),
        ("server CPU per heartbeat (all processes)", lambda p: f"{sum(p['steady_cpu'].values()) / max(1, len(p['rtt'])) * 1e6:.0f} us", ""),
        ("steady-state CPU s per process", lambda p: " ".join(f"{v:.2f}" for v in p["steady_cpu"].values()), ""),
        ("chargers per node after the ramp", lambda p: split(p["split_ramp"]), ""),
        ("dropped before the restart", lambda p: str(p["drops"]), "0"),
        ("restart: stop / start until READY=1", lambda p: f"{p['stopped_in']:.1f} s / {p['restarted_in']:.1f} s", ""),
        ("storm: failed handshakes", lambda p: str(p["storm_failed"]), "0"),
        ("storm: all back after", lambda p: f"{p['storm_time']:.1f} s ({p['storm_back']} back)", ""),
        ("storm: handshake p50 / p99", lambda p: f"{ms(percentile(p['storm_ok'], 50))} / "
                                                 f"{ms(percentile(p['storm_ok'], 99))}", ""),
        ("chargers per node after the storm", lambda p: split(p["split_storm"]), ""),
        ("machine speed after the phase (RSA-2048 sign/CPU-s)", lambda p: f"{p['speed']:.0f}", ""),
    ]
    print()
    print(f"certd run, {args.chargers} TLS chargers (profile {args.profile}, argon2id passwords), "
          f"ramp {args.rate:.0f}/s, heartbeat every {args.heartbeat:.0f} s, {args.clients} client "
          f"processes, {os.cpu_count()} CPUs shared with the load generator")
    names = [f"workers = {p['workers']}" for p in phases]
    cells = [[fn(p) for p in phases] for _, fn, _ in rows]
    width = max(len(name) for name, _, _ in rows)
    col = max(max(len(c) for c in row) for row in cells + [names])
    print(f"{'metric'.ljust(width)}  " + "  ".join(n.ljust(col) for n in names) + "  target")
    for (name, _, target), row in zip(rows, cells):
        print(f"{name.ljust(width)}  " + "  ".join(c.ljust(col) for c in row) + f"  {target}")
    print(f"* growth of the summed RSS of every certd process from after {WARMUP} warm-up "
          f"connections to all connected, per connection")
    print(f"** the fastest ramp {os.cpu_count()} CPUs could carry if they did nothing but this ramp at its "
          f"measured cost (handshakes and the heartbeats of the chargers already in, both sides): "
          f"a rate asked above it cannot be met here, whatever the server does")
    for p in phases:
        if p["reasons"]:
            print(f"workers = {p['workers']}: failure reasons {p['reasons']}")
