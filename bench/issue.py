"""Issuance benchmark: `certd issue` as whole processes against Pebble + the Cloudflare emulator.

Prints a table: one certificate, then 20 separate certificates in one `certd issue`
run (orders run concurrently on one account). Targets: ≤ 1.2 s for one, ≤ 6 s for 20.
Reference: certbot 5.8 + certbot-dns-cloudflare takes 3.2 s per certificate here with
its propagation wait at 0 s, 13 s with its default.
"""

from __future__ import annotations

import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from certd.sandbox import SandboxWorld
from certd.sandbox.certd_config import TOKEN_ENV, certificate_toml, sandbox_config_toml

N = 20


def certificates(count: int, out: Path) -> str:
    return "".join(certificate_toml(f"c{i}", [f"host{i}.example.com"], target_dir=out / f"c{i}",
                                    kinds=("fullchain", "privkey")) for i in range(count + 1))


def run(config: Path, env: dict[str, str], *args: str) -> tuple[float, int, str]:
    """Wall time, peak RSS (KiB) of the child, stderr."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "certd", "--config", str(config), "issue", *args],
                          env=env, capture_output=True, text=True, timeout=300)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"certd issue failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(peak, before), proc.stderr


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="certd-bench-issue-"))
    try:
        one, rss_one, many, rss_many, per_cert = measure(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(one, rss_one, many, rss_many, per_cert)


def measure(work: Path) -> tuple[float, int, float, int, list[float]]:
    with SandboxWorld(with_pebble=True) as world:
        assert world.pebble is not None
        config = work / "certd.toml"
        config.write_text(sandbox_config_toml(world, world.pebble, work / "state",
                                              certificates(N, work / "out")))
        env = dict(os.environ, **{TOKEN_ENV: world.token})
        # Warm-up: account registration and DB creation happen once per installation.
        subprocess.run([sys.executable, "-m", "certd", "--config", str(config), "db", "upgrade"],
                       env=env, check=True, capture_output=True)
        one, rss_one, _ = run(config, env, "c0")
        many, rss_many, log = run(config, env, *[f"c{i}" for i in range(1, N + 1)])
        per_cert = [float(line.rsplit("(", 1)[1].rstrip("s)"))
                    for line in log.splitlines() if "issued serial" in line and line.endswith("s)")]
    return one, rss_one, many, rss_many, per_cert


def print_table(one: float, rss_one: int, many: float, rss_many: int, per_cert: list[float]) -> None:
    rows = [
        ("certd issue, 1 certificate (whole process)", f"{one:.2f} s", "≤ 1.2 s", f"{rss_one / 1024:.0f} MB"),
        (f"certd issue, {N} certificates (whole process)", f"{many:.2f} s", "≤ 6 s", f"{rss_many / 1024:.0f} MB"),
        (f"  per-certificate order, median of {len(per_cert)}",
         f"{statistics.median(per_cert):.2f} s" if per_cert else "n/a", "", ""),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'benchmark':<{width}}  {'wall time':>10}  {'target':>8}  {'peak RSS':>9}")
    for name, value, target, rss in rows:
        print(f"{name:<{width}}  {value:>10}  {target:>8}  {rss:>9}")


if __name__ == "__main__":
    main()
