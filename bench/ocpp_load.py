#!/usr/bin/env python3
"""Load benchmark of certd's OCPP endpoint: N concurrent TLS chargers on loopback.

    .venv/bin/python bench/ocpp_load.py                   # 5,000 chargers, 200/s ramp
    .venv/bin/python bench/ocpp_load.py --chargers 500 --hold 10   # quick look
    .venv/bin/python bench/ocpp_load.py --unknown         # first contact: chargers not in the store
    .venv/bin/python bench/ocpp_load.py --compare --chargers 1000 --hold 5   # known vs unknown
    .venv/bin/python bench/ocpp_load.py --mixed --chargers 1000   # both in one ramp

What runs
- a server process: certd's OcppService (the code `certd serve` runs, with the
  same GC tuning and event loop: uvloop if installed, `--loop asyncio` to
  compare), SQLite store, a test CA's RSA-2048 + ECDSA certificates, the
  `gsm` TLS profile by default; every charger registered with its own password
  (argon2id), so each new connection pays the full Basic-auth check. With
  `--unknown` the store holds no chargers and `unknown_chargers` is `accept`
  (or `--policy register`): each charger's first connection registers it and
  stores the password it sent (an argon2id hash instead of a check);
- several client processes (the load generator, on the same 2 cores): each
  charger opens TLS + WebSocket (`ocpp1.6`), sends BootNotification, then a
  Heartbeat every 5 s at a random phase. Clients speak OCPP-J frames directly
  (no schema validation on the client side) to leave the CPU to the server.

Timeline: ramp at --rate connections/s until N are connected; --hold seconds of
steady state (heartbeat round trips measured); then a live reload (a new
certificate is stored and the server gets SIGHUP, as the daemon does after a
deploy) with fresh connections opened from 3 s before to 3 s after it.

Printed: connections/s during the ramp, TLS+WebSocket handshake p50/p99,
server CPU per new connection and in the ramp, server RSS per connection,
heartbeat RTT p50/p99 with all N connected, the longest server GC pause, failed
handshakes / dropped connections across the reload, and (first contact) the
charger rows in the store 3 s after the ramp and after a clean stop.
`--compare` runs a server with known chargers, then one with unknown ones, at
the same rate, and prints the two side by side (`--rounds N` alternates N pairs
and prints the median: a shared host's load changes from run to run); `--mixed`
interleaves known and unknown chargers in one ramp of one server, so both see
the same host load (and share the server's queues). Both skip the reload phase.
Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _ocpp_load.procs import (  # noqa: E402  (bench/ is this script's directory)
    HOST, ROOT, charger_id, client_process, password_for, server_child,
)
from _ocpp_load.report import (  # noqa: E402
    report, report_comparison, report_mixed, report_rounds,
)

CHARGER_PREFIX = "BENCH"


# --------------------------------------------------------------------------- setup


def _hash_chunk(ids: list[str]) -> list[tuple[str, str]]:
    from certd.ocpp.auth import hash_password

    return [(cid, hash_password(password_for(cid))) for cid in ids]


def prepare_world(workdir: Path, total: int, args: argparse.Namespace, unknown: bool):
    """CA, certificates in the store, registered chargers (none when `unknown`), config file.
    Returns (config, ca, url)."""
    import sqlalchemy as sa
    from tests.pki import MiniCA, store_current  # the test CA: cryptography only

    from certd.sandbox.certd_config import ocpp_listener, ocpp_toml
    from certd.store.chargers import Charger
    from certd.store.db import make_engine, session_scope, upgrade

    url = args.db_url or f"sqlite:///{workdir / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    ca = MiniCA("bench")
    store_current(engine, "bench-rsa", ca.issue([HOST], "rsa"))
    store_current(engine, "bench-ec", ca.issue([HOST], "ec"))
    (workdir / "root.pem").write_text(ca.root_pem)

    table = Charger.__table__  # type: ignore[attr-defined]
    with engine.begin() as conn:  # a reused --db-url: only this benchmark's own rows go
        conn.execute(sa.delete(table).where(table.c.charger_id.like(f"{CHARGER_PREFIX}*%")))
    ids = [] if unknown else [charger_id(i, CHARGER_PREFIX) for i in range(total)
                              if not (args.mixed and i in mixed_unknown(args))]
    if args.auth == "password" and ids:
        chunks = [ids[i::2] for i in range(2)]
        with mp.get_context("fork").Pool(2) as pool:
            hashed = [pair for chunk in pool.map(_hash_chunk, chunks) for pair in chunk]
    else:
        hashed = [(cid, None) for cid in ids]
    with session_scope(engine) as session:
        session.add_all(Charger(charger_id=cid, password_hash=h, heartbeat_class="gsm")
                        for cid, h in hashed)
    engine.dispose()
    if unknown or args.mixed:
        policy = args.policy
    else:
        policy = "accept" if args.auth == "none" else "reject"
    certificates = ["bench-rsa"] if args.profile == "gsm" else ["bench-rsa", "bench-ec"]
    # --auth mtls: security profile 3, a client certificate per charger (bench/charger_certs.py).
    profile3 = {"security_profile": 3} if args.auth == "mtls" else {}
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

{ocpp_toml([ocpp_listener("bench", HOST, certificates=certificates, tls_profile=args.profile,
                          paths=["/ocpp/{id}"], **profile3)],
           trust_roots=[workdir / "root.pem"], reload_check_interval=0, unknown_chargers=policy,
           default_heartbeat_class="gsm", node_name="bench")}''')
    if args.auth == "mtls":
        from charger_certs import charger_ca_toml, issue_client_certificates

        with config.open("a") as handle:
            handle.write(charger_ca_toml(workdir))
        issue_client_certificates(config, ids, workdir)
    return config, ca, url


def mixed_unknown(args: argparse.Namespace) -> range:
    """--mixed: the ramp's odd-numbered chargers are unknown to the store, the even ones known."""
    return range(1, args.chargers, 2)


