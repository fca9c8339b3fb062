"""Containers only the event loop's thread may change, checked on every write.

The rollover engine keeps loop-side memory (copies of store rows, caches, tasks)
that its coroutines read without locks. Store I/O runs in worker threads; those
must return values for the loop to apply, never write that memory themselves (a
dict changed by a worker while the loop iterates it raises, or loses a write).
`LoopDict`, `LoopSet` and `LoopOwned` attributes make the rule enforceable: a write
from any thread other than the owner's raises `WrongThread` and is noted in
`LoopOwner.violations`, so a test that drives the engine sees it even when the
worker's exception is swallowed and logged. Reads are not checked (plain dict and
set speed), writes cost one thread-id comparison.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class WrongThread(RuntimeError):
    """Loop-owned state was about to be changed outside the loop's thread."""


class LoopOwner:
    """Which thread may change the state it guards: the one that last called `bind`."""

    def __init__(self) -> None:
        self.thread_id = threading.get_ident()
        self.violations: list[str] = []

    def bind(self) -> None:
        """Call from the event loop's thread (e.g. at the start of a coroutine) to own the state."""
        self.thread_id = threading.get_ident()

    def check(self, what: str) -> None:
        if threading.get_ident() != self.thread_id:
            message = f"{what} changed in thread {threading.current_thread().name}, not the event loop's"
            self.violations.append(message)
            raise WrongThread(message)


class LoopDict(dict[K, V]):
    """A dict whose writes must come from its owner's thread."""

    def __init__(self, owner: LoopOwner, name: str) -> None:
        super().__init__()
        self._owner, self._name = owner, name

    def __setitem__(self, key: K, value: V) -> None:
        self._owner.check(self._name)
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        self._owner.check(self._name)
        super().__delitem__(key)

    def __ior__(self, other: Any) -> "LoopDict[K, V]":
        self._owner.check(self._name)
        return super().__ior__(other)  # type: ignore[return-value]

    def pop(self, key: K, *default: Any) -> Any:
        self._owner.check(self._name)
        return super().pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        self._owner.check(self._name)
        return super().popitem()

    def setdefault(self, key: K, default: Any = None) -> Any:
        self._owner.check(self._name)
        return super().setdefault(key, default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._owner.check(self._name)
        super().update(*args, **kwargs)

    def clear(self) -> None:
        self._owner.check(self._name)
        super().clear()


class LoopSet(set[K]):
    """A set whose writes must come from its owner's thread."""

    def __init__(self, owner: LoopOwner, name: str) -> None:
        super().__init__()
        self._owner, self._name = owner, name

    def add(self, item: K) -> None:
        self._owner.check(self._name)
        super().add(item)

    def discard(self, item: K) -> None:
        self._owner.check(self._name)
        super().discard(item)

    def remove(self, item: K) -> None:
        self._owner.check(self._name)
        super().remove(item)

    def pop(self) -> K:
        self._owner.check(self._name)
        return super().pop()

    def clear(self) -> None:
        self._owner.check(self._name)
        super().clear()

    def update(self, *others: Iterable[K]) -> None:
        self._owner.check(self._name)
        super().update(*others)

    def difference_update(self, *others: Iterable[Any]) -> None:
        self._owner.check(self._name)
        super().difference_update(*others)

    def intersection_update(self, *others: Iterable[Any]) -> None:
        self._owner.check(self._name)
        super().intersection_update(*others)

    def symmetric_difference_update(self, other: Iterable[K]) -> None:
        self._owner.check(self._name)
        super().symmetric_difference_update(other)

    def __ior__(self, other: Any) -> "LoopSet[K]":
        self._owner.check(self._name)
        return super().__ior__(other)  # type: ignore[return-value]

    def __isub__(self, other: Any) -> "LoopSet[K]":
        self._owner.check(self._name)
        return super().__isub__(other)  # type: ignore[return-value]

    def __iand__(self, other: Any) -> "LoopSet[K]":
        self._owner.check(self._name)
        return super().__iand__(other)  # type: ignore[return-value]

    def __ixor__(self, other: Any) -> "LoopSet[K]":
        self._owner.check(self._name)
        return super().__ixor__(other)  # type: ignore[return-value]


class LoopOwned:
    """Plain attributes whose (re)assignment must come from the owner's thread."""

    _owner: LoopOwner

    def __init__(self, owner: LoopOwner) -> None:
        object.__setattr__(self, "_owner", owner)

    def __setattr__(self, name: str, value: Any) -> None:
        self._owner.check(f"{type(self).__name__}.{name}")
        object.__setattr__(self, name, value)
