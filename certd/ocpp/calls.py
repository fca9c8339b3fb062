"""Outgoing OCPP requests: one builder per message, for every protocol version certd speaks.

Incoming messages are answered in one place each (the `@on` handlers of `v16.py` and
`v201.py`); outgoing ones are built here, so no caller picks `ocpp.v16.call` or
`ocpp.v201.call` itself. A builder takes the charger's negotiated version
(`ChargerSession.version`) and returns a `Request`: the library's payload for that
version, and `read`, which turns the library's answer (a call_result, snake_case keys)
into a version-neutral value. Sending and classifying errors is the caller's part
(`certd.rollover.provision.Provisioner`).

| message                        | 1.6 (security extension)          | 2.0.1 / 2.1                        |
|--------------------------------|-----------------------------------|------------------------------------|
| InstallCertificate             | CentralSystemRootCertificate      | CSMSRootCertificate                |
| GetInstalledCertificateIds     | one type, flat hash data list     | list of types, hash data chains    |
| GetConfiguration               | configuration keys                | (none: GetVariables)               |
| GetVariables                   | (none: GetConfiguration)          | component / variable / attribute   |
| SetVariables                   | (none: ChangeConfiguration)       | component / variable / value       |
| ChangeConfiguration            | key / value                       | (none: SetVariables)               |
| CertificateSigned              | certificateChain                  | + certificateType                  |
| trigger a CSR                  | ExtendedTriggerMessage            | TriggerMessage                     |
|                                | SignChargePointCertificate        | SignChargingStationCertificate     |
| SetNetworkProfile              | (none: ChangeConfiguration)       | slot + connection data             |
| trigger a BootNotification     | TriggerMessage BootNotification   | TriggerMessage BootNotification    |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

V16 = "ocpp1.6"
V201 = "ocpp2.0.1"
V21 = "ocpp2.1"

ROOT_TYPE_16 = "CentralSystemRootCertificate"
ROOT_TYPE_2X = "CSMSRootCertificate"

HashData = tuple[str, str, str, str]  # (algorithm, issuerNameHash, issuerKeyHash, serialNumber)
T = TypeVar("T")


@dataclass(frozen=True)
class Request(Generic[T]):
    """One outgoing message: what to send, and how to read the charger's answer."""

    payload: Any  # an ocpp.v16.call / ocpp.v201.call / ocpp.v21.call dataclass
    read: Callable[[Any], T]

    @property
    def action(self) -> str:
        return type(self.payload).__name__


def call_module(version: str) -> Any:
    """The ocpp library's `call` module for a negotiated version."""
    if version == V16:
        from ocpp.v16 import call
    elif version == V201:
        from ocpp.v201 import call  # type: ignore[no-redef]
    elif version == V21:
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


# -- InstallCertificate ------------------------------------------------------------------------

@dataclass(frozen=True)
class InstallAnswer:
    status: str  # Accepted / Rejected / Failed, or whatever the charger said
    detail: str | None  # statusInfo (2.x): reason code and additional info


def _read_install(value: Any) -> InstallAnswer:
    info = getattr(value, "status_info", None)
    detail = None
    if isinstance(info, dict):
        detail = " ".join(str(info.get(k)) for k in ("reason_code", "additional_info") if info.get(k))
    return InstallAnswer(str(getattr(value, "status", "")), detail)


def install_certificate(version: str, pem: str) -> Request[InstallAnswer]:
    """Install one CSMS root (PEM)."""
    root_type = ROOT_TYPE_16 if version == V16 else ROOT_TYPE_2X
    return Request(call_module(version).InstallCertificate(certificate_type=root_type, certificate=pem),
                   _read_install)


# -- GetInstalledCertificateIds ----------------------------------------------------------------

def normalize_serial(serial: str) -> str:
    text = serial.strip().lower().removeprefix("0x").lstrip("0")
    return text or "0"


def parse_hash_data(item: dict[str, Any]) -> HashData | None:
    """A reported CertificateHashData (snake_case keys, as the library hands it over)."""
    try:
        algorithm = str(item["hash_algorithm"]).upper()
        return (algorithm, str(item["issuer_name_hash"]).lower(), str(item["issuer_key_hash"]).lower(),
                normalize_serial(str(item["serial_number"])))
    except (KeyError, TypeError):
        return None


def hash_data_json(data: HashData) -> dict[str, str]:
    """As OCPP carries it (the library turns snake_case keys into camelCase)."""
    return {"hash_algorithm": data[0], "issuer_name_hash": data[1], "issuer_key_hash": data[2],
            "serial_number": data[3]}


