"""The tables bench/ocpp_load.py prints: one run, or known and first-contact chargers side by side."""

from __future__ import annotations

import argparse
import os


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * (len(ordered) - 1)))))
    return ordered[k]




def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def per_connection_cpu(m: dict) -> float:
    """The ramp's CPU less the heartbeats answered meanwhile, per new connection."""
    return (m["ramp_cpu"] - len(m["ramp_rtt"]) * m["per_heartbeat"]) / max(1, m["chargers"])


def rows_text(rows: dict[str, int]) -> str:
    return ", ".join(f"{count} {state}" for state, count in sorted(rows.items())) or "none"


def expected_rows(m: dict, args: argparse.Namespace, after_stop: bool) -> str:
    if not m["unknown"]:
        return f"{m['chargers'] + m['fresh_count']} accepted (registered before)"
    state = "pending" if args.policy == "register" else "accepted"
    return f"{m['chargers'] + (m['fresh_count'] if after_stop else 0)} {state}"


def header(args: argparse.Namespace, base: dict) -> str:
    return (f"certd OCPP endpoint, {args.chargers} chargers at {args.rate:.0f}/s, profile "
            f"{args.profile}, auth {args.auth}, {args.clients} client processes, heartbeat every "
            f"{args.heartbeat:.0f} s, server loop {base['loop']}, {os.cpu_count()} CPUs (load "
            f"generator included), machine speed {base['rsa_per_s']:.0f} RSA-2048 signatures per "
            f"CPU-second")


