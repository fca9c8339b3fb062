#!/usr/bin/env python3
"""Load benchmark of certd's OCPP endpoint: N concurrent TLS chargers on loopback.

    .venv/bin/python bench/ocpp_load.py                   # 5,000 chargers, 200/s ramp
    .venv/bin/python bench/ocpp_load.py --chargers 500 --hold 10   # quick look

What runs
- a server process: certd's OcppService (the code `certd serve` runs, with the
  same GC tuning and event loop: uvloop if installed, `--loop asyncio` to
  compare), SQLite store, a test CA's RSA-2048 + ECDSA certificates, the
  `gsm` TLS profile by default; every charger registered with its own password
  (argon2id), so each new connection pays the full Basic-auth check;
- several client processes (the load generator, on the same 2 cores): each
  charger opens TLS + WebSocket (`ocpp1.6`), sends BootNotification, then a
  Heartbeat every 5 s at a random phase. Clients speak OCPP-J frames directly
  (no schema validation on the client side) to leave the CPU to the server.

Timeline: ramp at --rate connections/s until N are connected; --hold seconds of
steady state (heartbeat round trips measured); then a live reload (a new
certificate is stored and the server gets SIGHUP, as the daemon does after a
deploy) with fresh connections opened from 3 s before to 3 s after it.

Printed: connections/s during the ramp, TLS+WebSocket handshake p50/p99,
server CPU per new connection, server RSS per connection, heartbeat RTT
p50/p99 with all N connected, the longest server GC pause, and failed
handshakes / dropped connections across the reload. Loopback only; every
phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import random
import signal
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST = "ocpp.bench.test"
SECRET = b"certd-bench"  # derives per-charger passwords; both sides compute them


def password_for(charger_id: str) -> str:
    digest = hmac.new(SECRET, charger_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()[:24]


def charger_id(index: int) -> str:
    return f"BENCH*{index:06d}"


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]


# --------------------------------------------------------------------------- setup


def _hash_chunk(ids: list[str]) -> list[tuple[str, str]]:
    from certd.ocpp.auth import hash_password

    return [(cid, hash_password(password_for(cid))) for cid in ids]


def prepare_world(workdir: Path, total: int, auth_mode: str, profile: str, db_url: str | None):
    """CA, certificates in the store, registered chargers, config file. Returns (config, ca, url)."""
    from tests.ocpp.pki import MiniCA, store_current  # the test CA: cryptography only

    from certd.store.db import make_engine, session_scope, upgrade
    from certd.store.chargers import Charger

    url = db_url or f"sqlite:///{workdir / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    ca = MiniCA("bench")
    store_current(engine, "bench-rsa", ca.issue([HOST], "rsa"))
    store_current(engine, "bench-ec", ca.issue([HOST], "ec"))
    (workdir / "root.pem").write_text(ca.root_pem)

    ids = [charger_id(i) for i in range(total)]
    if auth_mode == "password":
        chunks = [ids[i::2] for i in range(2)]
        with mp.get_context("fork").Pool(2) as pool:
            hashed = [pair for chunk in pool.map(_hash_chunk, chunks) for pair in chunk]
    else:
        hashed = [(cid, None) for cid in ids]
    with session_scope(engine) as session:
        session.add_all(Charger(charger_id=cid, password_hash=h, heartbeat_class="gsm")
                        for cid, h in hashed)
    engine.dispose()
    certificates = ["bench-rsa"] if profile == "gsm" else ["bench-rsa", "bench-ec"]
    config = workdir / "certd.toml"
    config.write_text(f'''
state_dir = "{workdir}"
database_url = "{url}"

[[certificates]]
name = "bench-rsa"
domains = ["{HOST}"]

[[certificates]]
name = "bench-ec"
domains = ["{HOST}"]
key_type = "ec-p256"

[ocpp]
trust_roots = ["{workdir / 'root.pem'}"]
reload_check_interval = 0
unknown_chargers = "{'reject' if auth_mode == 'password' else 'accept'}"
node_name = "bench"

[[ocpp.listeners]]
name = "bench"
host = "{HOST}"
bind = "127.0.0.1"
port = 0
certificates = {json.dumps(certificates)}
tls_profile = "{profile}"
paths = ["/ocpp/{{id}}"]
''')
    return config, ca, url


# --------------------------------------------------------------------------- server process


def rsa_signatures_per_cpu_second(seconds: float = 0.5) -> float:
    """This machine's speed right now (shared hosts vary run to run): RSA-2048 signatures per
    CPU-second, the core of a gsm TLS handshake. Compare runs by it."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    count, started = 0, time.process_time()
    while time.process_time() - started < seconds:
        key.sign(b"certd", padding.PKCS1v15(), hashes.SHA256())
        count += 1
    return count / (time.process_time() - started)


