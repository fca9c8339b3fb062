"""Real `ocpp` charger clients (1.6 security extension and 2.0.1) that make a key and a CSR,
answer certd's certificate requests, and reconnect with their certificate over mutual TLS.

`Charger` is one simulated charging station: it owns its private key (never sent),
builds CSRs like firmware does (CN = its identity, O = the operator), keeps the chain
certd hands it in CertificateSigned, and writes key + chain to files for `ssl`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from ocpp.routing import after, on

ORG = "Test Operator"


def new_key(kind: str = "ec"):  # type: ignore[no-untyped-def]
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    bits = int(kind.removeprefix("rsa") or 2048)
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def make_csr(key, common_name: str, organization: str | None = ORG,  # type: ignore[no-untyped-def]
             algorithm: hashes.HashAlgorithm | None = None) -> str:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attrs.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
           .sign(key, algorithm or hashes.SHA256()))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def tamper_signature(pem: str) -> str:
    """The same CSR with one bit of its signature flipped (the subject and key intact)."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-5] ^= 0x01
    import base64

    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"


@dataclass
class Charger:
    """One charging station's credentials and what certd sent it."""

    charger_id: str
    key_kind: str = "ec"
    organization: str | None = ORG
    answer_signed: str = "Accepted"  # how CertificateSigned is answered
    key: Any = None
    chains: list[str] = field(default_factory=list)
    received: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (action, payload)
    csr_answers: list[str] = field(default_factory=list)
    events: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    trigger_times: list[float] = field(default_factory=list)  # time.time() of each CSR trigger

    def csr(self) -> str:
        self.key = new_key(self.key_kind)  # a fresh key for every CSR, as A02/A03 ask
        return make_csr(self.key, self.charger_id, self.organization)

    @property
    def chain(self) -> str:
        return self.chains[-1]

    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificates(self.chain.encode())[0]

    def files(self, directory: Path, chain: str | None = None, key: Any = None) -> tuple[Path, Path]:
        directory.mkdir(parents=True, exist_ok=True)
        chain_path, key_path = directory / f"{self.charger_id}.chain.pem", directory / f"{self.charger_id}.key"
        chain_path.write_text(chain or self.chain)
        key_path.write_bytes((key or self.key).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        key_path.chmod(0o600)
        return chain_path, key_path

    def tls(self, root_pem: str, directory: Path, **kwargs: Any) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cadata=root_pem)
        ctx.load_cert_chain(*self.files(directory, **kwargs))
        return ctx


def client_class(version: str):  # type: ignore[no-untyped-def]
    """A ChargePoint of `version` that plays `Charger`'s part (see module docstring)."""
    if version == "ocpp1.6":
        from ocpp.v16 import ChargePoint, call, call_result

        class Client16(ChargePoint):
            charger: Charger

            async def request_certificate(self) -> str:
                answer = await self.call(call.SignCertificate(csr=self.charger.csr()))
                self.charger.csr_answers.append(answer.status)
                return answer.status

            @on("ExtendedTriggerMessage")
            def on_trigger(self, requested_message: str, **_: Any) -> Any:
                self.charger.received.append(("ExtendedTriggerMessage", {"requested_message": requested_message}))
                self.charger.trigger_times.append(time.time())
                return call_result.ExtendedTriggerMessage(status="Accepted")

            @after("ExtendedTriggerMessage")
            async def after_trigger(self, requested_message: str, **_: Any) -> None:
                if requested_message == "SignChargePointCertificate":
                    await self.request_certificate()

            @on("CertificateSigned")
            def on_signed(self, certificate_chain: str, **_: Any) -> Any:
                self.charger.received.append(("CertificateSigned", {"certificate_chain": certificate_chain}))
                if self.charger.answer_signed == "Accepted":
                    self.charger.chains.append(certificate_chain)
                self.charger.events.put_nowait("CertificateSigned")
                return call_result.CertificateSigned(status=self.charger.answer_signed)

            @on("ChangeConfiguration")
            def on_change(self, key: str, value: str, **_: Any) -> Any:
                self.charger.received.append(("ChangeConfiguration", {"key": key, "value": value}))
                self.charger.events.put_nowait(f"ChangeConfiguration:{key}")
                return call_result.ChangeConfiguration(status="Accepted")

        return Client16

    if version == "ocpp2.0.1":
        from ocpp.v201 import ChargePoint, call, call_result
    else:
        from ocpp.v21 import ChargePoint, call, call_result  # type: ignore[no-redef]

    class Client2x(ChargePoint):
        charger: Charger

        async def request_certificate(self, certificate_type: str | None = "ChargingStationCertificate") -> str:
            answer = await self.call(call.SignCertificate(csr=self.charger.csr(), certificate_type=certificate_type))
            self.charger.csr_answers.append(answer.status)
            return answer.status

        @on("TriggerMessage")
        def on_trigger(self, requested_message: str, **_: Any) -> Any:
            self.charger.received.append(("TriggerMessage", {"requested_message": requested_message}))
            self.charger.trigger_times.append(time.time())
            return call_result.TriggerMessage(status="Accepted")

        @after("TriggerMessage")
        async def after_trigger(self, requested_message: str, **_: Any) -> None:
            if requested_message == "SignChargingStationCertificate":
                await self.request_certificate()

        @on("CertificateSigned")
        def on_signed(self, certificate_chain: str, **info: Any) -> Any:
            self.charger.received.append(("CertificateSigned", {"certificate_chain": certificate_chain, **info}))
            if self.charger.answer_signed == "Accepted":
                self.charger.chains.append(certificate_chain)
            self.charger.events.put_nowait("CertificateSigned")
            return call_result.CertificateSigned(status=self.charger.answer_signed)

        @on("SetNetworkProfile")
        def on_network_profile(self, configuration_slot: int, connection_data: dict[str, Any], **_: Any) -> Any:
            self.charger.received.append(("SetNetworkProfile", {"configuration_slot": configuration_slot,
                                                                "connection_data": connection_data}))
            self.charger.events.put_nowait("SetNetworkProfile")
            return call_result.SetNetworkProfile(status="Accepted")

        @on("GetVariables")
        def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> Any:
            return call_result.GetVariables(get_variable_result=[
                {"attribute_status": "Accepted", "attribute_value": "0", "component": item["component"],
                 "variable": item["variable"]} for item in get_variable_data])

        @on("SetVariables")
        def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> Any:
            self.charger.received.append(("SetVariables", {"set_variable_data": set_variable_data}))
            self.charger.events.put_nowait("SetVariables")
            return call_result.SetVariables(set_variable_result=[
                {"attribute_status": "Accepted", "component": item["component"], "variable": item["variable"]}
                for item in set_variable_data])

    return Client2x


@contextlib.asynccontextmanager
async def running_client(ws, version: str, charger: Charger):  # type: ignore[no-untyped-def]
    """The charger's ChargePoint reading from `ws` in a task."""
    import websockets

    cp = client_class(version)(charger.charger_id, ws, response_timeout=15)
    cp.charger = charger
    task = asyncio.get_running_loop().create_task(cp.start())
    try:
        yield cp
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, websockets.ConnectionClosed):
            await task


async def next_event(charger: Charger, wanted: str, timeout: float = 15) -> None:
    async with asyncio.timeout(timeout):
        while (await charger.events.get()) != wanted:
            pass
