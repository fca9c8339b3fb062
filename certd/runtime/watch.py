"""Learn at once that another certd process on this machine deployed a certificate.

A hand-run `certd issue NAME --force` next to `certd run` writes the new files
itself; without this the daemon's listeners would keep serving the old
certificate until their next periodic store check (up to 30 s). Every deploy,
by any certd process, ends by writing certd's own copy in `state_dir/live/NAME/`,
after the issuance is committed to the store, so a change there is the moment
to reload. The watch uses the kernel's notifications (inotify, through
`watchfiles`), not a faster poll; the periodic checks stay as the safety net.
Several nodes on PostgreSQL learn of changes through the store instead.

Reloads are idempotent (the listener compares material fingerprints), so the
daemon's own deploys triggering the watch cost one store read each.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger("certd.daemon")

DEBOUNCE_MS = 150  # a deploy writes up to four files and renames them in a few ms


def names_of(live_dir: Path, changed_paths: set[str]) -> set[str]:
    """The certificate names whose live copy changed (first path component under `live_dir`)."""
    names: set[str] = set()
    for raw in changed_paths:
        try:
            relative = Path(raw).relative_to(live_dir)
        except ValueError:
            continue
        if relative.parts and not relative.parts[0].startswith("."):
            names.add(relative.parts[0])
    return names


class LiveCopyWatcher:
    """Calls `on_change(names)` on the event loop shortly after files under `live_dir` change."""

    def __init__(self, live_dir: Path, on_change: Callable[[set[str]], Awaitable[None]]) -> None:
        self.live_dir = live_dir
        self._on_change = on_change
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.live_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
        ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(ready), name="certd live-copy watch")
        await ready  # the watch is armed: a deploy from now on is seen

    async def close(self) -> None:
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=5)
            except (asyncio.TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            self._task = None

    async def _run(self, ready: asyncio.Future[None]) -> None:
        from watchfiles import awatch

        live_dir = self.live_dir.resolve()
        try:
            watch = awatch(live_dir, stop_event=self._stop, debounce=DEBOUNCE_MS, step=20,
                           recursive=True)
            first = asyncio.ensure_future(anext(watch, None))
            await asyncio.sleep(0)  # awatch arms the kernel watch before waiting for events
            ready.set_result(None)
            batch = await first
            while batch is not None:
                names = names_of(live_dir, {path for _change, path in batch})
                if names:
                    log.info("live copy changed for %s: reloading what serves it", ", ".join(sorted(names)))
                    try:
                        await self._on_change(names)
                    except Exception:  # noqa: BLE001 - the watch must outlive one failed reload
                        log.exception("reload after a live-copy change failed")
                batch = await anext(watch, None)
        except Exception as exc:  # noqa: BLE001 - no inotify (containers): periodic checks remain
            log.warning("cannot watch %s for deploys by other certd processes (%s); "
                        "listeners pick them up at their periodic check", live_dir, exc)
            if not ready.done():
                ready.set_result(None)
