#!/usr/bin/env python3
"""Charger certificates under load: 1,000 connected chargers ask for a certificate at once.

    .venv/bin/python bench/charger_certs.py                     # 1,000 chargers, RSA-2048 charger CA
    .venv/bin/python bench/charger_certs.py --ca-key ec-p256    # an ECDSA charger CA
    .venv/bin/python bench/charger_certs.py --compare-auth      # ocpp_load.py --auth none/password/mtls

What runs
- a server process: certd's OcppService (bench/ocpp_load.py's server child: the code `certd
  serve` runs, uvloop when installed), SQLite store, `[ocpp.charger_ca]` with its CA key in an
  owner-only file, one gsm-profile listener; every charger registered (no password: the
  bench measures signing, not argon2id);
- two client processes: each connects its share of the chargers (TLS + WebSocket, half OCPP
  1.6, half 2.0.1; raw OCPP-J frames, no schema work on the client side) and makes each
  charger's EC P-256 key and CSR before the start; at one instant every charger sends
  SignCertificate, answers CertificateSigned with Accepted and checks the certificate is for
  its own key.

Printed: wall time from the first SignCertificate to the last answer recorded in the store,
certificates per second, server CPU per certificate (everything: CSR checks, signing, the
store writes, CertificateSigned and its answer, audit events), of which the CA signature
alone (measured in-process), and the CSR -> CertificateSigned latency p50/p99.

`--compare-auth` instead runs bench/ocpp_load.py three times in a row (same machine state):
no auth, profile 2 (Basic auth, argon2id) and profile 3 (`--auth mtls`: a client
certificate per charger), and prints server CPU per new connection and handshake p99 side
by side. Loopback only, every phase bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import ocpp_load  # noqa: E402  (bench/ocpp_load.py: its server and helpers)
from _ocpp_load.report import percentile  # noqa: E402

ORG = "Bench Operator"


def charger_ca_toml(workdir: Path, key_type: str = "rsa2048") -> str:
    """The `[ocpp.charger_ca]` table (appended after the listener tables of a bench config)."""
    return (f'\n[ocpp.charger_ca]\norganization = "{ORG}"\nkey_type = "{key_type}"\n'
            f'key_dir = "{workdir / "charger-ca"}"\ncheck_interval = 3600\nsweep_interval = 86400\n')


def issue_client_certificates(config_path: Path, ids: list[str], workdir: Path) -> Path:
    """For `ocpp_load.py --auth mtls`: the CA, and per charger an EC P-256 key and a certificate
    recorded as active (as if each had enrolled), written to files the client processes load."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from certd.chargerca import authority, ca_store, keystore
    from certd.config import load_config
    from certd.store.charger_ca import CERT_ACTIVE, DELIVERY_ACCEPTED, ChargerCertificate
    from certd.store.db import make_engine, session_scope
    from certd.store.types import utcnow

    config = load_config(config_path)
    engine = make_engine(config.db_url)
    now = utcnow()
    ca_store.ensure_ca(engine, config, now)
    ca = ca_store.load_issuing(engine, config)
    directory = workdir / "client-certs"
    directory.mkdir(mode=0o700)
    rows = []
    for cid in ids:
        key = ec.generate_private_key(ec.SECP256R1())
        leaf = authority.sign_leaf(ca, key.public_key(), cid, ORG, 30, now)
        pem = authority.cert_pem(leaf)
        stem = cid.replace("*", "_")
        (directory / f"{stem}.pem").write_text(pem + ca.chain_pem())
        (directory / f"{stem}.key").write_bytes(keystore.key_pem(key))
        rows.append(ChargerCertificate(
            charger_id=cid, serial=f"{leaf.serial_number:x}", fingerprint=authority.fingerprint(leaf),
            ca_fingerprint=ca.fingerprint, key_type="ec-p256", not_before=leaf.not_valid_before_utc,
            not_after=leaf.not_valid_after_utc, state=CERT_ACTIVE, delivery=DELIVERY_ACCEPTED,
            cert_pem=pem, issued_at=now, first_used_at=now))
    with session_scope(engine) as session:
        session.add_all(rows)
    engine.dispose()
    return directory


