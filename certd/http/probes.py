"""/livez and /readyz decisions (pure: what the loop and the store showed -> checks).

live  = the event loop answers (this code runs on it, and its lag is small) and the
        scheduler runs and keeps up with its plan;
ready = the store answers, every OCPP listener is bound and serves checked material,
        and no certificate is in its last tenth of life with failing renewals.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from certd.http.live import LiveView

LOOP_LAG_LIMIT = 10.0  # seconds: a loop this late misses charger pings and heartbeats
SCHEDULER_LATE_LIMIT = 300.0  # seconds a scheduled job may be overdue before certd counts as hung


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def verdict(checks: list[Check]) -> tuple[int, dict[str, Any]]:
    """HTTP status and JSON body."""
    ok = all(c.ok for c in checks)
    return (200 if ok else 503), {"status": "ok" if ok else "failing", "service": "certd",
                                  "checks": [c.as_json() for c in checks]}


def liveness(live: LiveView, loop_lag: float) -> list[Check]:
    checks = [Check("event_loop", loop_lag < LOOP_LAG_LIMIT,
                    f"answered; lag {loop_lag * 1000:.0f} ms" if loop_lag < LOOP_LAG_LIMIT
                    else f"the event loop fell {loop_lag:.1f} s behind")]
    scheduler = live.scheduler
    if scheduler is None:
        checks.append(Check("scheduler", True, "no renewal scheduler in this command"))
    elif not scheduler.running:
        checks.append(Check("scheduler", False, "the renewal scheduler is not running"))
    elif scheduler.overdue_seconds > SCHEDULER_LATE_LIMIT:
        checks.append(Check("scheduler", False,
                            f"the renewal scheduler is {scheduler.overdue_seconds:.0f} s behind its plan"))
    else:
        running = f"; checking {', '.join(scheduler.checks_running)}" if scheduler.checks_running else ""
        checks.append(Check("scheduler", True, f"running{running}"))
    return checks


def readiness(store_error: str | None, snapshot: dict[str, Any] | None) -> list[Check]:
    """`snapshot` is certd.http.snapshot's certificates + listeners (None when the store failed)."""
    if store_error is not None or snapshot is None:
        return [Check("store", False, store_error or "the store did not answer"),
                Check("listeners", False, "unknown: the store did not answer"),
                Check("certificates", False, "unknown: the store did not answer")]
    checks = [Check("store", True, "answered")]
    bad = []
    for listener in snapshot["listeners"]:
        if not listener["bound"]:
            bad.append(f"{listener['name']}: not bound")
        elif not listener["insecure"] and not listener["serving"]:
            bad.append(f"{listener['name']}: serves no certificate yet")
    count = len(snapshot["listeners"])
    checks.append(Check("listeners", not bad, "; ".join(bad) if bad else
                        f"{count} OCPP listener(s) bound and serving" if count else "no OCPP listener"))
    critical = [row["name"] for row in snapshot["certificates"] if row["critical"]]
    checks.append(Check("certificates", not critical,
                        f"in the last tenth of life with failing renewals: {', '.join(critical)}" if critical
                        else f"{len(snapshot['certificates'])} certificate(s), none expiring with failing renewals"))
    return checks
