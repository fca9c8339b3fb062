"""What the engine passes between the event loop and its worker threads: plain, frozen values.

A `ListenerPlan` is what a listener's chargers should hold (rebuilt by every gate
evaluation), `Confirmed` is a copy of what a charger's row says it holds, a
`ProvisionContext` is one charger's inputs read from the store, an `Attempt` is
how one provisioning attempt ended. None of them is changed after it is built, so
the loop and a worker thread may both hold one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from certd.ocpp.calls import HashData
from certd.rollover.gates import Identity
from certd.rollover.provision import ChargerFacts
from certd.trust.certs import CaCert


@dataclass(frozen=True)
class ListenerPlan:
    """What a listener's chargers should hold right now."""

    label: str
    gsm: bool
    targets: Mapping[str, int] = field(default_factory=dict)  # bundle -> latest version
    members: tuple[CaCert, ...] = ()
    priority: frozenset[Identity] = frozenset()
    # The priority roots in the bundle versions: a charger is current only when it holds them.
    needed: frozenset[Identity] = frozenset()

    def key(self) -> tuple[object, ...]:
        """What decides which chargers are due (a change means: look at them again)."""
        return (tuple(sorted(self.targets.items())), self.needed)


@dataclass(frozen=True)
class Confirmed:
    """A copy of what a charger's store row says it confirmed: bundle versions and held roots."""

    bundles: Mapping[str, int]
    roots: frozenset[Identity]


@dataclass(frozen=True)
class HashIndex:
    """CertID hash data -> fingerprint of every known certificate, and which certificates it covers."""

    key: tuple[str, ...] = ()  # sorted fingerprints
    index: Mapping[HashData, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProvisionContext:
    """One charger's provisioning inputs, read from the store in one go."""

    plan: ListenerPlan
    known: Mapping[str, CaCert]
    index: Mapping[HashData, str]
    facts: ChargerFacts | None  # None: ask the charger


@dataclass(frozen=True)
class Attempt:
    """How one provisioning attempt ended, as `charger_store.record_attempt` stores it."""

    outcome: str  # Accepted, or a RolloverCharger.last_result value
    reason: str | None
    sent: int = 0  # InstallCertificate requests sent
    held_fps: frozenset[str] | None = None  # None: GetInstalledCertificateIds did not answer
    held_ids: frozenset[Identity] = frozenset()
    unknown: int = 0  # installed CSMS roots certd does not know
    refused: bool = False  # some InstallCertificate was answered Rejected