# --------------------------------------------------------------------------- setup


def prepare(workdir: Path, total: int, ca_key: str) -> tuple[Path, str, str]:
    from certd.chargerca import ca_store
    from certd.config import load_config
    from certd.store.chargers import Charger
    from certd.store.db import make_engine, session_scope, upgrade
    from certd.store.types import utcnow
    from tests.pki import MiniCA, store_current

    url = f"sqlite:///{workdir / 'certd.db'}"
    upgrade(url)
    engine = make_engine(url)
    ca = MiniCA("bench")
    store_current(engine, "bench-rsa", ca.issue([ocpp_load.HOST], "rsa"))
    (workdir / "root.pem").write_text(ca.root_pem)
    with session_scope(engine) as session:
        session.add_all(Charger(charger_id=ocpp_load.charger_id(i, ocpp_load.CHARGER_PREFIX),
                                heartbeat_class="gsm") for i in range(total))
    engine.dispose()
    config = workdir / "certd.toml"
    config.write_text(f'''
state_dir = "{workdir}"
database_url = "{url}"

[[certificates]]
name = "bench-rsa"
domains = ["{ocpp_load.HOST}"]

[ocpp]
trust_roots = ["{workdir / 'root.pem'}"]
reload_check_interval = 0
unknown_chargers = "accept"
node_name = "bench"

[[ocpp.listeners]]
name = "bench"
host = "{ocpp_load.HOST}"
bind = "127.0.0.1"
port = 0
certificates = ["bench-rsa"]
tls_profile = "gsm"
paths = ["/ocpp/{{id}}"]
''' + charger_ca_toml(workdir, ca_key))
    loaded = load_config(config)
    engine = make_engine(url)
    ca_store.ensure_ca(engine, loaded, utcnow())  # made before the server starts: not measured
    engine.dispose()
    return config, ca.root_pem, url


# --------------------------------------------------------------------------- client processes


def client_process(spec: dict, conn, go) -> None:  # type: ignore[no-untyped-def]
    try:
        conn.send(asyncio.run(_client(spec, go)))
    except BaseException as exc:  # report instead of hanging the parent
        conn.send({"error": repr(exc)})


async def _client(spec: dict, go) -> dict:  # type: ignore[no-untyped-def]
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    from websockets.asyncio.client import connect

    ctx = ssl.create_default_context(cadata=spec["ca_pem"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    stats: dict = {"latency": [], "failed": [], "done_at": 0.0, "connected": 0}
    sockets = []
    started = asyncio.get_running_loop().run_in_executor(None, go.wait, 120)  # the parent's start signal

    async def charger(index: int, cid: str) -> None:
        version = "ocpp1.6" if index % 2 == 0 else "ocpp2.0.1"
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG), x509.NameAttribute(NameOID.COMMON_NAME, cid)]))
            .sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode())
        await asyncio.sleep(max(0.0, spec["connect_at"] + index / spec["rate"] - time.time()))
        try:
            ws = await connect(f"wss://127.0.0.1:{spec['port']}/ocpp/{cid}", ssl=ctx,
                               server_hostname=ocpp_load.HOST, subprotocols=[version],  # type: ignore[list-item]
                               compression=None, open_timeout=60, ping_interval=None, max_queue=4)
        except Exception as exc:  # noqa: BLE001
            stats["failed"].append(f"connect: {type(exc).__name__}")
            return
        sockets.append(ws)
        stats["connected"] += 1
        if not await started:
            stats["failed"].append("no start signal")
            return
        sent = time.perf_counter()
        await ws.send(json.dumps([2, "csr", "SignCertificate", {"csr": csr}]))
        try:
            async with asyncio.timeout(90):
                while True:
                    frame = json.loads(await ws.recv())
                    if frame[0] == 3 and frame[1] == "csr" and frame[2].get("status") != "Accepted":
                        stats["failed"].append(f"SignCertificate {frame[2]}")
                        return
                    if frame[0] == 2 and frame[2] == "CertificateSigned":
                        stats["latency"].append(time.perf_counter() - sent)
                        await ws.send(json.dumps([3, frame[1], {"status": "Accepted"}]))
                        leaf = x509.load_pem_x509_certificates(frame[3]["certificateChain"].encode())[0]
                        if leaf.public_key().public_numbers() != key.public_key().public_numbers():
                            stats["failed"].append("a certificate for another key")
                        stats["done_at"] = max(stats["done_at"], time.time())
                        return
        except Exception as exc:  # noqa: BLE001
            stats["failed"].append(f"waiting: {type(exc).__name__}")

    await asyncio.gather(*(charger(i, cid) for i, cid in spec["chargers"]))
    # Let the last CertificateSigned answers reach the server before the sockets go.
    await asyncio.sleep(max(0.0, min(spec["hold_until"], stats["done_at"] + 3.0) - time.time()))
    for ws in sockets:
        ws.transport.abort()
    return stats


