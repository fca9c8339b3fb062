"""The code of bench/http.py (run that one: this file only defines, so `make bench` runs it once).

Benchmark of certd's HTTP surface under charger load: endpoint latency and its cost to heartbeats.

    .venv/bin/python bench/http.py                        # 50 certificates, 5,000 chargers
    .venv/bin/python bench/http.py --chargers 2000        # on a busy 2-core machine

What runs
- a server process: the OCPP endpoint and the HTTP server in one event loop,
  as `certd serve` runs them (uvloop when installed), on a SQLite store filled
  by certd.sandbox.status_fleet: 50 certificates from a local CA, bundle
  versions, deliveries, and every charger registered with rollover progress;
- bench/ocpp_load.py's client processes: each charger opens TLS + WebSocket,
  boots, then sends a Heartbeat every --heartbeat seconds at a random phase.

Timeline (all bounded): ramp until every charger is connected; settle; then
--rounds pairs of windows of --window seconds, alternately quiet and with
/metrics scraped once a second (the heartbeat RTTs of both, same run, side by
side); then --requests sequential requests to each of /metrics, / and
/api/v1/status while the chargers keep heartbeating. Loopback only.

Printed: p50/p99/max latency per endpoint (target p99 <= 50 ms) and heartbeat
RTT p50/p99 quiet vs scraped (target: p99 grows by <= 5 ms).
"""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import http.client  # noqa: E402
import importlib.util  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, str(BENCH))  # bench/_ocpp_load: the OCPP load benchmark's clients and report
from _ocpp_load.procs import HOST, client_process  # noqa: E402
from _ocpp_load.report import percentile  # noqa: E402

_spec = importlib.util.spec_from_file_location("ocpp_load", BENCH / "ocpp_load.py")
assert _spec and _spec.loader
ocpp_load = importlib.util.module_from_spec(_spec)
sys.modules["ocpp_load"] = ocpp_load
_spec.loader.exec_module(ocpp_load)
sleep_until = ocpp_load.sleep_until


def prepare(workdir: Path, chargers: int, certificates: int) -> tuple[Path, str]:
    """Config file and the local CA's roots (PEM), store filled."""
    from certd.config import load_config
    from certd.sandbox.status_fleet import fleet_config_toml, populate
    from certd.store.db import make_engine, upgrade
    from certd.store.types import utcnow

    roots = workdir / "roots.pem"
    roots.write_text("")
    config_path = workdir / "certd.toml"
    config_path.write_text(fleet_config_toml(workdir / "state", roots, certificates=certificates,
                                             listener_host=HOST))
    config = load_config(config_path)
    upgrade(config.db_url)
    engine = make_engine(config.db_url)
    # connected_share=0: the store shows chargers online only once they really connect.
    ca = populate(engine, config, chargers=chargers, now=utcnow(), connected_share=0.0)
    engine.dispose()
    roots.write_text(ca.roots_pem)
    return config_path, ca.roots_pem


