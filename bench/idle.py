"""Idle benchmark: `certd run` with 50 valid certificates, measured over 60 s of idling.

Against Pebble + the Cloudflare emulator on loopback. The 50 certificates (each with
a target and a deploy hook) are issued first by `certd issue --all`; then a fresh
`certd run` starts, does its start-up checks (which must order nothing), and is
left alone. Prints a table of RSS (from /proc) and CPU time (utime + stime) of the
daemon process. Targets: RSS <= 120 MB, CPU <= 0.2 s per minute of idling.

    .venv/bin/python bench/idle.py [--seconds 60] [--certificates 50]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from certd.sandbox import SandboxWorld
from certd.sandbox.certd_config import TOKEN_ENV, sandbox_config_toml

RSS_TARGET_MB = 120.0
CPU_TARGET_PER_MIN = 0.2
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def certificates(count: int, out: Path) -> str:
    return "".join(
        f'[[certificates]]\nname = "c{i}"\ndomains = ["host{i}.example.com"]\n'
        f'deploy_hooks = ["true"]\n'
        f'[[certificates.targets]]\nfullchain = "{out}/c{i}/fullchain.pem"\nprivkey = "{out}/c{i}/privkey.pem"\n\n'
        for i in range(count)
    )


def rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident set size in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    parts = stat[stat.rindex(")") + 2:].split()
    return (int(parts[11]) + int(parts[12])) / CLOCK_TICKS  # utime, stime


def count(db: Path, sql: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(sql).fetchone()[0])


def wait_ready(sock: socket.socket, proc: subprocess.Popen[bytes], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"certd run exited with {proc.returncode} before READY")
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            continue
        if "READY=1" in message:
            return message
    raise SystemExit("certd run did not report READY=1")


def drain(sock: socket.socket, into: list[str]) -> None:
    while True:
        try:
            into.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        except OSError:
            return


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--certificates", type=int, default=50)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="certd-bench-idle-"))
    with SandboxWorld(with_pebble=True) as world:
        assert world.pebble is not None
        config = work / "certd.toml"
        config.write_text(sandbox_config_toml(world, world.pebble, work / "state",
                                              certificates(args.certificates, work / "out")))
        env = dict(os.environ, **{TOKEN_ENV: world.token})
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "certd", "--config", str(config), "issue", "--all"],
                       env=env, check=True, capture_output=True)
        issue_seconds = time.perf_counter() - started
        db = work / "state" / "certd.db"
        attempts_before = count(db, "SELECT COUNT(*) FROM issuance_attempt")

        notify_path = work / "notify.sock"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(notify_path))
        sock.settimeout(0.5)
        env["NOTIFY_SOCKET"] = str(notify_path)
        messages: list[str] = []
        log = open(work / "daemon.log", "wb")  # noqa: SIM115
        launched = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "certd", "--config", str(config), "run"],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(sock, proc, 60)
            ready_seconds = time.perf_counter() - launched
            # Keep reading the notify socket, as systemd does.
            threading.Thread(target=drain, args=(sock, messages), daemon=True).start()
            # Start-up checks: every certificate's next check is written once it was looked at.
            deadline = time.monotonic() + 120
            while count(db, "SELECT COUNT(*) FROM managed_certificate WHERE next_check_at IS NOT NULL "
                            "AND updated_at > (SELECT MAX(finished_at) FROM issuance_attempt)") < args.certificates:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("the start-up checks did not finish")
                time.sleep(0.1)
            checks_seconds = time.perf_counter() - launched
            rss_start, _ = rss_mb(proc.pid)
            cpu_start = cpu_seconds(proc.pid)
            time.sleep(args.seconds)  # the measurement itself: leave the daemon alone
            rss_end, rss_peak = rss_mb(proc.pid)
            cpu_idle = cpu_seconds(proc.pid) - cpu_start
            cpu_total = cpu_seconds(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
            sock.close()
        attempts_after = count(db, "SELECT COUNT(*) FROM issuance_attempt")

    per_minute = cpu_idle / (args.seconds / 60)
    rows = [
        ("certificates (valid, with target + hook)", f"{args.certificates}", ""),
        ("issue --all beforehand", f"{issue_seconds:.1f} s", ""),
        ("run: READY=1 after", f"{ready_seconds:.2f} s", ""),
        ("run: start-up checks done after", f"{checks_seconds:.2f} s", ""),
        ("orders placed by run", f"{attempts_after - attempts_before}", "must be 0"),
        ("RSS after start-up", f"{rss_start:.1f} MB", ""),
        (f"RSS after {args.seconds:.0f} s idle", f"{rss_end:.1f} MB", f"<= {RSS_TARGET_MB:.0f} MB"),
        ("RSS peak (incl. start-up)", f"{rss_peak:.1f} MB", ""),
        ("CPU start-up (utime+stime)", f"{cpu_total - cpu_idle:.2f} s", ""),
        (f"CPU during {args.seconds:.0f} s idle", f"{cpu_idle:.3f} s", ""),
        ("CPU per minute idle", f"{per_minute:.3f} s", f"<= {CPU_TARGET_PER_MIN} s"),
        ("exit code after SIGTERM", f"{code}", "0"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'bench/idle.py: certd run idling':<{width}}  {'value':>10}  target")
    for name, value, target in rows:
        print(f"{name:<{width}}  {value:>10}  {target}")
    ok = (rss_end <= RSS_TARGET_MB and per_minute <= CPU_TARGET_PER_MIN and code == 0
          and attempts_after == attempts_before)
    print("PASS" if ok else "FAIL")
    if not ok:
        print(f"daemon log: {work / 'daemon.log'}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
