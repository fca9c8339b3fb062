"""Device acknowledgements: `<topic_prefix>/acks/<bundle>/<device_id>` into the store.

A device that installed a bundle version publishes (QoS 1, retained recommended)
`{"version": 7, "sha256": "<hex of the PEM>", "flavour": "full"}` (flavour optional).
certd checks the JSON, that the bundle is one this registry carries and that the version
has that sha256, then stores the device's acknowledged version (`certd.store.mqtt`).
Anything else is logged once per device and ignored.

Memory stays bounded whatever devices send: payloads over 4 KiB are not parsed, the
"logged once" and "already recorded" memories are LRUs of fixed size, and at most
`MAX_PENDING` acks wait for the next store write (the reader waits for that write
beyond it; the client's incoming queue is bounded by `[mqtt] max_queued_incoming`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlmodel import select

from certd.config.trust import MqttRegistryConfig
from certd.mqtt import names
from certd.mqtt.names import printable
from certd.store.db import session_scope
from certd.store.mqtt import MqttDeviceAck
from certd.store.trust import TrustBundleVersion
from certd.store.types import utcnow

log = logging.getLogger("certd.mqtt")

MAX_PAYLOAD = 4096
MAX_DEVICE_ID = 128
LOG_ONCE_SIZE = 10_000
RECORDED_SIZE = 50_000
MAX_PENDING = 1_000
FLUSH_DELAY = 0.2
STORE_RETRY = 5.0  # seconds before writing again after the store failed
INDEX_REFRESH_MIN = 1.0  # seconds between store reads for an unknown sha256
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")


class AckProblem(ValueError):
    """Why an ack is ignored (said once per device in the log)."""


@dataclass(frozen=True)
class Ack:
    registry: str
    bundle: str
    device_id: str
    flavour: str
    version: int
    sha256: str
    received_at: dt.datetime


def parse_ack(payload: bytes) -> tuple[int, str, str | None]:
    """(version, sha256, flavour or None) from an ack payload (pure); AckProblem says why not."""
    if len(payload) > MAX_PAYLOAD:
        raise AckProblem(f"payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    try:
        data = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise AckProblem("malformed JSON") from None
    if not isinstance(data, dict):
        raise AckProblem("malformed JSON: not an object")
    version, sha256, flavour = data.get("version"), data.get("sha256"), data.get("flavour")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise AckProblem("no version (a positive integer)")
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise AckProblem("bad sha256 (64 hex digits expected)")
    if flavour is not None and flavour not in ("roots", "full"):
        raise AckProblem("unknown flavour (roots or full)")
    return version, sha256.lower(), flavour


def check_device_id(device_id: str) -> None:
    if len(device_id) > MAX_DEVICE_ID or not device_id.isprintable():
        raise AckProblem(f"device id longer than {MAX_DEVICE_ID} characters or not printable")


class Lru:
    """A bounded recently-used map: the oldest entry goes when it is full."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def get(self, key: Hashable) -> object | None:
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: Hashable, value: object) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


class VersionIndex:
    """bundle -> sha256 -> (flavour, version), read from the store (small: no PEMs).

    Read again on a miss when this process published a version since the last read (an
    ack for it may be that miss), else at most once per `INDEX_REFRESH_MIN` (a version
    another process published; or just a wrong sha256, which must not cost a read each).
    """

    def __init__(self, engine: sa.Engine, publications: Callable[[], int] = lambda: 0) -> None:
        self._engine = engine
        self._publications = publications
        self._index: dict[str, dict[str, tuple[str, int]]] = {}
        self._read_at = float("-inf")
        self._read_after = -1  # publications counted when the index was read

    def _read(self) -> dict[str, dict[str, tuple[str, int]]]:
        index: dict[str, dict[str, tuple[str, int]]] = {}
        with session_scope(self._engine) as session:
            for bundle, flavour, seq, sha in session.exec(select(
                    TrustBundleVersion.bundle, TrustBundleVersion.flavour, TrustBundleVersion.seq,
                    TrustBundleVersion.sha256)).all():
                index.setdefault(bundle, {})[sha] = (flavour, seq)
        return index

    async def refresh(self) -> None:
        seen = self._publications()
        self._index = await asyncio.to_thread(self._read)
        self._read_at, self._read_after = time.monotonic(), seen

    def invalidate(self) -> None:
        self._read_at = float("-inf")

    async def lookup(self, bundle: str, sha256: str) -> tuple[str, int] | None:
        found = self._index.get(bundle, {}).get(sha256)
        if found is None and (self._publications() != self._read_after
                              or time.monotonic() - self._read_at >= INDEX_REFRESH_MIN):
            await self.refresh()  # a version published a moment ago, or a wrong sha256
            found = self._index.get(bundle, {}).get(sha256)
        return found


