"""`certd dns plan|sync|status`: gray-cloud (DNS-only) records for the `[[hosts]]` tables.

Exit codes of `plan` and `sync` (scripts and monitoring can tell them apart):
  0  no changes: Cloudflare already matches the config (plan), nothing was written (sync)
  3  changed: plan has changes to make; sync made them all
  1  failed: a conflict, an unresolvable address, or a Cloudflare error (sync may have
     applied the other changes; every change made is recorded in the store)
  2  the config file is invalid or a secret is missing (as for every certd command)
`status` exits 0, or 1 when a managed record's last check recorded an error.
"""

from __future__ import annotations

import argparse
import json
import logging
from typing import TYPE_CHECKING, Any

from certd.cli import context

if TYPE_CHECKING:
    from certd.dns.sync import ManagedRecordStatus, SyncReport

EXIT_NO_CHANGES = 0
EXIT_FAILED = 1
EXIT_CHANGED = 3
_EXIT_BY_OUTCOME = {"no changes": EXIT_NO_CHANGES, "changed": EXIT_CHANGED, "failed": EXIT_FAILED}

_EPILOG = """exit codes (plan, sync): 0 no changes, 3 changed (plan: changes pending),
1 failed (conflict, unresolvable address or Cloudflare error), 2 invalid config.
status: 0, or 1 when a managed record's last check recorded an error."""


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "dns", help="gray-cloud DNS records for LAN hosts ([[hosts]])",
        description="Keep DNS-only (gray-cloud) A/AAAA records pointing public names at LAN hosts.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="dns_command", metavar="ACTION")
    sub.required = True
    for name, func, help_text in (
        ("plan", _plan, "show what a sync would change; changes nothing"),
        ("sync", _sync, "apply the plan: create, update, repair, delete records"),
        ("status", _status, "list the records certd manages and their last check"),
    ):
        cmd = sub.add_parser(name, help=help_text, epilog=_EPILOG,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.add_argument("--json", action="store_true", help="machine-readable output")
        cmd.set_defaults(func=func)


def _plan(args: argparse.Namespace) -> int:
    return _run(args, apply=False)


def _sync(args: argparse.Namespace) -> int:
    return _run(args, apply=True)


def _run(args: argparse.Namespace, *, apply: bool) -> int:
    from certd.dns.sync import sync_hosts
    from certd.store.db import session_scope
    from certd.store.hosts import all_rows

    config = context.load(args)
    engine = context.open_store(config)
    with session_scope(engine) as session:
        has_rows = bool(all_rows(session))
    if not config.hosts and not has_rows:
        _emit(args, {"outcome": "no changes", "actions": []},
              "no [[hosts]] configured and no managed records: nothing to do")
        return EXIT_NO_CHANGES
    from certd.dns.registry import open_dns

    adapter = open_dns(config)
    if not args.verbose:
        # The report below says the same as these log lines, without timestamps.
        logging.getLogger("certd.dns.sync").setLevel(logging.CRITICAL)
    if apply:  # one sync at a time: a daemon (or another node) may be syncing right now
        from certd.store import leases

        with leases.held(engine, leases.job_lease("dns-sync"), "certd dns sync"):
            report = sync_hosts(config, engine, adapter, apply=True)
    else:
        report = sync_hosts(config, engine, adapter, apply=False)
    _emit(args, _report_json(report), _report_text(report))
    return _EXIT_BY_OUTCOME[report.outcome]


def _report_text(report: "SyncReport") -> str:
    verb = "sync" if report.applied else "plan"
    changes = sum(1 for r in report.results if r.action.is_change)
    problems = len(report.failures)
    lines = [f"certd dns {verb}: {report.outcome} ({changes} change(s), {problems} problem(s))"]
    for result in report.results:
        line = "  " + result.action.describe()
        if result.outcome == "failed":
            line += f"\n      FAILED: {result.error}"
        elif result.outcome == "applied":
            line += "  [done]"
        lines.append(line)
    lines += [f"warning: {w}" for w in report.warnings]
    if not report.applied and changes:
        lines.append("run `certd dns sync` to apply")
    return "\n".join(lines)


def _report_json(report: "SyncReport") -> dict[str, Any]:
    return {
        "outcome": report.outcome,
        "applied": report.applied,
        "started_at": report.started_at.isoformat(),
        "finished_at": report.finished_at.isoformat(),
        "actions": [
            {
                "kind": r.action.kind, "name": r.action.name, "type": r.action.type,
                "content": r.action.content, "reason": r.action.reason,
                "changes": dict(r.action.changes), "warnings": list(r.action.warnings),
                "outcome": r.outcome, "error": r.error,
            }
            for r in report.results
        ],
    }


def _status(args: argparse.Namespace) -> int:
    from certd.dns.sync import managed_status

    config = context.load(args)
    engine = context.open_store(config)
    rows = managed_status(config, engine)
    managed = {r.name for r in rows}
    unmanaged = [h.name for h in config.hosts if h.name not in managed]
    payload = {
        "records": [_status_json(r) for r in rows],
        "configured_without_record": unmanaged,
    }
    _emit(args, payload, _status_text(rows, unmanaged))
    return EXIT_FAILED if any(r.last_error for r in rows) else EXIT_NO_CHANGES


def _when(moment: Any) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "never"


def _status_json(r: "ManagedRecordStatus") -> dict[str, Any]:
    return {
        "name": r.name, "type": r.type, "zone": r.zone, "content": r.content,
        "record_id": r.record_id, "state": r.state, "keep": r.keep, "adopted": r.adopted,
        "in_config": r.in_config, "last_action": r.last_action,
        "last_checked_at": r.last_checked_at.isoformat() if r.last_checked_at else None,
        "last_changed_at": r.last_changed_at.isoformat() if r.last_changed_at else None,
        "last_error": r.last_error,
    }


def _status_text(rows: list["ManagedRecordStatus"], unmanaged: list[str]) -> str:
    if not rows and not unmanaged:
        return "no managed DNS records and no [[hosts]] configured"
    lines = [f"{'NAME':<32} {'TYPE':<4} {'CONTENT':<24} {'STATE':<8} {'LAST CHECK':<20} LAST CHANGE"]
    for r in rows:
        lines.append(f"{r.name:<32} {r.type:<4} {r.content or '-':<24} {r.state:<8} "
                     f"{_when(r.last_checked_at):<20} {_when(r.last_changed_at)}")
        notes = []
        if not r.in_config:
            notes.append("host no longer in config (next sync deletes or releases it)")
        if r.keep:
            notes.append("keep: stays in Cloudflare when removed from config")
        if r.adopted:
            notes.append("adopted")
        if r.last_error:
            notes.append(f"last error: {r.last_error}")
        lines += [f"    {n}" for n in notes]
    for name in unmanaged:
        lines.append(f"{name:<32} {'-':<4} {'-':<24} {'none':<8} (configured; no record owned yet: "
                     "run `certd dns plan`)")
    return "\n".join(lines)


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: str) -> None:
    print(json.dumps(payload, indent=2) if args.json else text)