def accepted_in_store(url: str) -> int:
    import sqlalchemy as sa

    from certd.store.charger_ca import ChargerCertificate
    from certd.store.db import make_engine

    engine = make_engine(url)
    try:
        table = ChargerCertificate.__table__  # type: ignore[attr-defined]
        with engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)
                                    .where(table.c.delivery == "accepted")).scalar_one())
    finally:
        engine.dispose()


def signature_cost(ca_key: str, count: int = 300) -> float:
    """CPU seconds per charger certificate for the CA signature alone (sign_leaf, in-process)."""
    from cryptography.hazmat.primitives.asymmetric import ec

    from certd.chargerca import authority
    from certd.store.types import utcnow

    key = authority.new_key(ca_key)
    ca_cert = authority.make_ca(key, "bench CA", ORG, utcnow(), 3650)
    ca = authority.IssuingCa(ca_cert, key)
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    started = time.process_time()
    for n in range(count):
        authority.sign_leaf(ca, public, f"CP-{n}", ORG, 730, utcnow())
    return (time.process_time() - started) / count


# --------------------------------------------------------------------------- orchestration


def run_signing(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="certd-charger-certs-bench-"))
    print(f"setting up {args.chargers} chargers and a {args.ca_key} charger CA in {workdir} ...", flush=True)
    config, ca_pem, url = prepare(workdir, args.chargers, args.ca_key)
    server = ocpp_load.Server(config, args.loop)
    try:
        base = server.stats()
        connect_at = time.time() + 1.5
        ids = [(i, ocpp_load.charger_id(i, ocpp_load.CHARGER_PREFIX)) for i in range(args.chargers)]
        ctx = mp.get_context("fork")
        go = ctx.Event()
        pipes, procs = [], []
        for k in range(args.clients):
            spec = {"port": server.port, "ca_pem": ca_pem, "chargers": ids[k::args.clients],
                    "rate": args.rate / args.clients, "connect_at": connect_at,
                    "hold_until": time.time() + 180.0}
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=client_process, args=(spec, child_end, go), daemon=True)
            proc.start()
            pipes.append(parent_end)
            procs.append(proc)
        limit = connect_at + args.chargers / args.rate + 60.0
        while server.stats()["connected"] < args.chargers and time.time() < limit:
            time.sleep(0.25)  # every charger connected (and idle) before the start
        time.sleep(1.0)
        before = server.stats()
        go_at = time.time()
        go.set()
        hold_until = go_at + 90.0
        deadline = go_at + 60.0
        while accepted_in_store(url) < args.chargers and time.time() < deadline:
            time.sleep(0.05)
        finished = time.time()
        after = server.stats()
        recorded = accepted_in_store(url)
        results = [pipe.recv() for pipe in pipes if pipe.poll(max(5.0, hold_until - time.time()))]
        for proc in procs:
            proc.join(timeout=10)
    finally:
        server.close()
    errors = [r["error"] for r in results if "error" in r]
    if errors or len(results) != args.clients:
        raise SystemExit(f"client processes failed: {errors or 'no result'}")
    latency = [v for r in results for v in r["latency"]]
    failed = [v for r in results for v in r["failed"]]
    wall = finished - go_at
    cpu = after["cpu"] - before["cpu"]
    sign = signature_cost(args.ca_key)
    rows = [
        ("chargers connected / certificates accepted (store)", f"{before['connected']} / {recorded}"),
        ("failures", f"{len(failed)} {sorted(set(failed))[:3] if failed else ''}".strip()),
        ("wall time, first SignCertificate to last answer recorded", f"{wall:.2f} s"),
        ("certificates per second", f"{recorded / wall:.0f}/s"),
        ("server CPU per certificate (all of it)", f"{cpu / max(1, recorded) * 1000:.2f} ms"),
        (f"  of which the {args.ca_key} CA signature (in-process)", f"{sign * 1000:.2f} ms"),
        ("  of which on the event-loop thread", f"{(after['loop_cpu'] - before['loop_cpu']) / cpu * 100:.0f} %"
         if cpu else "-"),
        ("CSR -> CertificateSigned latency p50 / p99", f"{percentile(latency, 50) * 1000:.0f} / "
         f"{percentile(latency, 99) * 1000:.0f} ms"),
    ]
    print(f"\ncertd charger CA, {args.chargers} connected chargers (half 1.6, half 2.0.1) signing at once, "
          f"{args.ca_key} CA, SQLite, server loop {base['loop']}, {args.clients} client processes on the same "
          f"machine, speed {base['rsa_per_s']:.0f} RSA-2048 signatures per CPU-second")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value}")


