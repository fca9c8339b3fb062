"""Talk certificates with one connected charger: install roots, read what it holds, read its limits.

OCPP 1.6 (security extension) and 2.0.1 / 2.1 say the same things differently:

| what                 | 1.6                                       | 2.0.1 / 2.1                                   |
|----------------------|-------------------------------------------|-----------------------------------------------|
| install one root     | InstallCertificate CentralSystemRootCertificate | InstallCertificate CSMSRootCertificate  |
| what it holds        | GetInstalledCertificateIds (one type)     | GetInstalledCertificateIds (list of types)    |
| store limit          | GetConfiguration CertificateStoreMaxLength | GetVariables SecurityCtrlr.CertificateEntries (the count; the maximum is a characteristic only GetReport gives) |
| cross-sign rule      | GetConfiguration AdditionalRootCertificateCheck | GetVariables SecurityCtrlr.AdditionalRootCertificateCheck |

Installed certificates are reported as hash data, as in an OCSP CertID
(RFC 6960): the hash of the issuer's name, of the issuer's public key, and the
serial number; `hash_index` computes those for every certificate certd knows, so
a report maps back to fingerprints.

Every request goes through `ChargerSession.call` (one at a time per charger)
and its reply is classified: Accepted / Rejected / Failed (the charger said so),
NotSupported (a NotImplemented or NotSupported CallError), timeout, error (any
other CallError or a malformed reply), offline (no connection).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certd.trust.certs import CaCert, issued_by

if TYPE_CHECKING:
    from certd.ocpp.service import OcppService

log = logging.getLogger("certd.ocpp.provision")

Outcome = Literal["Accepted", "Rejected", "Failed", "NotSupported", "timeout", "error", "offline"]
HashData = tuple[str, str, str, str]  # (algorithm, issuerNameHash, issuerKeyHash, serialNumber)

HASH_ALGORITHMS = {"SHA256": hashlib.sha256, "SHA384": hashlib.sha384, "SHA512": hashlib.sha512}
ROOT_TYPE_16 = "CentralSystemRootCertificate"
ROOT_TYPE_2X = "CSMSRootCertificate"


# -- CertID hash data ----------------------------------------------------------------------

def _read_der_length(data: bytes, offset: int) -> tuple[int, int]:
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    count = first & 0x7F
    return int.from_bytes(data[offset + 1:offset + 1 + count], "big"), offset + 1 + count


def public_key_bits(cert: x509.Certificate) -> bytes:
    """The subjectPublicKey BIT STRING's key bytes (what OCSP's issuerKeyHash hashes)."""
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    if spki[0] != 0x30:
        raise ValueError("SubjectPublicKeyInfo is not a DER SEQUENCE")
    _, offset = _read_der_length(spki, 1)
    if spki[offset] != 0x30:  # AlgorithmIdentifier
        raise ValueError("SubjectPublicKeyInfo lacks its AlgorithmIdentifier")
    length, start = _read_der_length(spki, offset + 1)
    offset = start + length
    if spki[offset] != 0x03:
        raise ValueError("SubjectPublicKeyInfo lacks its BIT STRING")
    length, start = _read_der_length(spki, offset + 1)
    return spki[start + 1:start + length]  # skip the unused-bits octet


def normalize_serial(serial: str) -> str:
    text = serial.strip().lower().removeprefix("0x").lstrip("0")
    return text or "0"


def cert_hash_data(cert: x509.Certificate, issuer: x509.Certificate,
                   algorithm: str = "SHA256") -> HashData:
    """(algorithm, issuerNameHash, issuerKeyHash, serialNumber) for `cert`, lowercase hex."""
    digest = HASH_ALGORITHMS[algorithm]
    name_hash = digest(cert.issuer.public_bytes()).hexdigest()
    key_hash = digest(public_key_bits(issuer)).hexdigest()
    return algorithm, name_hash, key_hash, normalize_serial(f"{cert.serial_number:x}")


def hash_data_json(data: HashData) -> dict[str, str]:
    """As OCPP carries it (the library turns snake_case keys into camelCase)."""
    return {"hash_algorithm": data[0], "issuer_name_hash": data[1], "issuer_key_hash": data[2],
            "serial_number": data[3]}


def parse_hash_data(item: dict[str, Any]) -> HashData | None:
    """A reported CertificateHashData (snake_case keys, as the library hands it over)."""
    try:
        algorithm = str(item["hash_algorithm"]).upper()
        return (algorithm, str(item["issuer_name_hash"]).lower(), str(item["issuer_key_hash"]).lower(),
                normalize_serial(str(item["serial_number"])))
    except (KeyError, TypeError):
        return None


def _issuer_of(cert: CaCert, pool: Sequence[CaCert]) -> CaCert | None:
    if cert.self_signed:
        return cert
    for candidate in pool:
        if candidate.subject == cert.issuer and issued_by(cert, candidate):
            return candidate
    return None


def hash_index(known: Iterable[CaCert],
               algorithms: Iterable[str] = tuple(HASH_ALGORITHMS)) -> dict[HashData, str]:
    """Hash data -> fingerprint for every known certificate whose issuer is known too."""
    certs = list(known)
    index: dict[HashData, str] = {}
    for cert in certs:
        issuer = _issuer_of(cert, certs)
        if issuer is None:
            continue
        for algorithm in algorithms:
            index[cert_hash_data(cert.cert, issuer.cert, algorithm)] = cert.fingerprint
    return index


def match_installed(reported: Iterable[HashData], index: dict[HashData, str]) -> tuple[set[str], int]:
    """(fingerprints of known certificates held, count of installed ones certd does not know)."""
    held: set[str] = set()
    unknown = 0
    for data in set(reported):
        fingerprint = index.get(data)
        if fingerprint is None:
            unknown += 1
        else:
            held.add(fingerprint)
    return held, unknown


# -- requests ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    outcome: Outcome
    detail: str | None = None
    value: Any = None

    @property
    def ok(self) -> bool:
        return self.outcome == "Accepted"


@dataclass(frozen=True)
class ChargerFacts:
    """What a charger says about its certificate store (None: it did not say)."""

    store_max: int | None = None
    store_used: int | None = None
    additional_root_check: bool | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Installed:
    reply: Reply
    hash_data: tuple[HashData, ...] = field(default_factory=tuple)


def _modules(version: str) -> Any:
    if version == "ocpp1.6":
        from ocpp.v16 import call
    elif version == "ocpp2.0.1":
        from ocpp.v201 import call  # type: ignore[no-redef]
    elif version == "ocpp2.1":
        from ocpp.v21 import call  # type: ignore[no-redef]
    else:
        raise ValueError(f"unknown OCPP version {version!r}")
    return call


def _to_bool(value: Any) -> bool | None:
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    return None


def _to_int(value: Any) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


class Provisioner:
    """Sends certificate requests to chargers connected to an `OcppService`."""

    def __init__(self, service: "OcppService", timeout: float) -> None:
        self.service = service
        self.timeout = timeout

    async def request(self, charger_id: str, payload: Any) -> Reply:
        """One request; CallErrors, timeouts and lost connections become a `Reply`."""
        from ocpp import exceptions as ocpp_errors
        from websockets.exceptions import ConnectionClosed

        action = type(payload).__name__
        try:
            value = await self.service.call(charger_id, payload, self.timeout)
        except (ocpp_errors.NotImplementedError, ocpp_errors.NotSupportedError) as exc:
            return Reply("NotSupported", f"{action}: {type(exc).__name__} ({exc.description})")
        except ocpp_errors.OCPPError as exc:
            return Reply("error", f"{action}: {type(exc).__name__} ({exc.description})")
        except (TimeoutError, asyncio.TimeoutError):
            return Reply("timeout", f"{action}: no answer within {self.timeout:.0f}s")
        except (ConnectionClosed, LookupError, RuntimeError, OSError) as exc:
            return Reply("offline", f"{action}: {exc}")
        return Reply("Accepted", None, value)

    def _version(self, charger_id: str) -> str | None:
        session = self.service.charger(charger_id)
        return session.version if session is not None else None

    async def install(self, charger_id: str, pem: str) -> Reply:
        """InstallCertificate of one root PEM; outcome Accepted / Rejected / Failed / ..."""
        version = self._version(charger_id)
        if version is None:
            return Reply("offline", "InstallCertificate: not connected")
        call = _modules(version)
        root_type = ROOT_TYPE_16 if version == "ocpp1.6" else ROOT_TYPE_2X
        reply = await self.request(charger_id, call.InstallCertificate(certificate_type=root_type,
                                                                       certificate=pem))
        if reply.outcome != "Accepted":
            return reply
        status = str(getattr(reply.value, "status", ""))
        info = getattr(reply.value, "status_info", None)
        detail = None
        if isinstance(info, dict):
            detail = " ".join(str(info.get(k)) for k in ("reason_code", "additional_info") if info.get(k))
        if status == "Accepted":
            return Reply("Accepted", detail)
        if status in ("Rejected", "Failed"):
            return Reply(status, detail or f"the charger answered {status}")  # type: ignore[arg-type]
        return Reply("error", f"InstallCertificate: unexpected status {status!r}")

    async def installed(self, charger_id: str) -> Installed:
        """GetInstalledCertificateIds for CSMS roots; NotFound is an empty, accepted answer."""
        version = self._version(charger_id)
        if version is None:
            return Installed(Reply("offline", "GetInstalledCertificateIds: not connected"))
        call = _modules(version)
        if version == "ocpp1.6":
            payload = call.GetInstalledCertificateIds(certificate_type=ROOT_TYPE_16)
        else:
            payload = call.GetInstalledCertificateIds(certificate_type=[ROOT_TYPE_2X])
        reply = await self.request(charger_id, payload)
        if not reply.ok:
            return Installed(reply)
        status = str(getattr(reply.value, "status", ""))
        if status == "NotFound":
            return Installed(Reply("Accepted", "none installed"), ())
        if status != "Accepted":
            return Installed(Reply("error", f"GetInstalledCertificateIds: status {status!r}"))
        items: list[Any]
        if version == "ocpp1.6":
            items = list(getattr(reply.value, "certificate_hash_data", None) or [])
        else:
            chains = getattr(reply.value, "certificate_hash_data_chain", None) or []
            items = [c.get("certificate_hash_data") for c in chains if isinstance(c, dict)]
        parsed = [parse_hash_data(i) for i in items if isinstance(i, dict)]
        return Installed(reply, tuple(p for p in parsed if p is not None))

    async def facts(self, charger_id: str) -> ChargerFacts:
        """Store limit, count and the cross-sign rule, when the charger tells them."""
        version = self._version(charger_id)
        if version is None:
            return ChargerFacts(notes=("not connected",))
        if version == "ocpp1.6":
            return await self._facts_16(charger_id)
        return await self._facts_2x(charger_id, version)

    async def _facts_16(self, charger_id: str) -> ChargerFacts:
        from ocpp.v16 import call

        reply = await self.request(charger_id, call.GetConfiguration(
            key=["CertificateStoreMaxLength", "AdditionalRootCertificateCheck"]))
        if not reply.ok:
            return ChargerFacts(notes=(f"GetConfiguration: {reply.outcome} {reply.detail or ''}".strip(),))
        values = {str(item.get("key")): item.get("value")
                  for item in (getattr(reply.value, "configuration_key", None) or [])
                  if isinstance(item, dict)}
        return ChargerFacts(store_max=_to_int(values.get("CertificateStoreMaxLength")),
                            additional_root_check=_to_bool(values.get("AdditionalRootCertificateCheck")))

    async def _facts_2x(self, charger_id: str, version: str) -> ChargerFacts:
        call = _modules(version)
        security = {"name": "SecurityCtrlr"}
        # The store's maximum is a variable characteristic (maxLimit), which only GetReport's
        # NotifyReport carries; GetVariables gives the count. A full store then shows up as the
        # charger's Rejected answer to InstallCertificate.
        wanted = [
            {"component": security, "variable": {"name": "CertificateEntries"}, "attribute_type": "Actual"},
            {"component": security, "variable": {"name": "AdditionalRootCertificateCheck"},
             "attribute_type": "Actual"},
        ]
        reply = await self.request(charger_id, call.GetVariables(get_variable_data=wanted))
        if not reply.ok:
            return ChargerFacts(notes=(f"GetVariables: {reply.outcome} {reply.detail or ''}".strip(),))
        found: dict[tuple[str, str], Any] = {}
        for item in getattr(reply.value, "get_variable_result", None) or []:
            if not isinstance(item, dict) or item.get("attribute_status") != "Accepted":
                continue
            name = str((item.get("variable") or {}).get("name"))
            found[(name, str(item.get("attribute_type") or "Actual"))] = item.get("attribute_value")
        return ChargerFacts(
            store_used=_to_int(found.get(("CertificateEntries", "Actual"))),
            additional_root_check=_to_bool(found.get(("AdditionalRootCertificateCheck", "Actual"))),
        )
