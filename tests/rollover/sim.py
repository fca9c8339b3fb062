"""Simulated chargers built on the `ocpp` library (1.6 security extension and 2.0.1).

Each keeps its own trust store (the CSMS roots installed on it) and connects
only when the server's chain verifies against that store, with the host name
checked, as a charger's TLS stack does. It answers:

- InstallCertificate (CentralSystemRootCertificate / CSMSRootCertificate): adds the
  PEM to its store, or answers as its `Behavior` says (Rejected, Failed, a
  NotImplemented CallError, or no answer at all);
- GetInstalledCertificateIds: hash data of every installed root, computed with
  cryptography's OCSP request builder (independent of certd's own CertID code);
- GetConfiguration (1.6) / GetVariables (2.0.1): CertificateStoreMaxLength /
  SecurityCtrlr.CertificateEntries and AdditionalRootCertificateCheck.

With `additional_root_check` it accepts a new root only when the key of a root
it holds signed it (OCPP M05); it keeps the old one next to it (a real charger
drops the fallback after the first connection under the new root; not modelled).
It reconnects with growing backoff after a lost connection and sends a
BootNotification on its first connection, after `reboot()` and when the CSMS asks
for one (TriggerMessage BootNotification); `boot_statuses` records the answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ssl
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import ocsp
from websockets.asyncio.client import connect

InstallBehavior = Literal["accept", "reject", "fail", "not-implemented", "silent"]


@dataclass
class Behavior:
    install: InstallBehavior = "accept"
    additional_root_check: bool = False
    store_max: int | None = None
    report_limits: bool = True  # answer GetConfiguration / GetVariables


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _signed_by(child: x509.Certificate, parent: x509.Certificate) -> bool:
    if child.issuer != parent.subject:
        return False
    try:
        child.verify_directly_issued_by(parent)
    except Exception:  # noqa: BLE001 - any failure means "not issued by"
        return False
    return True


@dataclass
class SimCharger:
    charger_id: str
    version: str  # "ocpp1.6" | "ocpp2.0.1"
    trusted: list[str]  # PEM roots installed at the factory
    host: str
    behavior: Behavior = field(default_factory=Behavior)
    # Observations for assertions.
    install_requests: list[str] = field(default_factory=list)
    install_answers: list[tuple[dt.datetime, str]] = field(default_factory=list)
    id_requests: int = 0
    connections: int = 0
    handshake_failures: int = 0
    last_error: str | None = None
    boots: list[dt.datetime] = field(default_factory=list)
    boot_statuses: list[tuple[dt.datetime, str]] = field(default_factory=list)  # (when, Accepted / Pending)
    triggers: list[str] = field(default_factory=list)  # TriggerMessage requested_message values
    peer_chains: list[list[x509.Certificate]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.installed = [x509.load_pem_x509_certificate(p.encode()) for p in self.trusted]
        self.online = asyncio.Event()
        self._stop = asyncio.Event()
        self._drop = asyncio.Event()
        self._boot_next = True
        self._task: asyncio.Task[None] | None = None

    # -- control ---------------------------------------------------------------------------

    def start(self, url: str) -> None:
        self.url = url
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"sim-{self.charger_id}")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 10)

    def drop(self) -> None:
        """Close the connection (a network hiccup): the charger reconnects by itself."""
        self._drop.set()

    def reboot(self) -> None:
        self._boot_next = True
        self._drop.set()

    def holds(self, cert: x509.Certificate) -> bool:
        return any(c == cert for c in self.installed)

    @property
    def accepted_installs(self) -> list[dt.datetime]:
        return [at for at, status in self.install_answers if status == "Accepted"]

    # -- connection loop -------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        from cryptography.hazmat.primitives import serialization

        pems = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in self.installed)
        return ssl.create_default_context(cadata=pems)

    async def _run(self) -> None:
        delay = 0.05
        while not self._stop.is_set():
            try:
                async with connect(self.url, ssl=self._ssl_context(), server_hostname=self.host,
                                   subprotocols=[self.version], open_timeout=10,  # type: ignore[list-item]
                                   ping_interval=None) as ws:
                    self.connections += 1
                    delay = 0.05
                    sslobj = ws.transport.get_extra_info("ssl_object")
                    chain = sslobj.get_unverified_chain() if hasattr(sslobj, "get_unverified_chain") else None
                    if chain:
                        self.peer_chains.append([x509.load_der_x509_certificate(bytes(c)) for c in chain])
                    else:
                        der = sslobj.getpeercert(binary_form=True)
                        self.peer_chains.append([x509.load_der_x509_certificate(der)])
                    await self._session(ws)
            except (OSError, ssl.SSLError, asyncio.TimeoutError, Exception) as exc:  # noqa: BLE001
                if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
                    self.handshake_failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self.online.clear()
            if self._stop.is_set():
                break
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass
            delay = min(delay * 2, 1.0)

    async def _session(self, ws: Any) -> None:
        cp = make_charge_point(self, ws)
        reader = asyncio.get_running_loop().create_task(cp.start())
        try:
            if self._boot_next:
                self._boot_next = False
                await self.boot(cp)
            self.online.set()
            stop = asyncio.get_running_loop().create_task(self._stop.wait())
            drop = asyncio.get_running_loop().create_task(self._drop.wait())
            await asyncio.wait({reader, stop, drop}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stop, drop):
                task.cancel()
            self._drop.clear()
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            await ws.close()

    # -- charger behaviour (called by the handlers) -------------------------------------------

    async def boot(self, cp: Any) -> None:
        answer = await cp.call(boot_request(self.version))
        self.boots.append(_now())
        self.boot_statuses.append((_now(), str(getattr(answer, "status", ""))))

    def triggered(self, requested: str) -> str:
        """TriggerMessage: only BootNotification (sent by the `@after` handler, once answered)."""
        self.triggers.append(requested)
        return "Accepted" if requested == "BootNotification" else "NotImplemented"

    def install(self, pem: str) -> str:
        self.install_requests.append(pem)
        behavior = self.behavior.install
        if behavior == "reject":
            return "Rejected"
        if behavior == "fail":
            return "Failed"
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            return "Rejected"
        if self.behavior.additional_root_check and not any(_signed_by(cert, c) for c in self.installed):
            return "Rejected"
        if any(c == cert for c in self.installed):
            return "Accepted"
        if self.behavior.store_max is not None and len(self.installed) >= self.behavior.store_max:
            return "Rejected"
        self.installed.append(cert)
        return "Accepted"

    def hash_data(self) -> list[dict[str, str]]:
        """Per installed root: CertID fields as OCPP reports them (uppercase hex, like many chargers)."""
        self.id_requests += 1
        result = []
        for cert in self.installed:
            issuer = cert if _signed_by(cert, cert) else next(
                (c for c in self.installed if _signed_by(cert, c)), None)
            if issuer is None:
                continue
            request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA256()).build()
            result.append({"hash_algorithm": "SHA256",
                           "issuer_name_hash": request.issuer_name_hash.hex().upper(),
                           "issuer_key_hash": request.issuer_key_hash.hex().upper(),
                           "serial_number": f"{request.serial_number:X}"})
        return result


def boot_request(version: str) -> Any:
    if version == "ocpp1.6":
        from ocpp.v16 import call

        return call.BootNotification(charge_point_vendor="SimVendor", charge_point_model="Sim16")
    from ocpp.v201 import call as call201

    return call201.BootNotification(charging_station={"vendor_name": "SimVendor", "model": "Sim201"},
                                    reason="PowerUp")


def make_charge_point(sim: SimCharger, ws: Any) -> Any:
    from ocpp.exceptions import NotImplementedError as OcppNotImplemented
    from ocpp.routing import after, on

    async def answer_install(certificate: str) -> str:
        if sim.behavior.install == "not-implemented":
            raise OcppNotImplemented(description="InstallCertificate is not implemented")
        if sim.behavior.install == "silent":
            await asyncio.Event().wait()  # never answers: the CSMS runs into its timeout
        status = sim.install(certificate)
        sim.install_answers.append((_now(), status))
        return status

    if sim.version == "ocpp1.6":
        from ocpp.v16 import ChargePoint, call_result

        class Charger16(ChargePoint):  # type: ignore[misc]
            @on("InstallCertificate")
            async def on_install(self, certificate_type: str, certificate: str) -> Any:
                return call_result.InstallCertificate(status=await answer_install(certificate))

            @on("GetInstalledCertificateIds")
            def on_ids(self, certificate_type: str) -> Any:
                data = sim.hash_data()
                if not data:
                    return call_result.GetInstalledCertificateIds(status="NotFound")
                return call_result.GetInstalledCertificateIds(status="Accepted", certificate_hash_data=data)

            @on("TriggerMessage")
            def on_trigger(self, requested_message: str, **_: Any) -> Any:
                return call_result.TriggerMessage(status=sim.triggered(requested_message))

            @after("TriggerMessage")
            async def after_trigger(self, requested_message: str, **_: Any) -> None:
                if requested_message == "BootNotification":  # the library runs this as a task
                    await sim.boot(self)

            @on("GetConfiguration")
            def on_get_configuration(self, key: list[str] | None = None) -> Any:
                if not sim.behavior.report_limits:
                    raise OcppNotImplemented(description="no configuration here")
                values = {"AdditionalRootCertificateCheck": str(sim.behavior.additional_root_check).lower()}
                if sim.behavior.store_max is not None:
                    values["CertificateStoreMaxLength"] = str(sim.behavior.store_max)
                wanted = key or list(values)
                return call_result.GetConfiguration(
                    configuration_key=[{"key": k, "readonly": True, "value": values[k]}
                                       for k in wanted if k in values],
                    unknown_key=[k for k in wanted if k not in values] or None)

        return Charger16(sim.charger_id, ws, response_timeout=10)

    from ocpp.v201 import ChargePoint as ChargePoint201
    from ocpp.v201 import call_result as result201

    class Charger201(ChargePoint201):  # type: ignore[misc]
        @on("InstallCertificate")
        async def on_install(self, certificate_type: str, certificate: str, **_: Any) -> Any:
            return result201.InstallCertificate(status=await answer_install(certificate))

        @on("GetInstalledCertificateIds")
        def on_ids(self, certificate_type: list[str] | None = None, **_: Any) -> Any:
            data = sim.hash_data()
            if not data:
                return result201.GetInstalledCertificateIds(status="NotFound")
            return result201.GetInstalledCertificateIds(status="Accepted", certificate_hash_data_chain=[
                {"certificate_type": "CSMSRootCertificate", "certificate_hash_data": d} for d in data])

        @on("TriggerMessage")
        def on_trigger(self, requested_message: str, **_: Any) -> Any:
            return result201.TriggerMessage(status=sim.triggered(requested_message))

        @after("TriggerMessage")
        async def after_trigger(self, requested_message: str, **_: Any) -> None:
            if requested_message == "BootNotification":  # the library runs this as a task
                await sim.boot(self)

        @on("GetVariables")
        def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
            if not sim.behavior.report_limits:
                raise OcppNotImplemented(description="no device model here")
            results = []
            for item in get_variable_data:
                name = item["variable"]["name"]
                kind = item.get("attribute_type", "Actual")
                value: str | None = None
                if name == "CertificateEntries" and kind == "Actual":
                    value = str(len(sim.installed))
                elif name == "AdditionalRootCertificateCheck" and kind == "Actual":
                    value = str(sim.behavior.additional_root_check).lower()
                entry: dict[str, Any] = {"attribute_status": "Accepted" if value is not None else "NotSupportedAttributeType",
                                         "component": item["component"], "variable": item["variable"],
                                         "attribute_type": kind}
                if value is not None:
                    entry["attribute_value"] = value
                results.append(entry)
            return result201.GetVariables(get_variable_result=results)

    return Charger201(sim.charger_id, ws, response_timeout=10)
