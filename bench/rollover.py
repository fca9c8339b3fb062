#!/usr/bin/env python3
"""Benchmark of the trust rollover: N connected chargers, one CA change, time until all confirmed.

    .venv/bin/python bench/rollover.py                    # 2,000 chargers, 4 client processes
    .venv/bin/python bench/rollover.py --chargers 200     # quick look

What runs (loopback only; every phase is bounded in time)
- a server process: certd's OcppService + RolloverEngine (what `certd run` and
  `certd serve` run), SQLite store, a test CA (root A -> intermediate -> RSA leaf),
  a fleet bundle over the lab anchors; chargers registered without password
  (the OCPP load benchmark measures Basic auth; this one measures the rollover);
- several client processes, each running simulated chargers from
  tests/rollover/sim.py (the `ocpp` library, half OCPP 1.6, half 2.0.1), each with
  its own trust store holding root A and verifying the server's chain;
- the CA change: the main process stores a certificate from root B (as `certd issue`
  would, chain tracking included: bundle v2 = {A, B}) and signals the server
  (SIGUSR1 -> `RolloverEngine.on_issued`, what the daemon calls after a deploy).

Measured from the signal: time until every charger's row says it holds bundle
v2 (GetInstalledCertificateIds confirmed root B), time until the listener serves
the new certificate, server CPU seconds and RSS meanwhile (psutil, sampled every
0.2 s), InstallCertificate requests the chargers received, failures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST = "ocpp.bench.test"


def charger_id(index: int) -> str:
    return f"ROLL*{index:06d}"


# --------------------------------------------------------------------------- setup (main process)

def prepare(workdir: Path, total: int, concurrency: int) -> dict[str, object]:
    import datetime as dt

    from certd.config import load_config
    from certd.sandbox.certd_config import ocpp_listener, ocpp_toml
    from certd.store.chargers import Charger
    from certd.store.db import make_engine, session_scope, upgrade
    from certd.trust.track import on_issued
    from tests.rollover.test_engine import store_issued
    from tests import pki

    root_a, root_b = pki.root("Bench Root A"), pki.root("Bench Root B")
    inter_a, inter_b = pki.intermediate("Bench Inter A", root_a), pki.intermediate("Bench Inter B", root_b)
    anchors = workdir / "anchors"
    anchors.mkdir()
    (anchors / "a.pem").write_text(root_a.pem)
    (anchors / "b.pem").write_text(root_b.pem)
    (workdir / "roots.pem").write_text(root_a.pem + root_b.pem)
    (workdir / "root-a.pem").write_text(root_a.pem)
    url = f"sqlite:///{workdir / 'certd.db'}"
    (workdir / "certd.toml").write_text(f"""
state_dir = "{workdir / 'state'}"
database_url = "{url}"
log_level = "warning"

[[certificates]]
name = "ocpp"
domains = ["{HOST}"]

[trust.anchor_sets]
lab = "{anchors}"

[[trust.bundles]]
name = "fleet"
anchors = "lab"

{ocpp_toml([ocpp_listener("main", HOST, certificates=["ocpp"])], unknown_chargers="accept",
           reload_check_interval=0, trust_roots=[workdir / "roots.pem"], ping_interval=60, call_timeout=60)}
[rollover]
concurrency = {concurrency}
boot_wait = 5
check_interval = 5
call_timeout = 60
""")
    upgrade(url)
    engine = make_engine(url)
    config = load_config(workdir / "certd.toml")
    first = store_issued(engine, pki.leaf([HOST], inter_a, key=pki.rsa_key(), days=90), [inter_a])
    on_issued(config, engine, first, deliver=False)
    with session_scope(engine) as session:
        session.add_all(Charger(charger_id=charger_id(i), password_hash=None, heartbeat_class="gsm")
                        for i in range(total))
    engine.dispose()
    leaf_b = pki.leaf([HOST], inter_b, key=pki.rsa_key(), days=90)
    return {"leaf_b": leaf_b, "inter_b": inter_b, "config": config, "url": url,
            "served_until": first.not_after - dt.timedelta(days=7)}


def change_ca(state: dict[str, object]) -> int:
    """What `certd issue` leaves behind after the CA moved to root B: a new current certificate
    from B, its chain recorded and the bundle at a new version."""
    from certd.store.db import make_engine
    from certd.trust.track import on_issued
    from tests.rollover.test_engine import store_issued

    engine = make_engine(str(state["url"]))
    issued = store_issued(engine, state["leaf_b"], [state["inter_b"]])  # type: ignore[arg-type]
    result = on_issued(state["config"], engine, issued, deliver=False)  # type: ignore[arg-type]
    assert any(c.flavour == "roots" and c.seq == 2 for c in result.changes), result.changes
    engine.dispose()
    return int(issued.id or 0)


def progress(url: str) -> tuple[int, int, str, int | None]:
    """(chargers holding v2, chargers holding v1 or later, gate state, served id)."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT bundles_json, state FROM rollover_charger")).all()
        gate = conn.execute(sa.text("SELECT state, served_id FROM rollover_gate")).first()
    engine.dispose()
    v2 = sum(1 for bundles, state in rows if state == "confirmed" and json.loads(bundles).get("fleet") == 2)
    v1 = sum(1 for bundles, state in rows if state == "confirmed" and json.loads(bundles).get("fleet", 0) >= 1)
    return v2, v1, gate[0] if gate else "-", gate[1] if gate else None


