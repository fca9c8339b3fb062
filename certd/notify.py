"""The notify hook: tell a person when a certificate close to expiry keeps failing.

Let's Encrypt stopped sending expiry e-mail in 2025, so certd is the one that
warns. The configured command (`[daemon] notify_hook`, run with /bin/sh -c) gets
the details as CERTD_* environment variables and as one JSON object on stdin, so
it can be `mail`, `curl` to a chat webhook, or a Home Assistant notify call.

Nothing secret reaches it: the payload holds names, dates, counts and certd's
own error messages (which never carry secrets, see certd.errors), and the env
vars holding certd's tokens are removed from its environment.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

log = logging.getLogger(__name__)

Event = Literal["renewal-failing", "renewal-recovered"]


@dataclass(frozen=True)
class Alert:
    event: Event
    name: str
    domains: tuple[str, ...]
    not_after: dt.datetime | None  # of the certificate still served; None: there is none
    failures: int  # failed attempts in a row (0 on recovery)
    error: str | None
    next_attempt: dt.datetime | None

    def message(self, now: dt.datetime) -> str:
        """One line a person can act on."""
        if self.not_after is None:
            life = "no certificate has been issued yet"
        elif self.not_after <= now:
            life = f"the certificate EXPIRED at {self.not_after:%Y-%m-%d %H:%M} UTC"
        else:
            hours = (self.not_after - now).total_seconds() / 3600
            left = f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"
            life = f"the certificate expires in {left} ({self.not_after:%Y-%m-%d %H:%M} UTC)"
        if self.event == "renewal-recovered":
            return f"certd: {self.name} renewed again after failures; {life}"
        retry = f"; next attempt {self.next_attempt:%Y-%m-%d %H:%M} UTC" if self.next_attempt else ""
        return (f"certd: renewing {self.name} ({', '.join(self.domains)}) failed "
                f"{self.failures} time(s) in a row and {life}: {self.error}{retry}")

    def payload(self, now: dt.datetime) -> dict[str, object]:
        data = asdict(self)
        for key in ("not_after", "next_attempt"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["domains"] = list(self.domains)
        data["message"] = self.message(now)
        return data

    def environment(self, now: dt.datetime) -> dict[str, str]:
        return {
            "CERTD_EVENT": self.event,
            "CERTD_CERT_NAME": self.name,
            "CERTD_DOMAINS": " ".join(self.domains),
            "CERTD_NOT_AFTER": self.not_after.isoformat() if self.not_after else "",
            "CERTD_FAILURES": str(self.failures),
            "CERTD_ERROR": self.error or "",
            "CERTD_NEXT_ATTEMPT": self.next_attempt.isoformat() if self.next_attempt else "",
            "CERTD_MESSAGE": self.message(now),
        }


def run_notify_hook(command: str | None, alert: Alert, *, now: dt.datetime, timeout: float,
                    hide_env: Iterable[str] = ()) -> bool:
    """Run the hook; False (and an error log) if it failed. Never raises: warning must not break renewing."""
    if not command:
        return False
    env = dict(os.environ)
    for name in hide_env:
        env.pop(name, None)
    env.update(alert.environment(now))
    try:
        proc = subprocess.run(["/bin/sh", "-c", command], env=env, input=json.dumps(alert.payload(now)),
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log.error("notify hook timed out after %.0fs: %s", timeout, command)
        return False
    except OSError as exc:
        log.error("notify hook could not start (%s): %s", exc.strerror or exc, command)
        return False
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()[-300:]
        log.error("notify hook failed with exit %d: %s (%s)", proc.returncode, command, detail)
        return False
    log.info("notify hook told about %s (%s)", alert.name, alert.event)
    return True