METRICS = ("server CPU per new connection", "TLS+WebSocket handshake p99", "ramp: failed handshakes",
           "chargers connected (server view)")


def run_comparison(args: argparse.Namespace) -> None:
    """bench/ocpp_load.py for each auth mode, back to back, and their figures side by side."""
    found: dict[str, dict[str, str]] = {}
    for mode in ("none", "password", "mtls"):
        command = [sys.executable, str(Path(__file__).resolve().parent / "ocpp_load.py"), "--auth", mode,
                   "--chargers", str(args.compare_chargers), "--rate", str(args.compare_rate),
                   "--hold", "5", "--settle", "2"]
        print(f"running: ocpp_load.py --auth {mode} ...", flush=True)
        output = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=ROOT).stdout
        found[mode] = {}
        for line in output.splitlines():
            for name in METRICS:
                if line.startswith(name + " "):  # "name  value  target": the value is the first column
                    found[mode][name] = re.split(r"\s{2,}", line[len(name):].strip())[0]
        speed = re.search(r"machine speed (\d+)", output)
        found[mode]["speed"] = speed.group(1) if speed else "?"
    names = {"none": "no auth", "password": "profile 2 (argon2id)", "mtls": "profile 3 (client cert)"}
    print(f"\n{args.compare_chargers} new connections at {args.compare_rate:.0f}/s, gsm profile (TLS 1.2, "
          "RSA-2048 server certificate), EC P-256 client certificates from an RSA-2048 charger CA")
    header = ["metric"] + [names[m] for m in found]
    lines = [header] + [[name] + [found[m].get(name, "?") for m in found]
                        for name in (*METRICS, "speed")]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for line in lines:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chargers", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=250.0, help="connections per second before the start")
    parser.add_argument("--clients", type=int, default=2, help="load-generator processes")
    parser.add_argument("--ca-key", choices=("rsa2048", "ec-p256"), default="rsa2048")
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"])
    parser.add_argument("--compare-auth", action="store_true",
                        help="instead: ocpp_load.py with --auth none, password and mtls, back to back")
    parser.add_argument("--compare-chargers", type=int, default=500)
    parser.add_argument("--compare-rate", type=float, default=100.0)
    args = parser.parse_args()
    if not 1 <= args.chargers <= 5000 or not 1 <= args.compare_chargers <= 5000:
        parser.error("bounded runs only: 1-5000 chargers")
    if args.compare_auth:
        run_comparison(args)
    else:
        run_signing(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
