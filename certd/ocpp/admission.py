"""Who may open an OCPP connection (pure): registry row + policy + offered credentials -> verdict.

| registry row            | reject policy | register / accept policy            |
|-------------------------|---------------|-------------------------------------|
| none                    | refuse        | register (row pending / accepted)   |
| disabled                | refuse        | refuse                              |
| has a password hash     | check it      | check it                            |
| no password hash        | refuse        | admit (an offered password is kept) |

Under register/accept the first password a charger presents is stored (trust
on first use), so a later impostor with the same id must know it. A registered
charger is admitted at once; its row is written in the next batch
(certd/ocpp/first_contact.py), and until then the registrar's pending record
stands in for it here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from certd.ocpp.charger_registry import REGISTRATION_ACCEPTED, REGISTRATION_PENDING, ChargerRecord

Policy = Literal["reject", "register", "accept"]


@dataclass(frozen=True)
class Refuse:
    reason: str  # for the audit log only; the client sees a bare 401


@dataclass(frozen=True)
class CheckPassword:
    password_hash: str


@dataclass(frozen=True)
class Admit:
    store_offered_password: bool


@dataclass(frozen=True)
class Register:
    registration: str  # pending | accepted


Verdict = Refuse | CheckPassword | Admit | Register


def decide(record: ChargerRecord | None, policy: Policy, password_offered: bool) -> Verdict:
    if record is None:
        if policy == "reject":
            return Refuse("unknown charger")
        return Register(REGISTRATION_PENDING if policy == "register" else REGISTRATION_ACCEPTED)
    if not record.enabled:
        return Refuse("charger disabled")
    if record.password_hash:
        if not password_offered:
            return Refuse("no credentials")
        return CheckPassword(record.password_hash)
    if policy == "reject":
        return Refuse("charger has no password set")
    return Admit(store_offered_password=password_offered)