def server_child(config_path: str) -> int:
    """Runs OcppService like `certd serve`; answers 'stats' / 'quit' on stdin."""
    import logging

    from certd.runtime import eventloop
    from certd.cli import context
    from certd.config import load_config
    from certd.ocpp.service import OcppService, tune_process_for_many_connections

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    config = load_config(config_path)
    engine = context.open_store(config, upgrade=False)
    gc_pauses: list[float] = []
    gc_started = [0.0]

    def on_gc(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    async def run() -> None:
        service = OcppService(config, engine)
        loop = asyncio.get_running_loop()
        reloads: list[dict] = []

        async def do_reload() -> None:
            started = time.perf_counter()
            results = await service.reload()
            reloads.append({"seconds": time.perf_counter() - started,
                            "status": [r.status for r in results],
                            "error": [r.error for r in results if r.error]})

        loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(do_reload()))
        await service.start()
        tune_process_for_many_connections()
        speed = rsa_signatures_per_cpu_second()
        gc.callbacks.append(on_gc)
        port = service.listener("bench").ports[0]
        print(f"READY {port}", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while True:
            line = (await reader.readline()).decode().strip()
            if line == "stats":
                rss_kib = 0
                for status_line in Path("/proc/self/status").read_text().splitlines():
                    if status_line.startswith("VmRSS:"):
                        rss_kib = int(status_line.split()[1])
                print(json.dumps({
                    "cpu": time.process_time(), "loop_cpu": time.thread_time(), "rss_kib": rss_kib,
                    "sys_cpu": os.times().system,
                    "connected": len(service.connected_chargers()),
                    "gc_pauses": len(gc_pauses), "gc_max": max(gc_pauses, default=0.0),
                    "gc_total": sum(gc_pauses),
                    "served": [s.serial for s in service.served("bench")],
                    "loop": type(loop).__module__.split(".")[0], "rsa_per_s": speed,
                    "reloads": reloads,
                }), flush=True)
                gc_pauses.clear()
            elif line in ("quit", ""):
                break
        await service.close()

    profile_out = os.environ.get("CERTD_BENCH_PROFILE")
    if profile_out:  # developer aid: cProfile the server process
        import cProfile

        profiler = cProfile.Profile(time.thread_time)  # CPU of the loop thread, not wall time
        profiler.runcall(eventloop.run, run())
        profiler.dump_stats(profile_out)
    else:
        eventloop.run(run())  # the loop `certd serve` runs on (CERTD_EVENT_LOOP; uvloop if installed)
    return 0


# --------------------------------------------------------------------------- client processes


def client_process(spec: dict, conn) -> None:  # type: ignore[no-untyped-def]
    """One load-generator process: its share of the chargers, on its own loop."""
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024 + 512  # the load generator saves memory too
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    try:
        conn.send(asyncio.run(_client(spec)))
    except BaseException as exc:  # report instead of hanging the parent
        conn.send({"error": repr(exc)})


async def _client(spec: dict) -> dict:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    ctx = ssl.create_default_context(cadata=spec["ca_pem"])
    if spec["client_ciphers"]:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(spec["client_ciphers"])
    stats = {"handshakes": [], "handshake_end": [], "rtt_steady": [], "rtt_ramp": [],
             "failed_ramp": 0, "failed_reload": 0, "drops": 0, "drops_reload": 0,
             "fresh_ok": 0, "fresh_serials": {}, "fail_reasons": {}}
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    connections = []
    t_steady, t_steady_end = spec["steady_start"], spec["steady_end"]
    reload_window = (spec["reload_at"] - 3.0, spec["reload_at"] + 3.0)

    async def charger(cid: str, start_at: float, fresh: bool) -> None:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        token = base64.b64encode(f"{cid}:{password_for(cid)}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"} if spec["send_password"] else {}
        began = time.perf_counter()
        try:
            ws = await connect(
                f"wss://127.0.0.1:{spec['port']}/ocpp/{cid}", ssl=ctx, server_hostname=HOST,
                subprotocols=["ocpp1.6"], additional_headers=headers,
                compression=None, open_timeout=90, ping_interval=None, close_timeout=2,
                max_queue=4,
            )
        except Exception as exc:
            key = "failed_reload" if fresh else "failed_ramp"
            stats[key] += 1
            reason = type(exc).__name__
            stats["fail_reasons"][reason] = stats["fail_reasons"].get(reason, 0) + 1
            return
        elapsed = time.perf_counter() - began
        stats["handshakes"].append(elapsed)
        stats["handshake_end"].append(time.time())
        if fresh:
            der = ws.transport.get_extra_info("ssl_object").getpeercert(binary_form=True)
            from cryptography import x509

            serial = f"{x509.load_der_x509_certificate(der).serial_number:x}"
            stats["fresh_serials"][serial] = stats["fresh_serials"].get(serial, 0) + 1
            stats["fresh_ok"] += 1
        connections.append(ws)
        try:
            await ws.send(json.dumps([2, "boot", "BootNotification", {
                "chargePointVendor": "Bench", "chargePointModel": "GSM", "firmwareVersion": "1"}]))
            await ws.recv()
            if fresh:
                return  # fresh connections only prove the handshake around the reload
            next_at = time.time() + random.uniform(0, spec["heartbeat"])
            n = 0
            while not stopping.is_set():
                delay = next_at - time.time()
                if delay > 0:
                    try:
                        await asyncio.wait_for(stopping.wait(), delay)
                        break
                    except TimeoutError:
                        pass
                n += 1
                sent_wall, sent = time.time(), time.perf_counter()
                await ws.send(f'[2,"h{n}","Heartbeat",{{}}]')
                await ws.recv()
                rtt = time.perf_counter() - sent
                if t_steady <= sent_wall < t_steady_end:
                    stats["rtt_steady"].append(rtt)
                elif sent_wall < t_steady:
                    stats["rtt_ramp"].append(rtt)
                next_at += spec["heartbeat"]
        except ConnectionClosed:
            if not stopping.is_set():
                stats["drops"] += 1
                if reload_window[0] - 5 <= time.time() <= reload_window[1] + 5:
                    stats["drops_reload"] += 1

    tasks = [loop.create_task(charger(cid, at, False)) for cid, at in spec["ramp"]]
    tasks += [loop.create_task(charger(cid, at, True)) for cid, at in spec["fresh"]]
    await asyncio.sleep(max(0.0, spec["end_at"] - time.time()))
    stopping.set()
    await asyncio.wait(tasks, timeout=20)
    for ws in connections:
        ws.transport.abort()
    return stats


# --------------------------------------------------------------------------- orchestration


class Server:
    def __init__(self, config: Path, loop: str | None) -> None:
        env = dict(os.environ, CERTD_EVENT_LOOP=loop) if loop else None
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--server-child", str(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env,
        )
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stats(self) -> dict:
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.process.stdin.write("quit\n")
                self.process.stdin.flush()
                self.process.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()


