#!/usr/bin/env python3
"""What a new connection costs the server before certd's own code runs: the floor under
bench/ocpp_load.py's "server CPU per new connection".

    .venv/bin/python bench/tls_floor.py                    # 2,000 connections per row
    .venv/bin/python bench/tls_floor.py --connections 500  # quick look

For each TLS profile (gsm: TLS 1.2, ECDHE-RSA with an RSA-2048 certificate;
modern: TLS 1.3 with an ECDSA P-256 certificate) and each event loop (asyncio,
uvloop), a server process accepts connections at --rate per second from a
client process on the same machine and keeps them open, as chargers do. Two
layers are measured:

- `tls`: a bare TLS server on certd's listening context (certd.serve.tls.ContextHolder:
  profile settings, sni_callback pointing each handshake at the checked serving
  context) in a process tuned as `certd serve` tunes it, nothing else: OpenSSL's
  handshake, the loop's TLS layer, TCP;
- `resumed`: the same bare TLS server, each client resuming one earlier TLS session
  (a ticket): what a reconnecting charger whose TLS stack resumes sessions costs
  (no certificate signature, no key exchange);
- `openssl`: the server side of the same handshakes with no socket and no event
  loop (memory BIOs in one process, CPU counted only inside the server's calls):
  what OpenSSL itself costs per handshake, the hard floor under every row;
- `tls+ws`: the same plus a websockets server (compression off, no ping) that
  completes the WebSocket upgrade and answers one message: the cost of any
  websockets-based endpoint before its own logic.

Printed: server CPU per connection (user + system) for each row, failures (for
`resumed`, also handshakes the server did not resume), and the
machine's speed in RSA-2048 signatures per CPU-second (shared hosts vary from
run to run; compare runs by it). Loopback only; every phase is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

HOST = "ocpp.bench.test"
MESSAGE = '[2,"boot","BootNotification",{"chargePointVendor":"Bench","chargePointModel":"GSM"}]'


# --------------------------------------------------------------------------- server process


async def _serve(layer: str, profile: str, workdir: Path) -> None:
    from cryptography import x509

    from certd.serve.tls import ContextHolder, KeyPairPem, prepare

    key_type = "rsa" if profile == "gsm" else "ec"
    pair = KeyPairPem(source=f"bench {key_type}", key_pem=(workdir / f"{key_type}.key").read_text(),
                      cert_pem=(workdir / f"{key_type}.crt").read_text(), chain_pem="")
    anchors = [x509.load_pem_x509_certificate((workdir / "root.pem").read_bytes())]
    holder = ContextHolder(profile)  # type: ignore[arg-type]
    holder.swap(prepare([pair], HOST, profile, dt.datetime.now(dt.timezone.utc), anchors))  # type: ignore[arg-type]
    loop = asyncio.get_running_loop()
    kept: list[object] = []
    from certd.ocpp.service import tune_process_for_many_connections

    tune_process_for_many_connections()  # as `certd serve` does: small asyncio TLS buffers, GC freeze
    if layer in ("tls", "resumed"):
        class Hold(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                kept.append(transport)  # handshake done; keep the socket like a charger's

        server = await loop.create_server(Hold, "127.0.0.1", 0, ssl=holder.listening_context,
                                          backlog=1024)
        port = server.sockets[0].getsockname()[1]
    else:
        from websockets.asyncio.server import ServerConnection, serve

        async def answer_one(ws: ServerConnection) -> None:
            await ws.recv()
            await ws.send('[3,"boot",{}]')
            await ws.wait_closed()

        ws_server = await serve(answer_one, "127.0.0.1", 0, ssl=holder.listening_context,
                                compression=None, ping_interval=None, backlog=1024,
                                select_subprotocol=lambda _conn, offered: offered[0] if offered else None)
        port = next(iter(ws_server.sockets)).getsockname()[1]
    print(f"READY {port}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "stats":
            times = os.times()
            print(json.dumps({"user": times.user, "system": times.system,
                              "loop": type(loop).__module__.split(".")[0]}), flush=True)
        else:
            break


def server_child(layer: str, profile: str, loop_name: str, workdir: str) -> int:
    os.environ["CERTD_EVENT_LOOP"] = loop_name
    from certd.runtime import eventloop

    eventloop.run(_serve(layer, profile, Path(workdir)))
    return 0


# --------------------------------------------------------------------------- client


async def _open_all(server: "ServerProcess", layer: str, profile: str, ca_pem: str, count: int,
                    rate: float) -> tuple[dict, dict, int]:  # type: ignore[type-arg]
    """Server CPU before and after `count` connections opened at `rate`, and failures."""
    port = server.port
    ctx = ssl.create_default_context(cadata=ca_pem)
    if profile == "gsm":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    kept: list[object] = []
    failed = 0
    if layer == "resumed":
        return _resume_all(server, ctx, count, rate)
    start = time.monotonic() + 0.2

    async def one(index: int) -> None:
        nonlocal failed
        await asyncio.sleep(max(0.0, start + index / rate - time.monotonic()))
        try:
            if layer == "tls":
                _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                          server_hostname=HOST)
                kept.append(writer)
            else:
                from websockets.asyncio.client import connect

                ws = await connect(f"wss://127.0.0.1:{port}/ocpp/B{index}", ssl=ctx,
                                   server_hostname=HOST, subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                                   compression=None, ping_interval=None, open_timeout=60)
                await ws.send(MESSAGE)
                await ws.recv()
                kept.append(ws)
        except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
            failed += 1

    before = server.stats()
    async with asyncio.timeout(count / rate + 120):
        await asyncio.gather(*(one(i) for i in range(count)))
    await asyncio.sleep(0.5)  # the last handshakes finish on the server side
    after = server.stats()
    for item in kept:
        transport = getattr(item, "transport", item)
        transport.abort()  # type: ignore[attr-defined]
    return before, after, failed


def _resume_all(server: "ServerProcess", ctx: ssl.SSLContext, count: int,
                rate: float) -> tuple[dict, dict, int]:  # type: ignore[type-arg]
    """Blocking client (the asyncio API cannot offer a session): one full handshake for a
    ticket, then `count` handshakes resuming it, paced at `rate`, sockets kept open."""
    import socket

    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        with ctx.wrap_socket(raw, server_hostname=HOST) as first:
            first.settimeout(0.3)
            try:  # TLS 1.3 tickets arrive after the handshake: read until the server goes quiet
                first.recv(1)
            except (TimeoutError, ssl.SSLError):
                pass
            session = first.session
    kept, failed = [], 0
    before = server.stats()
    start = time.monotonic()
    for index in range(count):
        time.sleep(max(0.0, start + index / rate - time.monotonic()))
        try:
            sock = ctx.wrap_socket(socket.create_connection(("127.0.0.1", server.port), timeout=30),
                                   server_hostname=HOST, session=session)
        except (OSError, ssl.SSLError):
            failed += 1
            continue
        if not sock.session_reused:  # counted as failed: the server did a full handshake
            failed += 1
        kept.append(sock)
    time.sleep(0.5)
    after = server.stats()
    for sock in kept:
        sock.close()
    return before, after, failed


def openssl_only(profile: str, workdir: Path, ca_pem: str, count: int) -> dict:  # type: ignore[type-arg]
    """Server-side CPU of `count` handshakes over memory BIOs: OpenSSL and the ssl module only."""
    import datetime as dt

    from cryptography import x509

    from certd.serve.tls import ContextHolder, KeyPairPem, prepare

    key_type = "rsa" if profile == "gsm" else "ec"
    pair = KeyPairPem(source=f"bench {key_type}", key_pem=(workdir / f"{key_type}.key").read_text(),
                      cert_pem=(workdir / f"{key_type}.crt").read_text(), chain_pem="")
    anchors = [x509.load_pem_x509_certificate(ca_pem.encode())]
    holder = ContextHolder(profile)  # type: ignore[arg-type]
    holder.swap(prepare([pair], HOST, profile, dt.datetime.now(dt.timezone.utc), anchors))  # type: ignore[arg-type]
    server_ctx = holder.listening_context
    client_ctx = ssl.create_default_context(cadata=ca_pem)
    if profile == "gsm":
        client_ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        client_ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    spent, failed = 0.0, 0
    for _ in range(count):
        c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
        client = client_ctx.wrap_bio(c_in, c_out, server_hostname=HOST)
        started = time.thread_time()
        server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
        spent += time.thread_time() - started
        client_done = server_done = False
        for _round in range(10):
            if not client_done:
                try:
                    client.do_handshake()
                    client_done = True
                except ssl.SSLWantReadError:
                    pass
            s_in.write(c_out.read())
            if not server_done:
                started = time.thread_time()
                try:
                    server.do_handshake()
                    server_done = True
                except ssl.SSLWantReadError:
                    pass
                spent += time.thread_time() - started
            c_in.write(s_out.read())
            if client_done and server_done:
                break
        else:
            failed += 1
    return {"layer": "openssl", "profile": profile, "loop": "-", "opened": count - failed,
            "failed": failed, "user_ms": spent * 1000 / max(1, count - failed), "system_ms": 0.0}


class ServerProcess:
    def __init__(self, layer: str, profile: str, loop_name: str, workdir: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--server-child", layer, profile, loop_name, str(workdir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
        )
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line.startswith("READY "):
            raise SystemExit(f"server did not start: {line!r}")
        self.port = int(line.split()[1])

    def stats(self) -> dict:  # type: ignore[type-arg]
        self.process.stdin.write("stats\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        return json.loads(self.process.stdout.readline())  # type: ignore[union-attr]

    def close(self) -> None:
        try:
            self.process.stdin.write("quit\n")  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
            self.process.wait(timeout=30)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def measure(layer: str, profile: str, loop_name: str, workdir: Path, ca_pem: str,
            count: int, rate: float) -> dict:  # type: ignore[type-arg]
    server = ServerProcess(layer, profile, loop_name, workdir)
    try:
        before, after, failed = asyncio.run(
            _open_all(server, layer, profile, ca_pem, count, rate))
    finally:
        server.close()
    opened = count - failed
    return {"layer": layer, "profile": profile, "loop": after["loop"], "opened": opened,
            "failed": failed,
            "user_ms": (after["user"] - before["user"]) * 1000 / max(1, opened),
            "system_ms": (after["system"] - before["system"]) * 1000 / max(1, opened)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="new connections per second")
    parser.add_argument("--loops", default="asyncio,uvloop")
    parser.add_argument("--profiles", default="gsm,modern")
    parser.add_argument("--layers", default="openssl,tls,tls+ws,resumed")
    parser.add_argument("--server-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.server_child:
        return server_child(*args.server_child)
    if not 1 <= args.connections <= 20000:
        parser.error("bounded runs only: 1-20000 connections")

    from bench.ocpp_load import rsa_signatures_per_cpu_second
    from tests.pki import MiniCA  # the test CA: cryptography only

    from certd.runtime import eventloop

    loops = [name for name in args.loops.split(",")
             if name == "asyncio" or eventloop.choose("auto")[0] == name]
    workdir = Path(tempfile.mkdtemp(prefix="certd-tls-floor-"))
    ca = MiniCA("bench")
    (workdir / "root.pem").write_text(ca.root_pem)
    for key_type in ("rsa", "ec"):
        leaf = ca.issue([HOST], key_type)
        (workdir / f"{key_type}.crt").write_text(leaf.cert_pem + leaf.chain_pem)
        (workdir / f"{key_type}.key").write_text(leaf.key_pem)
    speed_before = rsa_signatures_per_cpu_second()
    rows = []
    for profile in args.profiles.split(","):
        for layer in args.layers.split(","):
            if layer == "openssl":
                rows.append(openssl_only(profile, workdir, ca.root_pem, args.connections))
                continue
            for loop_name in loops:
                rows.append(measure(layer, profile, loop_name, workdir, ca.root_pem,
                                    args.connections, args.rate))
    speed_after = rsa_signatures_per_cpu_second()
    print(f"\nserver CPU per new connection before certd's own code, {args.connections} "
          f"connections per row at {args.rate:.0f}/s, kept open; {os.cpu_count()} CPUs; machine "
          f"speed {speed_before:.0f} / {speed_after:.0f} RSA-2048 signatures per CPU-second "
          "(before / after), i.e. "
          f"{1000 / speed_before:.2f} / {1000 / speed_after:.2f} ms per signature")
    print(f"{'profile':<28} {'layer':<7} {'loop':<8} {'CPU/conn':>9} {'user':>9} {'system':>9} "
          f"{'failed':>6}")
    for row in rows:
        label = ("gsm (TLS 1.2, RSA-2048)" if row["profile"] == "gsm"
                 else "modern (TLS 1.3, ECDSA)")
        total = row["user_ms"] + row["system_ms"]
        print(f"{label:<28} {row['layer']:<7} {row['loop']:<8} {total:>6.2f} ms "
              f"{row['user_ms']:>6.2f} ms {row['system_ms']:>6.2f} ms {row['failed']:>6}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