def server_child(config_path: str) -> int:
    """OcppService + HttpService in one loop (what `certd serve` runs); 'quit' on stdin stops it."""
    import asyncio
    import logging

    from certd.cli import context
    from certd.config import load_config
    from certd.http.live import LiveSources
    from certd.http.service import HttpService
    from certd.ocpp.service import OcppService, tune_process_for_many_connections
    from certd.runtime import eventloop

    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    config = load_config(config_path)
    engine = context.open_store(config, upgrade=False)

    async def run() -> None:
        service = OcppService(config, engine)
        await service.start()
        http_server = HttpService(config, engine, live=LiveSources(ocpp=lambda: service))
        await http_server.start()
        tune_process_for_many_connections()
        loop = asyncio.get_running_loop()
        print(f"READY {service.listener('fleet').ports[0]} {http_server.addresses[0][1]} "
              f"{type(loop).__module__.split('.')[0]}", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while (await reader.readline()).decode().strip() not in ("quit", ""):
            pass
        await http_server.close()
        await service.close()

    eventloop.run(run())
    return 0


class Scraper(threading.Thread):
    """GET `path` once a second between `start` and `end` (wall clock), on one kept-alive connection."""

    def __init__(self, port: int, path: str, windows: list[tuple[float, float]]) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.windows = port, path, windows
        self.latencies: list[float] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        for start, end in self.windows:
            at = start
            while at < end:
                sleep_until(at)
                began = time.perf_counter()
                connection.request("GET", self.path)
                response = connection.getresponse()
                response.read()
                assert response.status == 200, response.status
                self.latencies.append(time.perf_counter() - began)
                at += 1.0


def timed_requests(port: int, path: str, count: int) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies = []
    for _ in range(count):
        began = time.perf_counter()
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200 and body, (path, response.status)
        latencies.append(time.perf_counter() - began)
        time.sleep(0.02)  # a browser or scraper, not a flood
    return latencies


def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="certd-http-bench-"))
    print(f"filling a store with {args.certificates} certificates and {args.chargers} chargers in {workdir} ...",
          flush=True)
    config_path, roots_pem = prepare(workdir, args.chargers, args.certificates)
    server = subprocess.Popen([sys.executable, str(BENCH / "http.py"), "--server-child", str(config_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        ready = server.stdout.readline().split()
        if not ready or ready[0] != "READY":
            raise SystemExit(f"server did not start: {ready}")
        ocpp_port, http_port, loop_name = int(ready[1]), int(ready[2]), ready[3]
        t0 = time.time() + 2.0
        ramp_end = t0 + args.chargers / args.rate  # a little generous: disabled chargers are skipped
        windows_start = ramp_end + args.settle
        quiet, scraped = [], []
        for index in range(2 * args.rounds):
            window = (windows_start + index * args.window, windows_start + (index + 1) * args.window)
            (scraped if index % 2 else quiet).append(window)
        latency_start = windows_start + 2 * args.rounds * args.window
        end_at = latency_start + args.latency_budget
        from certd.sandbox.status_fleet import charger_enabled, charger_id

        # Disabled chargers would only be refused (and trip the per-address login limit).
        enabled = [i for i in range(args.chargers) if charger_enabled(i)]
        args.enabled = len(enabled)
        ramp = [(charger_id(i), t0 + n / args.rate) for n, i in enumerate(enabled)]
        ctx = mp.get_context("fork")
        pipes, procs = [], []
        for k in range(args.clients):
            spec = {"port": ocpp_port, "ca_pem": roots_pem, "client_ciphers": "", "send_password": False,
                    "ramp": ramp[k::args.clients], "fresh": [], "heartbeat": args.heartbeat,
                    "steady_start": windows_start, "steady_end": latency_start,
                    "reload_at": end_at + 60, "end_at": end_at}
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=client_process, args=(spec, child_end), daemon=True)
            proc.start()
            pipes.append(parent_end)
            procs.append(proc)
        # Steady state: the first request of a process imports the rollover and trust modules and
        # fills the caches (about half a second, once); that is start-up, not what is measured.
        sleep_until(ramp_end + 1.0)
        for path in ("/metrics", "/", "/api/v1/status"):
            timed_requests(http_port, path, 1)
        scraper = Scraper(http_port, args.scrape_path, scraped)
        scraper.start()
        sleep_until(latency_start)
        scraper.join(timeout=30)
        latencies = {path: timed_requests(http_port, path, args.requests)
                     for path in ("/metrics", "/", "/api/v1/status")}
        results = []
        for pipe, proc in zip(pipes, procs):
            if pipe.poll(args.latency_budget + 60):
                results.append(pipe.recv())
            proc.join(timeout=10)
    finally:
        if server.poll() is None:
            server.stdin.write("quit\n")
            server.stdin.flush()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    errors = [r["error"] for r in results if "error" in r]
    if errors or len(results) != args.clients:
        raise SystemExit(f"client processes failed: {errors or 'no result'}")
    reasons: dict[str, int] = {}
    for r in results:
        for reason, count in r["fail_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    if reasons:
        print(f"failed handshakes by reason: {reasons}")
    report(args, loop_name, results, quiet, scraped, scraper.latencies, latencies)


def report(args, loop_name, results, quiet, scraped, scrapes, latencies) -> None:  # type: ignore[no-untyped-def]
    def within(windows: list[tuple[float, float]]) -> list[float]:
        return [rtt for r in results for at, rtt in r["rtt_at"] if any(a <= at < b for a, b in windows)]

    connected = sum(len(r["handshakes"]) for r in results)  # of the enabled ones
    failed = sum(r["failed_ramp"] for r in results)
    drops = sum(r["drops"] for r in results)
    rtt_quiet, rtt_scraped = within(quiet), within(scraped)

    def ms(seconds: float) -> str:
        return f"{seconds * 1000:.1f}"

    print()
    print(f"certd HTTP server, {args.certificates} certificates, {args.chargers} chargers "
          f"({connected} connected of the {args.enabled} enabled, {args.chargers - args.enabled} disabled in the store; "
          f"{failed} failed, {drops} dropped), heartbeat every {args.heartbeat:.0f} s, "
          f"server loop {loop_name}, {os.cpu_count()} CPUs shared with the load generator")
    print(f"{'endpoint':<18} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  target")
    for path, values in latencies.items():
        verdict = "ok" if percentile(values, 99) <= 0.050 else "OVER"
        print(f"{path:<18} {len(values):>8} {ms(percentile(values, 50)):>8} {ms(percentile(values, 99)):>8} "
              f"{ms(max(values)):>8}  p99 <= 50 ms: {verdict}")
    print(f"{args.scrape_path + ' (1/s)':<18} {len(scrapes):>8} {ms(percentile(scrapes, 50)):>8} "
          f"{ms(percentile(scrapes, 99)):>8} {ms(max(scrapes, default=0.0)):>8}  (scrapes during the windows)")
    print()
    print(f"{'heartbeat RTT':<24} {'samples':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in (("quiet windows", rtt_quiet), (f"{args.scrape_path} every second", rtt_scraped)):
        print(f"{name:<24} {len(values):>8} {ms(percentile(values, 50)):>8} {ms(percentile(values, 99)):>8} "
              f"{ms(max(values, default=0.0)):>8}")
    change = percentile(rtt_scraped, 99) - percentile(rtt_quiet, 99)
    print(f"p99 change with scraping: {change * 1000:+.1f} ms (target <= +5 ms: "
          f"{'ok' if change <= 0.005 else 'OVER'}); {args.rounds} quiet and {args.rounds} scraped windows of "
          f"{args.window:.0f} s, interleaved")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chargers", type=int, default=5000)
    parser.add_argument("--certificates", type=int, default=50)
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second in the ramp")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--heartbeat", type=float, default=5.0)
    parser.add_argument("--settle", type=float, default=5.0)
    parser.add_argument("--window", type=float, default=10.0, help="seconds per quiet or scraped window")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of quiet + scraped windows")
    parser.add_argument("--requests", type=int, default=100, help="timed requests per endpoint")
    parser.add_argument("--latency-budget", type=float, default=40.0, help="seconds for the timed requests")
    parser.add_argument("--scrape-path", default="/metrics", help="what is fetched every second in the "
                        "scraped windows (another path isolates the cost of /metrics' store reads)")
    parser.add_argument("--server-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server_child:
        return server_child(args.server_child)
    if not 1 <= args.chargers <= 20000 or not 1 <= args.certificates <= 1000 or args.window > 120:
        parser.error("bounded runs only: 1-20000 chargers, 1-1000 certificates, --window <= 120 s")
    run(args)
    return 0