def record_acks(engine: sa.Engine, acks: Iterable[Ack]) -> int:
    """Store each device's latest ack (worker thread); one transaction for the batch."""
    batch = list(acks)
    if not batch:
        return 0
    groups: dict[tuple[str, str], list[Ack]] = {}
    for ack in batch:
        groups.setdefault((ack.registry, ack.bundle), []).append(ack)
    with session_scope(engine) as session:
        for (registry, bundle), items in groups.items():
            rows = {row.device_id: row for row in session.exec(select(MqttDeviceAck).where(
                MqttDeviceAck.registry_name == registry, MqttDeviceAck.bundle == bundle,
                MqttDeviceAck.device_id.in_([a.device_id for a in items]))).all()}  # type: ignore[attr-defined]
            for ack in items:
                row = rows.get(ack.device_id)
                if row is None:
                    row = MqttDeviceAck(registry_name=registry, bundle=bundle, device_id=ack.device_id,
                                        flavour=ack.flavour, version=ack.version, sha256=ack.sha256,
                                        acked_at=ack.received_at, first_seen_at=ack.received_at, acks=1)
                    rows[ack.device_id] = row
                elif (row.version, row.sha256) == (ack.version, ack.sha256):
                    continue  # the same version again (a retained ack after a reconnect)
                else:
                    row.flavour, row.version, row.sha256 = ack.flavour, ack.version, ack.sha256
                    row.acked_at, row.acks = ack.received_at, row.acks + 1
                session.add(row)
    return len(batch)


class AckRecorder:
    """Validates acks on the loop, writes them in batches from a worker thread."""

    def __init__(self, engine: sa.Engine, clock: Callable[[], dt.datetime] = utcnow,
                 publications: Callable[[], int] = lambda: 0) -> None:
        self._engine = engine
        self._clock = clock
        self.index = VersionIndex(engine, publications)
        self._logged = Lru(LOG_ONCE_SIZE)
        self._recorded = Lru(RECORDED_SIZE)  # (registry, bundle, device) -> (version, sha256)
        self._pending: dict[tuple[str, str, str], Ack] = {}
        self._flush_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._store_failed_at = float("-inf")
        self.received = self.recorded = self.ignored = self.dropped = 0

    async def handle(self, registry: MqttRegistryConfig, bundles: set[str], topic: str, payload: bytes) -> None:
        """One message on the registry's ack filter."""
        parsed = names.parse_ack_topic(registry.topic_prefix, topic)
        if parsed is None:
            return
        bundle, device_id = parsed
        self.received += 1
        try:
            check_device_id(device_id)
            if bundle not in bundles:
                raise AckProblem(f"unknown bundle (registry {registry.name} carries "
                                 f"{', '.join(sorted(bundles)) or 'none'})")
            version, sha256, flavour = parse_ack(payload)
            found = await self.index.lookup(bundle, sha256)
            if found is None:
                raise AckProblem(f"bad sha256: no version of bundle {bundle} has sha256 {sha256[:16]}…")
            if found[1] != version or (flavour is not None and flavour != found[0]):
                raise AckProblem(f"bad sha256: {sha256[:16]}… is {found[0]} version {found[1]}, "
                                 f"not {flavour or 'any flavour'} version {version}")
        except AckProblem as problem:
            self.ignored += 1
            self._log_once((registry.name, bundle, device_id[:MAX_DEVICE_ID]), device_id, bundle, str(problem))
            return
        key = (registry.name, bundle, device_id)
        if self._recorded.get(key) == (version, sha256):
            return  # already in the store
        if len(self._pending) >= MAX_PENDING and key not in self._pending:
            if time.monotonic() - self._store_failed_at < STORE_RETRY:
                self.dropped += 1  # the store is away and the batch is full (a retained ack comes back)
                return
            await self.flush()  # the reader waits: memory stays bounded
        self._pending[key] = Ack(registry.name, bundle, device_id, found[0], version, sha256, self._clock())
        if len(self._pending) >= MAX_PENDING:
            await self.flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(FLUSH_DELAY, self._flush_soon)

    def _log_once(self, key: tuple[str, str, str], device_id: str, bundle: str, problem: str) -> None:
        if self._logged.get(key) is not None:
            return
        self._logged.put(key, True)
        log.warning("MQTT: ack from device %s for bundle %s ignored: %s (further problems from this "
                    "device are not logged)", printable(device_id[:MAX_DEVICE_ID]), printable(bundle), problem)

    def _flush_soon(self) -> None:
        self._timer = None
        task = asyncio.get_running_loop().create_task(self.flush(), name="certd-mqtt-acks")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def flush(self) -> int:
        """Write what waits (in order; a failed write keeps the acks for the next one)."""
        async with self._flush_lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            batch, self._pending = self._pending, {}
            if not batch:
                return 0
            try:
                await asyncio.to_thread(record_acks, self._engine, batch.values())
            except Exception as exc:  # noqa: BLE001 - the store may be away: keep them, try later
                self._store_failed_at = time.monotonic()
                for key, ack in list(batch.items())[-MAX_PENDING:]:
                    if len(self._pending) >= MAX_PENDING:
                        break
                    self._pending.setdefault(key, ack)
                log.warning("MQTT: could not record %d device ack(s): %s; trying again in %g s", len(batch),
                            type(exc).__name__, STORE_RETRY)
                if self._timer is None:
                    self._timer = asyncio.get_running_loop().call_later(STORE_RETRY, self._flush_soon)
                return 0
            for key, ack in batch.items():
                self._recorded.put(key, (ack.version, ack.sha256))
            self.recorded += len(batch)
            return len(batch)

    async def close(self) -> None:
        await self.flush()
        for task in list(self._tasks):
            await task
