"""The processes of bench/ocpp_load.py: certd's OCPP server and the load-generating clients.

Both sides derive each charger's password from its id, so a charger can log in
whether or not the store knows it (first contact under `unknown_chargers`).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hashlib
import hmac
import json
import os
import random
import signal
import ssl
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

HOST = "ocpp.bench.test"
SECRET = b"certd-bench"  # derives per-charger passwords; both sides compute them


def password_for(charger_id: str) -> str:
    digest = hmac.new(SECRET, charger_id.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()[:24]


def charger_id(index: int, prefix: str = "BENCH") -> str:
    return f"{prefix}*{index:06d}"


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


# CERTD_BENCH_TIMINGS=1: wall time spent in these steps of the opening handshake (developer aid
# for finding what a connection waits on; worker-thread time is invisible to the loop's cProfile).
TIMED_STEPS = ("_process_request", "_admit", "_lookup_and_check", "_register", "_password_ok",
               "_store_first_password")


def time_steps(cls: type, names: tuple[str, ...], totals: dict[str, list[float]]) -> None:
    """Wrap the named methods of `cls` (those it has) to add up their wall time and calls."""
    import functools
    import inspect

    for name in names:
        method = getattr(cls, name, None)
        if method is None:
            continue
        totals[name] = [0.0, 0, 0.0]  # seconds, calls, longest

        def account(name: str, began: float) -> None:
            spent = time.perf_counter() - began
            entry = totals[name]
            entry[0] += spent
            entry[1] += 1
            entry[2] = max(entry[2], spent)

        if inspect.iscoroutinefunction(method):
            async def wrapper(*args, __m=method, __n=name, **kwargs):  # type: ignore[no-untyped-def]
                began = time.perf_counter()
                try:
                    return await __m(*args, **kwargs)
                finally:
                    account(__n, began)
        else:
            def wrapper(*args, __m=method, __n=name, **kwargs):  # type: ignore[no-untyped-def]
                began = time.perf_counter()
                try:
                    return __m(*args, **kwargs)
                finally:
                    account(__n, began)
        setattr(cls, name, functools.wraps(method)(wrapper))


def step_report(totals: dict[str, list[float]]) -> dict[str, str]:
    return {name: f"{calls} calls, mean {seconds / calls * 1000:.2f} ms, max {longest * 1000:.0f} ms"
            for name, (seconds, calls, longest) in totals.items() if calls}


def first_contact_stats(service) -> dict | None:  # type: ignore[no-untyped-def]
    """The registrar's counters (None on a certd from before first-contact batching)."""
    registrar = getattr(service.shared, "first_contact", None)
    return registrar.stats.as_dict() if registrar is not None else None


def server_child(config_path: str) -> int:
    """Runs OcppService like `certd serve`; answers 'stats' / 'quit' on stdin."""
    import logging

    from certd.runtime import eventloop
    from certd.cli import context
    from certd.config import load_config
    from certd.ocpp.service import OcppService, tune_process_for_many_connections

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    step_totals: dict[str, list[float]] = {}
    if os.environ.get("CERTD_BENCH_TIMINGS"):
        from certd.ocpp.server import Listener

        from certd.ocpp.auth import FailureLimiter

        time_steps(Listener, TIMED_STEPS, step_totals)
        time_steps(FailureLimiter, ("begin",), step_totals)  # waits behind the in-flight limit
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
                    "first_contact": first_contact_stats(service),
                    "steps": step_report(step_totals),
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
    unknown = set(spec.get("unknown", ()))  # --mixed: these ids are not in the store
    stats = {"handshakes": [], "handshakes_unknown": [], "handshake_end": [], "rtt_steady": [], "rtt_ramp": [],
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
        charger_ctx = ctx
        if spec.get("client_certs"):  # --auth mtls: this charger's own certificate (client-side cost)
            charger_ctx = ssl.create_default_context(cadata=spec["ca_pem"])
            if spec["client_ciphers"]:
                charger_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
                charger_ctx.set_ciphers(spec["client_ciphers"])
            stem = Path(spec["client_certs"]) / cid.replace("*", "_")
            charger_ctx.load_cert_chain(f"{stem}.pem", f"{stem}.key")
        began = time.perf_counter()
        try:
            ws = await connect(
                f"wss://127.0.0.1:{spec['port']}/ocpp/{cid}", ssl=charger_ctx, server_hostname=HOST,
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
        stats["handshakes_unknown" if cid in unknown else "handshakes"].append(elapsed)
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