def sleep_until(at: float) -> None:
    """The timeline is fixed in advance; the parent only waits for its next step."""
    delay = at - time.time()
    if delay > 0:
        time.sleep(delay)


def run(args: argparse.Namespace) -> None:
    from tests.ocpp.pki import store_current

    from certd.store.db import make_engine

    workdir = Path(tempfile.mkdtemp(prefix="certd-ocpp-bench-"))
    fresh_count = int(args.fresh_rate * 6)
    print(f"setting up {args.chargers} chargers (+{fresh_count} fresh) in {workdir} ...", flush=True)
    config, ca, url = prepare_world(workdir, args.chargers + fresh_count, args.auth, args.profile,
                                    args.db_url)
    server = Server(config, args.loop)
    try:
        base = server.stats()
        t0 = time.time() + 2.0
        ramp_seconds = args.chargers / args.rate
        ramp_end = t0 + ramp_seconds
        steady_start = ramp_end + args.settle
        steady_end = steady_start + args.hold
        reload_at = steady_end + 4.0
        end_at = reload_at + 8.0
        ramp = [(charger_id(i), t0 + i / args.rate) for i in range(args.chargers)]
        fresh = [(charger_id(args.chargers + j), reload_at - 3.0 + j / args.fresh_rate)
                 for j in range(fresh_count)]
        client_ciphers = "ECDHE-RSA-AES128-GCM-SHA256" if args.profile == "gsm" else ""
        pipes, procs = [], []
        ctx = mp.get_context("fork")
        for k in range(args.clients):
            spec = {
                "port": server.port, "ca_pem": ca.root_pem, "client_ciphers": client_ciphers,
                "send_password": args.auth == "password",
                "ramp": ramp[k::args.clients], "fresh": fresh[k::args.clients],
                "heartbeat": args.heartbeat, "steady_start": steady_start,
                "steady_end": steady_end, "reload_at": reload_at, "end_at": end_at,
            }
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=client_process, args=(spec, child_end), daemon=True)
            proc.start()
            pipes.append(parent_end)
            procs.append(proc)

        sleep_until(t0 - 0.2)
        before_ramp = server.stats()
        sleep_until(ramp_end + min(args.settle, 3.0))
        after_ramp = server.stats()
        sleep_until(steady_start)
        at_steady = server.stats()
        sleep_until(steady_end)
        after_steady = server.stats()

        engine = make_engine(url)
        # The certificate fresh clients get: RSA under gsm, ECDSA under modern (TLS 1.3 clients).
        renewed, key_type = ("bench-rsa", "rsa") if args.profile == "gsm" else ("bench-ec", "ec")
        new_leaf = ca.issue([HOST], key_type)
        sleep_until(reload_at)
        store_current(engine, renewed, new_leaf)
        server.process.send_signal(signal.SIGHUP)
        sleep_until(end_at)
        after_reload = server.stats()
        results = []
        for pipe, proc in zip(pipes, procs):
            if pipe.poll(60):
                results.append(pipe.recv())
            proc.join(timeout=10)
    finally:
        server.close()

    errors = [r["error"] for r in results if "error" in r]
    if errors or len(results) != args.clients:
        raise SystemExit(f"client processes failed: {errors or 'no result'}")

    def merged(key: str) -> list:
        return [v for r in results for v in r[key]]

    def total(key: str) -> int:
        return sum(r[key] for r in results)

    handshakes = merged("handshakes")
    ends = sorted(merged("handshake_end"))
    ramp_ends = [e for e in ends if e <= reload_at - 3.0]
    achieved = (len(ramp_ends) - 1) / (ramp_ends[-1] - t0) if len(ramp_ends) > 1 else float("nan")
    steady = merged("rtt_steady")
    ramp_rtt = merged("rtt_ramp")
    connected = after_ramp["connected"]
    hb_steady = len(steady)
    steady_cpu = after_steady["cpu"] - at_steady["cpu"]
    per_heartbeat = steady_cpu / hb_steady if hb_steady else 0.0
    ramp_cpu = after_ramp["cpu"] - before_ramp["cpu"]
    ramp_heartbeats = len(ramp_rtt)
    per_conn_raw = ramp_cpu / max(1, args.chargers)
    per_conn = (ramp_cpu - ramp_heartbeats * per_heartbeat) / max(1, args.chargers)
    loop_share = (after_ramp["loop_cpu"] - before_ramp["loop_cpu"]) / ramp_cpu if ramp_cpu else 0.0
    sys_share = (after_ramp["sys_cpu"] - before_ramp["sys_cpu"]) / ramp_cpu if ramp_cpu else 0.0
    rss_per_conn = (at_steady["rss_kib"] - base["rss_kib"]) / max(1, at_steady["connected"])
    fresh_serials: dict[str, int] = {}
    for r in results:
        for serial, count in r["fresh_serials"].items():
            fresh_serials[serial] = fresh_serials.get(serial, 0) + count
    reload_info = after_reload["reloads"]
    gc_max = max(s["gc_max"] for s in (after_ramp, at_steady, after_steady, after_reload))
    gc_steady = after_steady["gc_max"]
    gc_ramp = after_ramp["gc_total"] / max(1, args.chargers)

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f} ms"

    rows = [
        ("chargers connected (server view)", f"{connected} / {args.chargers}", f"{args.chargers}"),
        ("ramp: connections per second", f"{achieved:.0f}/s (asked {args.rate:.0f}/s)", f"{args.rate:.0f}/s"),
        ("ramp: failed handshakes", f"{total('failed_ramp')}", "0"),
        ("TLS+WebSocket handshake p50", ms(percentile(handshakes, 50)), ""),
        ("TLS+WebSocket handshake p99", ms(percentile(handshakes, 99)), ""),
        ("server CPU per new connection", f"{per_conn * 1000:.2f} ms "
         f"(raw {per_conn_raw * 1000:.2f} ms incl. ramp heartbeats)", "<= 1 ms"),
        ("  of which on the event-loop thread", f"{loop_share * 100:.0f} %", ""),
        ("  of which in the kernel (system time)", f"{sys_share * 100:.0f} %", ""),
        ("server CPU per heartbeat", f"{per_heartbeat * 1e6:.0f} us", ""),
        ("server RSS per connection", f"{rss_per_conn:.1f} KiB", "<= 100 KiB"),
        ("heartbeat RTT p50 (all connected)", ms(percentile(steady, 50)), ""),
        ("heartbeat RTT p99 (all connected)", ms(percentile(steady, 99)), "<= 50 ms"),
        ("heartbeat RTT max (all connected)", ms(max(steady, default=float("nan"))), ""),
        ("heartbeat RTT p99 during ramp", ms(percentile(ramp_rtt, 99)), ""),
        ("server GC: longest pause (steady / whole run)", f"{ms(gc_steady)} / {ms(gc_max)}", ""),
        ("server GC time in the ramp, per new connection", f"{gc_ramp * 1000:.2f} ms", ""),
        ("reload: server reload time", ", ".join(f"{r['seconds'] * 1000:.0f} ms {r['status']}" for r in reload_info) or "none", ""),
        ("reload: fresh connections ok / failed", f"{total('fresh_ok')} / {total('failed_reload')}", f"{fresh_count} / 0"),
        ("reload: fresh connections per serial", ", ".join(f"{s[:8]}..: {c}" for s, c in fresh_serials.items()), "old, then new"),
        ("reload: new serial served", "yes" if f"{new_leaf.serial}" in after_reload["served"] else f"NO {after_reload['served']}", "yes"),
        ("dropped connections (whole run / around reload)", f"{total('drops')} / {total('drops_reload')}", "0 / 0"),
    ]
    reasons: dict[str, int] = {}
    for r in results:
        for reason, count in r["fail_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print()
    print(f"certd OCPP endpoint, {args.chargers} chargers, profile {args.profile}, auth {args.auth}, "
          f"{args.clients} client processes, heartbeat every {args.heartbeat:.0f} s, "
          f"server loop {base['loop']}, {os.cpu_count()} CPUs (load generator included), "
          f"machine speed {base['rsa_per_s']:.0f} RSA-2048 signatures per CPU-second")
    print(f"{'metric'.ljust(width)}  {'measured'.ljust(vwidth)}  target")
    for name, value, target in rows:
        print(f"{name.ljust(width)}  {value.ljust(vwidth)}  {target}")
    if reasons:
        print(f"failure reasons: {reasons}")
    print(f"(heartbeats measured in steady state: {hb_steady}; during ramp: {ramp_heartbeats})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chargers", type=int, default=5000)
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second in the ramp")
    parser.add_argument("--clients", type=int, default=3, help="load-generator processes")
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds of steady state measured")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the ramp before measuring")
    parser.add_argument("--fresh-rate", type=float, default=50.0, help="new connections/s around the reload")
    parser.add_argument("--profile", choices=["gsm", "modern"], default="gsm")
    parser.add_argument("--auth", choices=["password", "none"], default="password",
                        help="none: unknown_chargers=accept, no password check (isolates TLS cost)")
    parser.add_argument("--db-url", help="store URL (default: SQLite in a temp dir)")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"],
                        help="server event loop (default: CERTD_EVENT_LOOP, else uvloop if installed)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="run `certd run` with [ocpp] workers = 1, then N, and a reconnect storm "
                             "after a restart in each (bench/ocpp_workers.py)")
    parser.add_argument("--server-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server_child:
        return server_child(args.server_child)
    if not 1 <= args.chargers <= 20000 or args.hold > 600:
        parser.error("bounded runs only: 1-20000 chargers, --hold <= 600 s")
    if args.db_url:  # certd refuses to store private keys in PostgreSQL unencrypted
        os.environ.setdefault("CERTD_STORE_KEY", base64.b64encode(os.urandom(32)).decode())
    if args.workers:
        from ocpp_workers import run_workers

        run_workers(args)
        return 0
    run(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
