"""Store writes from many tasks, one transaction per batch (group commit), on the event loop.

A task `await`s `commit(item)` and gets its own result back. While one batch is being
written in a worker thread the next one gathers, so batches grow with the load and a
lone write waits for nobody: 1,000 chargers asking for certificates at once cost a few
dozen transactions (and fsyncs) instead of a thousand. Built for the charger CA's
certificate and delivery records (`certd.ocpp.enrollment`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Callable[[Sequence[T]], Sequence[R]], lock: asyncio.Lock,
                 limit: int = 500) -> None:
        self.write = write  # runs in a worker thread; one result per item, in order
        self.lock = lock  # shared with the caller's other store writes
        self.limit = limit
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self.batches = 0

    async def __call__(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush(), name="certd-group-commit")
        return await future

    async def _flush(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:self.limit], self._pending[self.limit:]
                try:
                    async with self.lock:
                        results = await asyncio.to_thread(self.write, [item for item, _ in batch])
                except Exception as exc:  # noqa: BLE001 - every waiter of the batch gets the error
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                for (_, future), result in zip(batch, results):
                    if not future.done():  # its waiter may have been cancelled meanwhile
                        future.set_result(result)
        finally:
            self._flusher = None
