"""What one renewal check did: the answer `Maintainer.check` gives the daemon and `certd renew`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from certd.store.models import IssuedCertificate

Action = Literal[
    "none",            # nothing to do
    "waiting",         # something is due but a failure backoff runs
    "renewed",         # a new certificate was issued and deployed
    "redeployed",      # the stored certificate was written to its targets again (+ hooks)
    "hooks-retried",   # only the deploy hooks ran again
    "failed",          # the renewal or redeploy failed (recorded, retried later)
    "cancelled",       # shutdown abandoned the order (not a failure)
    "busy",            # another certd process holds this certificate's lease (looked at again soon)
    "would-renew",     # dry run
    "would-redeploy",  # dry run
]


@dataclass(frozen=True)
class CheckResult:
    name: str
    action: Action
    reason: str
    next_check: dt.datetime
    renew_at: dt.datetime | None = None
    error: str | None = None
    issued: IssuedCertificate | None = None  # the new certificate after "renewed"
    written: tuple[str, ...] = ()
    hooks_ok: bool = True
    critical: bool = False

    @property
    def deployed(self) -> bool:
        """Consumers (listeners) should re-read their material."""
        return self.action in ("renewed", "redeployed")