def count_rows(url: str) -> dict[str, int]:
    """This benchmark's charger rows in the store, by registration state."""
    import sqlalchemy as sa

    from certd.store.chargers import Charger
    from certd.store.db import make_engine

    table = Charger.__table__  # type: ignore[attr-defined]
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.registration, sa.func.count())
                .where(table.c.charger_id.like(f"{CHARGER_PREFIX}*%"))
                .group_by(table.c.registration)).all()
    finally:
        engine.dispose()
    return {registration: count for registration, count in rows}


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
        stats = json.loads(self.process.stdout.readline())
        stats["wall"] = time.time()
        return stats

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


def run(args: argparse.Namespace, unknown: bool) -> dict:
    """One server, one timeline; returns the measurements (see `report`)."""
    from tests.pki import store_current

    from certd.store.db import make_engine

    workdir = Path(tempfile.mkdtemp(prefix="certd-ocpp-bench-"))
    # --compare and --mixed skip the reload phase (their tables show the ramp): shorter runs.
    reloading = not (args.compare or args.mixed)
    fresh_count = int(args.fresh_rate * 6) if reloading else 0
    what = (f"unknown to the store (unknown_chargers = {args.policy})" if unknown
            else f"every other one unknown (unknown_chargers = {args.policy})" if args.mixed
            else "registered")
    print(f"{args.chargers} chargers (+{fresh_count} fresh), {what}, in {workdir} ...", flush=True)
    config, ca, url = prepare_world(workdir, args.chargers + fresh_count, args, unknown)
    server = Server(config, args.loop)
    try:
        base = server.stats()
        t0 = time.time() + 2.0
        ramp_end = t0 + args.chargers / args.rate
        steady_start = ramp_end + args.settle
        steady_end = steady_start + args.hold
        reload_at = steady_end + 4.0 if reloading else steady_end
        end_at = reload_at + 8.0 if reloading else steady_end + 0.5
        ramp = [(charger_id(i, CHARGER_PREFIX), t0 + i / args.rate) for i in range(args.chargers)]
        fresh = [(charger_id(args.chargers + j, CHARGER_PREFIX), reload_at - 3.0 + j / args.fresh_rate)
                 for j in range(fresh_count)]
        client_ciphers = "ECDHE-RSA-AES128-GCM-SHA256" if args.profile == "gsm" else ""
        pipes, procs = [], []
        ctx = mp.get_context("fork")
        for k in range(args.clients):
            spec = {
                "port": server.port, "ca_pem": ca.root_pem, "client_ciphers": client_ciphers,
                "send_password": args.auth == "password",
                "client_certs": str(workdir / "client-certs") if args.auth == "mtls" else None,
                "ramp": ramp[k::args.clients], "fresh": fresh[k::args.clients],
                "unknown": [charger_id(i, CHARGER_PREFIX) for i in mixed_unknown(args)]
                if args.mixed else [],
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
        rows_after_ramp = count_rows(url)
        sleep_until(steady_start)
        at_steady = server.stats()
        sleep_until(steady_end)
        after_steady = server.stats()

        new_leaf = None
        if reloading:
            engine = make_engine(url)
            # The certificate fresh clients get: RSA under gsm, ECDSA under modern (TLS 1.3).
            renewed, key_type = ("bench-rsa", "rsa") if args.profile == "gsm" else ("bench-ec", "ec")
            new_leaf = ca.issue([HOST], key_type)
            sleep_until(reload_at)
            store_current(engine, renewed, new_leaf)
            engine.dispose()
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
    rows_after_stop = count_rows(url)

    errors = [r["error"] for r in results if "error" in r]
    if errors or len(results) != args.clients:
        raise SystemExit(f"client processes failed: {errors or 'no result'}")

    def merged(key: str) -> list:
        return [v for r in results for v in r[key]]

    def total(key: str) -> int:
        return sum(r[key] for r in results)

    ends = sorted(merged("handshake_end"))
    ramp_ends = [e for e in ends if e <= reload_at - 3.0] if reloading else ends
    steady, ramp_rtt = merged("rtt_steady"), merged("rtt_ramp")
    steady_cpu = after_steady["cpu"] - at_steady["cpu"]
    ramp_cpu = after_ramp["cpu"] - before_ramp["cpu"]
    fresh_serials: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for r in results:
        for serial, count in r["fresh_serials"].items():
            fresh_serials[serial] = fresh_serials.get(serial, 0) + count
        for reason, count in r["fail_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    return {
        "unknown": unknown, "chargers": args.chargers, "fresh_count": fresh_count, "base": base,
        "connected": after_ramp["connected"],
        "achieved": (len(ramp_ends) - 1) / (ramp_ends[-1] - t0) if len(ramp_ends) > 1 else float("nan"),
        "handshakes": merged("handshakes"), "steady": steady, "ramp_rtt": ramp_rtt,
        "handshakes_unknown": merged("handshakes_unknown"),
        "per_heartbeat": steady_cpu / len(steady) if steady else 0.0,
        "ramp_cpu": ramp_cpu, "ramp_wall": after_ramp["wall"] - before_ramp["wall"],
        "loop_share": (after_ramp["loop_cpu"] - before_ramp["loop_cpu"]) / ramp_cpu if ramp_cpu else 0.0,
        "sys_share": (after_ramp["sys_cpu"] - before_ramp["sys_cpu"]) / ramp_cpu if ramp_cpu else 0.0,
        "rss_per_conn": (at_steady["rss_kib"] - base["rss_kib"]) / max(1, at_steady["connected"]),
        "fresh_serials": fresh_serials, "reasons": reasons,
        "reloads": after_reload["reloads"], "served": after_reload["served"],
        "new_serial": f"{new_leaf.serial}" if new_leaf else None,
        "gc_max": max(s["gc_max"] for s in (after_ramp, at_steady, after_steady, after_reload)),
        "gc_steady": after_steady["gc_max"], "gc_ramp": after_ramp["gc_total"] / max(1, args.chargers),
        "failed_ramp": total("failed_ramp"), "failed_reload": total("failed_reload"),
        "fresh_ok": total("fresh_ok"), "drops": total("drops"), "drops_reload": total("drops_reload"),
        "rows_after_ramp": rows_after_ramp, "rows_after_stop": rows_after_stop,
        "first_contact": after_reload.get("first_contact"),
        "steps": after_ramp.get("steps"),
    }


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
    parser.add_argument("--auth", choices=["password", "none", "mtls"], default="password",
                        help="none: unknown_chargers=accept, no password check (isolates TLS cost); "
                             "mtls: security profile 3, a client certificate per charger")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--unknown", action="store_true",
                      help="first contact: no charger is in the store; each registers itself")
    mode.add_argument("--compare", action="store_true",
                      help="known chargers, then unknown ones, at the same rate; one table")
    mode.add_argument("--mixed", action="store_true",
                      help="one ramp, every other charger unknown: both under the same host load")
    parser.add_argument("--policy", choices=["accept", "register"], default="accept",
                        help="unknown_chargers for --unknown / --compare")
    parser.add_argument("--rounds", type=int, default=1, help="--compare: known/unknown pairs run")
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
    if not 1 <= args.chargers <= 20000 or args.hold > 600 or not 1 <= args.rounds <= 5:
        parser.error("bounded runs only: 1-20000 chargers, --hold <= 600 s, 1-5 rounds")
    if args.auth == "mtls" and (args.unknown or args.compare or args.mixed):
        parser.error("--auth mtls: registered chargers with their certificates only")
    if args.db_url:  # certd refuses to store private keys in PostgreSQL unencrypted
        os.environ.setdefault("CERTD_STORE_KEY", base64.b64encode(os.urandom(32)).decode())
    if args.workers:
        from ocpp_workers import run_workers

        run_workers(args)
        return 0
    if args.compare:
        pairs = []
        for _ in range(args.rounds):  # alternating, so a shared host's load swings hit both
            known = run(args, unknown=False)
            pairs.append((known, run(args, unknown=True)))
            report_comparison(*pairs[-1], args)
        if len(pairs) > 1:
            report_rounds(pairs)
    elif args.mixed:
        report_mixed(run(args, unknown=False), args)
    else:
        report(run(args, unknown=args.unknown), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
