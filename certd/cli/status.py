"""`certd status [--json]`: what is issued, until when, and how the last attempt went."""

from __future__ import annotations

import argparse
import json

from certd.cli import context


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help="show certificates and their state")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_status)


def collect(config, engine) -> list[dict]:  # type: ignore[no-untyped-def]
    """One row per configured certificate, from the store only (no network)."""
    from sqlmodel import select

    from certd.renew import renewal_decision
    from certd.store.db import session_scope
    from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
    from certd.store.types import utcnow

    now = utcnow()
    rows = []
    with session_scope(engine) as session:
        for cert_cfg in config.certificates:
            managed = session.get(ManagedCertificate, cert_cfg.name)
            issued = (session.get(IssuedCertificate, managed.current_id)
                      if managed and managed.current_id else None)
            attempt = session.exec(
                select(IssuanceAttempt).where(IssuanceAttempt.name == cert_cfg.name)
                .order_by(IssuanceAttempt.id.desc())  # type: ignore[union-attr]
            ).first()
            decision = renewal_decision(cert_cfg, issued, now)
            rows.append({
                "name": cert_cfg.name,
                "domains": list(cert_cfg.domains),
                "key_type": issued.key_type if issued else cert_cfg.key_type,
                "serial": issued.serial if issued else None,
                "issuer": issued.issuer if issued else None,
                "not_after": issued.not_after.isoformat() if issued else None,
                "days_left": round((issued.not_after - now).total_seconds() / 86400, 1) if issued else None,
                "renewal_due": decision.due,
                "renewal_reason": decision.reason,
                "renew_at": decision.renew_at.isoformat() if decision.renew_at else None,
                "next_check": managed.next_check_at.isoformat() if managed and managed.next_check_at else None,
                "failures": managed.failure_count if managed else 0,
                "last_error": managed.last_error if managed else None,
                "hooks_pending": bool(managed and managed.hooks_pending),
                "last_attempt": attempt.started_at.isoformat() if attempt else None,
                "last_outcome": attempt.outcome if attempt else None,
                "last_attempt_error": attempt.error if attempt else None,
            })
    return rows


def _status(args: argparse.Namespace) -> int:
    config = context.load(args)
    engine = context.open_store(config)
    rows = collect(config, engine)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(render_table(rows))
    return 0


def render_table(rows: list[dict]) -> str:  # type: ignore[type-arg]
    headers = ["NAME", "DOMAINS", "KEY", "ISSUER", "NOT AFTER", "DAYS", "RENEWAL", "LAST ATTEMPT"]
    table = [headers]
    for r in rows:
        renewal = ("due now: " if r["renewal_due"] else "") + r["renewal_reason"]
        if r["renew_at"] and not r["renewal_due"]:
            renewal += f" {r['renew_at'][:16].replace('T', ' ')}"
        last = r["last_outcome"] or "-"
        if r["failures"]:
            last += f" ({r['failures']} failures in a row)"
        table.append([
            r["name"], ",".join(r["domains"]), r["key_type"], r["issuer"] or "-",
            (r["not_after"] or "-")[:16].replace("T", " "),
            "-" if r["days_left"] is None else f"{r['days_left']:g}", renewal, last,
        ])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(headers))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in table]
    errors = [f"  {r['name']}: last error: {r['last_error'] or r['last_attempt_error']}"
              for r in rows if r["last_outcome"] == "failure"]
    return "\n".join(lines + errors)
