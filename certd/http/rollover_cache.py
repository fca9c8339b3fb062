"""The rollover view (`certd fleet status`'s computation), recomputed at most every few seconds.

That computation weighs every charger against the bundle it must hold (about
50 µs of CPU each, ORM objects included: a quarter of a second for 5,000
chargers, in a worker thread that then competes with the OCPP loop for the GIL
and triggers garbage collections), far too much for every scrape and page view.
Rollouts move over hours, so answers use the last result while a fresh one is
computed in the background once it is `MAX_AGE` (2 minutes) old
(stale-while-revalidate); nothing is computed while nobody asks. `certd fleet
status` shows the exact view of the moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from certd.http.live import LiveView
from certd.tasks import cancel_all

log = logging.getLogger("certd.http")

MAX_AGE = 120.0  # seconds; rollouts take hours to days


class RolloverCache:
    def __init__(self, compute: Callable[[LiveView], Awaitable[list[dict[str, Any]]]]) -> None:
        self._compute = compute
        self._value: list[dict[str, Any]] | None = None
        self._at = 0.0
        self._refreshing: asyncio.Task[None] | None = None

    async def get(self, live: LiveView) -> list[dict[str, Any]]:
        if self._value is None:
            await self._refresh(live)
        elif time.monotonic() - self._at > MAX_AGE and self._refreshing is None:
            self._refreshing = asyncio.get_running_loop().create_task(self._refresh(live))
            self._refreshing.add_done_callback(self._done)
        return self._value or []

    def _done(self, _task: asyncio.Task[None]) -> None:
        self._refreshing = None

    async def _refresh(self, live: LiveView) -> None:
        try:
            self._value = await self._compute(live)
        except Exception as exc:  # noqa: BLE001 - the next request tries again; only the type is logged
            log.warning("HTTP server: the rollover view could not be computed (%s)", type(exc).__name__)
            if self._value is None:
                raise
            return
        self._at = time.monotonic()

    def clear(self) -> None:
        self._value = None

    async def close(self) -> None:
        await cancel_all([self._refreshing])
