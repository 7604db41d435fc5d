"""``eim serve``'s start-up tuning of the garbage collector (:func:`eim.serve.freeze_startup_objects`): start-up
objects frozen out of every collection, the young generation collected every ``GC_YOUNG_THRESHOLD`` allocations,
the middle one every ``GC_MIDDLE_THRESHOLD`` young collections."""

from __future__ import annotations

import gc
from collections import deque

from eim.serve import GC_MIDDLE_THRESHOLD, GC_YOUNG_THRESHOLD, freeze_startup_objects


def test_startup_objects_frozen_and_thresholds_set():
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        freeze_startup_objects()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, GC_MIDDLE_THRESHOLD, before[2])
        assert GC_YOUNG_THRESHOLD > before[0]
        assert gc.get_freeze_count() > 0  # this process's objects are in the permanent generation
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_a_middle_collection_walks_only_a_few_young_collections_survivors():
    """What a server's requests leave to the collector: objects in reference cycles (aiocoap's pipes and
    callbacks are) alive across a young collection because their request is still in flight, garbage a moment
    later. Each young collection moves the in-flight ones to the middle generation, where they wait for a middle
    collection; that collection's work (and pause: 9-22 ms over CoAP with CPython's 10, docs/performance.md) is
    the middle generation's size. Counted here in objects when each middle collection starts."""
    in_flight_requests, per_request = 500, 2  # a dict in a cycle with itself, and a list
    sizes: list[int] = []

    def watch(phase: str, info: dict) -> None:
        if phase == "start" and info["generation"] == 1:
            sizes.append(len(gc.get_objects(1)))

    before = gc.get_threshold()
    gc.callbacks.append(watch)
    try:
        gc.unfreeze()
        freeze_startup_objects()
        flight: deque = deque(maxlen=in_flight_requests)
        for i in range(30 * GC_YOUNG_THRESHOLD):
            request: dict = {"payload": [i, i]}
            request["self"] = request  # a cycle: freed by the collector only
            flight.append(request)  # the oldest request ends and becomes garbage
    finally:
        gc.callbacks.remove(watch)
        gc.unfreeze()
        gc.set_threshold(*before)
        gc.collect()
    assert len(sizes) >= 3, sizes
    # at most the survivors of three young collections (two, and the one running) and a few other objects; with
    # CPython's 10 it holds eleven
    bound = 3 * in_flight_requests * per_request + 100
    assert max(sizes) <= bound, f"middle generation at collection: {sorted(sizes)[-5:]} objects (bound {bound})"
