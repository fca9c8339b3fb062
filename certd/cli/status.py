"""`certd status [--json]`: what is issued, until when, when it is looked at next, what failed.

Read from the store only (no network). The renewal reason and time are the ones
the last check recorded (ARI window or backstop); before any check they are
computed from the certificate. A certificate in its last tenth of life whose
renewal keeps failing is shown in red (ANSI colour only when stdout is a tty).
"""

from __future__ import annotations

import argparse
import json
import sys

from certd.cli import context

RED, BOLD, RESET = "\033[31m", "\033[1m", "\033[0m"


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser("status", help="show certificates and their state")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=_status)


def _iso(moment) -> str | None:  # type: ignore[no-untyped-def]
    return moment.isoformat() if moment is not None else None


def collect(config, engine, now=None) -> list[dict]:  # type: ignore[no-untyped-def]
    """One row per configured certificate, from the store only (no network)."""
    from sqlmodel import select

    from certd.renewal import rules
    from certd.store.db import session_scope
    from certd.store.leases import Lease, certificate_lease
    from certd.store.models import IssuanceAttempt, IssuedCertificate, ManagedCertificate
    from certd.store.renewal import RenewalState
    from certd.store.types import utcnow

    from certd.runtime.cluster import deploy_summary
    from certd.store import deploy_state

    now = now or utcnow()
    rows = []
    per_node = deploy_summary(deploy_state.all_rows(engine))
    with session_scope(engine) as session:
        for cert_cfg in config.certificates:
            managed = session.get(ManagedCertificate, cert_cfg.name)
            state = session.get(RenewalState, cert_cfg.name)
            issued = (session.get(IssuedCertificate, managed.current_id)
                      if managed and managed.current_id else None)
            attempt = session.exec(
                select(IssuanceAttempt).where(IssuanceAttempt.name == cert_cfg.name)
                .order_by(IssuanceAttempt.id.desc())  # type: ignore[union-attr]
            ).first()
            ari_at = state.ari_renew_at if state and state.ari_supported else None
            decision = rules.renewal_decision(cert_cfg, issued, now, ari_renew_at=ari_at)
            failures = managed.failure_count if managed else 0
            reason, renew_at = decision.reason, decision.renew_at
            if failures and managed and managed.renew_reason:
                # Why the failing renewal was started (the daemon also saw the files and the chain).
                reason = managed.renew_reason
            lease = session.get(Lease, certificate_lease(cert_cfg.name))
            working = lease is not None and lease.expires_at > now
            critical = rules.is_critical(issued.not_before if issued else None,
                                         issued.not_after if issued else None, now)
            rows.append({
                "name": cert_cfg.name,
                "domains": list(cert_cfg.domains),
                "key_type": issued.key_type if issued else cert_cfg.key_type,
                "serial": issued.serial if issued else None,
                "issuer": issued.issuer if issued else None,
                "not_after": _iso(issued.not_after) if issued else None,
                "days_left": round((issued.not_after - now).total_seconds() / 86400, 1) if issued else None,
                "renewal_due": decision.due,
                "renewal_reason": reason,
                "renew_at": _iso(renew_at),
                "ari_window_start": _iso(state.ari_window_start) if state and state.ari_supported else None,
                "ari_window_end": _iso(state.ari_window_end) if state and state.ari_supported else None,
                "ari_checked_at": _iso(managed.ari_checked_at) if managed else None,
                "next_check": _iso(managed.next_check_at) if managed else None,
                "next_attempt": _iso(managed.next_attempt_at) if managed and failures else None,
                "failures": failures,
                "last_error": managed.last_error if managed and failures else None,
                # Renewal keeps failing inside the last tenth of life (or with nothing issued at all).
                "critical": bool(failures) and critical,
                "hooks_pending": bool(managed and managed.hooks_pending),
                "deploy_failures": state.deploy_failures if state else 0,
                "last_attempt": _iso(attempt.started_at) if attempt else None,
                "last_outcome": attempt.outcome if attempt else None,
                "last_attempt_error": attempt.error if attempt else None,
                # A certd process is looking at or renewing it right now (certd.store.leases).
                "in_progress": {"by": lease.purpose, "on": lease.holder, "since": _iso(lease.acquired_at)}
                if lease is not None and working else None,
                # Per node: the issuance its own files and its listeners carry (certd.store.deploy_state).
                "nodes": per_node.get(cert_cfg.name, {}),
            })
    return rows


def _status(args: argparse.Namespace) -> int:
    config = context.load(args)
    engine = context.open_store(config)
    rows = collect(config, engine)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(render_table(rows, color=sys.stdout.isatty()))
    from certd.mqtt.status import mqtt_status

    mqtt = mqtt_status(config, engine)  # the daemon's broker connection, as it last wrote it
    if mqtt is not None:
        print(mqtt.line())
    return 0


def _short(iso: str | None) -> str:
    return "-" if not iso else iso[:16].replace("T", " ")


def render_table(rows: list[dict], color: bool = False) -> str:  # type: ignore[type-arg]
    headers = ["NAME", "DOMAINS", "KEY", "ISSUER", "NOT AFTER", "DAYS", "RENEWAL", "NEXT CHECK", "FAILURES",
               "LAST ATTEMPT"]
    table = [headers]
    for r in rows:
        renewal = ("due now: " if r["renewal_due"] else "") + r["renewal_reason"]
        if r["renew_at"] and not r["renewal_due"]:
            renewal += f" {_short(r['renew_at'])}"
        failures = str(r["failures"]) if r["failures"] else "-"
        if r["hooks_pending"]:
            failures += " (hooks pending)"
        last = f"{r['last_outcome']} {_short(r['last_attempt'])}" if r["last_outcome"] else "-"
        table.append([
            r["name"], ",".join(r["domains"]), r["key_type"], r["issuer"] or "-", _short(r["not_after"]),
            "-" if r["days_left"] is None else f"{r['days_left']:g}", renewal, _short(r["next_check"]), failures,
            last,
        ])
    widths = [max(len(str(row[i])) for row in table) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(table):
        line = "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
        if index == 0 and color:
            line = BOLD + line + RESET
        elif index > 0 and color and rows[index - 1]["critical"]:
            line = RED + line + RESET
        lines.append(line)
    details = []
    for r in rows:
        if r["failures"]:
            mark = "EXPIRING AND FAILING: " if r["critical"] else ""
            text = (f"  {r['name']}: {mark}{r['failures']} failure(s) in a row; last error: {r['last_error']}; "
                    f"next attempt {_short(r['next_attempt'])}")
            details.append(RED + text + RESET if color and r["critical"] else text)
        if r["in_progress"]:
            work = r["in_progress"]
            details.append(f"  {r['name']}: in progress: {work['by']} on {work['on']} since {_short(work['since'])}")
        if len(r["nodes"]) > 1:  # several nodes: which issuance each one's files and listeners carry
            details.append(f"  {r['name']}: " + "; ".join(
                f"node {node} files #{n['files']}" + "".join(f", {label} #{i}" for label, i in n["listeners"].items())
                for node, n in sorted(r["nodes"].items())))
        if r["ari_window_start"]:
            details.append(f"  {r['name']}: CA's ARI window {_short(r['ari_window_start'])} – "
                           f"{_short(r['ari_window_end'])}")
    return "\n".join(lines + details)
