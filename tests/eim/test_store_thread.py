"""The SQLite store's threads (eim.store.store_thread): calls run one at a time in order on their own thread, results
and exceptions reach the caller, a cancelled caller does not stop its call, and a closed store leaves no thread."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from eim.store.sqlite import SqliteStore
from eim.store.store_thread import StoreThread
from tests.eim.helpers import plain_euicc


async def test_calls_run_in_order_on_the_thread_and_return_or_raise_to_the_caller():
    t = StoreThread("test-store")
    seen: list[tuple[int, str]] = []

    def work(i: int) -> int:
        seen.append((i, threading.current_thread().name))
        time.sleep(0.001 * (5 - i))  # the earlier calls take longer: order comes from the queue, not from timing
        return i * i

    def fails() -> None:
        raise ValueError("step 3 failed")

    try:
        out = await asyncio.gather(*(t.call(work, i) for i in range(5)), t.call(fails), return_exceptions=True)
        assert out[:5] == [0, 1, 4, 9, 16]
        assert isinstance(out[5], ValueError) and str(out[5]) == "step 3 failed"
        assert seen == [(i, "test-store") for i in range(5)]
    finally:
        t.shutdown()
    with pytest.raises(RuntimeError, match="stopped"):
        await t.call(work, 1)


async def test_a_cancelled_caller_does_not_stop_its_call_and_shutdown_waits_for_what_is_queued():
    t = StoreThread("test-store")
    gate = threading.Event()
    done: list[str] = []

    def slow() -> str:
        gate.wait(5)
        done.append("slow")
        return "late"

    task = asyncio.create_task(t.call(slow))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    after = asyncio.create_task(t.call(done.append, "after"))
    gate.set()
    assert await after is None
    assert done == ["slow", "after"]  # the cancelled call ran to its end, then the next one
    t.shutdown(wait=True)
    assert not t._thread.is_alive()


async def test_an_opened_and_closed_store_leaves_no_thread(tmp_path):
    def store_threads() -> list[str]:
        return [th.name for th in threading.enumerate() if th.name.startswith("eim-sqlite")]

    before = store_threads()
    s = SqliteStore(str(tmp_path / "eim.db"))
    await s.open()
    assert sorted(store_threads()) == sorted([*before, "eim-sqlite", "eim-sqlite-read"])
    assert await s.add_euicc(plain_euicc("89049032123451234512345678901234", 7), who="t")
    assert (await s.get_euicc("89049032123451234512345678901234")).counter_value == 7  # a read, on its thread
    await s.close()
    assert store_threads() == before
