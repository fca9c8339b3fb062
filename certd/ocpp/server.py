"""One OCPP listener: websockets server, id from the path, Basic auth, subprotocol choice.

The opening handshake runs `process_request` (path -> id, rate limit, registry
lookup, password check -- or on a security profile 3 listener the client certificate's
check, `certd.ocpp.mtls`: any refusal is a bare 401/403/404/429 before the upgrade),
then `select_subprotocol` (a charger that offers none is served as OCPP 1.6,
as OCPP 2.0.1 Part 4 asks, instead of websockets' HTTP 400), then the handler
runs the version's ChargePoint read loop until the socket closes.
"""

from __future__ import annotations

import asyncio
import http
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import sqlalchemy as sa
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from certd.config.ocpp import ListenerConfig, OcppConfig
from certd.errors import CertdError
from certd.metrics import count_handshake, count_login
from certd.ocpp import admission, auth, charger_registry, mtls
from certd.ocpp.connection import OcppConnection, peer_address, ws_log
from certd.ocpp.frames import Limits
from certd.ocpp.logsafe import describe_exception, printable
from certd.ocpp.ids import InvalidChargerId, PathPattern, charger_id_from_path
from certd.ocpp.charger_registry import ChargerRecord, RegistryWriter
from certd.ocpp.first_contact import FirstContactRegistrar
from certd.ocpp.session import ChargerHook, ChargerSession
from certd.serve.tls import ContextHolder
from certd.store.types import utcnow

if TYPE_CHECKING:
    from certd.chargerca.identity import PeerCertificate
    from certd.ocpp.enrollment import Enrollment

log = logging.getLogger("certd.ocpp")

# Served to a charger that offers no subprotocol (OCPP 2.0.1 Part 4; Home Assistant does the same).
DEFAULT_SUBPROTOCOL = "ocpp1.6"
WRITE_LIMIT = 16 * 1024
WS_AUTHENTICATE = 'Basic realm="OCPP", charset="UTF-8"'


@dataclass
class Shared:
    """State every listener of one service shares."""

    ocpp: OcppConfig
    engine: sa.Engine
    writer: RegistryWriter
    limiter: auth.FailureLimiter
    credentials: auth.VerifiedCredentials
    sessions: dict[str, ChargerSession]
    first_contact: FirstContactRegistrar
    hooks: list[ChargerHook] = field(default_factory=list)  # see OcppService.add_charger_hook
    enrollment: "Enrollment | None" = None  # SignCertificate handling when certd is the chargers' CA
    # SO_REUSEPORT: several worker processes listen on the same ports (certd.runtime.workers).
    reuse_port: bool = False


@dataclass(frozen=True)
class Admitted:
    charger_id: str
    record: ChargerRecord
    address: str | None
    client_cert: "PeerCertificate | None" = None  # security profile 3


# LookedUp.checked_hash when the offered password was checked against auth's dummy hash.
DUMMY_HASH_CHECKED = "dummy"


@dataclass(frozen=True)
class LookedUp:
    """The registry row and which argon2 check the worker thread ran (None: none ran)."""

    record: ChargerRecord | None
    checked_hash: str | None = None
    check_ok: bool = False
    new_hash: str | None = None  # the offered password hashed, for a charger to register


