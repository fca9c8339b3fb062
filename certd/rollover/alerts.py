"""The alert after a forced switch: a listener serves roots some chargers do not hold.

`ForcedSwitch` is the event (its text, JSON payload and environment follow the
interface of `certd.notify.run_notify_hook`); `notify_hook_alert` hands it to the
daemon's `[daemon] notify_hook`. The engine calls an `Alert` in a worker thread,
after logging the switch at error level.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from certd.config import Config
from certd.rollover import gates as rules
from certd.store.types import utcnow

NAMED_IN_MESSAGE = 20  # chargers named in the one-line message; the payload lists all


@dataclass(frozen=True)
class ForcedSwitch:
    """A listener switched at its deadline although chargers still lack the roots."""

    listener: str
    cert_name: str
    bundle: str
    served_id: int | None
    reason: str
    lacking: tuple[rules.Lacking, ...]

    # The notify hook's interface (certd.notify.run_notify_hook): event, name, message,
    # environment, payload.
    event: str = "rollover-forced"

    @property
    def name(self) -> str:
        return self.cert_name

    def message(self, now: dt.datetime | None = None) -> str:
        names = ", ".join(item.charger_id for item in self.lacking[:NAMED_IN_MESSAGE])
        more = (f" and {len(self.lacking) - NAMED_IN_MESSAGE} more"
                if len(self.lacking) > NAMED_IN_MESSAGE else "")
        return (f"certd: listener {self.listener} switched {self.cert_name} to a certificate whose "
                f"roots {len(self.lacking)} charger(s) do not hold ({self.reason}): {names}{more}")

    def payload(self, now: dt.datetime | None = None) -> dict[str, object]:
        return {"event": self.event, "listener": self.listener, "name": self.cert_name,
                "bundle": self.bundle, "served_id": self.served_id, "reason": self.reason,
                "lacking": [{"charger_id": item.charger_id, "reason": item.reason} for item in self.lacking],
                "message": self.message(now)}

    def environment(self, now: dt.datetime | None = None) -> dict[str, str]:
        return {"CERTD_EVENT": self.event, "CERTD_CERT_NAME": self.cert_name,
                "CERTD_LISTENER": self.listener, "CERTD_BUNDLE": self.bundle,
                "CERTD_LACKING": " ".join(item.charger_id for item in self.lacking),
                "CERTD_MESSAGE": self.message(now)}


Alert = Callable[[ForcedSwitch], None]


def notify_hook_alert(config: Config) -> Alert:
    """Run the daemon's notify hook (`[daemon] notify_hook`) when one is configured."""
    def alert(event: ForcedSwitch) -> None:
        daemon = getattr(config, "daemon", None)
        command = getattr(daemon, "notify_hook", None)
        if not command:
            return
        try:
            from certd.notify import run_notify_hook
        except ImportError:  # an install without the daemon's notify module
            return
        run_notify_hook(command, event, now=utcnow(), timeout=float(getattr(daemon, "notify_timeout", 30.0)),  # type: ignore[arg-type]
                        hide_env=config.secret_env_names())
    return alert
