"""Retained topics certd owns: publish what changed, empty what is no longer wanted.

The service hands over the wanted payloads (`want`) whenever the state changes; `sync`
publishes only the topics whose payload differs from what this session already
published, and an empty retained payload for topics that left the wanted set (Home
Assistant removes an entity whose config becomes empty). Nothing is queued while the
broker is away: after a reconnect `forget()` makes the next `sync` send everything
from the current state. Topics another run left behind (a certificate removed from
the config while certd was stopped) arrive as retained messages on the owned filters
and are emptied by `seen`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

Publish = Callable[[str, str], Awaitable[None]]
CONCURRENT_PUBLISHES = 16  # PUBACKs awaited at once (paho's in-flight window is 20)


class RetainedPublisher:
    def __init__(self, keep: frozenset[str] = frozenset()) -> None:
        self._wanted: dict[str, str] = {}
        self._published: dict[str, str] = {}
        self._configs: set[str] = set()  # config topics go out before states, and are emptied last
        self._keep = keep  # never emptied (the availability topic)
        self._have_wanted = False
        self._stale: set[str] = set()
        self._seen_early: set[str] = set()  # retained before the first `want`: judged then

    @property
    def wanted(self) -> dict[str, str]:
        return dict(self._wanted)

    def want(self, configs: dict[str, str], states: dict[str, str]) -> None:
        self._wanted = {**configs, **states}
        self._configs = set(configs)
        self._have_wanted = True
        self._stale |= {t for t in self._seen_early if t not in self._wanted}
        self._seen_early.clear()

    def forget(self) -> None:
        """A new session: the broker may have lost anything (no persistence); send all again."""
        previous = set(self._published)
        self._published = {}
        # Topics published before and no longer wanted are still emptied at the next sync.
        self._stale |= {t for t in previous if t not in self._wanted}

    def resend_configs(self) -> None:
        """Home Assistant came back online: it wants every config (and then every state) again."""
        self._published = {}

    def seen(self, topic: str, payload: bytes) -> None:
        """A retained message on an owned topic: empty it at the next sync unless it is wanted."""
        if topic in self._keep or not payload:
            return
        if not self._have_wanted:
            self._seen_early.add(topic)
        elif topic not in self._wanted:
            self._stale.add(topic)

    def pending(self) -> bool:
        return bool(self._stale) or any(self._published.get(t) != p for t, p in self._wanted.items())

    async def sync(self, publish: Publish) -> int:
        """Publish the differences (configs, then states; empty configs first, so Home Assistant
        removes the entity before its state topics are cleared).

        A failed publish raises; what was not sent stays pending for the next sync.
        """
        removed = (set(self._published) | self._stale) - set(self._wanted) - self._keep
        changed = [t for t, p in self._wanted.items() if self._published.get(t) != p]
        first = sorted(t for t in changed if t in self._configs)
        then = sorted(t for t in changed if t not in self._configs)
        empties = sorted(removed)
        semaphore = asyncio.Semaphore(CONCURRENT_PUBLISHES)

        async def one(topic: str, payload: str) -> None:
            async with semaphore:
                await publish(topic, payload)
            if payload:
                self._published[topic] = payload
            else:
                self._published.pop(topic, None)
                self._stale.discard(topic)

        sent = 0
        for batch in ([(t, self._wanted[t]) for t in first], [(t, self._wanted[t]) for t in then],
                      [(t, "") for t in empties if t.endswith("/config")],
                      [(t, "") for t in empties if not t.endswith("/config")]):
            if batch:
                await asyncio.gather(*(one(topic, payload) for topic, payload in batch))
                sent += len(batch)
        return sent
