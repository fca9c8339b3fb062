"""The engine's memory is changed only on the event loop: worker threads return, the loop applies.

`certd.rollover.loop_owned` raises (and notes) a write from any other thread. These tests show
the guard fires for every kind of write, that a whole rollover (installs accepted, refused and
timed out, a gate opening) runs without one, and that a worker which did write the memory is
caught even though the engine swallows the worker's exception.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from certd.ocpp import charger_registry
from certd.ocpp.service import OcppService
from certd.rollover import charger_store
from certd.rollover.engine import RolloverEngine
from certd.rollover.loop_owned import LoopDict, LoopOwned, LoopOwner, LoopSet, WrongThread
from certd.store.db import session_scope
from certd.store.rollover import RolloverCharger
from certd.trust.track import on_issued
from tests.rollover.conftest import run, until
from tests.rollover.sim import Behavior, SimCharger
from tests.rollover.test_engine import HOST, store_issued, two_root_lab
from tests import pki


def in_thread(action: Callable[[], Any]) -> BaseException | None:
    """Run `action` in another thread; what it raised (None: nothing)."""
    raised: list[BaseException] = []

    def target() -> None:
        try:
            action()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return raised[0] if raised else None


class _State(LoopOwned):
    pass


DICT_WRITES: list[Callable[[LoopDict[str, int]], Any]] = [
    lambda d: d.__setitem__("b", 2), lambda d: d.__delitem__("a"), lambda d: d.pop("a"),
    lambda d: d.pop("zz", None), lambda d: d.popitem(), lambda d: d.setdefault("c", 3),
    lambda d: d.update(c=3), lambda d: d.clear(), lambda d: d.__ior__({"c": 3}),
]
SET_WRITES: list[Callable[[LoopSet[str]], Any]] = [
    lambda s: s.add("b"), lambda s: s.discard("a"), lambda s: s.remove("a"), lambda s: s.pop(),
    lambda s: s.clear(), lambda s: s.update({"b"}), lambda s: s.difference_update({"a"}),
    lambda s: s.intersection_update({"a"}), lambda s: s.symmetric_difference_update({"b"}),
    lambda s: s.__ior__({"b"}), lambda s: s.__isub__({"a"}), lambda s: s.__iand__({"a"}),
    lambda s: s.__ixor__({"b"}),
]


@pytest.mark.parametrize("write", DICT_WRITES)
def test_every_dict_write_from_another_thread_is_refused(write: Callable[[LoopDict[str, int]], Any]) -> None:
    owner = LoopOwner()
    guarded: LoopDict[str, int] = LoopDict(owner, "memo")
    guarded["a"] = 1
    assert isinstance(in_thread(lambda: write(guarded)), WrongThread)
    assert guarded == {"a": 1}  # unchanged
    assert len(owner.violations) == 1 and "memo" in owner.violations[0]
    assert in_thread(lambda: guarded.get("a")) is None  # reads are free
    write(guarded)  # the owner's thread may
    assert len(owner.violations) == 1


@pytest.mark.parametrize("write", SET_WRITES)
def test_every_set_write_from_another_thread_is_refused(write: Callable[[LoopSet[str]], Any]) -> None:
    owner = LoopOwner()
    guarded: LoopSet[str] = LoopSet(owner, "ids")
    guarded.add("a")
    assert isinstance(in_thread(lambda: write(guarded)), WrongThread)
    assert guarded == {"a"}
    assert owner.violations == [owner.violations[0]] and "ids" in owner.violations[0]
    write(guarded)
    assert len(owner.violations) == 1


def test_attribute_assignment_from_another_thread_is_refused_and_bind_moves_ownership() -> None:
    owner = LoopOwner()
    state = _State(owner)
    state.flag = True
    assert isinstance(in_thread(lambda: setattr(state, "flag", False)), WrongThread)
    assert state.flag is True and "_State.flag" in owner.violations[0]
    # Whichever thread binds owns it from then on; the old owner no longer may write.
    assert in_thread(lambda: (owner.bind(), setattr(state, "flag", False))) is None
    assert state.flag is False
    with pytest.raises(WrongThread):
        state.flag = True


def memory_from_store(engine: sa.Engine) -> tuple[set[str], dict[str, dt.datetime]]:
    """Which chargers the store says confirmed, and their next attempts."""
    with session_scope(engine) as session:
        rows = list(session.exec(sa.select(RolloverCharger)).scalars())
    return ({r.charger_id for r in rows if r.state == "confirmed"},
            {r.charger_id: r.next_attempt_at for r in rows if r.next_attempt_at is not None})


def test_a_rollover_changes_the_memory_only_on_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab = two_root_lab(tmp_path, "Loop")
    sims = [SimCharger("OK16", "ocpp1.6", [lab.root_a.pem], HOST),
            SimCharger("OK201", "ocpp2.0.1", [lab.root_a.pem], HOST),
            SimCharger("NO", "ocpp1.6", [lab.root_a.pem], HOST, Behavior(install="reject")),
            SimCharger("MUTE", "ocpp2.0.1", [lab.root_a.pem], HOST, Behavior(install="silent"))]
    for sim in sims:
        charger_registry.insert_charger(lab.engine, sim.charger_id, password_hash=None, heartbeat_class="default")
    config = lab.config.model_copy(update={"rollover": lab.config.rollover.model_copy(
        update={"call_timeout": 1.0, "gate_share": 0.5})})

    async def main() -> None:
        service = OcppService(config, lab.engine)
        await service.start()
        rollover = RolloverEngine(config, lab.engine, service)
        await rollover.start()
        memory = rollover.memory
        assert memory.owner.thread_id == threading.get_ident()  # the loop's thread owns it
        port = service.listener("main").ports[0]
        for sim in sims:
            sim.start(f"wss://127.0.0.1:{port}/ocpp/{sim.charger_id}")
        await until(lambda: all(s.online.is_set() for s in sims), "sims online")
        assert await rollover.wait_idle(20)

        second = store_issued(lab.engine, pki.leaf([HOST], lab.inter_b), [lab.inter_b])
        on_issued(config, lab.engine, second, deliver=False)
        await service.reload("ocpp")
        await rollover.on_issued("ocpp")
        await until(lambda: {"NO", "MUTE"} <= memory_from_store(lab.engine)[1].keys(), "refused and timed out")
        assert await rollover.wait_idle(20)
        await until(lambda: service.served("main")[0].serial == second.serial, "gate opened at 50%")

        # Plans, copies of rows, the hash index, tasks: all written, none from a worker thread.
        assert memory.owner.violations == []
        assert rollover.installs_sent == 4
        assert memory.plans["main"].targets and memory.index.index
        assert set(memory.listener_of) >= {s.charger_id for s in sims}
        confirmed, not_before = memory_from_store(lab.engine)
        assert confirmed == {"OK16", "OK201"} == set(memory.confirmed)
        assert not_before.keys() == {"NO", "MUTE"} and dict(memory.not_before) == not_before

        # A worker that wrote the memory itself (instead of returning what to remember) is caught,
        # although the engine only logs the provisioning task's crash.
        original = charger_store.read_context

        def rogue_read_context(*args: Any, **kwargs: Any) -> charger_store.ContextRead:
            memory.not_before.pop(args[3], None)
            return original(*args, **kwargs)

        monkeypatch.setattr(charger_store, "read_context", rogue_read_context)
        sims[0].reboot()  # a BootNotification: the charger is looked at again at once
        await until(lambda: memory.owner.violations != [], "the worker's write noticed")
        assert "not_before changed in thread" in memory.owner.violations[0]
        assert dict(memory.not_before) == not_before  # the write did not happen
        assert await rollover.wait_idle(20)

        await rollover.close()
        for sim in sims:
            await sim.stop()
        await service.close()

    run(main())


def test_engine_memory_applied_from_a_worker_thread_raises(tmp_path: Path) -> None:
    """The engine's own entry points write the memory; called off the loop, they refuse."""
    lab = two_root_lab(tmp_path, "Off")

    async def main() -> None:
        service = OcppService(lab.config, lab.engine)
        await service.start()
        rollover = RolloverEngine(lab.config, lab.engine, service)
        await rollover.start()
        recorded = charger_store.Recorded(None, dt.datetime.now(dt.timezone.utc))
        with pytest.raises(WrongThread):
            await asyncio.to_thread(rollover.memory.remember, "CP1", recorded)
        with pytest.raises(WrongThread):
            await asyncio.to_thread(rollover.memory.retry_now.add, "CP1")
        assert len(rollover.memory.owner.violations) == 2
        rollover.memory.remember("CP1", recorded)  # on the loop: fine
        assert rollover.memory.not_before["CP1"] == recorded.not_before
        await rollover.close()
        await service.close()

    run(main())
