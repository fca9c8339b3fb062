#!/usr/bin/env python3
"""Benchmark of certd's HTTP surface under charger load (the code is in bench/http_load.py).

    .venv/bin/python bench/http.py                        # 50 certificates, 5,000 chargers
    .venv/bin/python bench/http.py --chargers 2000        # on a busy 2-core machine

Prints /metrics, / and /api/v1/status latency (p99 <= 50 ms) and the heartbeat RTT p99 of the
chargers with and without /metrics scraped every second (<= 5 ms apart), side by side.

This file shares its name with the standard library's `http` package, and every script in bench/
has bench/ first on its import path: when one of them imports `http`, this file hands over the
real package instead of running anything.
"""

if __name__ == "http":
    import importlib as _importlib
    import sys as _sys
    from pathlib import Path as _Path

    _here = _Path(__file__).resolve().parent
    _saved = list(_sys.path)
    _sys.path[:] = [p for p in _sys.path if _Path(p or ".").resolve() != _here]
    del _sys.modules["http"]
    try:
        _sys.modules["http"] = _importlib.import_module("http")
    finally:
        _sys.path[:] = _saved
elif __name__ == "__main__":
    import http_load  # bench/, first on the path when this file runs

    raise SystemExit(http_load.main())