# --------------------------------------------------------------------------- server process

async def serve(workdir: Path) -> None:
    import logging

    from certd.config import load_config
    from certd.rollover.engine import RolloverEngine
    from certd.ocpp.service import OcppService, tune_process_for_many_connections
    from certd.store.db import make_engine

    logging.basicConfig(level=logging.WARNING, format="server %(levelname)s %(name)s: %(message)s")
    config = load_config(workdir / "certd.toml")
    engine = make_engine(config.db_url)
    service = OcppService(config, engine)
    await service.start()
    rollover = RolloverEngine(config, engine, service)
    await rollover.start()
    tune_process_for_many_connections()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    tasks: set[asyncio.Task[object]] = set()

    def issued() -> None:
        task = loop.create_task(rollover.on_issued("ocpp"))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    loop.add_signal_handler(signal.SIGUSR1, issued)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    print(f"READY {service.listener('main').ports[0]}", flush=True)
    await stop.wait()
    print(f"INSTALLS_SENT {rollover.installs_sent}", flush=True)
    await rollover.close()
    await service.close()


# --------------------------------------------------------------------------- client processes

async def clients(port: int, first: int, count: int, root_file: Path) -> None:
    import ocpp.messages

    from tests.rollover.sim import SimCharger

    ocpp.messages.ASYNC_VALIDATION = False
    root = root_file.read_text()
    sims = [SimCharger(charger_id(i), "ocpp1.6" if i % 2 == 0 else "ocpp2.0.1", [root], HOST)
            for i in range(first, first + count)]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    batch = 50  # a ramp, not a handshake storm on 2 cores
    for start in range(0, len(sims), batch):
        group = sims[start:start + batch]
        for sim in group:
            sim.start(f"wss://127.0.0.1:{port}/ocpp/{sim.charger_id}")
        deadline = time.monotonic() + 60
        while not all(s.online.is_set() for s in group) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
    online = sum(s.online.is_set() for s in sims)
    print(f"CONNECTED {online}", flush=True)
    await stop.wait()
    report = {"installs": sum(len(s.install_requests) for s in sims),
              "accepted": sum(len(s.accepted_installs) for s in sims),
              "reconnects": sum(max(0, s.connections - 1) for s in sims),
              "handshake_failures": sum(s.handshake_failures for s in sims)}
    print("REPORT " + json.dumps(report), flush=True)
    for sim in sims:
        sim._stop.set()  # noqa: SLF001 - shutting the whole process down
    await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)


# --------------------------------------------------------------------------- orchestration

