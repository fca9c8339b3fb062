"""What the HTTP server learns from live objects (not the store): taken on the event loop, as a copy.

The OCPP service's sessions and context holders, and the scheduler, are
event-loop state: `take_live_view` reads them on the loop and hands a frozen
copy to the worker thread that reads the store and renders the answer.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from certd.store.types import utcnow


@dataclass(frozen=True)
class SchedulerState:
    """Is the daemon's scheduler alive: running, and not far behind its own plan."""

    running: bool
    overdue_seconds: float = 0.0  # how late the most overdue job is (0: none is late)
    checks_running: tuple[str, ...] = ()


def scheduler_state(scheduler: Any, running_checks: set[str] | None = None) -> SchedulerState:
    """Read an APScheduler (3.x) instance on the loop."""
    if scheduler is None or not scheduler.running:
        return SchedulerState(False)
    now = dt.datetime.now(dt.timezone.utc)
    late = [(now - job.next_run_time).total_seconds() for job in scheduler.get_jobs()
            if job.next_run_time is not None]
    return SchedulerState(True, max([0.0, *late]), tuple(sorted(running_checks or ())))


@dataclass
class LiveSources:
    """Callables the HTTP server asks (on the loop) for live state; each may answer None.

    `ocpp` returns the running OcppService (the daemon replaces it on reload, so it is asked
    every time), `scheduler` the scheduler's state (None: no scheduler, as in `certd serve`).
    """

    clock: Callable[[], dt.datetime] = utcnow
    ocpp: Callable[[], Any] = lambda: None
    scheduler: Callable[[], SchedulerState | None] = lambda: None


@dataclass(frozen=True)
class ListenerLive:
    bound: bool
    ports: tuple[int, ...]
    served: tuple[dict[str, Any], ...]  # key_type, serial, not_after, sha256
    connected: int


@dataclass(frozen=True)
class LiveView:
    listeners: dict[str, ListenerLive] = field(default_factory=dict)
    # (listener, ocpp version) -> connected chargers in this process
    connected: dict[tuple[str, str], int] = field(default_factory=dict)
    charger_ids: frozenset[str] = frozenset()
    scheduler: SchedulerState | None = None
    ocpp_running: bool = False


class ConnectedCounts:
    """Chargers connected to the running OCPP service by (listener, version), kept up to date by
    the service's charger hooks: a scrape reads a small dict instead of walking 5,000 sessions on
    the loop. Follows the service the daemon runs now (it replaces it on some reloads)."""

    def __init__(self) -> None:
        self._service: Any = None
        self._sessions: dict[int, tuple[str, str]] = {}  # id(session) -> (listener, version)
        self.counts: Counter[tuple[str, str]] = Counter()

    def follow(self, service: Any) -> None:
        if service is self._service:
            return
        if self._service is not None:
            self._service.remove_charger_hook(self._hook)
        self._service, self._sessions, self.counts = service, {}, Counter()
        if service is not None:
            service.add_charger_hook(self._hook)
            for session in service.shared.sessions.values():
                self._hook(session, "connected")

    def _hook(self, session: Any, event: str) -> None:
        if event == "connected" and id(session) not in self._sessions:
            key = self._sessions[id(session)] = (session.listener, session.version)
            self.counts[key] += 1
        elif event == "disconnected":
            key = self._sessions.pop(id(session), None)  # a replaced session was never counted twice
            if key is not None:
                self.counts[key] -= 1
                if self.counts[key] <= 0:
                    del self.counts[key]


def take_live_view(sources: LiveSources, counts: ConnectedCounts) -> LiveView:
    """Copy the live state (call on the event loop)."""
    service = sources.ocpp()
    scheduler = sources.scheduler()
    counts.follow(service)
    if service is None:
        return LiveView(scheduler=scheduler)
    per_listener: Counter[str] = Counter()
    for (label, _version), number in counts.counts.items():
        per_listener[label] += number
    listeners = {}
    for listener in service.listeners:
        served = tuple({"key_type": s.key_type, "serial": s.serial, "not_after": s.not_after.isoformat(),
                        "sha256": s.sha256} for s in service.served(listener.label))
        listeners[listener.label] = ListenerLive(
            bound=listener.server is not None, ports=tuple(listener.ports), served=served,
            connected=per_listener.get(listener.label, 0))
    return LiveView(listeners, dict(counts.counts), frozenset(service.shared.sessions), scheduler, True)
