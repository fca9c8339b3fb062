"""Trust rollover decisions: pure functions of certificates, charger facts and a clock.

A listener switches to a certificate whose chain ends at a root the fleet
does not hold only when enough chargers confirmed that root, or when the
previous certificate is about to run out. Everything here is decided from
data the caller loaded; the engine's modules (`evaluate`, `charger_store`, `attempt`) do the I/O.

A root is known by its *identity* (subject + public key): the self-signed form
and a cross-signed form (same subject and key, signed by an older root) are the
same anchor for a charger. OCPP's `AdditionalRootCertificateCheck` makes a
charger accept a new root only when the key of a root it holds signed it, so
such chargers are sent the cross-signed form, and nothing when there is none.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

# What a gated listener serves lives below the OCPP service (`certd.serve`); re-exported here.
from certd.serve.gate_choice import deadline_for, served_choice  # noqa: F401
from certd.trust.certs import CaCert, issued_by

# InstallCertificate takes one PEM of at most this many characters (OCPP 1.6 security
# extension and 2.0.1 schemas).
MAX_PEM_CHARS = 5500

ProblemCode = Literal["needs-cross-sign", "store-full", "too-large"]
Bucket = Literal["confirmed", "pending", "failed", "offline"]


@dataclass(frozen=True, order=True)
class Identity:
    """A root as chargers trust it: subject name and public key (any signature)."""

    subject: str
    spki_sha256: str

    def to_json(self) -> dict[str, str]:
        return {"subject": self.subject, "spki_sha256": self.spki_sha256}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "Identity":
        return cls(data["subject"], data["spki_sha256"])


def identity_of(cert: CaCert) -> Identity:
    return Identity(cert.subject, cert.spki_sha256)


def identities(certs: Iterable[CaCert]) -> frozenset[Identity]:
    return frozenset(identity_of(c) for c in certs)


# -- what a new issuance needs ------------------------------------------------------------

@dataclass(frozen=True)
class NewIssuance:
    """What to do when a listener's certificate name got a newer issuance."""

    action: Literal["release", "hold", "block"]  # serve it now / wait for chargers / wait, roots unknown
    reason: str
    required: frozenset[Identity] = frozenset()
    deadline_at: dt.datetime | None = None


def on_new_issuance(
    *, served_id: int | None, served_not_after: dt.datetime | None,
    pending_roots: frozenset[Identity] | None, served_roots: frozenset[Identity] | None,
    deadline_days: float, now: dt.datetime, unresolved: str | None = None,
) -> NewIssuance:
    """Decide for a newer issuance: switch at once, or hold it back behind the gate.

    `pending_roots` None means the new chain's roots could not be worked out
    (`unresolved` says why); `served_roots` None means the served one's are unknown,
    so every root of the new chain counts as new.
    """
    if served_id is None or served_not_after is None:
        return NewIssuance("release", "nothing was served before")
    if served_not_after <= now:
        return NewIssuance("release", "the previously served certificate has expired")
    deadline = deadline_for(served_not_after, deadline_days)
    if pending_roots is None:
        return NewIssuance("block", f"the new chain's roots are unknown: {unresolved or 'no chain recorded'}",
                           deadline_at=deadline)
    new = pending_roots - (served_roots or frozenset())
    if not new:
        return NewIssuance("release", "no new roots: the chain ends at roots already served")
    names = ", ".join(sorted(i.subject for i in new))
    return NewIssuance("hold", f"chargers must first hold {names}", new, deadline)


# -- what to send one charger ------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    identity: Identity
    code: ProblemCode
    reason: str


@dataclass(frozen=True)
class InstallPlan:
    send: tuple[CaCert, ...] = ()
    problems: tuple[Problem, ...] = ()
    # Roots the charger lacks (whether or not they can be sent).
    lacking: tuple[Identity, ...] = ()


