"""MQTT benchmark: 2,000 devices acknowledge one new bundle version; certd records every ack.

A Mosquitto of its own (password file, loopback), the Cloudflare emulator and Pebble. The
devices (aiomqtt clients in this process, one connection each) subscribe to
`bench/fleet/bundles/fleet/full` first. Then `certd run` starts with a `kind = "mqtt"`
registry: it issues its certificate through Pebble, the fleet bundle gets version 1 and
certd publishes it (retained, QoS 1, signed). Each device checks the signature and the
sha256, then acknowledges (retained, QoS 1) on `bench/fleet/acks/fleet/<device>`. Measured
from the first device receiving the version until the store holds every device's ack:
target 10 s. CPU time (utime + stime from /proc) of `certd run`, Mosquitto and this
process (the 2,000 simulated devices) over that window.

    .venv/bin/python bench/mqtt.py [--devices 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from certd.sandbox import SandboxWorld  # noqa: E402
from certd.sandbox.certd_config import TOKEN_ENV, sandbox_config_toml, toml_str  # noqa: E402
from tests.mqtt.broker import Broker  # noqa: E402

TARGET_SECONDS = 10.0
PREFIX = "bench/fleet"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PASSWORD_ENV, HMAC_ENV = "BENCH_MQTT_PASSWORD", "BENCH_BUNDLE_HMAC"
SECRET = "bench-hmac-secret"


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2:].split()
    return (int(parts[11]) + int(parts[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def acks_in_store(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM mqtt_device_ack WHERE version = 1").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # the table is made by certd's first start


def config_text(world: SandboxWorld, work: Path, broker: Broker) -> str:
    assert world.pebble is not None
    anchors = work / "anchors"
    anchors.mkdir()
    for index, root in enumerate(world.pebble.roots()):
        (anchors / f"pebble-{index}.pem").write_text(root)
    extra = (f"log_level = \"warning\"\n"
             f"[mqtt]\nhost = \"127.0.0.1\"\nport = {broker.port}\nusername = \"certd\"\n"
             f"password_env = \"{PASSWORD_ENV}\"\nnode_name = \"bench\"\n\n"
             f"[trust.anchor_sets]\npebble = {toml_str(anchors)}\n"
             f"[[trust.bundles]]\nname = \"fleet\"\nanchors = \"pebble\"\nflavours = [\"full\"]\n"
             f"[[trust.registries]]\nname = \"devices\"\nkind = \"mqtt\"\ntopic_prefix = \"{PREFIX}\"\n"
             f"hmac_secret_env = \"{HMAC_ENV}\"\n")
    certs = '[[certificates]]\nname = "ocpp"\ndomains = ["ocpp.example.com"]\n'
    text = sandbox_config_toml(world, world.pebble, work / "state", certs, extra=extra)
    # log_level is a top-level key: it must come before the first table.
    return "log_level = \"warning\"\n" + text.replace("log_level = \"warning\"\n", "")


class Devices:
    """N device connections: each installs the first signed version it gets, then acknowledges it."""

    def __init__(self, broker: Broker, count: int) -> None:
        self.broker, self.count = broker, count
        self.first_received: float | None = None
        self.on_first: list = []  # type: ignore[type-arg]
        self.acked = 0
        self.bad = 0

    async def device(self, stack: contextlib.AsyncExitStack, index: int, ready: asyncio.Semaphore) -> None:
        name = f"dev-{index:05d}"
        async with ready:
            client = await stack.enter_async_context(aiomqtt.Client(
                "127.0.0.1", self.broker.port, username="device", password=self.broker.users["device"],
                identifier=f"bench-{name}", timeout=60))
            await client.subscribe(f"{PREFIX}/bundles/fleet/full", qos=1)
        return client, name  # type: ignore[return-value]

    async def serve(self, client: aiomqtt.Client, name: str) -> None:
        async for message in client.messages:
            if self.first_received is None:
                self.first_received = time.perf_counter()
                for callback in self.on_first:
                    callback()
            envelope = json.loads(message.payload)  # type: ignore[arg-type]
            body = envelope["body"].encode()
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            document = json.loads(body)
            if envelope["signature"] != expected or \
                    hashlib.sha256(document["pem"].encode("ascii")).hexdigest() != document["sha256"]:
                self.bad += 1
                return
            ack = json.dumps({"version": document["version"], "sha256": document["sha256"], "flavour": "full"})
            await client.publish(f"{PREFIX}/acks/fleet/{name}", ack, qos=1, retain=True, timeout=60)
            self.acked += 1
            return


async def run(args: argparse.Namespace) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="certd-bench-mqtt-"))
    broker = Broker(work / "mosquitto").start()
    results: dict[str, float] = {}
    try:
        with SandboxWorld(with_pebble=True) as world:
            config = work / "certd.toml"
            config.write_text(config_text(world, work, broker))
            db = work / "state" / "certd.db"
            devices = Devices(broker, args.devices)
            connected = time.perf_counter()
            async with contextlib.AsyncExitStack() as stack:
                ready = asyncio.Semaphore(100)
                clients = await asyncio.gather(*(devices.device(stack, i, ready) for i in range(args.devices)))
                results["connect_s"] = time.perf_counter() - connected
                servers = [asyncio.create_task(devices.serve(client, name)) for client, name in clients]
                env = dict(os.environ, **{TOKEN_ENV: world.token, PASSWORD_ENV: broker.users["certd"],
                                          HMAC_ENV: SECRET})
                log = open(work / "certd.log", "wb")  # noqa: SIM115
                certd = subprocess.Popen([sys.executable, "-m", "certd", "--config", str(config), "run"],
                                         env=env, stdout=log, stderr=subprocess.STDOUT)
                own = os.getpid()
                start_cpu: dict[str, float] = {}
                devices.on_first.append(lambda: start_cpu.update(
                    certd=cpu_seconds(certd.pid), broker=cpu_seconds(broker.pid), devices=cpu_seconds(own)))
                try:
                    deadline = time.monotonic() + 90
                    while time.monotonic() < deadline:
                        if certd.poll() is not None:
                            raise SystemExit(f"certd run exited: see {work / 'certd.log'}")
                        if devices.first_received is not None and acks_in_store(db) >= args.devices:
                            break
                        await asyncio.sleep(0.05)
                    else:
                        raise SystemExit(f"only {acks_in_store(db)} of {args.devices} acks recorded in 90 s; "
                                         f"see {work / 'certd.log'}")
                    done = time.perf_counter()
                    assert devices.first_received is not None
                    results.update(
                        window_s=done - devices.first_received, recorded=acks_in_store(db),
                        acked=devices.acked, bad=devices.bad,
                        certd_cpu=cpu_seconds(certd.pid) - start_cpu["certd"],
                        broker_cpu=cpu_seconds(broker.pid) - start_cpu["broker"],
                        devices_cpu=cpu_seconds(own) - start_cpu["devices"],
                        certd_rss=rss_mb(certd.pid), broker_rss=rss_mb(broker.pid))
                finally:
                    certd.send_signal(signal.SIGTERM)
                    certd.wait(60)
                    for task in servers:
                        task.cancel()
                    await asyncio.gather(*servers, return_exceptions=True)
    finally:
        broker.cleanup()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=2000)
    args = parser.parse_args()
    r = asyncio.run(run(args))
    rows = [
        ("devices connected (one MQTT connection each)", f"{args.devices} in {r['connect_s']:.1f} s", ""),
        ("acks published by devices / recorded by certd", f"{int(r['acked'])} / {int(r['recorded'])}",
         f"{args.devices} / {args.devices}"),
        ("first device has the version -> every ack in the store", f"{r['window_s']:.2f} s",
         f"<= {TARGET_SECONDS:g} s"),
        ("certd run CPU in that window", f"{r['certd_cpu']:.2f} s", ""),
        ("mosquitto CPU in that window", f"{r['broker_cpu']:.2f} s", ""),
        ("simulated devices CPU (this process)", f"{r['devices_cpu']:.2f} s", ""),
        ("certd run RSS / mosquitto RSS", f"{r['certd_rss']:.0f} MB / {r['broker_rss']:.0f} MB", ""),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'value':<22}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:<22}  {target}")
    ok = r["recorded"] >= args.devices and r["window_s"] <= TARGET_SECONDS and not r["bad"]
    print("PASS" if ok else "MISSED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
