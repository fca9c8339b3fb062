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


def collect(config, engine, now=None) -> list[dict]:  # type: ignore[no-untyped-def]
    """One row per configured certificate (shared with the HTTP server: certd.renewal.status)."""
    from certd.renewal.status import collect as collect_rows

    return collect_rows(config, engine, now)


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