def target_for(members: Sequence[CaCert], priority: frozenset[Identity],
               additional_root_check: bool | None) -> list[CaCert]:
    """The certificates a charger should hold.

    Normally every member of the listener's bundle version. A charger with
    AdditionalRootCertificateCheck keeps one CSMS root (plus the previous one as
    fallback), so it is given only the priority roots (the ones the listener
    needs now).
    """
    if additional_root_check:
        chosen = [m for m in members if identity_of(m) in priority]
        return chosen
    return list(members)


def needed_roots(members: Sequence[CaCert], priority: frozenset[Identity]) -> frozenset[Identity]:
    """The priority roots every charger of a listener must hold: those in the bundle version.

    A charger with AdditionalRootCertificateCheck is given only these, so its
    bundle version number alone does not say whether it holds them: a new
    issuance can change the priority roots without changing the bundle version.
    """
    return identities(target_for(members, priority, True))


def plan_covered(confirmed_bundles: Mapping[str, int], held: frozenset[Identity],
                 targets: Mapping[str, int], needed: frozenset[Identity]) -> bool:
    """Whether a charger's confirmed state is current: every bundle at its latest version
    and the listener's needed priority roots among the roots it last reported holding."""
    return all(confirmed_bundles.get(b) == seq for b, seq in targets.items()) and needed <= held


def _cross_signed_form(identity: Identity, held: Sequence[CaCert],
                       known: Sequence[CaCert]) -> CaCert | None:
    """A form of `identity` signed by the key of a root the charger holds."""
    for form in sorted(known, key=lambda c: c.fingerprint):
        if identity_of(form) != identity or form.self_signed:
            continue
        if any(issued_by(form, h) for h in held):
            return form
    return None


def plan_installs(
    target: Sequence[CaCert], held: Sequence[CaCert], known: Sequence[CaCert], *,
    priority: frozenset[Identity] = frozenset(), additional_root_check: bool | None = None,
    store_max: int | None = None, store_used: int | None = None,
) -> InstallPlan:
    """Which PEMs to send a charger, most needed first, and what cannot be sent and why.

    `held` are the known certificates the charger reported; `known` every CA
    certificate certd knows (for cross-signed forms); `store_used` the number of
    certificates installed (default: len(held)); `store_max` its limit.
    """
    held_ids = identities(held)
    seen: set[Identity] = set()
    lacking: list[CaCert] = []
    for cert in target:
        ident = identity_of(cert)
        if ident in held_ids or ident in seen:
            continue
        seen.add(ident)
        lacking.append(cert)
    lacking.sort(key=lambda c: (identity_of(c) not in priority, c.subject, c.fingerprint))

    send: list[CaCert] = []
    problems: list[Problem] = []
    for cert in lacking:
        ident = identity_of(cert)
        form: CaCert | None = cert
        if additional_root_check:
            form = _cross_signed_form(ident, held, known)
            if form is None:
                holds = ", ".join(sorted(h.subject for h in held)) or "no known root"
                problems.append(Problem(ident, "needs-cross-sign", (
                    f"AdditionalRootCertificateCheck is on: the charger accepts {cert.subject} only "
                    f"when signed by the key of a root it holds ({holds}), and no chain offers such "
                    "a cross-signed form")))
                continue
        if len(form.pem) > MAX_PEM_CHARS:
            problems.append(Problem(ident, "too-large", (
                f"{form.subject} is {len(form.pem)} PEM characters; InstallCertificate takes at "
                f"most {MAX_PEM_CHARS}")))
            continue
        send.append(form)

    if store_max is not None and not additional_root_check:
        used = len(held) if store_used is None else store_used
        free = max(0, store_max - used)
        for form in send[free:]:
            problems.append(Problem(identity_of(form), "store-full", (
                f"certificate store full: the charger holds {used} of at most {store_max} "
                f"certificates, so {form.subject} does not fit; delete an unused root on the "
                "charger (DeleteCertificate) or install it by hand")))
        send = send[:free]
    return InstallPlan(tuple(send), tuple(problems), tuple(identity_of(c) for c in lacking))