@dataclass(frozen=True)
class InstalledIds:
    status: str  # Accepted / NotFound, or whatever the charger said
    hash_data: tuple[HashData, ...]  # malformed entries left out


def _parse_items(items: Sequence[Any]) -> tuple[HashData, ...]:
    parsed = [parse_hash_data(i) for i in items if isinstance(i, dict)]
    return tuple(p for p in parsed if p is not None)


def _read_ids_16(value: Any) -> InstalledIds:
    items = list(getattr(value, "certificate_hash_data", None) or [])
    return InstalledIds(str(getattr(value, "status", "")), _parse_items(items))


def _read_ids_2x(value: Any) -> InstalledIds:
    chains = getattr(value, "certificate_hash_data_chain", None) or []
    items = [c.get("certificate_hash_data") for c in chains if isinstance(c, dict)]
    return InstalledIds(str(getattr(value, "status", "")), _parse_items(items))


def get_installed_certificate_ids(version: str) -> Request[InstalledIds]:
    """The CSMS roots the charger holds, as CertID hash data."""
    call = call_module(version)
    if version == V16:
        return Request(call.GetInstalledCertificateIds(certificate_type=ROOT_TYPE_16), _read_ids_16)
    return Request(call.GetInstalledCertificateIds(certificate_type=[ROOT_TYPE_2X]), _read_ids_2x)


# -- GetConfiguration (1.6) / GetVariables (2.x) -----------------------------------------------

def _read_configuration(value: Any) -> dict[str, Any]:
    return {str(item.get("key")): item.get("value")
            for item in (getattr(value, "configuration_key", None) or []) if isinstance(item, dict)}


def get_configuration(version: str, keys: Sequence[str]) -> Request[dict[str, Any]]:
    """Configuration key -> value for the keys the charger knows (OCPP 1.6 only)."""
    if version != V16:
        raise ValueError(f"GetConfiguration is an OCPP 1.6 message, not {version}")
    return Request(call_module(version).GetConfiguration(key=list(keys)), _read_configuration)


@dataclass(frozen=True, order=True)
class Variable:
    """A device-model variable (OCPP 2.x): component name, variable name, attribute type."""

    component: str
    name: str
    attribute_type: str = "Actual"


def _read_variables(value: Any) -> dict[Variable, Any]:
    found: dict[Variable, Any] = {}
    for item in getattr(value, "get_variable_result", None) or []:
        if not isinstance(item, dict) or item.get("attribute_status") != "Accepted":
            continue
        component = str((item.get("component") or {}).get("name"))
        name = str((item.get("variable") or {}).get("name"))
        found[Variable(component, name, str(item.get("attribute_type") or "Actual"))] = item.get("attribute_value")
    return found


def get_variables(version: str, wanted: Sequence[Variable]) -> Request[dict[Variable, Any]]:
    """Variable -> value for the variables the charger answered Accepted (OCPP 2.0.1 / 2.1)."""
    if version == V16:
        raise ValueError("GetVariables is an OCPP 2.x message; 1.6 has GetConfiguration")
    data = [{"component": {"name": v.component}, "variable": {"name": v.name},
             "attribute_type": v.attribute_type} for v in wanted]
    return Request(call_module(version).GetVariables(get_variable_data=data), _read_variables)


# -- the certificate store's limits, whichever message the version reads them with ------------

@dataclass(frozen=True)
class StoreSettings:
    """What a charger says about its certificate store (None: it did not say)."""

    store_max: int | None = None
    store_used: int | None = None
    additional_root_check: bool | None = None


STORE_MAX_16 = "CertificateStoreMaxLength"
ROOT_CHECK_16 = "AdditionalRootCertificateCheck"
# The store's maximum is a variable characteristic (maxLimit), which only GetReport's
# NotifyReport carries; GetVariables gives the count. A full store then shows up as the
# charger's Rejected answer to InstallCertificate.
ENTRIES_2X = Variable("SecurityCtrlr", "CertificateEntries")
ROOT_CHECK_2X = Variable("SecurityCtrlr", "AdditionalRootCertificateCheck")


def _settings_16(values: Mapping[str, Any]) -> StoreSettings:
    return StoreSettings(store_max=_to_int(values.get(STORE_MAX_16)),
                         additional_root_check=_to_bool(values.get(ROOT_CHECK_16)))


