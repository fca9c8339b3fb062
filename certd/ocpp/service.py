"""The OCPP service the daemon runs in its loop: all listeners, live certificate reload.

    service = OcppService(config, engine)
    await service.start()
    ...
    await service.reload("fleet-rsa")   # after a deploy; also on SIGHUP (cert_name=None)
    await service.close()

Reload triggers: an explicit `reload()`, a periodic store/file check every
`[ocpp] reload_check_interval` seconds (it compares which issued certificate or
which file version is served), SIGHUP (the caller maps it to `reload()`).
Material is checked before it is served; on failure the old context stays and
the reason is logged at error level and returned.

Security profile 3 listeners (`certd.ocpp.mtls`) also verify client certificates: the
CA certificates they trust are part of their material (a replaced charger CA builds
new contexts), and a `RevocationWatch` closes connections whose certificate or charger
was withdrawn. With `[ocpp.charger_ca]`, a `ChargerCertService` signs and renews charger
certificates (`certd.ocpp.charger_certs`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from cryptography import x509

from certd.config import Config
from certd.config.node import node_name
from certd.config.ocpp import ListenerConfig, listener_certificate_errors
from certd.errors import CertdError, ConfigError
from certd.ocpp import auth, charger_registry, mtls
from certd.ocpp.charger_certs import ChargerCertService
from certd.ocpp.first_contact import FirstContactRegistrar, SupersededConnections
from certd.serve.material import served_certificate
from certd.ocpp.server import Listener, Shared
from certd.ocpp.session import ChargerHook, ChargerSession, ConnectedCharger
from certd.store.db import session_scope
from certd.store.types import utcnow
from certd.serve.tls import (
    ContextHolder,
    KeyPairPem,
    Prepared,
    ServedCertificate,
    TlsMaterialError,
    load_trust_anchors,
    prepare,
)

log = logging.getLogger("certd.ocpp")

# A file written by another tool is read only once it has been still this long
# (fullchain and key are seldom replaced in the same instant).
FILE_SETTLE_SECONDS = 1.0

# Identifies material cheaply: ("cert", name, issued id) or ("file", path, mtime_ns, size).
MaterialKey = tuple[tuple[Any, ...], ...]


@dataclass(frozen=True)
class ReloadResult:
    listener: str
    status: str  # "swapped" | "unchanged" | "failed" | "started" | "settling"
    served: tuple[ServedCertificate, ...] = ()
    error: str | None = None


def tune_process_for_many_connections() -> None:
    """Call once after startup in the process that holds thousands of charger connections.

    Process-wide on purpose (the daemon and `certd serve` call it, a library
    user decides for itself):
    - asyncio allocates a 256 KiB TLS read buffer per connection; OCPP frames
      are small, so new TLS connections get one TLS record's worth instead
      (listeners also trim each buffer after its handshake when this is not
      called, but by then the large buffer has fragmented the heap). uvloop
      (certd.runtime.eventloop's choice when installed) mallocs its 256 KiB buffer
      without touching it, so only the pages a read fills become resident:
      this setting does not apply there and is not needed;
    - the garbage collector: what startup allocated is frozen out of its sight
      and young collections run less often, so a full collection over the
      objects of thousands of connections does not land in heartbeat latency.
    """
    import asyncio.sslproto

    from certd.ocpp.connection import TLS_READ_BUFFER

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _file_key(paths: Sequence[str]) -> tuple[Any, ...]:
    parts: list[Any] = ["file"]
    for path in paths:
        try:
            info = os.stat(path)
            parts.append((path, info.st_mtime_ns, info.st_size))
        except OSError as exc:
            parts.append((path, exc.errno))
    return tuple(parts)


def files_settled(key: tuple[Any, ...], now_ns: int, settle: float = FILE_SETTLE_SECONDS) -> bool:
    """True when every file of a ("file", ...) key was last modified at least `settle` s ago."""
    for entry in key[1:]:
        if len(entry) == 3 and now_ns - entry[1] < settle * 1e9:
            return False
    return True


class _ListenerState:
    def __init__(self, config: ListenerConfig, listener: Listener, holder: ContextHolder | None):
        self.config = config
        self.listener = listener
        self.holder = holder
        self.served_key: MaterialKey | None = None
        self.failed_key: MaterialKey | None = None
        self.started = False
        self.lock = asyncio.Lock()


class OcppService:
    def __init__(
        self,
        config: Config,
        engine: sa.Engine,
        *,
        clock: Callable[[], dt.datetime] = utcnow,
        reuse_port: bool = False,
    ) -> None:
        errors = listener_certificate_errors(config.ocpp, [c.name for c in config.certificates])
        if errors:
            raise ConfigError("invalid configuration\n  " + "\n  ".join(errors))
        self.config = config
        self.ocpp = config.ocpp
        self.engine = engine
        self.clock = clock
        self.node = node_name(config)  # [node] name, else [ocpp] node_name, else the host name
        credentials, sessions = auth.VerifiedCredentials(), {}
        superseded = SupersededConnections(sessions, credentials, self.ocpp.handshake_timeout)
        first_contact = FirstContactRegistrar(engine, self.ocpp.default_heartbeat_class,
                                              on_lost=superseded)
        self.shared = Shared(
            ocpp=self.ocpp,
            engine=engine,
            writer=charger_registry.RegistryWriter(engine, self.node,
                                                   first_contact=first_contact,
                                                   write_lock=first_contact.write_lock),
            limiter=auth.FailureLimiter(self.ocpp.auth_failure_limit, self.ocpp.auth_failure_window),
            credentials=credentials,
            sessions=sessions,
            first_contact=first_contact,
            hooks=[superseded.hook],
            reuse_port=reuse_port,
        )
        self.charger_certs = (ChargerCertService(config, engine, self, clock=clock)
                              if self.ocpp.charger_ca is not None else None)
        self.shared.enrollment = self.charger_certs.enrollment if self.charger_certs else None
        self.revocation_watch = mtls.RevocationWatch.for_config(
            self.ocpp, engine, lambda: self.shared.sessions, self.shared.writer.audit)
        self._states: list[_ListenerState] = []
        for listener_config in self.ocpp.listeners:
            holder = None if listener_config.insecure else ContextHolder(listener_config.tls_profile)
            if holder is not None and listener_config.profile == 3:
                mtls.require_client_certificates(holder.listening_context, None)
            self._states.append(_ListenerState(
                listener_config, Listener(listener_config, self.shared, holder), holder))
        self._anchors: list[x509.Certificate] = []
        self._periodic: asyncio.Task[None] | None = None

    # -- lifecycle --

    async def start(self) -> list[ReloadResult]:
        """Open every listener whose material passes the check; the others open once it does."""
        import ocpp.messages

        # The library validates each message in a thread by default: two thread hops per message.
        # Inline validation of these small payloads is cheaper and keeps ordering simple.
        ocpp.messages.ASYNC_VALIDATION = False
        self._anchors = await asyncio.to_thread(load_trust_anchors, self.ocpp.trust_roots)
        cleared = await asyncio.to_thread(charger_registry.clear_node, self.engine, self.node)
        if cleared:
            log.info("marked %d charger(s) offline that node %s held before its restart",
                     cleared, self.node)
        self.shared.writer.start()
        self.shared.first_contact.start()
        if self.charger_certs is not None:
            try:
                await self.charger_certs.prepare()
            except CertdError as exc:  # profile-2 chargers are served on; CSRs wait for the key
                log.error("the charger CA is not ready, charger CSRs are refused until it is: %s", exc)
        try:
            results = [await self._refresh(state, explicit=True) for state in self._states]
            if self.charger_certs is not None:
                await self.charger_certs.start()
            if self.revocation_watch is not None:
                await self.revocation_watch.start()
        except BaseException:
            # A later listener could not bind: close the ones already open (and the writer),
            # or their ports stay taken by a service nobody holds any more.
            await self.close()
            raise
        if self.ocpp.reload_check_interval > 0:
            self._periodic = asyncio.get_running_loop().create_task(
                self._check_periodically(), name="certd-ocpp-reload-check")
        return results

    async def close(self) -> None:
        if self.charger_certs is not None:
            await self.charger_certs.close()
        if self.revocation_watch is not None:
            await self.revocation_watch.close()
        if self._periodic is not None:
            self._periodic.cancel()
            try:
                await self._periodic
            except asyncio.CancelledError:
                pass
            self._periodic = None
        for state in self._states:
            await state.listener.close()
            state.started = False
        await self.shared.first_contact.close()  # a clean stop writes every queued row
        await self.shared.writer.close()
        await asyncio.to_thread(charger_registry.clear_node, self.engine, self.node)

    async def reload(self, cert_name: str | None = None) -> list[ReloadResult]:
        """Re-read the material of listeners serving `cert_name` (all listeners if None)."""
        try:  # a private CA (your own, Pebble) may have a new root in [ocpp] trust_roots by now
            self._anchors = await asyncio.to_thread(load_trust_anchors, self.ocpp.trust_roots)
        except TlsMaterialError as exc:
            log.error("[ocpp] trust_roots unreadable, keeping the roots read before: %s", exc)
        results = []
        for state in self._states:
            if cert_name is None or cert_name in state.config.certificates:
                results.append(await self._refresh(state, explicit=True))
        return results

    async def reload_client_trust(self) -> list[ReloadResult]:
        """Profile-3 listeners rebuild their contexts (the charger CA changed)."""
        return [await self._refresh(state, explicit=True) for state in self._states
                if state.config.profile == 3]

    def listener_profile(self, label: str) -> int:
        """The security profile of the listener labelled `label` (0: no such listener)."""
        for state in self._states:
            if state.listener.label == label:
                return state.config.profile
        return 0

    # -- chargers --

    def connected_chargers(self) -> list[ConnectedCharger]:
        return [s.snapshot() for s in self.shared.sessions.values()]

    def add_charger_hook(self, hook: ChargerHook) -> None:
        """Call `hook(session, event)` when a charger connects, boots or disconnects."""
        self.shared.hooks.append(hook)

    def remove_charger_hook(self, hook: ChargerHook) -> None:
        if hook in self.shared.hooks:
            self.shared.hooks.remove(hook)

    def charger(self, charger_id: str) -> ChargerSession | None:
        """The live session of a connected charger, to send it requests with `session.call()`."""
        return self.shared.sessions.get(charger_id)

    async def call(self, charger_id: str, payload: Any, timeout: float | None = None) -> Any:
        session = self.charger(charger_id)
        if session is None:
            raise LookupError(f"charger {charger_id} is not connected")
        return await session.call(payload, timeout)

    # -- introspection (status, tests) --

    def listener(self, label: str) -> Listener:
        for state in self._states:
            if state.listener.label == label:
                return state.listener
        raise KeyError(label)

    @property
    def listeners(self) -> list[Listener]:
        return [state.listener for state in self._states]

    def served(self, label: str) -> tuple[ServedCertificate, ...]:
        for state in self._states:
            if state.listener.label == label and state.holder and state.holder.current:
                return state.holder.current.served
        return ()

    # -- material --

    async def _check_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.ocpp.reload_check_interval)
            for state in self._states:
                try:
                    await self._refresh(state, explicit=False)
                except Exception:
                    log.exception("checking certificate material of listener %s failed",
                                  state.listener.label)

    def _material_key(self, listener: ListenerConfig) -> MaterialKey:
        parts: list[tuple[Any, ...]] = []
        if listener.certificates:
            with session_scope(self.engine) as session:
                for name in listener.certificates:
                    issued = served_certificate(session, name, listener.label)
                    parts.append(("cert", name, issued.id if issued else None))
        for files in listener.cert_files:
            parts.append(_file_key([files.fullchain, files.privkey]))
        if listener.profile == 3:
            parts.append(("clientca", mtls.trust_key(self.engine, self.ocpp, listener, self.clock())))
        return tuple(parts)

    def _read_material(self, listener: ListenerConfig) -> tuple[MaterialKey, list[KeyPairPem]]:
        """The key and the PEM pairs, read in one go (worker thread)."""
        pairs: list[KeyPairPem] = []
        parts: list[tuple[Any, ...]] = []
        problems: list[str] = []
        if listener.certificates:
            with session_scope(self.engine) as session:
                for name in listener.certificates:
                    issued = served_certificate(session, name, listener.label)
                    parts.append(("cert", name, issued.id if issued else None))
                    if issued is None:
                        problems.append(f"certificate {name} has not been issued yet")
                        continue
                    pairs.append(KeyPairPem(
                        source=f"certificate {name} (issued #{issued.id}, serial {issued.serial})",
                        cert_pem=issued.cert_pem, chain_pem=issued.chain_pem, key_pem=issued.key_pem,
                    ))
        for files in listener.cert_files:
            parts.append(_file_key([files.fullchain, files.privkey]))
            try:
                with open(files.fullchain, encoding="utf-8") as handle:
                    fullchain = handle.read()
                with open(files.privkey, encoding="utf-8") as handle:
                    key_pem = handle.read()
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{files.fullchain} / {files.privkey}: cannot read: {exc}")
                continue
            pairs.append(KeyPairPem(source=files.fullchain, cert_pem=fullchain, chain_pem="",
                                    key_pem=key_pem))
        if problems:
            raise TlsMaterialError("; ".join(problems))
        return tuple(parts), pairs

    def _prepare(self, listener: ListenerConfig) -> tuple[MaterialKey, Prepared, mtls.ClientTrust | None]:
        key, pairs = self._read_material(listener)
        prepared = prepare(pairs, listener.host, listener.tls_profile, self.clock(), self._anchors)
        trust = None
        if listener.profile == 3:
            trust = mtls.verify_clients(prepared.context, self.engine, self.ocpp, listener, self.clock())
            key = (*key, ("clientca", trust.key))
        return key, prepared, trust

    async def _refresh(self, state: _ListenerState, explicit: bool) -> ReloadResult:
        label = state.listener.label
        if state.holder is None:  # insecure listener: nothing to load
            if not state.started:
                await state.listener.start()
                state.started = True
                return ReloadResult(label, "started")
            return ReloadResult(label, "unchanged")
        async with state.lock:
            key = await asyncio.to_thread(self._material_key, state.config)
            current = state.holder.current
            if key == state.served_key and current is not None:
                return ReloadResult(label, "unchanged", current.served)
            file_keys = [part for part in key if part[0] == "file"]
            now_ns = int(self.clock().timestamp() * 1e9)
            if not all(files_settled(part, now_ns) for part in file_keys):
                return ReloadResult(label, "settling", current.served if current else ())
            if key == state.failed_key and not explicit:
                return ReloadResult(label, "failed", current.served if current else (),
                                    "material unchanged since it failed the check")
            try:
                read_key, prepared, trust = await asyncio.to_thread(self._prepare, state.config)
            except TlsMaterialError as exc:
                state.failed_key = key
                keeping = ("keeps serving " + ", ".join(
                    f"{s.source} serial {s.serial}" for s in current.served)
                    if current else "serves nothing until valid material exists")
                log.error("listener %s: new certificate material refused, %s: %s",
                          label, keeping, exc)
                return ReloadResult(label, "failed", current.served if current else (), str(exc))
            state.listener.client_trust = trust  # before the swap: handshakes on it then use this trust
            previous = state.holder.swap(prepared)
            state.failed_key = None
            opened_now = not state.started
            if opened_now:
                # Raises when the port cannot be bound; served_key stays unset, so the next
                # reload or periodic check tries again instead of answering "unchanged".
                await state.listener.start()
                state.started = True
            state.served_key = read_key
            for served in prepared.served:
                log.info("listener %s now serves %s (%s, serial %s, valid until %s)", label,
                         served.source, served.key_type.upper(), served.serial,
                         served.not_after.isoformat())
            return ReloadResult(label, "swapped" if previous and not opened_now else "started",
                                prepared.served)