# -- the gate ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ChargerView:
    """One registered charger as the gate and `certd fleet status` see it."""

    charger_id: str
    enabled: bool = True
    online: bool = False
    held: frozenset[Identity] = frozenset()
    state: str | None = None  # confirmed | pending | failed | None (never looked at)
    last_result: str | None = None
    last_reason: str | None = None
    last_seen: dt.datetime | None = None
    gsm: bool = False


@dataclass(frozen=True)
class Lacking:
    charger_id: str
    reason: str


@dataclass(frozen=True)
class GateDecision:
    switch: bool
    forced: bool
    reason: str
    total: int
    needed: int
    confirmed: tuple[str, ...] = ()
    lacking: tuple[Lacking, ...] = field(default_factory=tuple)


def needed_count(total: int, gate_share: float) -> int:
    """Chargers that must confirm for `gate_share` of `total` (1.0 = all, 0 = none)."""
    return min(total, max(0, math.ceil(gate_share * total - 1e-9)))


def lacking_reason(view: ChargerView, bundle: str | None = None) -> str:
    """Why a charger does not hold the roots yet, in words a person can act on."""
    if view.state == "failed" and view.last_result:
        text = f"{view.last_result}: {view.last_reason}" if view.last_reason else view.last_result
    elif not view.online:
        seen = f"last seen {view.last_seen:%Y-%m-%d %H:%M} UTC" if view.last_seen else "never connected"
        text = f"offline ({seen})"
    elif view.last_result and view.last_result != "Accepted":
        text = f"{view.last_result}: {view.last_reason}" if view.last_reason else view.last_result
    else:
        text = "not confirmed yet"
    if view.gsm and bundle:
        text += (f"; a GSM module can be given the roots by AT commands: "
                 f"certd bundle export {bundle} --format quectel")
    return text


def decide_gate(
    required: frozenset[Identity], chargers: Sequence[ChargerView], *, gate_share: float,
    deadline_at: dt.datetime | None, now: dt.datetime, bundle: str | None = None,
) -> GateDecision:
    """Switch when `gate_share` of the enabled chargers hold `required`, or at the deadline."""
    registered = [c for c in chargers if c.enabled]
    confirmed = tuple(sorted(c.charger_id for c in registered if required <= c.held))
    lacking = tuple(Lacking(c.charger_id, lacking_reason(c, bundle))
                    for c in sorted(registered, key=lambda c: c.charger_id)
                    if not required <= c.held)
    total, needed = len(registered), needed_count(len(registered), gate_share)
    count = f"{len(confirmed)}/{total} charger(s) hold the new roots (gate {gate_share:.0%})"
    if len(confirmed) >= needed:
        return GateDecision(True, False, count, total, needed, confirmed, lacking)
    if deadline_at is not None and now >= deadline_at:
        return GateDecision(True, True, f"deadline {deadline_at:%Y-%m-%d %H:%M} UTC reached; {count}",
                            total, needed, confirmed, lacking)
    return GateDecision(False, False, count, total, needed, confirmed, lacking)


def blocked_gate(reason: str, chargers: Sequence[ChargerView], *, deadline_at: dt.datetime | None,
                 now: dt.datetime, bundle: str | None = None) -> GateDecision:
    """A gate whose roots are unknown opens only at its deadline (every charger counts as lacking)."""
    registered = sorted((c for c in chargers if c.enabled), key=lambda c: c.charger_id)
    lacking = tuple(Lacking(c.charger_id, reason) for c in registered)
    if deadline_at is not None and now >= deadline_at:
        return GateDecision(True, True, f"deadline {deadline_at:%Y-%m-%d %H:%M} UTC reached; {reason}",
                            len(registered), len(registered), (), lacking)
    return GateDecision(False, False, reason, len(registered), len(registered), (), lacking)


# -- status --------------------------------------------------------------------------------

def bucket(view: ChargerView) -> Bucket:
    """confirmed / failed / pending (online, being worked on) / offline, one per charger."""
    if view.state == "confirmed":
        return "confirmed"
    if view.state == "failed":
        return "failed"
    return "pending" if view.online else "offline"
