"""Push targets: how one kind of fleet registry receives a bundle version.

The outbox (`certd.trust.outbox`) owns everything that is the same for every kind:
the queue kept in the store, leases, backoff, the attempt log. A target only
delivers one message and says what became of it: `accepted` (done, never sent
again), `retry` (send the same message again after the backoff; a `retry_after`
hint can lengthen it) or `rejected` (kept until `certd fleet push --retry`).
A target never raises for a failed send; if it does anyway the outbox records a retry.

`kind` in `[[trust.registries]]` picks the target: `certd.config.trust.REGISTRY_KINDS`
maps it to its config model and its target factory ("module:attribute"), resolved here.
Adding a kind is one module (the target), one config model and one line in that table.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from certd.config.trust import REGISTRY_KINDS, RegistryConfig

ACCEPTED, RETRY, REJECTED = "accepted", "retry", "rejected"
OUTCOMES = (ACCEPTED, RETRY, REJECTED)


@dataclass(frozen=True)
class PushMessage:
    """One delivery as the outbox hands it over: the exact body, the same on every attempt.

    A registry that already accepted `idempotency_key` should drop a repeat (after a crash
    between send and record the outbox sends the same message again).
    """

    registry: str
    idempotency_key: str
    body: bytes


@dataclass(frozen=True)
class PushOutcome:
    """What became of one send: `outcome` is accepted, retry or rejected.

    `status` is the registry's numeric answer if it gave one (an HTTP status for `http`),
    `detail` its text or why nothing was sent (never a secret), `retry_after` seconds the
    registry asked to wait.
    """

    outcome: str
    status: int | None
    detail: str
    retry_after: float | None = None


class PushTarget(Protocol):
    def deliver(self, message: PushMessage) -> PushOutcome:
        """Send `message` once; failures come back as a `retry` or `rejected` outcome."""
        ...


TargetFactory = Callable[[RegistryConfig], PushTarget]


@functools.cache
def _factory(reference: str) -> TargetFactory:
    module_name, _, attribute = reference.partition(":")
    factory: TargetFactory = getattr(importlib.import_module(module_name), attribute)
    return factory


def target_for(registry: RegistryConfig) -> PushTarget:
    """The push target of `registry`'s kind, built from its config."""
    return _factory(REGISTRY_KINDS[registry.kind].target)(registry)
