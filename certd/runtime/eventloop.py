"""The event loop certd's serving processes run on: uvloop when it is installed, else asyncio.

Why: every new charger connection is a TLS handshake, and asyncio's TLS layer
(asyncio.sslproto) is Python code run several times per handshake and per
record; uvloop's is compiled (Cython over libuv) and costs a fraction of it
per connection. Everything certd uses works on both loops (sni_callback
context swaps, websockets, handshake timeouts, signal handlers, APScheduler's
AsyncIOScheduler, worker threads), so uvloop is a speed-up, not a dependency.

    from certd.runtime import eventloop
    exit_code = eventloop.run(main())      # like asyncio.run(main())

`CERTD_EVENT_LOOP` chooses: `auto` (default: uvloop if importable),
`uvloop` (required: an error if it is missing) or `asyncio`. Tests use the
same choice, so `CERTD_EVENT_LOOP=asyncio pytest ...` runs them on asyncio.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from certd.errors import CertdError

ENV_VAR = "CERTD_EVENT_LOOP"
CHOICES = ("auto", "uvloop", "asyncio")

T = TypeVar("T")
LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _uvloop_factory() -> LoopFactory | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def choose(setting: str | None = None) -> tuple[str, LoopFactory | None]:
    """("uvloop", its loop factory) or ("asyncio", None) for `setting` (default: the env var)."""
    if setting is None:
        setting = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
    if setting not in CHOICES:
        raise CertdError(f"{ENV_VAR}={setting!r}: expected one of {', '.join(CHOICES)}")
    if setting == "asyncio":
        return "asyncio", None
    factory = _uvloop_factory()
    if factory is not None:
        return "uvloop", factory
    if setting == "uvloop":
        raise CertdError(f"{ENV_VAR}=uvloop but uvloop is not installed (pip install uvloop)")
    return "asyncio", None


def name() -> str:
    """The loop `run` would use now: "uvloop" or "asyncio"."""
    return choose()[0]


def run(main: Coroutine[Any, Any, T], *, debug: bool | None = None) -> T:
    """asyncio.run(main) on the chosen loop (same cleanup: tasks cancelled, async gens closed)."""
    try:
        _, factory = choose()
    except CertdError:
        main.close()  # never awaited: close it so Python does not warn about it
        raise
    with asyncio.Runner(debug=debug, loop_factory=factory) as runner:
        return runner.run(main)