class Listener:
    def __init__(self, config: ListenerConfig, shared: Shared, holder: ContextHolder | None) -> None:
        self.config = config
        self.shared = shared
        self.holder = holder
        self.patterns = [PathPattern(p) for p in config.paths]
        self.server: Server | None = None
        # Refused frames per reason over all this listener's connections (see session.rejected).
        self.rejections: Counter[str] = Counter()
        self._background: set[asyncio.Task[None]] = set()
        # Profile 3: whom client certificates may come from (set by the service with each context).
        self.client_trust: mtls.ClientTrust | None = None

    @property
    def label(self) -> str:
        return self.config.label

    @property
    def ports(self) -> list[int]:
        if self.server is None:
            return []
        return sorted({sock.getsockname()[1] for sock in self.server.sockets})

    async def start(self) -> None:
        ocpp = self.shared.ocpp
        if self.config.insecure:
            log.warning(
                "OCPP listener %s serves plain ws:// (security profile 1): passwords cross the "
                "network unencrypted; use it on trusted networks only", self.label,
            )
        try:
            self.server = await self._serve(ocpp)
        except OSError as exc:
            where = ", ".join(self.config.bind) or "all addresses"
            raise CertdError(
                f"OCPP listener {self.label}: cannot listen on {where} port {self.config.port}: "
                f"{exc.strerror or exc}"
            ) from None
        scheme = "ws" if self.config.insecure else "wss"
        log.info("OCPP listener %s on %s://%s:%s%s", self.label, scheme, self.config.host,
                 ",".join(map(str, self.ports)), " ".join(self.config.paths))

    async def _serve(self, ocpp: OcppConfig) -> Server:
        return await serve(
            self._handle,
            host=list(self.config.bind) or None,
            port=self.config.port,
            ssl=self.holder.listening_context if self.holder else None,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            create_connection=OcppConnection,
            compression=None,
            open_timeout=ocpp.handshake_timeout,
            ping_interval=ocpp.ping_interval,
            ping_timeout=ocpp.ping_timeout,
            max_size=ocpp.max_message_size,
            max_queue=ocpp.max_queue,
            write_limit=WRITE_LIMIT,
            server_header=None,
            backlog=1024,
            reuse_port=self.shared.reuse_port or None,
            logger=ws_log,
        )

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()  # closes connections with 1001 (going away)
            await self.server.wait_closed()
            self.server = None

    # -- opening handshake --

    def _refuse(self, connection: ServerConnection, status: http.HTTPStatus, text: str,
                headers: dict[str, str] | None = None) -> Response:
        response = connection.respond(status, text)
        for key, value in (headers or {}).items():
            response.headers[key] = value
        return response

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        shared = self.shared
        address = peer_address(connection)
        try:
            charger_id = charger_id_from_path(request.path, self.patterns)
        except InvalidChargerId as exc:
            count_handshake(self.label, "bad_id")
            return self._refuse(connection, http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
        if charger_id is None:
            count_handshake(self.label, "not_found")
            return self._refuse(connection, http.HTTPStatus.NOT_FOUND, "Not Found\n")

        key = address or "?"
        # Taken before the first await, so parallel guesses cannot all pass the limit (see begin).
        wait = await shared.limiter.begin(key)
        if wait is not None:
            log.debug("refusing %s from %s: too many failed logins", charger_id, address)
            count_handshake(self.label, "rate_limited")
            return self._refuse(connection, http.HTTPStatus.TOO_MANY_REQUESTS, "Too Many Requests\n",
                                {"Retry-After": str(max(1, int(wait + 0.999)))})
        admitted: Admitted | None = None
        certificate = self.config.profile == 3
        try:
            if certificate:
                admitted = await self._admit_certificate(connection, charger_id, address)
            else:
                admitted = await self._admit(request, charger_id, address)
        finally:  # also when the handshake times out mid-check: that attempt counts as failed
            shared.limiter.end(key, failed=admitted is None)
        if admitted is None:
            if shared.limiter.retry_after(key) is not None:
                log.warning("client %s reached the failed-login limit; refusing it for %.0f s",
                            address, shared.ocpp.auth_failure_window)
            count_handshake(self.label, "unauthorized")
            if certificate:  # no password to retry with: no WWW-Authenticate
                return self._refuse(connection, http.HTTPStatus.FORBIDDEN, "Forbidden\n")
            return self._refuse(connection, http.HTTPStatus.UNAUTHORIZED, "Unauthorized\n",
                                {"WWW-Authenticate": WS_AUTHENTICATE})
        count_handshake(self.label, "admitted")
        assert isinstance(connection, OcppConnection)
        connection.admitted = admitted
        return None

    async def _admit(self, request: Request, charger_id: str, address: str | None) -> Admitted | None:
        """Registry, policy and password: the admission, or None after auditing the refusal."""
        shared = self.shared
        password = auth.parse_basic_auth(request.headers.get("Authorization"), charger_id)
        looked_up = await asyncio.to_thread(self._lookup_and_check, charger_id, password)
        # An id registered here moments ago may not be in the store yet: its queued row counts.
        record = looked_up.record or shared.first_contact.pending(charger_id)
        verdict = admission.decide(record, shared.ocpp.unknown_chargers, password is not None)

        if isinstance(verdict, admission.Register):  # queued, written in the next batch: no I/O here
            record = shared.first_contact.register(charger_id, verdict.registration,
                                                   looked_up.new_hash, address)
            if password is not None and record.password_hash == looked_up.new_hash:
                shared.credentials.remember(charger_id, record.password_hash, password)
            verdict = admission.decide(record, shared.ocpp.unknown_chargers, password is not None)
            if isinstance(verdict, admission.Register):  # cannot happen: the row exists now
                verdict = admission.Refuse("registration failed")

        if isinstance(verdict, admission.CheckPassword):
            assert password is not None
            if not await self._password_ok(charger_id, verdict.password_hash, password, looked_up):
                verdict = admission.Refuse("wrong password")
        elif isinstance(verdict, admission.Admit) and verdict.store_offered_password:
            assert password is not None and record is not None
            record = await asyncio.to_thread(self._store_first_password, charger_id, password)

        if isinstance(verdict, admission.Refuse) or record is None:
            reason = verdict.reason if isinstance(verdict, admission.Refuse) else "no record"
            shared.writer.audit("auth_failed", charger_id, address, reason)
            count_login(reason)
            return None
        count_login(None)
        return Admitted(charger_id, record, address)

    async def _admit_certificate(self, connection: ServerConnection, charger_id: str,
                                 address: str | None) -> Admitted | None:
        """Profile 3: the verified client certificate must be this charger's (no password)."""
        shared = self.shared
        trust = self.client_trust
        if trust is None:
            shared.writer.audit("auth_failed", charger_id, address, "client certificate: no client trust yet")
            return None
        result = await asyncio.to_thread(mtls.admit_certificate, shared.engine, shared.ocpp, trust,
                                         mtls.peer_der(connection), charger_id, utcnow())
        if not isinstance(result, mtls.CertificateAdmission):
            shared.writer.audit("auth_failed", charger_id, address, f"client certificate: {result.reason}")
            return None
        if result.password_retired:
            shared.credentials.forget(charger_id)
            log.info("charger %s connected with its certificate: its password no longer admits it",
                     charger_id)
        return Admitted(charger_id, result.record, address, result.peer)

    def _lookup_and_check(self, charger_id: str, password: str | None) -> LookedUp:
        """Registry read and, when the verdict will need it, the argon2 check (for a charger to
        register: the hash of its first password): one worker-thread trip instead of two (each
        trip costs a new connection about 0.1 ms of CPU).

        A password offered where there is no hash to check (unknown or disabled id, policy
        refusal) is checked against the dummy hash: the answer takes as long as for a known id.
        Runs in a worker thread; `credentials.matches` only reads (a charger verified before
        skips argon2).
        """
        record = charger_registry.lookup(self.shared.engine, charger_id)
        verdict = admission.decide(record, self.shared.ocpp.unknown_chargers, password is not None)
        if password is None:
            return LookedUp(record)
        if isinstance(verdict, admission.Refuse):
            return LookedUp(record, DUMMY_HASH_CHECKED, auth.verify_dummy(password))
        if isinstance(verdict, admission.Register):  # trust on first use: store what it offers
            return LookedUp(record, new_hash=auth.hash_password(password))
        if (not isinstance(verdict, admission.CheckPassword)
                or self.shared.credentials.matches(charger_id, verdict.password_hash, password)):
            return LookedUp(record)
        return LookedUp(record, verdict.password_hash,
                        auth.verify_password(verdict.password_hash, password))

    async def _password_ok(self, charger_id: str, password_hash: str, password: str,
                           looked_up: LookedUp | None = None) -> bool:
        credentials = self.shared.credentials
        if credentials.matches(charger_id, password_hash, password):
            return True
        if looked_up is not None and looked_up.checked_hash == password_hash:
            ok = looked_up.check_ok
        else:
            ok = await asyncio.to_thread(auth.verify_password, password_hash, password)
        if ok:
            credentials.remember(charger_id, password_hash, password)
            if auth.needs_rehash(password_hash):
                await asyncio.to_thread(self._rehash, charger_id, password)
        return ok

    def _rehash(self, charger_id: str, password: str) -> None:
        new_hash = auth.hash_password(password)
        charger_registry.set_password_hash(self.shared.engine, charger_id, new_hash)
        self.shared.credentials.remember(charger_id, new_hash, password)

    def _store_first_password(self, charger_id: str, password: str) -> ChargerRecord | None:
        charger_registry.set_password_hash(self.shared.engine, charger_id, auth.hash_password(password))
        return charger_registry.lookup(self.shared.engine, charger_id)

    def _select_subprotocol(self, connection: ServerConnection,
                            offered: Sequence[Subprotocol]) -> Subprotocol | None:
        assert isinstance(connection, OcppConnection)
        connection.offered_subprotocols = tuple(offered)
        wanted = set(offered)
        for subprotocol in self.config.subprotocols:  # server's order of preference
            if subprotocol in wanted:
                return Subprotocol(subprotocol)
        # None offered: handshake completes without the header and the charger is served as 1.6.
        # None acceptable: OCPP wants the handshake completed, then the socket closed (_handle).
        return None

    # -- the connection --

    def _served_version(self, connection: OcppConnection) -> str | None:
        if connection.subprotocol:
            return str(connection.subprotocol)
        if not connection.offered_subprotocols and DEFAULT_SUBPROTOCOL in self.config.subprotocols:
            return DEFAULT_SUBPROTOCOL
        return None

    def _heartbeat_interval(self, record: ChargerRecord) -> int:
        classes = self.shared.ocpp.heartbeat_classes
        interval = classes.get(record.heartbeat_class)
        if interval is None:
            log.warning("charger %s has heartbeat class %r, which [ocpp] heartbeat_classes lacks; "
                        "using %r", record.charger_id, record.heartbeat_class,
                        self.shared.ocpp.default_heartbeat_class)
            interval = classes[self.shared.ocpp.default_heartbeat_class]
        return interval

    async def _handle(self, connection: ServerConnection) -> None:
        assert isinstance(connection, OcppConnection) and connection.admitted is not None
        admitted = connection.admitted
        version = self._served_version(connection)
        if version is None:
            log.warning("charger %s offered %s; this listener speaks %s: closing",
                        admitted.charger_id, printable(", ".join(connection.offered_subprotocols)),
                        ", ".join(self.config.subprotocols))
            await connection.close(1002, "no supported OCPP version offered")
            return

        from certd.ocpp.v16 import CentralSystemV16
        from certd.ocpp.v201 import CentralSystemV21, CentralSystemV201

        shared = self.shared
        session = ChargerSession(
            charger_id=admitted.charger_id, version=version, listener=self.label,
            address=admitted.address, registration=admitted.record.registration,
            heartbeat_interval=self._heartbeat_interval(admitted.record), writer=shared.writer,
            hooks=shared.hooks, frame_limits=Limits(shared.ocpp.max_message_size),
            listener_rejections=self.rejections, client_cert=admitted.client_cert,
            enrollment=shared.enrollment,
        )
        cp_class = {"ocpp1.6": CentralSystemV16, "ocpp2.0.1": CentralSystemV201,
                    "ocpp2.1": CentralSystemV21}[version]
        session.charge_point = cp_class(session, connection, shared.ocpp.call_timeout)

        previous = shared.sessions.get(admitted.charger_id)
        shared.sessions[admitted.charger_id] = session
        if previous is not None and previous.charge_point is not None:
            # The charger reconnected (e.g. its NAT dropped the old flow silently): keep the new one.
            log.info("charger %s reconnected; closing its previous connection", admitted.charger_id)
            old = previous.charge_point._connection
            task = asyncio.get_running_loop().create_task(
                old.close(1000, "replaced by a new connection"))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        shared.writer.connected(admitted.charger_id, version, admitted.address)
        log.info("charger %s connected over %s from %s%s", admitted.charger_id, version,
                 admitted.address, f" with certificate serial {admitted.client_cert.serial}"
                 if admitted.client_cert else "")
        session.notify("connected")
        try:
            await session.charge_point.start()
        except ConnectionClosed:
            pass
        except Exception as exc:  # a certd bug: one line (no frame content), the charger gets 1011
            session.count("internal_error")
            log.error("charger %s: handling its frames failed (%s); closing with 1011",
                      admitted.charger_id, describe_exception(exc))
            await connection.close(1011, "internal error")
        finally:
            if shared.sessions.get(admitted.charger_id) is session:
                del shared.sessions[admitted.charger_id]
                shared.writer.disconnected(admitted.charger_id)
            session.notify("disconnected")
            log.info("charger %s disconnected (%s)", admitted.charger_id,
                     connection.close_code if connection.close_code is not None else "no close frame")

