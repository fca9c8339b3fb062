"""The checks behind `certd doctor`: DNS (dns_checks) and TLS (tls_checks).

Each module gathers observations with real I/O (resolver, Cloudflare API, TLS
handshakes) and turns them into `Check` results with pure evaluator functions,
so the decisions are tested without a network.
"""

from __future__ import annotations

from dataclasses import dataclass

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """One line of the doctor's report: what was checked, the verdict, and how to fix it."""

    id: str
    status: str  # pass | warn | fail
    message: str
    fix: str | None = None

    def to_json(self) -> dict[str, str | None]:
        return {"id": self.id, "status": self.status, "message": self.message, "fix": self.fix}
