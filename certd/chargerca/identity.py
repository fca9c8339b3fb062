"""Whether a client certificate admits a charger to a profile-3 listener (pure).

OpenSSL has already verified the chain against the charger CA and the listener's
manufacturer CAs, and the validity dates (an expired or foreign certificate never gets
this far). Then, per OCPP A00.FR.404/405/407:

| certificate                               | verdict                                          |
|-------------------------------------------|--------------------------------------------------|
| CN is not the charger id of the path      | refuse                                           |
| issued by certd, not in the store         | refuse (certd keeps every certificate it issued) |
| issued by certd for another charger       | refuse                                           |
| issued by certd: revoked / rejected        | refuse                                           |
| issued by certd: issued / active / superseded and unexpired | admit (first use of `issued`: it becomes active) |
| from a manufacturer CA                    | admit (and renew: A00.FR.406); an unknown charger follows `unknown_chargers` |
| charger removed (certd's certificate) or disabled | refuse                                  |

No password is asked for on profile 3. A charger pending approval is admitted; its
BootNotification is answered Pending, as on profile 2.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from certd.chargerca.csr import Standing, looks_like_address
from certd.store.charger_ca import CERT_ACTIVE, CERT_ISSUED, CERT_SUPERSEDED

# What a charger's password hash becomes once it connected with its certificate: no argon2
# hash, so no password verifies against it (`certd chargers set-password` replaces it).
RETIRED_PASSWORD_HASH = "!retired: the charger authenticates with its client certificate"


@dataclass(frozen=True)
class PeerCertificate:
    """The client certificate the TLS handshake verified (its leaf)."""

    common_name: str | None
    serial: str  # hex
    fingerprint: str  # sha256 hex of the DER
    not_after: dt.datetime
    issued_by_certd: bool  # signed by one of certd's charger CA certificates


@dataclass(frozen=True)
class StoredCertificate:
    charger_id: str
    state: str
    not_after: dt.datetime


@dataclass(frozen=True)
class Admit:
    kind: Literal["certd", "manufacturer"]
    first_use: bool  # certd's certificate was still `issued`: make it the active one


@dataclass(frozen=True)
class Register:
    registration: str  # pending | accepted: an unknown charger with a manufacturer certificate


@dataclass(frozen=True)
class Refuse:
    reason: str  # for the audit log; the client sees a bare 403


Verdict = Admit | Register | Refuse
USABLE = (CERT_ISSUED, CERT_ACTIVE, CERT_SUPERSEDED)


def decide(charger_id: str, peer: PeerCertificate | None, stored: StoredCertificate | None,
           standing: Standing | None, unknown_chargers: str, now: dt.datetime) -> Verdict:
    if peer is None:
        return Refuse("no client certificate")
    if peer.common_name != charger_id:
        shown = repr(peer.common_name[:64]) if peer.common_name is not None else "no CN"
        return Refuse(f"the certificate names {shown}, not the charger of the path")
    if looks_like_address(peer.common_name):
        return Refuse("the certificate CN looks like an address")
    if now >= peer.not_after:
        return Refuse("the certificate expired")
    if peer.issued_by_certd:
        if stored is None:
            return Refuse(f"certificate serial {peer.serial} is not one certd issued")
        if stored.charger_id != charger_id:
            return Refuse(f"certificate serial {peer.serial} was issued to another charger")
        if stored.state not in USABLE:
            return Refuse(f"certificate serial {peer.serial} is {stored.state}")
        if standing is None:
            return Refuse("the charger was removed from the registry")
        if not standing.enabled:
            return Refuse("charger disabled")
        return Admit("certd", first_use=stored.state == CERT_ISSUED)
    if standing is None:
        if unknown_chargers == "reject":
            return Refuse("unknown charger")
        return Register("pending" if unknown_chargers == "register" else "accepted")
    if not standing.enabled:
        return Refuse("charger disabled")
    return Admit("manufacturer", first_use=False)