def _settings_2x(values: Mapping[Variable, Any]) -> StoreSettings:
    return StoreSettings(store_used=_to_int(values.get(ENTRIES_2X)),
                         additional_root_check=_to_bool(values.get(ROOT_CHECK_2X)))


def certificate_store_settings(version: str) -> Request[StoreSettings]:
    """Store limit / count and the cross-sign rule: GetConfiguration on 1.6, GetVariables on 2.x."""
    if version == V16:
        request16 = get_configuration(version, [STORE_MAX_16, ROOT_CHECK_16])
        return Request(request16.payload, lambda value: _settings_16(request16.read(value)))
    request2x = get_variables(version, [ENTRIES_2X, ROOT_CHECK_2X])
    return Request(request2x.payload, lambda value: _settings_2x(request2x.read(value)))


# -- charger certificates: CertificateSigned, the CSR trigger, the move to profile 3 ------------

# An answer that is a status and, on 2.x, an optional statusInfo (same shape as InstallCertificate's).
StatusAnswer = InstallAnswer

CHARGING_STATION_CERTIFICATE = "ChargingStationCertificate"


def certificate_signed(version: str, chain_pem: str) -> Request[StatusAnswer]:
    """The signed charger certificate, leaf first, then the CA certificates above it."""
    call = call_module(version)
    if version == V16:
        return Request(call.CertificateSigned(certificate_chain=chain_pem), _read_install)
    return Request(call.CertificateSigned(certificate_chain=chain_pem,
                                          certificate_type=CHARGING_STATION_CERTIFICATE), _read_install)


def trigger_certificate_request(version: str) -> Request[StatusAnswer]:
    """Ask the charger for a new key and CSR (it answers with SignCertificate)."""
    call = call_module(version)
    if version == V16:
        return Request(call.ExtendedTriggerMessage(requested_message="SignChargePointCertificate"),
                       _read_install)
    return Request(call.TriggerMessage(requested_message="SignChargingStationCertificate"), _read_install)


def trigger_boot_notification(version: str) -> Request[StatusAnswer]:
    """Ask a charger to send BootNotification now (allowed while it is Pending, in 1.6 and 2.x)."""
    return Request(call_module(version).TriggerMessage(requested_message="BootNotification"), _read_install)


def change_configuration(version: str, key: str, value: str) -> Request[StatusAnswer]:
    """OCPP 1.6 ChangeConfiguration (Accepted / Rejected / RebootRequired / NotSupported)."""
    if version != V16:
        raise ValueError(f"ChangeConfiguration is an OCPP 1.6 message, not {version}")
    return Request(call_module(version).ChangeConfiguration(key=key, value=value), _read_install)


NETWORK_PRIORITY_2X = Variable("OCPPCommCtrlr", "NetworkConfigurationPriority")


def set_network_profile(version: str, slot: int, csms_url: str, security_profile: int,
                        interface: str, message_timeout: int) -> Request[StatusAnswer]:
    """OCPP 2.x SetNetworkProfile: a connection profile in `slot` (JSON over `csms_url`)."""
    if version == V16:
        raise ValueError("SetNetworkProfile is an OCPP 2.x message; 1.6 has ChangeConfiguration")
    data: dict[str, Any] = {"ocpp_transport": "JSON", "ocpp_csms_url": csms_url,
                            "message_timeout": message_timeout, "security_profile": security_profile,
                            "ocpp_interface": interface}
    data["ocpp_version"] = "OCPP20" if version == V201 else "OCPP21"
    return Request(call_module(version).SetNetworkProfile(configuration_slot=slot, connection_data=data),
                   _read_install)


def _read_set_variables(value: Any) -> dict[Variable, str]:
    found: dict[Variable, str] = {}
    for item in getattr(value, "set_variable_result", None) or []:
        if isinstance(item, dict):
            variable = Variable(str((item.get("component") or {}).get("name")),
                                str((item.get("variable") or {}).get("name")),
                                str(item.get("attribute_type") or "Actual"))
            found[variable] = str(item.get("attribute_status"))
    return found


def set_variables(version: str, values: Mapping[Variable, str]) -> Request[dict[Variable, str]]:
    """Variable -> the charger's status for it (Accepted / Rejected / RebootRequired / ...)."""
    if version == V16:
        raise ValueError("SetVariables is an OCPP 2.x message; 1.6 has ChangeConfiguration")
    data = [{"component": {"name": v.component}, "variable": {"name": v.name},
             "attribute_type": v.attribute_type, "attribute_value": value} for v, value in values.items()]
    return Request(call_module(version).SetVariables(set_variable_data=data), _read_set_variables)