def print_table(rows: list[tuple[str, ...]], titles: tuple[str, ...]) -> None:
    widths = [max(len(r[i]) for r in [titles, *rows]) for i in range(len(titles))]
    for row in [titles, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def report(m: dict, args: argparse.Namespace) -> None:
    handshakes, steady = m["handshakes"], m["steady"]
    per_conn_raw = m["ramp_cpu"] / max(1, m["chargers"])
    rows = [
        ("chargers connected (server view)", f"{m['connected']} / {m['chargers']}", f"{m['chargers']}"),
        ("ramp: connections per second", f"{m['achieved']:.0f}/s (asked {args.rate:.0f}/s)", f"{args.rate:.0f}/s"),
        ("ramp: failed handshakes", f"{m['failed_ramp']}", "0"),
        ("TLS+WebSocket handshake p50", ms(percentile(handshakes, 50)), ""),
        ("TLS+WebSocket handshake p99", ms(percentile(handshakes, 99)), ""),
        ("server CPU per new connection", f"{per_connection_cpu(m) * 1000:.2f} ms "
         f"(raw {per_conn_raw * 1000:.2f} ms incl. ramp heartbeats)", "<= 1 ms"),
        ("server CPU in the ramp (cores)", f"{m['ramp_cpu'] / m['ramp_wall']:.2f}", ""),
        ("  of which on the event-loop thread", f"{m['loop_share'] * 100:.0f} %", ""),
        ("  of which in the kernel (system time)", f"{m['sys_share'] * 100:.0f} %", ""),
        ("server CPU per heartbeat", f"{m['per_heartbeat'] * 1e6:.0f} us", ""),
        ("server RSS per connection", f"{m['rss_per_conn']:.1f} KiB", "<= 100 KiB"),
        ("heartbeat RTT p50 (all connected)", ms(percentile(steady, 50)), ""),
        ("heartbeat RTT p99 (all connected)", ms(percentile(steady, 99)), "<= 50 ms"),
        ("heartbeat RTT max (all connected)", ms(max(steady, default=float("nan"))), ""),
        ("heartbeat RTT p99 during ramp", ms(percentile(m["ramp_rtt"], 99)), ""),
        ("server GC: longest pause (steady / whole run)", f"{ms(m['gc_steady'])} / {ms(m['gc_max'])}", ""),
        ("server GC time in the ramp, per new connection", f"{m['gc_ramp'] * 1000:.2f} ms", ""),
        ("reload: server reload time", ", ".join(f"{r['seconds'] * 1000:.0f} ms {r['status']}" for r in m["reloads"]) or "none", ""),
        ("reload: fresh connections ok / failed", f"{m['fresh_ok']} / {m['failed_reload']}", f"{m['fresh_count']} / 0"),
        ("reload: fresh connections per serial", ", ".join(f"{s[:8]}..: {c}" for s, c in m["fresh_serials"].items()), "old, then new"),
        ("reload: new serial served", "yes" if m["new_serial"] in m["served"] else f"NO {m['served']}", "yes"),
        ("dropped connections (whole run / around reload)", f"{m['drops']} / {m['drops_reload']}", "0 / 0"),
    ]
    if m["unknown"]:
        rows += [
            ("store: charger rows 3 s after the ramp", rows_text(m["rows_after_ramp"]), expected_rows(m, args, False)),
            ("store: charger rows after a clean stop", rows_text(m["rows_after_stop"]), expected_rows(m, args, True)),
        ]
    print()
    print(header(args, m["base"]))
    print_table(rows, ("metric", "measured", "target"))
    if m["reasons"]:
        print(f"failure reasons: {m['reasons']}")
    if m["first_contact"]:
        print(f"first-contact registrar: {m['first_contact']}")
    if m["steps"]:
        print(f"handshake steps, ramp (CERTD_BENCH_TIMINGS): {m['steps']}")
    print(f"(heartbeats measured in steady state: {len(steady)}; during ramp: {len(m['ramp_rtt'])})")


def report_comparison(known: dict, unknown: dict, args: argparse.Namespace) -> None:
    """Known and first-contact chargers at the same rate, side by side."""
    def both(name: str, cell, target: str = "") -> tuple[str, ...]:  # type: ignore[no-untyped-def]
        return (name, cell(known), cell(unknown), target)

    p99_ratio = percentile(unknown["handshakes"], 99) / percentile(known["handshakes"], 99)
    rows = [
        both("chargers connected (server view)", lambda m: f"{m['connected']} / {m['chargers']}"),
        both("ramp: connections per second", lambda m: f"{m['achieved']:.0f}/s"),
        both("failed handshakes", lambda m: f"{m['failed_ramp'] + m['failed_reload']}", "0"),
        both("TLS+WebSocket handshake p50", lambda m: ms(percentile(m["handshakes"], 50))),
        both("TLS+WebSocket handshake p99", lambda m: ms(percentile(m["handshakes"], 99)),
             f"unknown <= 1.5x known: {p99_ratio:.2f}x"),
        both("server CPU in the ramp (cores)", lambda m: f"{m['ramp_cpu'] / m['ramp_wall']:.2f}"),
        both("server CPU per new connection", lambda m: f"{per_connection_cpu(m) * 1000:.2f} ms"),
        both("heartbeat RTT p99 during ramp", lambda m: ms(percentile(m["ramp_rtt"], 99))),
        both("heartbeat RTT p99 (all connected)", lambda m: ms(percentile(m["steady"], 99))),
        both("dropped connections", lambda m: f"{m['drops']}", "0"),
        both("store: charger rows 3 s after the ramp", lambda m: rows_text(m["rows_after_ramp"])),
        both("store: charger rows after a clean stop", lambda m: rows_text(m["rows_after_stop"]),
             expected_rows(unknown, args, True) + " (unknown)"),
    ]
    print()
    print(header(args, unknown["base"]))
    print(f"known: every charger in the store with its password; unknown: none in the store, "
          f"unknown_chargers = {args.policy}, each stores its first password")
    print_table(rows, ("metric", "known chargers", "unknown (first contact)", "target"))
    if unknown["first_contact"]:
        print(f"first-contact registrar: {unknown['first_contact']}")
    for label, m in (("known", known), ("unknown", unknown)):
        if m["steps"]:
            print(f"handshake steps, ramp ({label}): {m['steps']}")
        if m["reasons"]:
            print(f"failure reasons ({label}): {m['reasons']}")


def report_rounds(pairs: list[tuple[dict, dict]]) -> None:
    """One line per --compare round, and the median: a shared host's load differs run to run."""
    ratios = []
    print()
    print("round  known p50 / p99 / CPU cores   unknown p50 / p99 / CPU cores   p99 unknown / known")
    for n, (known, unknown) in enumerate(pairs, 1):
        ratio = percentile(unknown["handshakes"], 99) / percentile(known["handshakes"], 99)
        ratios.append(ratio)
        cells = [f"{ms(percentile(m['handshakes'], 50))} / {ms(percentile(m['handshakes'], 99))} / "
                 f"{m['ramp_cpu'] / m['ramp_wall']:.2f}" for m in (known, unknown)]
        print(f"{n:<5}  {cells[0]:<28}  {cells[1]:<30}  {ratio:.2f}x")
    print(f"median p99 ratio over {len(ratios)} rounds: {percentile(ratios, 50):.2f}x (target <= 1.5x)")


def report_mixed(m: dict, args: argparse.Namespace) -> None:
    """One ramp, known and first-contact chargers interleaved: the same host load for both."""
    known, unknown = m["handshakes"], m["handshakes_unknown"]
    ratio = percentile(unknown, 99) / percentile(known, 99)
    rows = [
        ("chargers connected (server view)", f"{m['connected']} / {m['chargers']}", ""),
        ("ramp: connections per second", f"{m['achieved']:.0f}/s (asked {args.rate:.0f}/s)", ""),
        ("failed handshakes", f"{m['failed_ramp']}", "0"),
        ("handshake p50: known / unknown", f"{ms(percentile(known, 50))} / {ms(percentile(unknown, 50))}", ""),
        ("handshake p99: known / unknown", f"{ms(percentile(known, 99))} / {ms(percentile(unknown, 99))}",
         f"unknown <= 1.5x known: {ratio:.2f}x"),
        ("server CPU in the ramp (cores)", f"{m['ramp_cpu'] / m['ramp_wall']:.2f}", ""),
        ("server CPU per new connection", f"{per_connection_cpu(m) * 1000:.2f} ms", ""),
        ("heartbeat RTT p99 during ramp", ms(percentile(m["ramp_rtt"], 99)), ""),
        ("store: charger rows after a clean stop", rows_text(m["rows_after_stop"]), f"{m['chargers']}"),
    ]
    print()
    print(header(args, m["base"]))
    print(f"one ramp: {len(known)} known chargers (in the store with their password) and "
          f"{len(unknown)} unknown ones (unknown_chargers = {args.policy}) interleaved")
    print_table(rows, ("metric", "measured", "target"))
    if m["first_contact"]:
        print(f"first-contact registrar: {m['first_contact']}")
    if m["reasons"]:
        print(f"failure reasons: {m['reasons']}")