def read_line(proc: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise RuntimeError(f"process exited ({proc.returncode}) before printing {prefix}")
            continue
        if line.startswith(prefix):
            return line[len(prefix):].strip()
    raise TimeoutError(f"no {prefix} within {timeout:.0f}s")


def run(args: argparse.Namespace) -> int:
    import psutil

    workdir = Path(tempfile.mkdtemp(prefix="certd-rollover-bench-"))
    total = args.chargers
    print(f"preparing {total} chargers in {workdir} ...", flush=True)
    state = prepare(workdir, total, args.concurrency)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(workdir)], env=env,
                              stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen[str]] = []
    try:
        port = int(read_line(server, "READY ", 60))
        per = -(-total // args.clients)
        for k in range(args.clients):
            first, count = k * per, min(per, total - k * per)
            if count <= 0:
                break
            procs.append(subprocess.Popen(
                [sys.executable, __file__, "--clients-run", str(port), str(first), str(count),
                 str(workdir / "root-a.pem")], env=env, stdout=subprocess.PIPE, text=True))
        t_connect = time.monotonic()
        connected = sum(int(read_line(p, "CONNECTED ", 300)) for p in procs)
        connect_s = time.monotonic() - t_connect
        print(f"{connected}/{total} chargers connected in {connect_s:.1f}s; waiting for the first "
              "look at what they hold ...", flush=True)
        deadline = time.monotonic() + 300
        while progress(str(state["url"]))[1] < total and time.monotonic() < deadline:
            time.sleep(0.5)
        baseline = progress(str(state["url"]))[1]

        proc = psutil.Process(server.pid)
        rss_before = proc.memory_info().rss
        cpu_before = sum(proc.cpu_times()[:2])
        new_id = change_ca(state)
        t0 = time.monotonic()
        server.send_signal(signal.SIGUSR1)
        rss_peak, samples, switch_s, all_s = rss_before, [], None, None
        v2 = 0
        while time.monotonic() - t0 < args.timeout:
            time.sleep(0.2)
            rss_peak = max(rss_peak, proc.memory_info().rss)
            v2, _, gate_state, served = progress(str(state["url"]))
            samples.append((time.monotonic() - t0, v2))
            if switch_s is None and served == new_id:
                switch_s = time.monotonic() - t0
            if all_s is None and v2 >= total:
                all_s = time.monotonic() - t0
            if all_s is not None and switch_s is not None:
                break
        cpu_used = sum(proc.cpu_times()[:2]) - cpu_before
        window = time.monotonic() - t0

        for p in procs:
            p.send_signal(signal.SIGTERM)
        reports = [json.loads(read_line(p, "REPORT ", 60)) for p in procs]
        server.send_signal(signal.SIGTERM)
        installs_sent = int(read_line(server, "INSTALLS_SENT ", 60))
    finally:
        for p in [*procs, server]:
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()

    half = next((t for t, n in samples if n >= total / 2), None)
    rows = [
        ("chargers (1.6 / 2.0.1)", f"{total} ({(total + 1) // 2} / {total // 2})"),
        ("client processes", str(len(procs))),
        ("engine concurrency", str(args.concurrency)),
        ("connected before the change", f"{connected} in {connect_s:.1f}s"),
        ("holding v1 before the change", str(baseline)),
        ("confirmed root B: half", f"{half:.2f}s" if half is not None else "-"),
        ("confirmed root B: all", f"{all_s:.2f}s" if all_s is not None else f"NOT REACHED ({v2}/{total})"),
        ("listener switched after", f"{switch_s:.2f}s" if switch_s is not None else "NOT REACHED"),
        ("server CPU during rollover", f"{cpu_used:.1f}s over {window:.1f}s ({100 * cpu_used / window:.0f}% of a core)"),
        ("server CPU per charger", f"{1000 * cpu_used / max(total, 1):.1f} ms"),
        ("server RSS before / peak", f"{rss_before / 2**20:.0f} / {rss_peak / 2**20:.0f} MiB"),
        ("InstallCertificate sent / received / accepted",
         f"{installs_sent} / {sum(r['installs'] for r in reports)} / {sum(r['accepted'] for r in reports)}"),
        ("reconnects / handshake failures",
         f"{sum(r['reconnects'] for r in reports)} / {sum(r['handshake_failures'] for r in reports)}"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    print(f"{'trust rollover benchmark':<{width}}  result")
    print(f"{'-' * width}  {'-' * 40}")
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    target = "met" if all_s is not None and all_s <= 30 else "NOT met"
    print(f"\ntarget (all {total} confirmed within 30 s): {target}")
    return 0 if all_s is not None else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chargers", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--concurrency", type=int, default=100, help="[rollover] concurrency")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for all to confirm")
    parser.add_argument("--serve", metavar="WORKDIR", help=argparse.SUPPRESS)
    parser.add_argument("--clients-run", nargs=4, metavar=("PORT", "FIRST", "COUNT", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(Path(args.serve)))
        return 0
    if args.clients_run:
        port, first, count, root = args.clients_run
        asyncio.run(clients(int(port), int(first), int(count), Path(root)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
