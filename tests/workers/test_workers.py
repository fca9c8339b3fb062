"""`certd run` with `[ocpp] workers = 2`: both workers serve the one port, a killed worker comes
back and its chargers reconnect, a deploy by the supervisor reaches every worker, SIGTERM stops
everything, and a supervisor that disappears takes its workers with it."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
import subprocess
import sys
import time

from certd.runtime import eventloop
from tests.workers.conftest import HOST, NODE, Box, Fleet, alive, kill, wait_until

CHARGERS = 40  # with SO_REUSEPORT hashing, all 40 on one worker has odds of 2 in 2^40


def run(coro):  # type: ignore[no-untyped-def]
    async def bounded():  # type: ignore[no-untyped-def]
        async with asyncio.timeout(120):
            return await coro
    return eventloop.run(bounded())


def both_workers_hold(box: Box, total: int) -> bool:
    nodes = box.nodes()
    return (nodes[f"{NODE}-w1"] > 0 and nodes[f"{NODE}-w2"] > 0
            and nodes[f"{NODE}-w1"] + nodes[f"{NODE}-w2"] == total)


def test_two_workers_share_the_port_and_a_killed_one_is_restarted(make_box) -> None:
    box: Box = make_box(workers=2)
    box.start()
    first = box.worker_pids()
    assert sorted(first) == [1, 2] and box.proc is not None
    assert box.proc.pid not in first.values()

    async def scenario() -> None:
        fleet = Fleet(box.port, box.ca.root_pem)
        tasks = [asyncio.ensure_future(fleet.charger(f"CP{i:03d}")) for i in range(CHARGERS)]
        try:
            await fleet.wait_online(CHARGERS, 60)
            await asyncio.to_thread(wait_until, lambda: both_workers_hold(box, CHARGERS), 30,
                                    "connections on both workers")
            on_w1 = box.nodes()[f"{NODE}-w1"]
            killed_at = time.monotonic()
            kill(first[1])
            await asyncio.to_thread(wait_until, lambda: len(fleet.online) < CHARGERS, 10,
                                    "the killed worker's chargers to notice")
            # Every charger is back (on the other worker, or on the restarted one).
            await fleet.wait_online(CHARGERS, 60)
            await asyncio.to_thread(wait_until, lambda: 1 in box.worker_pids()
                                    and box.worker_pids()[1] != first[1], 30, "worker 1 restarted")
            restarted = box.worker_pids()
            assert restarted[2] == first[2]  # the other worker was left alone
            await asyncio.to_thread(wait_until, lambda: sum(
                n for node, n in box.nodes().items() if node) == CHARGERS, 30, "registry rows")
            reconnected = sum(1 for cid, n in fleet.connects.items() if n >= 2)
            assert reconnected == on_w1  # exactly the killed worker's chargers had to reconnect
            assert box.nodes()[None] == 0
            print(f"{on_w1} chargers reconnected {time.monotonic() - killed_at:.1f}s after the kill")
        finally:
            fleet.stop.set()
            await asyncio.wait(tasks, timeout=20)

    run(scenario())
    log = box.log()
    assert f"OCPP worker {NODE}-w1 was killed by SIGKILL" in log and "restarting it in" in log


def served_serials(box: Box, connections: int = 20) -> set[str]:
    """Serials seen over fresh TLS handshakes (the kernel spreads them over both workers)."""
    import socket

    from cryptography import x509

    ctx = ssl.create_default_context(cadata=box.ca.root_pem)
    served = set()
    for _ in range(connections):
        with socket.create_connection(("127.0.0.1", box.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None
                served.add(f"{x509.load_der_x509_certificate(der).serial_number:x}")
    return served


def serving(box: Box, issued_id: int) -> bool:
    return box.log().count(f"now serves certificate web (issued #{issued_id}") == 2


def test_deploys_reach_every_worker(make_box) -> None:
    """The listeners' periodic store check is off: a deploy reaches the workers through the live
    copy it rewrites (here `certd renew` redeploying a stored issuance, as any certd process on
    the machine does), and the supervisor's own deploy after SIGHUP (forwarded to the workers)."""
    box: Box = make_box(workers=2)
    box.start()
    assert box.proc is not None
    wait_until(lambda: serving(box, 1), 30, "both workers serving issuance #1")

    serial = box.issue()
    started = time.monotonic()
    env = {k: v for k, v in os.environ.items() if k != "CERTD_STORE_KEY"}
    result = subprocess.run([sys.executable, "-m", "certd", "--config", str(box.config_path),
                             "renew", "web"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    wait_until(lambda: serving(box, 2), 10, "both workers serving issuance #2")
    print(f"issuance #2 served by both workers {time.monotonic() - started:.2f}s after `certd renew`")
    assert served_serials(box) == {serial}

    serial = box.issue()
    box.proc.send_signal(signal.SIGHUP)  # the supervisor reloads and checks every certificate now
    wait_until(lambda: serving(box, 3), 30, "both workers serving issuance #3")
    assert served_serials(box) == {serial}
    assert box.worker_pids() and "was killed" not in box.log()


def test_sigterm_stops_every_worker_and_marks_chargers_offline(make_box) -> None:
    box: Box = make_box(workers=2)
    box.start()
    pids = box.worker_pids()
    assert box.proc is not None and len(pids) == 2

    async def scenario() -> None:
        fleet = Fleet(box.port, box.ca.root_pem)
        tasks = [asyncio.ensure_future(fleet.charger(f"CP{i:03d}")) for i in range(10)]
        await fleet.wait_online(10, 60)
        await asyncio.to_thread(wait_until, lambda: box.nodes()[None] == 0, 30, "rows written")
        box.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(box.proc.wait, 60) == 0
        fleet.stop.set()
        await asyncio.wait(tasks, timeout=20)

    run(scenario())
    assert not any(alive(pid) for pid in pids.values())
    assert box.nodes() == {None: 10}
    import socket

    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", box.port)) != 0  # nothing listens any more


def test_workers_stop_when_the_supervisor_is_killed(make_box) -> None:
    box: Box = make_box(workers=2)
    box.start()
    pids = box.worker_pids()
    assert box.proc is not None and len(pids) == 2
    box.proc.kill()
    box.proc.wait(10)
    wait_until(lambda: not any(alive(pid) for pid in pids.values()), 30, "workers to stop")
    assert box.log().count("the supervisor is gone: stopping") == 2
